"""key_destroy through ansible-playbook: refused inside retention, then C_DestroyObject verified by two readers."""

from __future__ import annotations

import getpass

from tests.integration.test_key_rotate import NONCE, SAMPLE, states


def test_full_lifecycle_to_destruction(runner, token):
    runner.task("key_generate", {"name": "k", "retention_period": "30d"})
    ok, ciphertext = token.gcm("encrypt", "k:v1", NONCE, SAMPLE)
    assert ok
    rotate = runner.task("key_rotate", {"name": ["k"], "force": True})
    old_id = rotate.task["rotated"][0]["old_id"]
    assert token.gcm("decrypt", "k:v1", NONCE, bytes.fromhex(ciphertext)) == (True, SAMPLE.hex())
    assert token.gcm("encrypt", "k:v1", NONCE, SAMPLE)[0] is False
    assert token.gcm("encrypt", "k:v2", NONCE, SAMPLE)[0] is True

    # inside retention: refused, message names retain_until, token unchanged
    before = token.key_objects()
    early = runner.task("key_destroy", {"name": "k", "version": 1})
    assert early.task["failed"] and "retain_until is" in early.task["msg"]
    assert early.task["error_option"] == "retain_until"
    assert token.key_objects() == before
    active = runner.task("key_destroy", {"name": "k", "version": 2})
    assert active.task["failed"] and "k:v2 is active" in active.task["msg"]

    # a day before retention ends: still refused
    runner.clock.advance(days=29)
    assert runner.task("key_destroy", {"all_expired": True}).task["changed"] is False
    assert token.key_objects() == before
    runner.clock.advance(days=1, minutes=1)  # retention over (30 days from the rotation that deactivated v1)
    check = runner.task("key_destroy", {"all_expired": True}, "--check")
    assert check.task["changed"] is True and [p["action"] for p in check.task["plan"]] == ["destroy"]
    assert token.key_objects() == before

    done = runner.task("key_destroy", {"all_expired": True})
    assert done.task["changed"] is True, done.task
    assert done.task["destroyed"] == [{"name": "k", "version": 1, "id": old_id, "verified_absent": True}]
    # two independent readers: python-pkcs11 and OpenSC's pkcs11-tool
    remaining = token.objects()
    assert not [o for o in remaining if o["class"] != "DATA" and (o["label"] == "k:v1" or o["id"] == old_id)]
    listed = token.pkcs11_tool_key_objects()
    assert [o for o in listed if o["label"] == "k:v2"]  # the reader does see key objects ...
    assert not [o for o in listed if o["label"] == "k:v1" or o["id"] == old_id]  # ... and v1 is gone
    assert states(token) == {"k:v1": "destroyed", "k:v2": "active"}
    event = [e for e in done.task["audit_events"] if e["event"]["action"] == "key-destroy"][0]
    assert event["key"]["id"] == old_id and event["keylifecycle"]["verified_absent"] is True

    # idempotent
    again = runner.task("key_destroy", {"all_expired": True})
    assert again.task["changed"] is False
    one = runner.task("key_destroy", {"name": "k", "version": 1})
    assert one.task["changed"] is False and one.task["plan"][0]["action"] == "none"


def test_last_version_destroyed_reports_destroyed_key(runner, token):
    runner.task("key_generate", {"name": "k", "retention_period": "7d"})
    runner.task("key_rotate", {"name": ["k"], "force": True})
    runner.task("key_rotate", {"name": ["k"], "force": True})
    runner.clock.advance(days=8)
    runner.task("key_destroy", {"all_expired": True})
    info = runner.task("key_info", {"name": ["k"]})
    assert {v["version"]: v["state"] for v in info.task["key_versions"]} == {1: "destroyed", 2: "destroyed",
                                                                             3: "active"}


