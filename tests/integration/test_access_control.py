"""Who may do what: operator identity and its source, per-action authorization, dual control."""

from __future__ import annotations

import getpass
import sys
import time

import pytest

POLICY = {
    "groups": {"custodians": ["alice", "bob"]},
    "authorization": {"generate": ["group:custodians"], "rotate": ["alice"], "compromise_rotate": ["alice", "bob"],
                      "destroy": ["bob", "carol"]},
    "compromise_requires_approval": True,
}


def as_operator(name):
    """Extra vars that make the action plugin see an AWX job launched by ``name`` (run inside AWX job 4242's
    environment by ``inside_awx_job``)."""
    return ["-e", "awx_user_name=%s" % name, "-e", "awx_job_id=4242"]


@pytest.fixture(autouse=True)
def inside_awx_job(runner, awx_env):
    """A task that names an AWX job user runs with the environment of AWX job 4242: outside an AWX job those
    variables are refused (tests/integration/test_identity.py)."""
    task = runner.task

    def in_awx(module, args, *flags, extra_env=None, **kwargs):
        if any(str(flag).startswith(("awx_user_name=", "tower_user_name=")) for flag in flags):
            extra_env = dict(awx_env, **(extra_env or {}))
        return task(module, args, *flags, extra_env=extra_env, **kwargs)

    runner.task = in_awx


def last_task_records(runner):
    records = runner.journal_records()
    start = max(i for i, r in enumerate(records) if r["event"]["keylifecycle"]["phase"] == "intent")
    return records[start:]


@pytest.mark.parametrize("module,args,action", [
    ("key_generate", {"name": "k2"}, "generate"),
    ("key_rotate", {"name": ["k"], "force": True}, "rotate"),
    ("key_rotate", {"name": ["k"], "force": True, "reason": "compromise", "approved_by": "bob"}, "compromise rotate"),
    ("key_destroy", {"name": "k", "version": 1}, "destroy"),
])
def test_operator_outside_the_policy_is_refused_and_journaled(runner, token, module, args, action):
    runner.task("key_generate", dict(name="k", policy=POLICY), *as_operator("alice"))
    before = token.objects()
    result = runner.task(module, dict(args, policy=POLICY), *as_operator("mallory"))
    assert result.task["failed"] is True
    assert "Operator 'mallory' (awx_job) is not authorized to %s" % action in result.task["msg"]
    assert "policy.authorization." in result.task["msg"]
    assert token.objects() == before  # nothing touched the HSM, not even the checkpoint
    intent, outcome = last_task_records(runner)
    assert intent["event"]["user"]["name"] == "mallory" and intent["event"]["labels"]["operator_source"] == "awx_job"
    assert outcome["event"]["event"]["outcome"] == "failure"
    assert outcome["event"]["error"]["type"] == "not_authorized"


def test_authorized_operators_and_groups(runner, token):
    assert runner.task("key_generate", dict(name="k", policy=POLICY), *as_operator("bob")).task["changed"]
    rotated = runner.task("key_rotate", dict(name=["k"], force=True, policy=POLICY), *as_operator("alice"))
    assert rotated.task["changed"] is True
    assert rotated.task["audit_events"][0]["user"]["name"] == "alice"


def test_dual_control_for_compromise_rotation(runner, token):
    runner.task("key_generate", dict(name="k", policy=POLICY), *as_operator("alice"))
    before = token.key_objects()
    compromise = dict(name=["k"], force=True, reason="compromise", policy=POLICY)
    missing = runner.task("key_rotate", compromise, *as_operator("alice"))
    assert missing.task["failed"] and "requires a second person's approval" in missing.task["msg"]
    same = runner.task("key_rotate", dict(compromise, approved_by="alice"), *as_operator("alice"))
    assert same.task["failed"] and "is the operator" in same.task["msg"]
    outsider = runner.task("key_rotate", dict(compromise, approved_by="carol"), *as_operator("alice"))
    assert outsider.task["failed"] and "'carol' is not authorized to compromise rotate" in outsider.task["msg"]
    assert token.key_objects() == before
    ok = runner.task("key_rotate", dict(compromise, approved_by="bob", change_ref="INC-7"), *as_operator("alice"))
    assert ok.task["changed"] is True, ok.task
    event = [e for e in ok.task["audit_events"] if e["event"]["action"] == "key-rotate"][0]
    assert (event["user"]["name"], event["keylifecycle"]["approved_by"], event["keylifecycle"]["change_ref"]) == \
        ("alice", "bob", "INC-7")


def test_destroy_approver_must_be_authorized(runner, token):
    runner.task("key_generate", {"name": "k", "retention_period": "7d"})
    runner.task("key_rotate", {"name": ["k"], "force": True})
    runner.clock.advance(days=8)
    policy = dict(POLICY, destroy_requires_approval=True)
    refused = runner.task("key_destroy", dict(all_expired=True, policy=policy, approved_by="alice"),
                          *as_operator("bob"))
    assert refused.task["failed"] and "'alice' is not authorized to destroy" in refused.task["msg"]
    done = runner.task("key_destroy", dict(all_expired=True, policy=policy, approved_by="carol"),
                       *as_operator("bob"))
    assert done.task["changed"] is True


