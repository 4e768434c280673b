"""The token lease (_token_lease) on a real token: contenders in separate processes, expiry, renewal, release,
and the repair of two keys left under one label (_version_repair.repair_duplicates)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

from tests.conftest import PKCS11_MODULE

# A contender in its own process: the collection imported from the source path, as in-process tests do.
CONTENDER = r"""
import json, os, signal, sys, time
root, module, label, pin_file, mode, wait, log = sys.argv[1:8]
sys.path.insert(0, root)
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import TokenBusy
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import ConnectionSettings
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_lease import TokenLease
settings = ConnectionSettings(pkcs11_module=module, token_label=label, user_pin_file=pin_file)
if mode == "rounds":  # take the lease 5 times; log enter/exit with O_APPEND (one write each)
    for _round in range(5):
        lease = TokenLease(settings, "test", "tester").acquire(int(wait))
        if True:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, ("enter %d\n" % os.getpid()).encode())
            time.sleep(0.05)
            os.write(fd, ("exit %d\n" % os.getpid()).encode())
            os.close(fd)
        lease.release()
    sys.exit(0)
said = []
def announce_then_sleep(seconds):  # "waiting" once the first look found the lease held: the test can go on
    if not said:
        print("waiting", flush=True)
        said.append(True)
    time.sleep(seconds)
try:
    lease = TokenLease(settings, "test", "tester", sleep=announce_then_sleep).acquire(int(wait))
except TokenBusy as exc:
    print("busy", exc, flush=True)
    sys.exit(3)
print("acquired", lease.holder, flush=True)
if mode == "stop":  # a holder that dies: the test kills it with SIGKILL while it is stopped
    os.kill(os.getpid(), signal.SIGSTOP)
elif mode == "hold":  # hold until told to go on (a line on stdin)
    sys.stdin.readline()
lease.release()
print("released", flush=True)
"""


def _contender(source_collection, hsm_token, mode, wait=0, log="-", stdin=None):
    return subprocess.Popen([sys.executable, "-c", CONTENDER, str(source_collection), PKCS11_MODULE, hsm_token.label,
                             str(hsm_token.pin_file), mode, str(wait), str(log)],
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))


def _leases(hsm_token):
    """The lease documents on the token, read by the independent reader."""
    return [json.loads(bytes.fromhex(o["value"])) for o in hsm_token.objects()
            if o.get("application") == "secops.keylifecycle.lease"]


def _open(settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_session

    return open_session(settings)


def _lease(settings, clock=None, **kwargs):
    """A lease of this process (it opens sessions of its own: none may be open while it is taken)."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_lease import TokenLease

    if clock is not None:
        kwargs.update(clock=clock, monotonic=clock, sleep=lambda _s: None)
    return TokenLease(settings, "key_rotate", "alice", host="hsm-host", **kwargs)


def _errors():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _errors

    return _errors


def _wait_stopped(proc):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open("/proc/%d/stat" % proc.pid, encoding="ascii") as handle:
            if handle.read().split(") ", 1)[1].startswith("T"):
                return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    pytest.fail("the contender did not stop")


def test_a_held_lease_refuses_another_process_then_passes_on(settings, hsm_token, source_collection):
    holder = _contender(source_collection, hsm_token, "hold", stdin=subprocess.PIPE)
    first = holder.stdout.readline().split()
    assert first[0] == "acquired", holder.communicate()
    refused = _contender(source_collection, hsm_token, "once", wait=0)
    out, err = refused.communicate(timeout=60)
    assert refused.returncode == 3, out + err
    assert first[1] in out and "busy" in out and "nothing was changed" in out
    assert [d["holder"] for d in _leases(hsm_token)] == [first[1]]  # the refused contender left nothing
    waiting = _contender(source_collection, hsm_token, "once", wait=60)
    assert waiting.stdout.readline().strip() == "waiting", waiting.communicate()  # it found the lease held
    holder.stdin.write("go\n")
    holder.stdin.flush()
    assert holder.communicate(timeout=60)[0].strip() == "released"
    out, err = waiting.communicate(timeout=90)
    assert waiting.returncode == 0 and "acquired" in out, out + err
    assert _leases(hsm_token) == []


