"""audit_verify: the chain and the HSM-signed checkpoints catch modified, deleted, reordered and cut records."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from tests.unit.test_journal import independent_check


@pytest.fixture
def journaled(runner, token):
    """A journal of three lifecycle tasks (generate, update, no-op) on a real token."""
    for args in ({"name": "a", "rotation_period": "90d"}, {"name": "a", "rotation_period": "30d"}, {"name": "a",
                 "rotation_period": "30d"}):
        assert runner.task("key_generate", args).rc == 0
    assert independent_check(runner.journal) == 12
    return runner


def verify(runner, **args):
    return runner.task("audit_verify", dict({"fail_on_error": False}, **args)).task


def rewrite(runner, mutate):
    lines = runner.journal.read_text().splitlines()
    runner.journal.write_text("\n".join(mutate(lines)) + "\n")


def test_intact_journal_verifies_and_signatures_check_with_openssl(journaled, tmp_path):
    keys = tmp_path / "keys"
    report = verify(journaled, export_public_keys=str(keys))
    assert report["ok"] is True, report
    assert report["records"] == 12 and report["head"]["seq"] == 12
    assert report["checkpoints_verified"] == 3 and report["token_checkpoint"]["seq"] == 10
    # an auditor checks a checkpoint with openssl alone
    record = [json.loads(line) for line in journaled.journal.read_text().splitlines()][-2]
    checkpoint = record["event"]["keylifecycle"]["checkpoint"]
    payload = json.dumps({k: checkpoint[k] for k in ("head_hash", "journal_id", "seq", "signed_at")},
                         sort_keys=True, separators=(",", ":"))
    (tmp_path / "payload.json").write_text(payload)
    (tmp_path / "sig.der").write_bytes(base64.b64decode(checkpoint["signature"]))
    pem = keys / ("%s.pem" % checkpoint["key_id"])
    ok = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(pem), "-signature", str(tmp_path / "sig.der"),
                         str(tmp_path / "payload.json")], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "Verified OK" in ok.stdout
    (tmp_path / "payload.json").write_text(payload.replace('"seq":', '"seq":1'))
    bad = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(pem), "-signature",
                          str(tmp_path / "sig.der"), str(tmp_path / "payload.json")],
                         capture_output=True, text=True, check=False)
    assert bad.returncode != 0


def test_flipped_byte_is_reported(journaled):
    def flip(lines):
        lines[4] = lines[4].replace('"outcome":"success"', '"outcome":"failure"', 1)
        return lines
    rewrite(journaled, flip)
    report = verify(journaled)
    assert report["ok"] is False
    assert report["first_bad"]["line"] == 5 and "modified" in report["first_bad"]["problem"]


def test_deleted_record_is_reported(journaled):
    rewrite(journaled, lambda lines: lines[:3] + lines[4:])
    report = verify(journaled)
    assert report["first_bad"]["line"] == 4 and "deleted" in report["first_bad"]["problem"]


def test_swapped_records_are_reported(journaled):
    def swap(lines):
        lines[5], lines[6] = lines[6], lines[5]
        return lines
    rewrite(journaled, swap)
    report = verify(journaled)
    assert report["first_bad"]["line"] == 6 and "deleted" in report["first_bad"]["problem"]


def test_truncated_tail_is_caught_by_the_token_checkpoint(journaled):
    rewrite(journaled, lambda lines: lines[:7])  # a valid chain, cut below the token checkpoint (seq 10)
    report = verify(journaled)
    assert report["first_bad"] is None
    assert report["ok"] is False
    assert any("truncated" in p for p in report["problems"]), report["problems"]


def test_truncated_inside_last_task_is_reported(journaled):
    rewrite(journaled, lambda lines: lines[:11])  # the last task loses its outcome
    report = verify(journaled)
    assert report["ok"] is False and any("ends inside a task" in p for p in report["problems"])


def test_deleted_journal_is_reported(journaled):
    journaled.journal.unlink()
    report = verify(journaled)
    assert report["ok"] is False and any("deleted or replaced" in p for p in report["problems"])


def test_failing_mode_and_playbook(journaled, repo, token):
    rewrite(journaled, lambda lines: lines[:3] + lines[4:])
    result = journaled.task("audit_verify", {})
    assert result.task["failed"] is True
    assert "does not verify" in result.task["msg"] and "line 4" in result.task["msg"]


def test_two_hosts_sharing_one_token_do_not_race(runner, token, tmp_path):
    """Two inventory hosts on one token (a shared network HSM), forks=2: one version per key, one signing key."""
    import yaml

    inventory = yaml.safe_load(runner.inventory.read_text())
    host = inventory["hsm"]["hosts"]["test-hsm"]
    inventory["hsm"]["hosts"] = {"hsm-a": dict(host), "hsm-b": dict(host)}
    runner.inventory.write_text(yaml.safe_dump(inventory))
    play = [{"hosts": "hsm", "gather_facts": False, "environment": token.env, "tasks": [{
        "name": "generate", "secops.keylifecycle.key_generate": dict(token.connection(), keys=[
            {"name": "k%d" % n} for n in range(5)])}]}]
    path = tmp_path / "two-hosts.yml"
    path.write_text(yaml.safe_dump(play))
    proc = runner.playbook(path, "--forks", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    labels = [o["label"] for o in token.objects() if o["class"] in ("SECRET_KEY", "PRIVATE_KEY")]
    assert sorted(labels) == ["audit-checkpoint:v1"] + ["k%d:v1" % n for n in range(5)]
    report = verify(runner)
    assert report["ok"] is True, report["problems"]
