"""Trusted transport keys on a real SoftHSM2 token: the Security Officer approves, the token enforces.

The collection's code runs in process (``_trusted_keys``, ``_hsm.open_so_session``); the enforcement is checked with
raw python-pkcs11 outside the collection. Sessions are opened one after the other: one login per process.
"""

from __future__ import annotations

import pytest

from tests.conftest import PKCS11_MODULE


def _tk():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _trusted_keys

    return _trusted_keys


def _hsm():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _hsm

    return _hsm


def _errors():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _errors

    return _errors


def _rsa(bits=3072):
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _fingerprint(public_key):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import spki_fingerprint

    return spki_fingerprint(public_key)


@pytest.fixture
def officer(hsm_token):
    return _hsm().OfficerSettings(pkcs11_module=PKCS11_MODULE, token_label=hsm_token.label,
                                  so_pin_file=str(hsm_token.so_pin_file))


def _raw_token(hsm_token):
    import pkcs11

    return pkcs11.lib(PKCS11_MODULE).get_token(token_label=hsm_token.label)


def _distributable_aes(session, label="dist:v1"):
    """An AES key as trusted distribution generates it: extractable, wrap-with-trusted, sensitive."""
    from pkcs11 import Attribute, KeyType

    return session.generate_key(KeyType.AES, 256, label=label, template={
        Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True,
        Attribute.WRAP_WITH_TRUSTED: True, Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
        Attribute.WRAP: False, Attribute.UNWRAP: False, Attribute.SIGN: False, Attribute.VERIFY: False})


def _session_public_key(session, public_key):
    """The software key imported as a session object (the old distribution path)."""
    from pkcs11 import Attribute, KeyType, ObjectClass

    numbers = public_key.public_numbers()
    return session.create_object({
        Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.RSA, Attribute.TOKEN: False,
        Attribute.WRAP: True, Attribute.ENCRYPT: False, Attribute.VERIFY: False,
        Attribute.MODULUS: numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"),
        Attribute.PUBLIC_EXPONENT: numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")})


def _oaep_sha1():
    from pkcs11 import MGF, Mechanism

    return Mechanism.RSA_PKCS_OAEP, (Mechanism.SHA_1, MGF.SHA1, None)


def test_the_officer_approves_and_a_user_session_finds_the_trusted_key(hsm_token, officer, settings):
    from pkcs11 import Attribute

    private = _rsa()
    fingerprint = _fingerprint(private.public_key())
    with _hsm().open_so_session(officer) as so:
        key = _tk().approve_transport_key(so, "billing", "r1", private.public_key())
        again = _tk().approve_transport_key(so, "billing", "r1", private.public_key())  # idempotent
        assert len(_tk().find_trusted_transport_keys(so)) == 1
    assert key.label == "trusted-transport:billing@r1:%s" % fingerprint == again.label
    assert key.fingerprint == fingerprint and key.recipient == "billing" and key.host == "r1"
    assert key.modifiable is False and len(key.key_id) == 32

    with _hsm().open_session(settings) as session:
        found = _tk().find_trusted_transport_keys(session)
        assert [(k.label, k.recipient, k.host, k.fingerprint, k.key_id) for k in found] == [
            (key.label, "billing", "r1", fingerprint, key.key_id)]
        obj = found[0].obj
        flags = obj.get_attributes([Attribute.TRUSTED, Attribute.WRAP, Attribute.ENCRYPT, Attribute.VERIFY,
                                    Attribute.VERIFY_RECOVER, Attribute.PRIVATE, Attribute.TOKEN,
                                    Attribute.MODIFIABLE])
    assert flags == {Attribute.TRUSTED: True, Attribute.WRAP: True, Attribute.ENCRYPT: False,
                     Attribute.VERIFY: False, Attribute.VERIFY_RECOVER: False, Attribute.PRIVATE: False,
                     Attribute.TOKEN: True, Attribute.MODIFIABLE: False}


def test_a_user_session_cannot_create_a_trusted_key(hsm_token, settings):
    import pkcs11.exceptions as p11_exc
    from pkcs11 import Attribute

    public_key = _rsa().public_key()
    with _hsm().open_session(settings) as session:
        # raw python-pkcs11: the token itself refuses CKA_TRUSTED in a user session
        template = _tk()._trusted_template(public_key, "forged", modifiable=True)
        with pytest.raises(p11_exc.AttributeReadOnly):
            session.create_object(template)
        # through the collection: a clear refusal naming the SO PIN
        with pytest.raises(_errors().PolicyViolation, match="only a Security Officer session") as info:
            _tk().approve_transport_key(session, "billing", "r1", public_key)
        assert info.value.option == "so_pin"
        assert _tk().find_trusted_transport_keys(session) == []
        assert not list(session.get_objects({Attribute.LABEL: "forged"}))


def test_the_token_wraps_a_wrap_with_trusted_key_only_under_the_approved_key(hsm_token, officer):
    """Raw python-pkcs11, outside the collection except for the officer's approval."""
    import pkcs11.exceptions as p11_exc
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from pkcs11 import Attribute, ObjectClass

    attacker = _rsa()  # a software key pair, as an outsider with key_distribute rights would make
    recipient = _rsa()  # the enrolled recipient's (here in software, to check the unwrap)
    with _hsm().open_so_session(officer) as so:
        _tk().approve_transport_key(so, "billing", "r1", recipient.public_key())

    mechanism, params = _oaep_sha1()
    with _raw_token(hsm_token).open(rw=True, user_pin=hsm_token.user_pin) as session:
        secret = _distributable_aes(session)
        untrusted = _session_public_key(session, attacker.public_key())
        wrapped = None
        with pytest.raises(p11_exc.KeyNotWrappable):
            wrapped = untrusted.wrap_key(secret, mechanism=mechanism, mechanism_param=params)
        assert wrapped is None
        # the user session cannot clear WRAP_WITH_TRUSTED either
        with pytest.raises(p11_exc.AttributeReadOnly):
            secret[Attribute.WRAP_WITH_TRUSTED] = False
        trusted = next(iter(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.TRUSTED: True})))
        blob = trusted.wrap_key(secret, mechanism=mechanism, mechanism_param=params)
        secret_kcv = secret.encrypt(bytes(16), mechanism_param=bytes(16))[:3]
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    key = recipient.decrypt(bytes(blob), oaep)
    assert len(key) == 32
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encryptor = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
    assert (encryptor.update(bytes(16)) + encryptor.finalize())[:3] == bytes(secret_kcv)


