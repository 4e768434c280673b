"""Replica tokens on a real SoftHSM2 token: the Security Officer approves a replica, the token enforces it.

A backup key (``backup: true``) is generated extractable only under trusted keys. Its way out is the replica's
trusted transport key (AES keys, RSA-OAEP) or the replica's key-encryption key (RSA and EC private keys,
CKM_AES_KEY_WRAP_PAD), both made in a Security Officer session. Enforcement is checked with raw python-pkcs11.
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


def _rsa():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


@pytest.fixture
def officer(hsm_token):
    return _hsm().OfficerSettings(pkcs11_module=PKCS11_MODULE, token_label=hsm_token.label,
                                  so_pin_file=str(hsm_token.so_pin_file))


def _raw_session(hsm_token):
    import pkcs11

    return pkcs11.lib(PKCS11_MODULE).get_token(token_label=hsm_token.label).open(rw=True,
                                                                                 user_pin=hsm_token.user_pin)


def _backup_ec_pair(session):
    """An EC pair as key_generate makes a backup key: private key extractable only under trusted keys."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import TOKEN_CURVES
    from pkcs11 import Attribute, KeyType

    return session.generate_keypair(KeyType.EC, None, store=False, label="signer:v1", public_template={
        Attribute.EC_PARAMS: TOKEN_CURVES["P-256"].ec_params(), Attribute.VERIFY: True}, private_template={
        Attribute.SIGN: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True,
        Attribute.WRAP_WITH_TRUSTED: True})


def _approve_replica(officer, public_key, name="dr", host="hsm-b"):
    with _hsm().open_so_session(officer) as so:
        return _tk().approve_transport_key(so, name, host, public_key, kind="replica")


def test_the_officer_approves_a_replica_with_its_key_encryption_key(hsm_token, officer, settings):
    from pkcs11 import Attribute

    replica = _rsa()
    key = _approve_replica(officer, replica.public_key())
    again = _approve_replica(officer, replica.public_key())  # idempotent: no second key, no second KEK
    assert key.label == again.label == "trusted-replica:dr@hsm-b:%s" % key.fingerprint
    assert key.kind == "replica" and key.recipient == "dr" and key.host == "hsm-b"
    with _hsm().open_session(settings) as session:
        found = _tk().find_trusted_transport_keys(session)
        assert [(k.label, k.kind) for k in found] == [(key.label, "replica")]
        kek = _tk().find_replica_kek(session, found[0])
        assert kek is not None
        flags = kek.get_attributes([Attribute.TRUSTED, Attribute.WRAP, Attribute.UNWRAP, Attribute.ENCRYPT,
                                    Attribute.DECRYPT, Attribute.SENSITIVE, Attribute.EXTRACTABLE,
                                    Attribute.WRAP_WITH_TRUSTED, Attribute.MODIFIABLE, Attribute.LABEL])
    assert flags == {Attribute.TRUSTED: True, Attribute.WRAP: True, Attribute.UNWRAP: False,
                     Attribute.ENCRYPT: False, Attribute.DECRYPT: False, Attribute.SENSITIVE: True,
                     Attribute.EXTRACTABLE: True, Attribute.WRAP_WITH_TRUSTED: True, Attribute.MODIFIABLE: False,
                     Attribute.LABEL: "replica-kek:dr@hsm-b:%s" % key.fingerprint}


