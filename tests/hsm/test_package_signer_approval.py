"""The Security Officer pins the package signer a token may be restored from (package_signer_approve), on a real
SoftHSM2 token: CKA_TRUSTED that a user session cannot set, an operator's pin replaced, the restore check refusing
an operator's pin."""

from __future__ import annotations

import pytest

from tests.conftest import PKCS11_MODULE


def _mods():
    from types import SimpleNamespace

    from ansible_collections.secops.keylifecycle.plugins.module_utils import (
        _audit_event,
        _errors,
        _hsm,
        _package_signer_approval,
        _pinned_signer,
        _token_objects,
    )

    return SimpleNamespace(audit=_audit_event, errors=_errors, hsm=_hsm, approval=_package_signer_approval,
                           pinned=_pinned_signer, objects=_token_objects)


def _signer_pem():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    return public, public.public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture
def officer(hsm_token):
    return _mods().hsm.OfficerSettings(pkcs11_module=PKCS11_MODULE, token_label=hsm_token.label,
                                       so_pin_file=str(hsm_token.so_pin_file))


def _context():
    return _mods().audit.AuditContext("dana.officer", "test", "run-1", host="h")


def _approve(officer, approval, check_mode=False):
    mods = _mods()
    with mods.hsm.open_so_session(officer) as so:
        return mods.approval.approve_package_signer(so, officer.token_label, approval, _context(),
                                                    change_ref="CHG-1", check_mode=check_mode)


def _pinned(settings):
    mods = _mods()
    with mods.hsm.open_session(settings) as session:
        return mods.pinned.find_pinned_signer(mods.objects.TokenObjects(session, settings.token_label).load())


def test_the_officer_pins_the_signer_trusted_in_place_of_an_operators_pin(hsm_token, officer, settings):
    mods = _mods()
    hsm, approval_mod, pinned_mod, token_objects = mods.hsm, mods.approval, mods.pinned, mods.objects
    operator_key = _signer_pem()[0]
    with hsm.open_session(settings) as session:  # what recipient_enroll does: a user-session pin, not trusted
        objects = token_objects.TokenObjects(session, settings.token_label).load()
        pinned_mod.pin_signer(objects, None, operator_key, b"\x01" * 16)
    before = _pinned(settings)
    assert before.trusted is False

    public, pem = _signer_pem()
    fingerprint = token_objects.spki_fingerprint(public)
    approval = approval_mod.parse_signer_approval({"public_key_pem": pem}, fingerprint, "dana.officer", "CHG-1")
    planned = _approve(officer, approval, check_mode=True)
    assert planned.changed and planned.audit_events == [] and planned.package_signer["trusted"] is True
    assert _pinned(settings).fingerprint == before.fingerprint  # check mode changed nothing

    result = _approve(officer, approval)
    after = _pinned(settings)
    assert result.changed and after.trusted is True and after.fingerprint == fingerprint
    assert after.key_id == before.key_id and after.modifiable is False
    assert result.package_signer == after.record()
    assert result.diff == {"before": {"package_signer": "%s untrusted" % before.fingerprint},
                           "after": {"package_signer": "%s trusted" % fingerprint}}
    [event] = result.audit_events
    assert event["event"]["action"] == "package-signer-approve"
    assert event["key"]["package_signer_fingerprint"] == fingerprint
    assert event["keylifecycle"]["approved_by"] == "dana.officer"
    assert before.fingerprint in event["event"]["reason"]

    again = _approve(officer, approval)  # idempotent
    assert not again.changed and again.audit_events == [] and _pinned(settings).key_id == after.key_id


def test_a_user_session_cannot_pin_a_trusted_signer(hsm_token, settings):
    mods = _mods()
    errors, hsm, pinned_mod, token_objects = mods.errors, mods.hsm, mods.pinned, mods.objects
    public = _signer_pem()[0]
    with hsm.open_session(settings) as session:
        objects = token_objects.TokenObjects(session, settings.token_label).load()
        with pytest.raises(errors.KeyLifecycleError, match="CKA_|AttributeReadOnly|refused"):
            pinned_mod.pin_signer(objects, None, public, b"\x02" * 16, trusted=True)
    assert _pinned(settings) is None


def test_the_fingerprint_must_name_the_key(hsm_token):
    mods = _mods()
    errors, approval_mod, token_objects = mods.errors, mods.approval, mods.objects
    public, pem = _signer_pem()
    other = _signer_pem()[0]
    with pytest.raises(errors.PolicyViolation, match="does not match") as refused:
        approval_mod.parse_signer_approval({"public_key_pem": pem}, token_objects.spki_fingerprint(other))
    assert refused.value.option == "fingerprint"
    with pytest.raises(errors.InvalidOption) as malformed:
        approval_mod.parse_signer_approval({"public_key_pem": pem}, "sha256:xyz")
    assert malformed.value.option == "fingerprint"
    with pytest.raises(errors.InvalidOption) as missing:
        approval_mod.parse_signer_approval({"public_key_pem": pem}, "")
    assert missing.value.option == "fingerprint"
    with pytest.raises(errors.InvalidOption) as unreadable:
        approval_mod.parse_signer_approval({"public_key_pem": "not a key"}, token_objects.spki_fingerprint(public))
    assert unreadable.value.option == "package_signer"
