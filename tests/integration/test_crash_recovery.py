"""kill -9 at each step of a rotation or a destruction, then re-run: the token converges and the repair is audited."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import PKCS11_MODULE, REPO
from tests.processes import kill_once_stopped

CRASHER = REPO / "tests" / "helpers" / "crash_step.py"


def kill_at(runner, operation, method, when, nth):
    """Start the step runner (on the test's clock), wait until it stops itself at the step, then SIGKILL it."""
    token = runner.token
    proc = subprocess.Popen([sys.executable, str(CRASHER), str(runner.collections_path), PKCS11_MODULE, token.label,
                             str(token.pin_file), operation, "k", method, when, str(nth)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **token.env, **runner.clock.env()})
    kill_once_stopped(proc, "the step runner")


def states(runner):
    info = runner.task("key_info", {"name": ["k"]}).task
    return {v["version"]: v["state"] for v in info["key_versions"]}, info["anomalies"]


ROTATION_STEPS = [
    ("_write_metadata", "before", 1, "key object of v2 made, its metadata not"),
    ("set_usage", "before", 1, "v2 complete, v1 still active"),
    ("update_metadata", "before", 1, "v1 usages off, its metadata still active"),
]


@pytest.mark.parametrize("method,when,nth,situation", ROTATION_STEPS, ids=[s[3] for s in ROTATION_STEPS])
def test_rotation_killed_then_rerun_converges(runner, token, collections_path, method, when, nth, situation):
    runner.task("key_generate", {"name": "k"})
    kill_at(runner, "rotate", method, when, nth)
    rerun = runner.task("key_rotate", {"name": ["k"], "force": True})
    assert rerun.rc == 0 and rerun.task["changed"] is True, rerun.task
    after, anomalies = states(runner)
    assert anomalies == []
    assert list(after.values()).count("active") == 1, after
    assert set(after.values()) <= {"active", "deactivated"}
    # every version that has a key object is on record, and every record's key objects are there
    labels = {o["label"] for o in token.key_objects() if o["class"] == "SECRET_KEY"}
    assert labels == {"k:v%d" % v for v in after}
    # what the crash left was repaired, and the repair is in the journal
    reasons = [r["event"]["event"].get("reason", "") for r in runner.journal_records()]
    assert any(reason.startswith("repair") for reason in reasons), reasons


def test_destruction_killed_then_rerun_converges(runner, token, collections_path):
    runner.task("key_generate", {"name": "k", "retention_period": "7d"})
    runner.task("key_rotate", {"name": ["k"], "force": True})
    runner.clock.advance(days=8)
    kill_at(runner, "destroy", "update_metadata", "before", 1)  # objects gone, tombstone not yet
    assert not [o for o in token.key_objects() if o["label"] == "k:v1" and o["class"] == "SECRET_KEY"]
    _state, anomalies = states(runner)
    assert anomalies and "key object is missing" in anomalies[0]["problem"]  # reported, not hidden
    rerun = runner.task("key_destroy", {"all_expired": True})
    assert rerun.rc == 0 and rerun.task["destroyed"][0]["verified_absent"] is True
    after, anomalies = states(runner)
    assert after == {1: "destroyed", 2: "active"} and anomalies == []


def test_first_generation_killed_then_rerun_converges(runner, token, collections_path):
    """A key_generate cut short between C_GenerateKey and its metadata: the re-run removes the half-made v1."""
    kill_at_generation = [sys.executable, "-c", (
        "import os, signal, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from ansible_collections.secops.keylifecycle.plugins.module_utils import _key_store\n"
        "from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import ConnectionSettings, open_session\n"
        "from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import build_key_spec, utc_now\n"
        "from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE\n"
        "_key_store.TokenKeyStore._write_metadata = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        "settings = ConnectionSettings(sys.argv[2], sys.argv[3], user_pin_file=sys.argv[4])\n"
        "with open_session(settings) as session:\n"
        "    store = _key_store.TokenKeyStore(session, sys.argv[3]).load()\n"
        "    store.generate(build_key_spec({'name': 'k'}, BASELINE), 1, 'crash-test', utc_now())\n"
    ), str(collections_path), PKCS11_MODULE, token.label, str(token.pin_file)]
    proc = subprocess.run(kill_at_generation, env={**os.environ, **token.env}, check=False, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    _state, anomalies = states(runner)
    assert anomalies and "without a metadata object" in anomalies[0]["problem"]
    rerun = runner.task("key_generate", {"name": "k"})
    assert rerun.task["changed"] is True
    after, anomalies = states(runner)
    assert after == {2: "active"} and anomalies == []
    reasons = [e["event"].get("reason") for e in rerun.task["audit_events"]]
    assert "repair: removed half-made version" in reasons