def test_two_processes_contending_never_hold_the_lease_at_once(settings, hsm_token, source_collection, tmp_path):
    log = tmp_path / "critical.log"
    procs = [_contender(source_collection, hsm_token, "rounds", wait=120, log=log) for _n in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, out + err
    lines = log.read_text().splitlines()
    assert len(lines) == 20
    for enter, leave in zip(lines[::2], lines[1::2]):  # every enter is followed by the same process's exit
        assert enter.startswith("enter ") and leave == "exit " + enter.split()[1], lines
    assert _leases(hsm_token) == []


def test_lease_of_a_killed_holder_blocks_until_it_expires_then_is_taken_over(settings, hsm_token, source_collection):
    proc = _contender(source_collection, hsm_token, "stop")
    holder = proc.stdout.readline().split()[1]
    _wait_stopped(proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    [left] = _leases(hsm_token)
    assert left["holder"] == holder and left["pid"] == proc.pid
    expires = datetime.fromisoformat(left["expires_at"]).timestamp()
    with pytest.raises(_errors().TokenBusy) as busy:
        _lease(settings, clock=lambda: expires - 1).acquire(0)
    assert holder in str(busy.value) and left["expires_at"] in str(busy.value)
    assert [d["holder"] for d in _leases(hsm_token)] == [holder]  # nothing changed
    lease = _lease(settings, clock=lambda: expires + 1).acquire(0)
    assert [d["holder"] for d in lease.takeovers] == [holder]
    assert [d["holder"] for d in _leases(hsm_token)] == [lease.holder]
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext

    [event] = lease.takeover_events(AuditContext("alice", "test", "run-1", host="h"), "key-rotate")
    assert event["event"]["reason"].startswith("lease of %s" % holder)
    assert "expired at %s, taken over" % left["expires_at"] in event["event"]["reason"]
    lease.release()
    assert _leases(hsm_token) == []


def test_renewal_past_a_third_of_the_time_and_refusal_once_expired(settings, hsm_token):
    now = [1_000_000.0]
    lease = _lease(settings, clock=lambda: now[0]).acquire(0)
    with _open(settings) as session:
        lease.attach(session)
        now[0] += 50
        lease.check()  # not yet a third of 300 s: nothing written
        assert [d["revision"] for d in _leases(hsm_token)] == [1]
        now[0] += 60
        lease.check()
        [renewed] = _leases(hsm_token)  # a new revision, the previous object destroyed
        assert renewed["revision"] == 2 and renewed["holder"] == lease.holder
        assert datetime.fromisoformat(renewed["expires_at"]).timestamp() == 1_000_110 + 300
        now[0] += 301
        with pytest.raises(_errors().TokenBusy, match="expired"):
            lease.check()
    lease.release()
    assert _leases(hsm_token) == []


def test_lease_is_released_on_error_and_check_mode_takes_none(settings, hsm_token):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_lease import lifecycle_lease

    class Module:
        _name = "secops.keylifecycle.key_rotate"
        check_mode = False
        params = {"lease_wait": 0}

    context = AuditContext("alice", "test", "run-1", host="h")
    with pytest.raises(_errors().KeyNotFound):
        with lifecycle_lease(settings, Module(), context) as lease, _open(settings) as session:
            lease.attach(session)
            assert lease.held and len(_leases(hsm_token)) == 1
            raise _errors().KeyNotFound("boom")
    assert _leases(hsm_token) == []
    Module.check_mode = True
    with lifecycle_lease(settings, Module(), context) as lease:
        assert not lease.held and _leases(hsm_token) == []
    Module.check_mode, Module.params = False, {"lease_wait": -1}
    with pytest.raises(_errors().InvalidOption, match="lease_wait"):
        with lifecycle_lease(settings, Module(), context):
            pass


def test_two_keys_under_one_label_are_repaired_without_losing_either(settings, hsm_token):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_store import TokenKeyStore
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import build_key_spec, utc_now
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE
    from ansible_collections.secops.keylifecycle.plugins.module_utils._version_repair import repair_duplicates

    spec = build_key_spec({"name": "k", "usage": ["encrypt", "decrypt"]}, BASELINE)
    context = AuditContext("alice", "test", "run-1", host="h")
    with _open(settings) as session:
        TokenKeyStore(session, settings.token_label).load().generate(spec, 1, "alice", utc_now())
        # two runs that both generated v2 (as before the lease): two keys and two metadata revisions 1 under k:v2
        ids = [TokenKeyStore(session, settings.token_label).load().generate(spec, 2, "alice", utc_now()).key_id
               for _run in range(2)]
        store = TokenKeyStore(session, settings.token_label).load()
        assert any("more than one key object" in a.problem for a in store.anomalies)
        kept = store.version("k", 2).key_id
        events = repair_duplicates(store, context, "key-rotate")
        again = repair_duplicates(TokenKeyStore(session, settings.token_label).load(), context, "key-rotate")
        clean = TokenKeyStore(session, settings.token_label).load()
        clean.versions("k")
        assert clean.anomalies == [] and again == []
    keys = {o["label"]: o for o in hsm_token.objects() if o["class"] == "SECRET_KEY"}
    assert sorted(keys) == ["k:v1", "k:v2", "k:v3"]
    assert keys["k:v2"]["id"] == kept and sorted([keys["k:v2"]["id"], keys["k:v3"]["id"]]) == sorted(ids)
    assert keys["k:v3"]["encrypt"] is False and keys["k:v3"]["decrypt"] is True  # deactivated, still decrypts
    docs = [(o["label"], o["value"]["revision"]) for o in hsm_token.objects()
            if o.get("application") == "secops.keylifecycle"]
    assert len(docs) == len(set(docs)), docs  # one metadata object per revision
    meta = hsm_token.metadata()
    assert meta["k:v2"]["id"] == kept and meta["k:v2"]["state"] == "active"
    assert meta["k:v3"]["id"] != kept and meta["k:v3"]["state"] == "deactivated"
    assert meta["k:v3"]["transitions"][-1]["reason"] == "repair: duplicate label"
    assert [(e["key"]["label"], e["event"]["reason"]) for e in events] == [("k:v3", "repair: duplicate label")]
    assert events[0]["key"]["previous_version"] == 2


def test_a_lease_running_out_after_the_work_keeps_the_works_changes_in_the_failure(settings, hsm_token):
    """lease.check() after the work refuses to go on (TokenBusy) when the lease expired meanwhile; the work's changes
    are on the token, so the failure carries their events (journaled by the action plugin), changed, and names them."""
    import time
    from types import SimpleNamespace

    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event, key_section
    from ansible_collections.secops.keylifecycle.plugins.module_utils._lifecycle_module import run_lifecycle_module
    from tests.hsm.test_key_store import _now, _spec

    class Failed(Exception):
        pass

    class Module:
        _name = "secops.keylifecycle.key_generate"
        check_mode = _diff = False
        params = {"pkcs11_module": settings.pkcs11_module, "token_label": settings.token_label,
                  "user_pin_file": settings.user_pin_file, "user_pin": None, "lease_wait": 0, "policy": None,
                  "audit_context": {"operator": "alice", "operator_source": "test", "run_id": "run-1"},
                  "return_records": None}

        def fail_json(self, **result):
            raise Failed(result)

        def exit_json(self, **result):
            raise AssertionError("the task succeeded: %r" % result)

    def work(store, policy, context):
        version = store.generate(_spec(name="made"), 1, context.operator, _now())
        store.lease.clock = lambda: time.time() + 10 * 300  # the lease runs out while the work finishes
        event = build_event("key-generate", "success", context, key=key_section(version, store.token_label))
        return SimpleNamespace(changed=True, audit_events=[event], diff=None), {}

    with pytest.raises(Failed) as failed:
        run_lifecycle_module(Module(), work, anchor=False)
    result = failed.value.args[0]
    assert result["error_kind"] == "token_busy" and result["changed"] is True, result
    assert [event["key"]["label"] for event in result["audit_events"]] == ["made:v1"]
    assert "expired" in result["msg"] and "still changed the token (key-generate made:v1)" in result["msg"]
    assert [o["label"] for o in hsm_token.objects() if o["class"] == "SECRET_KEY"] == ["made:v1"]
