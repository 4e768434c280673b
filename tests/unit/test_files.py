"""write_atomically (signed files at dest, reports, shipping cursors, the journal registry) never writes through a
link planted beside or at the target, and gives the file exactly the mode asked for. Pure: tmp_path only."""

from __future__ import annotations

import os
import stat


def _write():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._files import write_atomically

    return write_atomically


def test_a_planted_link_is_neither_followed_nor_chmodded(tmp_path):
    victim = tmp_path / "victim.pem"
    victim.write_text("SECRET")
    victim.chmod(0o600)
    dest = tmp_path / "policy.yml"
    for pid in range(os.getpid() - 5, os.getpid() + 5):  # the temporary names a writer used to pick
        os.symlink(victim, "%s.%d.tmp" % (dest, pid))
    _write()(str(dest), "signed: true\n", mode=0o644, durable=True)
    assert victim.read_text() == "SECRET" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert dest.read_text() == "signed: true\n" and not dest.is_symlink()
    # a link at dest itself is replaced by the file, the file it pointed at is left alone
    dest.unlink()
    os.symlink(victim, dest)
    _write()(str(dest), "signed: again\n", mode=0o644)
    assert not dest.is_symlink() and dest.read_text() == "signed: again\n" and victim.read_text() == "SECRET"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644 and stat.S_IMODE(victim.stat().st_mode) == 0o600
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp") and not p.is_symlink())
    assert leftovers == []


def test_the_mode_is_exact_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        _write()(str(tmp_path / "report.md"), "x", mode=0o640)
        _write()(str(tmp_path / "cursor.json"), "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "cursor.json").stat().st_mode) == 0o600
