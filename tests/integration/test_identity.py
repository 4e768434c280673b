"""Identity (issue 14, item 5), through ansible-playbook on a real token: the AWX job variables count only inside an
AWX / Automation Platform job run; anywhere else the task is refused, journaled, and the token is unchanged.

An AWX job run is recognised by the environment AWX and ansible-runner give ansible-playbook (JOB_ID, AWX_HOST,
ANSIBLE_STDOUT_CALLBACK=awx_display, AWX_ISOLATED_DATA_DIR; docs/access-control.md, "Identity"). The tests give that
environment through ``extra_env``, with a stand-in for ansible-runner's ``awx_display`` stdout callback (ansible-runner
is not installed here), so ansible-playbook can load the callback the environment names.
"""

from __future__ import annotations

import getpass
import hashlib
import json

import pytest


def _last_task(runner):
    records = runner.journal_records()
    start = max(i for i, r in enumerate(records) if r["event"]["keylifecycle"]["phase"] == "intent")
    return records[start:]


def _unsigned_digest(policy):
    """keylifecycle.policy.sha256 of an unsigned policy, computed here: SHA-256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(policy, sort_keys=True, separators=(",", ":")).encode("ascii")).hexdigest()


@pytest.mark.parametrize("flags", [
    ("-e", "awx_user_name=alice"),
    ("-e", "awx_user_name=alice", "-e", "awx_job_id=4242"),
    ("-e", "tower_user_name=alice", "-e", "tower_job_id=4242"),
])
def test_awx_identity_outside_awx_is_refused_journaled_and_the_token_unchanged(runner, token, flags):
    assert runner.task("key_generate", {"name": "k"}).task["changed"] is True
    before, journaled = token.objects(), len(runner.journal_records())
    refused = runner.task("key_rotate", {"name": ["k"], "force": True}, *flags)
    assert refused.task["failed"] is True and refused.task["error_kind"] == "identity_not_permitted", refused.task
    assert "count only inside an AWX / Automation Platform job run" in refused.task["msg"]
    assert "JOB_ID" in refused.task["msg"] and "alice" in refused.task["msg"]
    assert "the refusal is journaled" in refused.task["msg"]
    assert token.objects() == before  # nothing was sent to the HSM, not even a checkpoint
    intent, outcome = _last_task(runner)
    assert len(runner.journal_records()) == journaled + 2
    # the records name who really ran the play, not the user the variables assert
    for record in (intent, outcome):
        assert record["event"]["user"]["name"] == getpass.getuser()
        assert record["event"]["labels"]["operator_source"] == "controller_os_user"
        assert not record["event"]["labels"]["run_id"].startswith("awx-")
    assert intent["event"]["keylifecycle"]["phase"] == "intent"
    assert intent["event"]["keylifecycle"]["policy"] == {"sha256": _unsigned_digest({}), "signed": False}
    assert outcome["event"]["event"]["outcome"] == "failure"
    assert outcome["event"]["error"]["type"] == "identity_not_permitted"


def test_awx_identity_outside_awx_is_refused_in_check_mode_too(runner, token):
    runner.task("key_generate", {"name": "k"})
    journaled = len(runner.journal_records())
    checked = runner.task("key_rotate", {"name": ["k"], "force": True}, "--check", "-e", "awx_user_name=alice")
    assert checked.task["failed"] is True and checked.task["error_kind"] == "identity_not_permitted", checked.task
    assert len(runner.journal_records()) == journaled  # check mode journals nothing


def test_inside_an_awx_job_the_job_user_acts_and_is_journaled(runner, token, awx_env):
    policy = {"min_rsa_bits": 3072}
    done = runner.task("key_generate", {"name": "k", "policy": policy}, "-e", "awx_user_name=alice",
                       "-e", "awx_job_id=4242", extra_env=awx_env)
    assert done.task["changed"] is True, done.output
    records = _last_task(runner)
    assert records[0]["event"]["keylifecycle"]["phase"] == "intent" and len(records) >= 3
    for record in records:
        assert record["event"]["user"]["name"] == "alice", record
        assert record["event"]["labels"]["operator_source"] == "awx_job"
        assert record["event"]["labels"]["run_id"] == "awx-4242"
    assert records[0]["event"]["keylifecycle"]["policy"] == {"sha256": _unsigned_digest(policy), "signed": False}
    assert records[-1]["event"]["event"]["outcome"] == "success"


def test_inside_an_awx_job_another_jobs_number_is_refused(runner, token, awx_env):
    runner.task("key_generate", {"name": "k"})
    before = token.objects()
    refused = runner.task("key_rotate", {"name": ["k"], "force": True}, "-e", "awx_user_name=alice",
                          "-e", "awx_job_id=1", extra_env=awx_env)
    assert refused.task["failed"] is True and refused.task["error_kind"] == "identity_not_permitted", refused.task
    assert "JOB_ID=4242" in refused.task["msg"]
    assert token.objects() == before
    assert _last_task(runner)[-1]["event"]["error"]["type"] == "identity_not_permitted"
