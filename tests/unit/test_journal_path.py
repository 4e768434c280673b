"""The journal a task uses, resolved in one place for every action plugin: one default journal per token."""

from __future__ import annotations

import hashlib
import os


class _Templar:
    def template(self, value):
        return value.replace("{{ env }}", "dev") if isinstance(value, str) else value


def _mod():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _journal

    return _journal


def _resolve(args, task_vars, token=None):
    return _mod().resolve_journal_path(args, task_vars, _Templar(), token=token)


def test_option_then_variable_then_the_tokens_default(tmp_path, monkeypatch):
    mod = _mod()
    monkeypatch.setenv("KEYLIFECYCLE_AUDIT_STATE_DIR", str(tmp_path))
    variable = {mod.JOURNAL_VARIABLE: "/var/lib/{{ env }}/journal.jsonl"}
    token = ("/usr/lib/softhsm/libsofthsm2.so", "keys-a")
    assert _resolve({"journal": "/tmp/j.jsonl"}, variable, token) == "/tmp/j.jsonl"
    assert _resolve({}, variable, token) == "/var/lib/dev/journal.jsonl"
    assert _resolve({"journal": None}, {}, token) == mod.default_journal_path(*token)
    # a caller that names no token gets the journal every token shared before (read-only callers, old journals)
    assert _resolve({"journal": None}, {}) == os.path.join(str(tmp_path), "audit-journal.jsonl")


def test_default_journal_is_per_token(tmp_path):
    mod = _mod()
    env = {"KEYLIFECYCLE_AUDIT_STATE_DIR": str(tmp_path)}
    softhsm = "/usr/lib/softhsm/libsofthsm2.so"
    path = mod.default_journal_path(softhsm, "keys-a", env)
    digest = hashlib.sha256(("%s\0%s" % (softhsm, "keys-a")).encode()).hexdigest()[:16]
    assert path == os.path.join(str(tmp_path), "journals", "keys-a-%s.jsonl" % digest)
    others = {mod.default_journal_path(softhsm, "keys-b", env), mod.default_journal_path("/opt/hsm.so", "keys-a", env)}
    assert path not in others and len(others) == 2
    assert mod.default_journal_path(softhsm, "keys-a", env) == path
    # a label with characters unfit for a file name still gives one file in the journals folder
    odd = mod.default_journal_path(softhsm, "../Prod HSM #1/", env)
    assert os.path.dirname(odd) == os.path.join(str(tmp_path), "journals")
    assert os.path.basename(odd).startswith("Prod-HSM-1-") and odd.endswith(".jsonl")
    assert os.path.basename(mod.default_journal_path(softhsm, "", env)).startswith("token-")


def test_state_dir_honours_ansible_home(tmp_path, monkeypatch):
    mod = _mod()
    from ansible import constants

    assert mod.state_dir({"KEYLIFECYCLE_AUDIT_STATE_DIR": str(tmp_path / "s"),
                          "ANSIBLE_HOME": "/elsewhere"}) == str(tmp_path / "s")
    assert mod.state_dir({"ANSIBLE_HOME": str(tmp_path / "home")}) == str(tmp_path / "home" / "secops_keylifecycle")
    monkeypatch.setattr(constants, "ANSIBLE_HOME", str(tmp_path / "configured"), raising=False)
    assert mod.state_dir({}) == str(tmp_path / "configured" / "secops_keylifecycle")  # ansible.cfg's home
    monkeypatch.setattr(constants, "ANSIBLE_HOME", None, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert mod.state_dir({}) == str(tmp_path / "user" / ".ansible" / "secops_keylifecycle")
    monkeypatch.setenv("ANSIBLE_HOME", str(tmp_path / "from-env"))
    monkeypatch.delenv("KEYLIFECYCLE_AUDIT_STATE_DIR", raising=False)
    assert mod.state_dir() == str(tmp_path / "from-env" / "secops_keylifecycle")
    journals = tmp_path / "from-env" / "secops_keylifecycle" / "journals"
    assert mod.default_journal_path("m", "t").startswith(str(journals))


def test_default_journals_and_the_registry_share_the_journals_folder(tmp_path):
    mod = _mod()
    env = {"KEYLIFECYCLE_AUDIT_STATE_DIR": str(tmp_path)}
    first = mod.default_journal_path("m", "a", env)
    second = mod.default_journal_path("m", "b", env)
    for path in (first, second):
        mod.Journal(path).append([{"n": 1}])
        mod.register_journal(path, env)
    assert sorted(mod.registered_journals(env)) == sorted([first, second])
    assert mod.Journal(first).tail()[0] != mod.Journal(second).tail()[0]
