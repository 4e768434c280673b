"""Fail-closed journaling of lifecycle actions, through ansible-playbook and ad-hoc ansible."""

from __future__ import annotations

import subprocess

import yaml

from tests.conftest import VENV_BIN
from tests.unit.test_journal import independent_check


def test_generate_is_journaled_intent_change_outcome(runner, token):
    result = runner.task("key_generate", {"keys": [{"name": "a"}, {"name": "b"}]})
    assert result.task["changed"] is True
    records = runner.journal_records()
    phases = [(r["event"]["event"]["action"], r["event"]["keylifecycle"]["phase"], r["event"]["event"]["outcome"])
              for r in records]
    assert phases == [("key-generate", "intent", "unknown"), ("key-generate", "change", "success"),
                      ("key-generate", "change", "success"), ("key-generate", "change", "success"),
                      ("audit-checkpoint", "change", "success"), ("key-generate", "outcome", "success")]
    # the signing key, made on first use: the token's first task pins its journal before its work
    assert records[1]["event"]["key"]["name"] == "audit-checkpoint"
    checkpoint = records[4]["event"]["keylifecycle"]["checkpoint"]
    assert (checkpoint["seq"], checkpoint["head_hash"]) == (1, records[0]["hash"])
    intent = records[0]
    assert intent["event"]["keylifecycle"]["requested_keys"] == ["a", "b"]
    for record in records[1:]:
        assert record["event"]["keylifecycle"]["intent_id"] == intent["record_id"]
    ids = {o["label"]: o["id"] for o in token.key_objects() if o["class"] == "SECRET_KEY"}
    assert {r["event"]["key"]["label"]: r["event"]["key"]["id"] for r in records[2:4]} == ids
    assert records[-1]["event"]["keylifecycle"]["changed"] is True
    assert independent_check(runner.journal) == 6
    assert token.user_pin not in runner.journal.read_text()

    # unchanged run: intent, its checkpoint, outcome (changed false), still chained
    runner.task("key_generate", {"keys": [{"name": "a"}, {"name": "b"}]})
    records = runner.journal_records()
    actions = [r["event"]["event"]["action"] for r in records[6:]]
    assert actions == ["key-generate", "audit-checkpoint", "key-generate"]
    assert records[7]["event"]["keylifecycle"]["checkpoint"]["seq"] == 7
    assert records[-1]["event"]["keylifecycle"]["changed"] is False
    assert independent_check(runner.journal) == 9


def test_check_mode_journals_nothing(runner, token):
    runner.task("key_generate", {"name": "a"}, "--check")
    assert runner.journal_records() == []


def test_failed_action_is_journaled_as_failure(runner, token):
    result = runner.task("key_generate", {"name": "a", "size": 128})
    assert result.task["failed"] is True
    records = runner.journal_records()
    assert [r["event"]["keylifecycle"]["phase"] for r in records] == ["intent", "outcome"]
    assert records[-1]["event"]["event"]["outcome"] == "failure"
    assert records[-1]["event"]["error"]["type"] == "policy_violation"


def test_unwritable_journal_fails_before_touching_the_token(runner, token, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the journal's folder should be")
    inventory = yaml.safe_load(runner.inventory.read_text())
    inventory["hsm"]["hosts"]["test-hsm"]["keylifecycle_audit_journal"] = str(blocker / "journal.jsonl")
    runner.inventory.write_text(yaml.safe_dump(inventory))
    result = runner.task("key_generate", {"name": "a"})
    assert result.task["failed"] is True
    assert "audit journal" in result.task["msg"] and "Nothing was changed on the HSM" in result.task["msg"]
    assert token.objects() == []


def test_no_log_task_is_journaled(runner, token, tmp_path):
    play = [{"hosts": "hsm", "gather_facts": False, "environment": token.env, "tasks": [{
        "name": "secret task", "no_log": True,
        "secops.keylifecycle.key_generate": dict(token.connection(), name="quiet")}]}]
    path = tmp_path / "nolog.yml"
    path.write_text(yaml.safe_dump(play))
    proc = runner.playbook(path, "-v")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "censored" in proc.stdout
    records = runner.journal_records()
    assert [r["event"]["keylifecycle"]["phase"] for r in records] == ["intent"] + ["change"] * 3 + ["outcome"]
    assert records[2]["event"]["key"]["name"] == "quiet"


def test_ad_hoc_run_is_journaled(runner, token):
    conn = token.connection()
    args = "name=adhoc pkcs11_module=%s token_label=%s user_pin_file=%s" % (
        conn["pkcs11_module"], conn["token_label"], conn["user_pin_file"])
    proc = subprocess.run([str(VENV_BIN / "ansible"), "-i", str(runner.inventory), "hsm", "-m",
                           "secops.keylifecycle.key_generate", "-a", args],
                          capture_output=True, text=True, check=False,
                          env=runner.env(token.env), cwd=str(runner.tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = runner.journal_records()
    assert [r["event"]["keylifecycle"]["phase"] for r in records] == ["intent"] + ["change"] * 3 + ["outcome"]
    assert records[2]["event"]["key"]["label"] == "adhoc:v1"