def test_revoke_removes_the_key_and_wrapping_stops(hsm_token, officer):
    import pkcs11.exceptions as p11_exc
    from pkcs11 import Attribute, ObjectClass

    recipient = _rsa()
    with _hsm().open_so_session(officer) as so:
        key = _tk().approve_transport_key(so, "billing", "r1", recipient.public_key())
        _tk().revoke_transport_key(so, key)
        _tk().revoke_transport_key(so, key)  # already gone: still revoked
        assert _tk().find_trusted_transport_keys(so) == []

    mechanism, params = _oaep_sha1()
    with _raw_token(hsm_token).open(rw=True, user_pin=hsm_token.user_pin) as session:
        secret = _distributable_aes(session)
        assert not list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.TRUSTED: True}))
        again = _session_public_key(session, recipient.public_key())  # same key, now untrusted
        with pytest.raises(p11_exc.KeyNotWrappable):
            again.wrap_key(secret, mechanism=mechanism, mechanism_param=params)


def test_a_label_naming_another_fingerprint_ties_the_key_to_no_recipient(hsm_token, officer):
    """The fingerprint is computed from the key; a label claiming another one names no recipient."""
    real, other = _rsa().public_key(), _rsa().public_key()
    forged_label = _tk().trusted_transport_label("billing", "r1", _fingerprint(other))
    with _hsm().open_so_session(officer) as so:
        so.create_object(_tk()._trusted_template(real, forged_label, modifiable=False))
        found = _tk().find_trusted_transport_keys(so)
        assert [(k.label, k.recipient, k.host, k.fingerprint) for k in found] == [
            (forged_label, None, None, _fingerprint(real))]
        # approving the real key for billing@r1 adds its own, correctly labelled key
        key = _tk().approve_transport_key(so, "billing", "r1", real)
        assert key.recipient == "billing" and key.fingerprint == _fingerprint(real)
        assert len(_tk().find_trusted_transport_keys(so)) == 2