@pytest.mark.parametrize("flags,env,operator,source,run_id", [
    (as_operator("carol"), {}, "carol", "awx_job", "awx-4242"),
    ([], {"GITHUB_ACTIONS": "true", "GITHUB_ACTOR": "dave", "GITHUB_RUN_ID": "99", "GITHUB_RUN_ATTEMPT": "2"},
     "dave", "github_actions", "gha-99-2"),
    ([], {"GITLAB_CI": "true", "GITLAB_USER_LOGIN": "erin", "CI_JOB_ID": "5"}, "erin", "gitlab_ci", "gitlab-5"),
    ([], {}, getpass.getuser(), "controller_os_user", None),
])
def test_operator_identity_and_its_source_are_recorded(runner, token, flags, env, operator, source, run_id):
    result = runner.task("key_generate", {"name": "k"}, *flags, extra_env=env)
    assert result.task["changed"] is True
    for record in runner.journal_records():
        assert record["event"]["user"]["name"] == operator
        assert record["event"]["labels"]["operator_source"] == source
        if run_id:
            assert record["event"]["labels"]["run_id"] == run_id


def test_malformed_authorization_policy_is_refused(runner, token):
    result = runner.task("key_generate", {"name": "k", "policy": {"authorization": {"export": ["alice"]}}})
    assert result.task["failed"] and "unknown action(s) export" in result.task["msg"]
    assert token.key_objects() == []


def test_no_pin_in_the_process_list_while_a_task_runs(runner, token):
    """While a key_generate task given the PIN as user_pin runs (held waiting for the token's lease, then a
    100-key batch), `ps` never shows the PIN. The wait makes the sampling independent of the machine's speed."""
    import signal
    import subprocess
    import threading

    from tests.conftest import PKCS11_MODULE, REPO

    module_process = "%s && sleep 0" % sys.executable  # pipelined: the interpreter reading the module from stdin
    seen, done, module_seen = [], threading.Event(), threading.Event()

    def watch():
        while not done.is_set():
            listing = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=False).stdout
            seen.append(listing)
            if sum(module_process in listing for listing in seen) >= 10:
                module_seen.set()
            time.sleep(0.05)

    # holds the token's lease until SIGCONT (tests/helpers/lease_holder.py): the task waits for the lease with
    # its PIN in hand for as long as the test needs, however fast the machine is
    holder = subprocess.Popen([sys.executable, str(REPO / "tests" / "helpers" / "lease_holder.py"),
                               str(runner.collections_path), PKCS11_MODULE, token.label, str(token.pin_file),
                               "key_generate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**token.env, "PATH": "/usr/bin:/bin"})
    assert holder.stdout.readline().strip(), holder.stderr.read()
    watcher = threading.Thread(target=watch)
    watcher.start()
    result = {}
    args = {"pkcs11_module": token.connection()["pkcs11_module"], "token_label": token.label,
            "user_pin": token.user_pin, "keys": [{"name": "k%03d" % n} for n in range(100)], "lease_wait": 600}
    task = threading.Thread(target=lambda: result.update(play=runner.task(
        "key_generate", args, connection=False, extra_env={"ANSIBLE_PIPELINING": "1"})))
    task.start()
    try:
        assert module_seen.wait(300), "the module never showed in the process list"
    finally:
        holder.send_signal(signal.SIGCONT)  # the holder releases the lease; the task goes on
        holder.wait(60)
        task.join(600)
        done.set()
        watcher.join()
    assert result["play"].task["changed"] is True, result["play"].task
    assert not [listing for listing in seen if token.user_pin in listing]


def test_operator_override_only_where_policy_permits_and_recorded_as_such(runner, token):
    """keylifecycle_operator names the operator only with policy.allow_operator_override; both names recorded."""
    override = ["-e", "keylifecycle_operator=alice"]
    refused = runner.task("key_generate", dict(name="k", policy=POLICY), *override)
    assert refused.task["failed"] and "policy.allow_operator_override is false" in refused.task["msg"], refused.task
    assert "the operator is %r (controller_os_user)" % getpass.getuser() in refused.task["msg"]
    assert token.key_objects() == []
    intent, outcome = last_task_records(runner)
    assert outcome["event"]["error"]["type"] == "override_not_permitted"
    assert intent["event"]["keylifecycle"]["resolved_operator"] == {"name": getpass.getuser(),
                                                                    "source": "controller_os_user"}
    # check mode is refused the same way (and journals nothing)
    count = len(runner.journal_records())
    checked = runner.task("key_generate", dict(name="k", policy=POLICY), "--check", *override)
    assert checked.task["failed"] and "allow_operator_override" in checked.task["msg"]
    assert len(runner.journal_records()) == count

    permissive = dict(POLICY, allow_operator_override=True)
    # bob (an AWX user and a custodian himself) acts on behalf of alice
    allowed = runner.task("key_generate", dict(name="k", policy=permissive), *override, *as_operator("bob"))
    assert allowed.task["changed"] is True, allowed.task
    records = last_task_records(runner)
    assert records and all(r["event"]["user"]["name"] == "alice" for r in records)
    assert all(r["event"]["labels"]["operator_source"] == "override" for r in records)
    assert all(r["event"]["keylifecycle"]["resolved_operator"] == {"name": "bob", "source": "awx_job"}
               for r in records)
    # the override is still subject to authorization: mallory is not a custodian
    denied = runner.task("key_generate", dict(name="k2", policy=permissive), "-e", "keylifecycle_operator=mallory",
                         *as_operator("bob"))
    assert denied.task["failed"] and "Operator 'mallory' (override) is not authorized" in denied.task["msg"]
    # and the identity running the task must be authorized itself: an AWX user outside the policy cannot act
    # by naming a custodian
    borrowed = runner.task("key_generate", dict(name="k3", policy=permissive), *override, *as_operator("mallory"))
    assert borrowed.task["failed"] and "'mallory' (awx_job), is not itself authorized" in borrowed.task["msg"]
    assert "k3:v1" not in token.metadata()
