"""key_rotate through ansible-playbook: the token refuses encrypt with the old version, which still decrypts."""

from __future__ import annotations

NONCE = bytes(range(12))
SAMPLE = b"cardholder data, encrypted under v1"


def states(token):
    return {label: value["state"] for label, value in token.metadata().items()
            if not label.startswith(("audit-", "package-signing:"))}


def secret(token, label):
    return [o for o in token.objects() if o["class"] == "SECRET_KEY" and o["label"] == label][0]


def test_rotate_lifecycle(runner, token):
    runner.task("key_generate", {"name": "k", "usage": ["encrypt", "decrypt"], "retention_period": "30d"})
    ok, ciphertext = token.gcm("encrypt", "k:v1", NONCE, SAMPLE)
    assert ok, ciphertext
    v1 = secret(token, "k:v1")

    # not due: all_due changes nothing
    idle = runner.task("key_rotate", {"all_due": True})
    assert idle.task["changed"] is False and idle.task["plan"][0]["action"] == "none"

    # check mode: the plan, nothing on the token
    before = token.key_objects()
    check = runner.task("key_rotate", {"name": ["k"], "force": True}, "--check", "--diff")
    assert check.task["changed"] is True
    assert check.task["plan"][0]["from_version"] == 1 and check.task["plan"][0]["to_version"] == 2
    assert token.key_objects() == before

    # apply
    apply = runner.task("key_rotate", {"name": ["k"], "force": True, "reason": "manual"})
    assert apply.task["changed"] is True, apply.task
    rotated = apply.task["rotated"][0]
    v2 = secret(token, "k:v2")
    assert (rotated["old_id"], rotated["new_id"]) == (v1["id"], v2["id"])
    assert rotated["old_state"] == "deactivated" and rotated["retain_until"]
    assert states(token) == {"k:v1": "deactivated", "k:v2": "active"}
    old = secret(token, "k:v1")
    assert old["encrypt"] is False and old["decrypt"] is True and old["sensitive"] is True
    assert v2["encrypt"] is True and v2["sensitive"] is True and v2["extractable"] is False
    event = [e for e in apply.task["audit_events"] if e["event"]["action"] == "key-rotate"][0]
    assert event["key"]["id"] == v2["id"] and event["key"]["previous_id"] == v1["id"]
    assert event["event"]["reason"] == "manual"

    # the old version still decrypts the sample and can no longer encrypt; the new one encrypts
    assert token.gcm("decrypt", "k:v1", NONCE, bytes.fromhex(ciphertext)) == (True, SAMPLE.hex())
    refused, error = token.gcm("encrypt", "k:v1", NONCE, SAMPLE)
    assert refused is False and "0x68" in error
    assert token.gcm("encrypt", "k:v2", NONCE, SAMPLE)[0] is True

    # check again and apply again: nothing due
    again = runner.task("key_rotate", {"all_due": True}, "--check")
    assert again.task["changed"] is False
    final = runner.task("key_rotate", {"all_due": True})
    assert final.task["changed"] is False and states(token) == {"k:v1": "deactivated", "k:v2": "active"}


def test_due_rotation_and_journal(runner, token):
    runner.task("key_generate", {"keys": [{"name": "fast", "rotation_period": "30d"}, {"name": "slow"}]})
    runner.clock.advance(days=29)
    assert runner.task("key_rotate", {"all_due": True}).task["changed"] is False  # not due yet
    runner.clock.advance(days=1, minutes=1)
    before = len(runner.journal_records())
    result = runner.task("key_rotate", {"all_due": True})
    assert [(r["name"], r["new_version"]) for r in result.task["rotated"]] == [("fast", 2)]
    assert states(token)["slow:v1"] == "active"
    records = runner.journal_records()[before:]
    rotate = [r for r in records if r["event"]["event"]["action"] == "key-rotate"]
    assert [r["event"]["keylifecycle"]["phase"] for r in rotate] == ["intent", "change", "outcome"]
    assert rotate[1]["event"]["key"]["previous_version"] == 1


def test_compromise_rotation(runner, token):
    runner.task("key_generate", {"name": "k"})
    ok, ciphertext = token.gcm("encrypt", "k:v1", NONCE, SAMPLE)
    result = runner.task("key_rotate", {"name": ["k"], "force": True, "reason": "compromise",
                                        "policy": {"compromise_disables_decrypt": True}})
    assert result.task["rotated"][0]["old_state"] == "compromised"
    assert states(token) == {"k:v1": "compromised", "k:v2": "active"}
    assert token.gcm("decrypt", "k:v1", NONCE, bytes.fromhex(ciphertext))[0] is False
    assert secret(token, "k:v1")["decrypt"] is False


def test_bad_input(runner, token):
    runner.task("key_generate", {"name": "k"})
    before = token.key_objects()
    unknown = runner.task("key_rotate", {"name": ["ghost"], "force": True})
    assert unknown.task["failed"] and "ghost (not on the token)" in unknown.task["msg"]
    assert unknown.task["error_option"] == "name"
    both = runner.task("key_rotate", {"name": ["k"], "all_due": True})
    assert both.task["failed"] and "mutually exclusive" in both.task["msg"]
    reason = runner.task("key_rotate", {"name": ["k"], "reason": "whim"})
    assert reason.task["failed"] and "reason" in reason.task["msg"]
    too_long = runner.task("key_rotate", {"name": ["k"], "policy": {"max_rotation_period": "500d"}})
    assert too_long.task["failed"] and "may only tighten" in too_long.task["msg"]
    assert token.key_objects() == before