def test_a_backup_key_leaves_the_token_only_under_the_replica_keys_the_officer_made(hsm_token, officer):
    """A user session cannot make a trusted KEK, nor wrap a backup private key under a key of its own; it can under
    the officer's KEK, and the KEK leaves only under the replica's trusted transport key."""
    import pkcs11.exceptions as p11_exc
    from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass

    replica = _rsa()
    key = _approve_replica(officer, replica.public_key())
    oaep = (Mechanism.SHA_1, MGF.SHA1, None)
    with _raw_session(hsm_token) as session:
        _public, private = _backup_ec_pair(session)
        with pytest.raises(p11_exc.AttributeReadOnly):  # no trusted KEK of the operator's own
            session.generate_key(KeyType.AES, 256, store=False,
                                 template={Attribute.TRUSTED: True, Attribute.WRAP: True})
        own = session.generate_key(KeyType.AES, 256, store=False,
                                   template={Attribute.WRAP: True, Attribute.EXTRACTABLE: True})
        blob = None
        with pytest.raises(p11_exc.KeyNotWrappable):
            blob = own.wrap_key(private, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        assert blob is None
        kek = next(iter(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TRUSTED: True})))
        assert len(kek.wrap_key(private, mechanism=Mechanism.AES_KEY_WRAP_PAD)) > 32
        own_rsa = session.create_object({
            Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.RSA, Attribute.TOKEN: False,
            Attribute.WRAP: True, **_tk().public_key_attributes(_rsa().public_key())})
        with pytest.raises(p11_exc.KeyNotWrappable):  # the KEK itself leaves only under a trusted key
            own_rsa.wrap_key(kek, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=oaep)
        trusted = next(iter(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.TRUSTED: True,
                                                 Attribute.LABEL: key.label})))
        assert len(trusted.wrap_key(kek, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=oaep)) == 384
        with pytest.raises(p11_exc.PKCS11Error):  # nor can the operator switch on unwrapping under it
            kek[Attribute.UNWRAP] = True


def test_revoking_a_replica_destroys_its_key_and_its_kek(hsm_token, officer, settings):
    replica = _rsa()
    key = _approve_replica(officer, replica.public_key())
    with _hsm().open_so_session(officer) as so:
        _tk().revoke_transport_key(so, _tk().find_trusted_transport_keys(so)[0])
        assert _tk().find_trusted_transport_keys(so) == []
        assert _tk().find_replica_kek(so, key) is None


def test_a_recipient_approval_makes_no_kek(hsm_token, officer, settings):
    recipient = _rsa()
    with _hsm().open_so_session(officer) as so:
        key = _tk().approve_transport_key(so, "billing", "r1", recipient.public_key())
        assert key.kind == "recipient" and _tk().find_replica_kek(so, key) is None


def test_a_missing_kek_of_an_approved_replica_is_generated_again_as_a_journaled_change(hsm_token, officer):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import public_key_pem

    context = AuditContext("ops", "controller_os_user", "run-1", host="ctl")
    raw = [{"name": "dr", "host": "hsm-b", "kind": "replica", "public_key_pem": public_key_pem(_rsa().public_key())}]
    approvals = _tk().parse_approvals(raw, "present", load_policy({}))
    with _hsm().open_so_session(officer) as so:
        first = _tk().approve_recipients(so, hsm_token.label, approvals, "present", context, "alice")
        [key] = _tk().find_trusted_transport_keys(so)
        assert first.changed and _tk().find_replica_kek(so, key) is not None
        _tk().find_replica_kek(so, key).destroy()  # gone (an SO session may destroy it)
        kek_label = "replica-kek:%s" % key.label[len("trusted-replica:"):]

        checked = _tk().approve_recipients(so, hsm_token.label, approvals, "present", context, "alice",
                                           check_mode=True)
        assert checked.changed and checked.audit_events == [] and _tk().find_replica_kek(so, key) is None
        assert checked.diff["before"]["replica_keks"] == ["%s missing" % kek_label]
        assert checked.diff["after"]["replica_keks"] == ["%s generated" % kek_label]

        done = _tk().approve_recipients(so, hsm_token.label, approvals, "present", context, "alice")
        [event] = done.audit_events
        assert done.changed and _tk().find_replica_kek(so, key) is not None
        assert event["event"]["action"] == "recipient-approve" and event["event"]["reason"] == _tk().KEK_RECREATED
        assert event["key"]["trusted_kind"] == "replica" and event["keylifecycle"]["approved_by"] == "alice"
        again = _tk().approve_recipients(so, hsm_token.label, approvals, "present", context, "alice")
        assert not again.changed and again.audit_events == [] and "replica_keks" not in again.diff["before"]
