"""Several controllers on one token: the token lease (docs/concurrency.md) through ansible-playbook.

Each "controller" is an ansible-playbook process with its own HOME, ANSIBLE_HOME and controller state directory
(so its own controller-side lock): only the lease on the token keeps them apart. They share the token's audit
journal (a shared file system in practice), because the token names one journal (docs/audit.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import yaml

from tests.conftest import PKCS11_MODULE, REPO, VENV_BIN
from tests.processes import kill_once_stopped

LEASE_APPLICATION = "secops.keylifecycle.lease"

# A lease holder that dies: takes the token's lease with the collection's own code, then stops itself so that the
# test can kill it with SIGKILL while it holds the lease.
HOLDER = REPO / "tests" / "helpers" / "lease_holder.py"


class Controller:
    """One controller: its own home, Ansible home, state directory and inventory; the token's journal."""

    def __init__(self, runner, name):
        self.runner = runner
        self.root = runner.tmp_path / name
        for sub in ("home", "ansible-home", "state", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.journal = runner.journal
        self.inventory = self.root / "inventory.yml"
        self.inventory.write_text(yaml.safe_dump({"hsm": {"hosts": {"test-hsm": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "keylifecycle_audit_journal": str(self.journal)}}}}))

    def start(self, playbook):
        env = self.runner.env({"HOME": str(self.root / "home"), "ANSIBLE_HOME": str(self.root / "ansible-home"),
                               "KEYLIFECYCLE_AUDIT_STATE_DIR": str(self.root / "state"),
                               "ANSIBLE_LOCAL_TEMP": str(self.root / "tmp")})
        return subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory), str(playbook)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=str(self.root))


def check_token(token):
    """One key object per label, one metadata object per revision, no lease left; returns label -> state."""
    objects = token.objects()
    keys = Counter((o["label"], o["class"]) for o in objects if o["class"] in ("SECRET_KEY", "PRIVATE_KEY"))
    assert all(count == 1 for count in keys.values()), keys
    revisions = Counter((o["label"], o["value"]["revision"]) for o in objects
                        if o.get("application") == "secops.keylifecycle")
    assert all(count == 1 for count in revisions.values()), revisions
    assert not [o for o in objects if o.get("application") == LEASE_APPLICATION]
    return {label: value["state"] for label, value in token.metadata().items() if label.startswith("k:")}


def test_two_controllers_rotating_one_due_key_make_one_new_version_ten_times(runner, token, tmp_path):
    runner.task("key_generate", {"name": "k", "rotation_period": "30d"})
    play = [{"hosts": "hsm", "gather_facts": False, "environment": token.env, "tasks": [{
        "name": "rotate what is due", "secops.keylifecycle.key_rotate": dict(token.connection(), all_due=True)}]}]
    playbook = tmp_path / "rotate.yml"
    playbook.write_text(yaml.safe_dump(play))
    controllers = [Controller(runner, "controller-a"), Controller(runner, "controller-b")]
    for round_number in range(1, 11):
        runner.clock.advance(days=31)  # the active version is due again (30 days); both runs see the same clock
        runs = [controller.start(playbook) for controller in controllers]
        outputs = [run.communicate(timeout=600) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        assert sorted("changed=1" in out for out, _err in outputs) == [False, True], (round_number, outputs)
        states = check_token(token)
        expected = {"k:v%d" % n: "deactivated" for n in range(1, round_number + 1)}
        expected["k:v%d" % (round_number + 1)] = "active"
        assert states == expected, (round_number, outputs)
    # each rotation is journaled once, by the controller whose run made it
    rotations = [json.loads(line)["event"] for line in runner.journal.read_text().splitlines()]
    rotations = [e for e in rotations
                 if e["event"]["action"] == "key-rotate" and e["keylifecycle"]["phase"] == "change"]
    assert sorted(e["key"]["version"] for e in rotations) == list(range(2, 12))


def _dead_holder(runner, token):
    """Start a holder on the test's clock, wait until it has stopped itself holding the lease, kill -9 it."""
    proc = subprocess.Popen([sys.executable, str(HOLDER), str(runner.collections_path), PKCS11_MODULE, token.label,
                             str(token.pin_file), "key_rotate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **token.env, **runner.clock.env()})
    holder = proc.stdout.readline().strip()
    kill_once_stopped(proc, "the lease holder")
    assert holder
    return holder


def test_lease_of_a_killed_holder_blocks_until_it_expires_then_is_taken_over(runner, token):
    runner.task("key_generate", {"name": "k", "rotation_period": "30d"})
    runner.clock.advance(days=31)
    holder = _dead_holder(runner, token)
    before = token.objects()
    [lease] = [o for o in before if o.get("application") == LEASE_APPLICATION]
    expires_at = json.loads(bytes.fromhex(lease["value"]))["expires_at"]

    blocked = runner.task("key_rotate", {"name": ["k"], "lease_wait": 2})
    assert blocked.task.get("failed") and blocked.task["error_kind"] == "token_busy", blocked.task
    assert holder in blocked.task["msg"] and expires_at in blocked.task["msg"], blocked.task["msg"]
    assert "Traceback" not in blocked.output
    assert token.objects() == before  # nothing changed
    outcome = runner.journal_records()[-1]["event"]
    assert outcome["keylifecycle"]["phase"] == "outcome" and outcome["error"]["type"] == "token_busy"

    runner.clock.advance(minutes=6)  # past the dead holder's lease (300 s)
    rotated = runner.task("key_rotate", {"name": ["k"], "lease_wait": 2})
    assert rotated.rc == 0 and rotated.task["changed"] is True, rotated.task
    reasons = [e["event"].get("reason", "") for e in rotated.task["audit_events"]]
    assert "lease of %s (mallory@dead-controller) expired at %s, taken over" % (holder, expires_at) in reasons
    assert check_token(token) == {"k:v1": "deactivated", "k:v2": "active"}
    journaled = [r["event"]["event"].get("reason", "") for r in runner.journal_records()]
    assert any(reason.startswith("lease of %s" % holder) for reason in journaled)