@pytest.mark.parametrize("bits", [2048])
def test_weak_and_ec_keys_are_refused_before_the_token_is_touched(hsm_token, officer, bits):
    from cryptography.hazmat.primitives.asymmetric import ec

    with _hsm().open_so_session(officer) as so:
        with pytest.raises(_errors().PolicyViolation, match="RSA %d" % bits):
            _tk().approve_transport_key(so, "billing", "r1", _rsa(bits).public_key())
        with pytest.raises(_errors().InvalidOption, match="EC key"):
            _tk().approve_transport_key(so, "billing", "r1", ec.generate_private_key(ec.SECP256R1()).public_key())
        with pytest.raises(_errors().PolicyViolation, match="RSA 3072"):  # the policy's minimum counts too
            _tk().approve_transport_key(so, "billing", "r1", _rsa(3072).public_key(), min_rsa_bits=4096)
        assert _tk().find_trusted_transport_keys(so) == []


def test_approve_recipients_present_absent_and_check_mode(hsm_token, officer):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import public_key_pem

    policy = load_policy({})
    context = AuditContext("ops", "controller_os_user", "run-1", host="ctl")
    public = _rsa().public_key()
    raw = [{"name": "billing", "host": "r1", "public_key_pem": public_key_pem(public),
            "fingerprint": _fingerprint(public).upper().replace("SHA256:", "sha256:")}]
    approvals = _tk().parse_approvals(raw, "present", policy)
    with _hsm().open_so_session(officer) as so:
        checked = _tk().approve_recipients(so, hsm_token.label, approvals, "present", context, "alice", "CHG-1",
                                           check_mode=True)
        assert checked.changed and checked.audit_events == [] and _tk().find_trusted_transport_keys(so) == []
        assert checked.diff == {"before": {"approved": []},
                                "after": {"approved": ["billing@r1 %s" % _fingerprint(public)]}}
        done = _tk().approve_recipients(so, hsm_token.label, approvals, "present", context, "alice", "CHG-1")
        assert done.changed and done.approved == checked.approved
        [event] = done.audit_events
        assert event["event"]["action"] == "recipient-approve" and event["user"]["name"] == "ops"
        assert event["keylifecycle"]["approved_by"] == "alice" and event["keylifecycle"]["change_ref"] == "CHG-1"
        assert event["key"]["recipient"] == "billing" and event["key"]["recipient_host"] == "r1"
        assert event["key"]["transport_key_fingerprint"] == _fingerprint(public)
        assert event["key"]["label"] == event["key"]["trusted_key_label"] == done.approved[0]["label"]
        assert event["key"]["token"] == hsm_token.label
        again = _tk().approve_recipients(so, hsm_token.label, approvals, "present", context)
        assert not again.changed and again.audit_events == []

        revoke = _tk().parse_approvals([{"name": "billing", "host": "r1"}], "absent", policy)
        checked = _tk().approve_recipients(so, hsm_token.label, revoke, "absent", context, check_mode=True)
        assert checked.changed and checked.approved == [] and len(_tk().find_trusted_transport_keys(so)) == 1
        done = _tk().approve_recipients(so, hsm_token.label, revoke, "absent", context)
        [event] = done.audit_events
        assert event["event"]["action"] == "recipient-revoke" and event["keylifecycle"]["approved_by"] == "ops"
        assert done.changed and _tk().find_trusted_transport_keys(so) == []
        assert not _tk().approve_recipients(so, hsm_token.label, revoke, "absent", context).changed


def test_a_wrong_so_pin_is_a_clear_login_failure(hsm_token, tmp_path):
    pin = tmp_path / "so.pin"
    pin.write_text("not-the-so-pin\n")
    pin.chmod(0o600)
    officer = _hsm().OfficerSettings(pkcs11_module=PKCS11_MODULE, token_label=hsm_token.label,
                                     so_pin_file=str(pin))
    with pytest.raises(_errors().LoginFailed, match="Security Officer PIN") as info:
        with _hsm().open_so_session(officer):
            pass
    assert info.value.option == "so_pin" and "not-the-so-pin" not in info.value.message
    # the user PIN is not the SO PIN
    officer = _hsm().OfficerSettings(pkcs11_module=PKCS11_MODULE, token_label=hsm_token.label,
                                     so_pin=hsm_token.user_pin)
    assert hsm_token.user_pin not in repr(officer)
    with pytest.raises(_errors().LoginFailed, match="so_pin / so_pin_file"):
        with _hsm().open_so_session(officer):
            pass
