"""Marking versions compromised (key_rotate reason compromise with version), on a real token."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.hsm.test_key_store import _now, _open, _spec, _store

APPROVAL = {"approved_by": "bob", "change_ref": "INC-7"}


def _context():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext

    return AuditContext("alice", "test", "run-1", host="h")


def _run(settings, names, versions=None, check_mode=False, policy=None, compromise=True, force=False):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_rotation import (
        apply_rotation,
        plan_rotation,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE

    policy = policy or BASELINE
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        plans = plan_rotation(store, names, False, force, policy, _now(), compromise=compromise, versions=versions)
        reason = "compromise" if compromise else "scheduled"
        return apply_rotation(store, plans, _context(), reason, policy, check_mode, dict(APPROVAL))


def _states(token):
    return {label: value["state"] for label, value in token.metadata().items()
            if not label.startswith(("audit-", "package-signing:"))}


def _secret(token, label):
    return [o for o in token.objects() if o["label"] == label and o["class"] == "SECRET_KEY"][0]


def _two_versions(settings):
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        store.generate(_spec(name="k"), 1, "alice", _now())
    _run(settings, ["k"], compromise=False, force=True)  # v1 deactivated, v2 active


def test_compromise_needs_no_force(settings, hsm_token):
    with _open(settings) as session:
        _store(session, settings.token_label).generate(_spec(name="k"), 1, "alice", _now())
    result = _run(settings, ["k"])  # not due, no force: a compromise still acts
    assert result.changed and result.rotated[0]["old_state"] == "compromised"
    assert _states(hsm_token) == {"k:v1": "compromised", "k:v2": "active"}
    entry = result.compromised[0]
    assert (entry["version"], entry["by"], entry["previous_state"]) == (1, "alice", "active")
    assert (entry["approved_by"], entry["change_ref"]) == ("bob", "INC-7")


def test_deactivated_version_marked_compromised_without_new_version(settings, hsm_token):
    _two_versions(settings)
    retain_until = hsm_token.metadata()["k:v1"]["retain_until"]
    check = _run(settings, ["k"], versions=[1], check_mode=True)
    assert check.changed and check.plan[0]["action"] == "compromise" and check.plan[0]["compromise_versions"] == [1]
    assert check.diff["after"]["k:v1"]["state"] == "compromised" and check.diff["before"]["k:v1"]["state"] == \
        "deactivated"
    assert _states(hsm_token) == {"k:v1": "deactivated", "k:v2": "active"}

    result = _run(settings, ["k"], versions=[1])
    assert result.changed and not result.rotated
    assert _states(hsm_token) == {"k:v1": "compromised", "k:v2": "active"}
    metadata = hsm_token.metadata()["k:v1"]
    assert metadata["retain_until"] == retain_until  # retention unchanged
    last = metadata["transitions"][-1]
    assert last["state"] == "compromised" and last["by"] == "alice"
    text = str(last)
    assert "bob" in text and "INC-7" in text
    assert [e["key"]["previous_state"] for e in result.audit_events] == ["deactivated"]
    assert result.audit_events[0]["keylifecycle"]["change_ref"] == "INC-7"
    assert _secret(hsm_token, "k:v1")["encrypt"] is False and _secret(hsm_token, "k:v1")["decrypt"] is True

    again = _run(settings, ["k"], versions=[1])
    assert not again.changed and again.plan[0]["action"] == "none" and not again.audit_events
    assert hsm_token.metadata()["k:v1"]["revision"] == metadata["revision"]


def test_compromise_disables_decrypt_of_a_deactivated_version(settings, hsm_token):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE

    _two_versions(settings)
    _run(settings, ["k"], versions=[1], policy=replace(BASELINE, compromise_disables_decrypt=True))
    assert _secret(hsm_token, "k:v1")["decrypt"] is False


def test_several_versions_active_among_them(settings, hsm_token):
    _two_versions(settings)
    result = _run(settings, ["k"], versions=[2, 1])
    assert [r["new_version"] for r in result.rotated] == [3]
    assert _states(hsm_token) == {"k:v1": "compromised", "k:v2": "compromised", "k:v3": "active"}
    assert sorted(c["version"] for c in result.compromised) == [1, 2]


def test_unknown_or_destroyed_version_is_refused(settings, hsm_token):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption, KeyNotFound

    _two_versions(settings)
    before = hsm_token.metadata()
    with pytest.raises(KeyNotFound) as missing:
        _run(settings, ["k"], versions=[1, 9])
    assert missing.value.option == "version" and "no version 9" in str(missing.value)
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        v1 = [v for v in store.versions("k") if v.version == 1][0]
        store.update_metadata(v1, replace(v1, state="destroyed", revision=v1.revision + 1))
    with pytest.raises(InvalidOption) as destroyed:
        _run(settings, ["k"], versions=[1])
    assert destroyed.value.option == "version" and "destroyed" in str(destroyed.value)
    assert hsm_token.metadata()["k:v2"] == before["k:v2"]


def test_a_compromised_distributable_version_is_sealed_so_the_token_refuses_to_wrap_it(settings, hsm_token):
    """A user session can wrap an extractable distributable version under any trusted key; once the version is
    compromised the token refuses (CKA_EXTRACTABLE false, which no session can turn back), and the metadata says
    when (sealed_at)."""
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        store.generate(_spec(name="shared", distributable=True), 1, "alice", _now())
        store.generate(_spec(name="kept", distributable=True), 1, "alice", _now())
    assert _secret(hsm_token, "shared:v1")["extractable"]
    result = _run(settings, ["shared"], versions=[1])
    assert result.changed and _states(hsm_token)["shared:v1"] == "compromised"
    assert not _secret(hsm_token, "shared:v1")["extractable"] and _secret(hsm_token, "kept:v1")["extractable"]
    assert hsm_token.metadata()["shared:v1"]["sealed_at"]
    with _open(settings) as session:  # the way back is refused by the token
        from pkcs11 import Attribute, ObjectClass
        from pkcs11.exceptions import PKCS11Error

        [key] = session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: "shared:v1"})
        with pytest.raises(PKCS11Error):
            key[Attribute.EXTRACTABLE] = True