def test_two_concurrent_scheduled_rotations_make_one_new_version(runner, token, tmp_path):
    """Two ansible-playbook runs rotating the same due key at once: the controller lock lets one rotate."""
    import subprocess

    import yaml

    from tests.conftest import VENV_BIN

    runner.task("key_generate", {"name": "k", "rotation_period": "30d"})
    runner.clock.advance(days=31)  # due now; the new version is not due for 30 days, however long the runs take
    play = [{"hosts": "hsm", "gather_facts": False, "environment": token.env, "tasks": [{
        "name": "rotate what is due", "secops.keylifecycle.key_rotate": dict(token.connection(), all_due=True)}]}]
    path = tmp_path / "rotate.yml"
    path.write_text(yaml.safe_dump(play))
    command = [str(VENV_BIN / "ansible-playbook"), "-i", str(runner.inventory), str(path)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=runner.env(), cwd=str(tmp_path)) for _n in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert states(token) == {"k:v1": "deactivated", "k:v2": "active"}
    assert sorted("changed=1" in out for out, _err in outputs) == [False, True]
    # it was due: recorded as scheduled; a forced rotation of a key that is not due is recorded as manual
    rotations = [r["event"] for r in runner.journal_records() if r["event"]["event"]["action"] == "key-rotate"
                 and r["event"]["keylifecycle"]["phase"] == "change"]
    assert [e["event"]["reason"] for e in rotations] == ["scheduled"]
    forced = runner.task("key_rotate", {"name": ["k"], "force": True})
    assert forced.task["audit_events"][0]["event"]["reason"] == "manual"


def test_deactivated_signing_key_cannot_sign(runner, token):
    """An EC signing key after rotation: the token refuses C_Sign with the old private key; the new one signs."""
    import subprocess
    import sys

    from tests.conftest import PKCS11_MODULE

    runner.task("key_generate", {"name": "s", "type": "ec", "usage": ["sign", "verify"]})
    runner.task("key_rotate", {"name": ["s"], "force": True})
    sign = (
        "import sys, pkcs11\n"
        "from pkcs11 import Mechanism, ObjectClass\n"
        "import pkcs11._pkcs11 as native\n"
        "tok = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])\n"
        "with tok.open(user_pin=open(sys.argv[3]).read().strip()) as s:\n"
        "    key = s.get_key(object_class=ObjectClass.PRIVATE_KEY, label=sys.argv[4])\n"
        "    # give the object a sign() whatever its CKA_SIGN says, so that the token decides\n"
        "    key = type('PrivateKey', (native.PrivateKey, native.SignMixin, native.Object), {})(key.wrapper)\n"
        "    try:\n"
        "        key.sign(bytes(32), mechanism=Mechanism.ECDSA)\n"
        "    except pkcs11.exceptions.PKCS11Error as exc:\n"
        "        print('refused', exc); sys.exit(3)\n"
        "    print('signed')\n"
    )

    def try_sign(label):
        return subprocess.run([sys.executable, "-c", sign, PKCS11_MODULE, token.label, str(token.pin_file), label],
                              capture_output=True, text=True, check=False, env={**token.env, "PATH": "/usr/bin:/bin"})

    old, new = try_sign("s:v1"), try_sign("s:v2")
    assert old.returncode == 3 and "0x68" in old.stdout, old.stdout + old.stderr
    assert new.returncode == 0 and "signed" in new.stdout, new.stdout + new.stderr


def test_a_refusal_on_an_empty_token_says_what_the_task_still_changed(runner, token):
    # the token's first task pins its journal and generates the audit-checkpoint key before its own work; when that
    # work is refused, the result is changed and the message says what was done, instead of "nothing changed" alone
    refused = runner.task("key_rotate", {"name": ["missing"], "force": True})
    assert refused.task.get("failed") and refused.task["error_kind"] == "key_not_found", refused.task
    assert refused.task["changed"] is True
    assert ("Before that, this task still changed the token (key-generate audit-checkpoint:v1 (audit checkpoint signing "
            "key))") in refused.task["msg"]
    assert [event["event"]["action"] for event in refused.task["audit_events"]][:1] == ["key-generate"]
    assert [o["label"] for o in token.objects() if o["class"] == "PRIVATE_KEY"] == ["audit-checkpoint:v1"]
    # the token pinned the refused task's intent, and the failure returned that checkpoint, which the journal
    # records: the next task proves its journal from there (before, every later task was refused, journal_rewritten)
    assert refused.task["audit_checkpoint"]["seq"] == 1
    checkpoints = [r for r in runner.journal_records() if r["event"]["event"]["action"] == "audit-checkpoint"]
    assert [r["event"]["keylifecycle"]["checkpoint"]["seq"] for r in checkpoints] == [1]
    after = runner.task("key_generate", {"name": "k"})
    assert not after.task.get("failed") and after.task["changed"], after.task


def test_a_bad_key_name_is_refused_before_the_token_is_opened(runner, token):
    # on an empty token too: nothing pinned, no signing key generated, nothing journaled but the refusal
    for module, args in (("key_destroy", {"name": "bad/name", "version": 1}),
                         ("key_destroy", {"name": "k", "version": 0}),
                         ("key_rotate", {"name": ["ok", "bad/name"], "force": True})):
        refused = runner.task(module, args)
        assert refused.task.get("failed") and refused.task["error_kind"] == "invalid_option", refused.task
        assert refused.task["error_option"] in ("name", "version") and not refused.task["changed"], refused.task
        assert token.objects() == [], (module, args)
    assert not runner.task("key_generate", {"name": "k"}).task.get("failed")