def test_policy_opt_in_and_dual_control(runner, token):
    runner.task("key_generate", {"keys": [{"name": "opted", "retention_period": "7d", "destroy_allowed": True},
                                          {"name": "kept", "retention_period": "7d"}]})
    runner.task("key_rotate", {"name": ["opted", "kept"], "force": True})
    runner.clock.advance(days=8)
    before = token.key_objects()
    strict = {"destroy_requires_opt_in": True, "destroy_requires_approval": True}
    operator = getpass.getuser()
    missing = runner.task("key_destroy", {"all_expired": True, "policy": strict})
    assert missing.task["failed"] and "requires a second person's approval" in missing.task["msg"]
    same = runner.task("key_destroy", {"all_expired": True, "policy": strict, "approved_by": operator})
    assert same.task["failed"] and "is the operator" in same.task["msg"]
    not_opted = runner.task("key_destroy", {"name": "kept", "version": 1, "policy": strict, "approved_by": "bob"})
    assert not_opted.task["failed"] and "destroy_allowed" in not_opted.task["msg"]
    assert token.key_objects() == before
    ok = runner.task("key_destroy", {"all_expired": True, "policy": strict, "approved_by": "bob",
                                     "change_ref": "CHG-1"})
    assert [(p["name"], p["action"]) for p in ok.task["plan"]] == [("kept", "blocked"), ("opted", "destroy")]
    event = [e for e in ok.task["audit_events"] if e["event"]["action"] == "key-destroy"][0]
    assert event["keylifecycle"]["approved_by"] == "bob" and event["keylifecycle"]["change_ref"] == "CHG-1"
    assert event["user"]["name"] == operator


def test_bad_input(runner, token):
    runner.task("key_generate", {"name": "k"})
    before = token.key_objects()
    unknown = runner.task("key_destroy", {"name": "k", "version": 7})
    assert unknown.task["failed"] and "k:v7 is not on the token" in unknown.task["msg"]
    ghost = runner.task("key_destroy", {"name": "ghost", "version": 1})
    assert ghost.task["failed"] and "ghost:v1 is not on the token" in ghost.task["msg"]
    no_version = runner.task("key_destroy", {"name": "k"})
    assert no_version.task["failed"] and "version" in no_version.task["msg"]
    bad_ref = runner.task("key_destroy", {"name": "k", "version": 1, "change_ref": "x; rm -rf /"})
    assert bad_ref.task["failed"] and bad_ref.task["error_option"] == "change_ref"
    assert token.key_objects() == before


def test_copy_of_the_key_under_another_label_blocks_destruction(runner, token):
    """C_CopyObject made a copy of v1 under another id and label: the key check value search finds it."""
    import subprocess
    import sys

    from tests.conftest import PKCS11_MODULE

    runner.task("key_generate", {"name": "k", "retention_period": "7d"})
    copy = (
        "import pkcs11, sys\n"
        "from pkcs11 import Attribute, ObjectClass\n"
        "tok = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])\n"
        "with tok.open(rw=True, user_pin=open(sys.argv[3]).read().strip()) as s:\n"
        "    key = s.get_key(object_class=ObjectClass.SECRET_KEY, label='k:v1')\n"
        "    key.copy({Attribute.LABEL: 'sneaky-copy', Attribute.ID: b'copy', Attribute.TOKEN: True})\n"
    )
    subprocess.run([sys.executable, "-c", copy, PKCS11_MODULE, token.label, str(token.pin_file)], check=True,
                   env={**token.env, "PATH": "/usr/bin:/bin"})
    runner.task("key_rotate", {"name": ["k"], "force": True})
    runner.clock.advance(days=8)
    result = runner.task("key_destroy", {"name": "k", "version": 1})
    assert result.task["failed"] is True
    assert "same key check value (sneaky-copy)" in result.task["msg"]
    assert states(token)["k:v1"] == "deactivated"  # no tombstone: the record does not claim an erasure


def test_retired_key_with_every_version_destroyed_is_reported_destroyed(runner, token):
    runner.task("key_generate", {"name": "k", "retention_period": "7d"})
    runner.task("key_rotate", {"name": ["k"], "force": True})
    check = runner.task("key_rotate", {"name": ["k"], "retire": True}, "--check")
    assert check.task["changed"] is True and check.task["plan"][0]["action"] == "retire"
    retired = runner.task("key_rotate", {"name": ["k"], "retire": True})
    assert retired.task["rotated"][0]["new_version"] is None
    assert states(token) == {"k:v1": "deactivated", "k:v2": "deactivated"}
    assert token.gcm("encrypt", "k:v2", NONCE, SAMPLE)[0] is False
    runner.clock.advance(days=8)
    runner.task("key_destroy", {"all_expired": True})
    info = runner.task("key_info", {"name": ["k"]})
    assert info.task["logical_keys"][0]["state"] == "destroyed"
    assert {v["state"] for v in info.task["key_versions"]} == {"destroyed"}
    assert not [o for o in token.key_objects() if o["class"] != "DATA"]  # only tombstones left
