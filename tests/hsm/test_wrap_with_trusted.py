"""Trusted wrapping on a real SoftHSM2 token, in process: distributable keys are generated with
CKA_WRAP_WITH_TRUSTED, the token wraps them only under a key the Security Officer made CKA_TRUSTED, key_distribute's
planning refuses unapproved recipients before any wrap, and a rotation seals versions made before trusted wrapping.

The capability refusal (a token answering CKR_ATTRIBUTE_TYPE_INVALID for CKA_WRAP_WITH_TRUSTED, as the openCryptoki
soft token does) goes through a seam on the session's generate calls; everything else is the real token."""

from __future__ import annotations

import json

import pytest

from tests.conftest import PKCS11_MODULE
from tests.hsm.test_key_store import _now, _open, _spec, _store


def _context():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext

    return AuditContext("alice", "test", "run-1", host="h")


def _policy(**settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy

    return load_policy(settings)


def _attrs(obj, *names):
    from pkcs11 import Attribute

    return {name: bool(obj[getattr(Attribute, name)]) for name in names}


def _key_object(session, label, cls="SECRET_KEY"):
    from pkcs11 import Attribute, ObjectClass

    found = list(session.get_objects({Attribute.LABEL: label, Attribute.CLASS: getattr(ObjectClass, cls)}))
    assert len(found) == 1, label
    return found[0]


class NoWrapWithTrusted:
    """A session whose token does not know CKA_WRAP_WITH_TRUSTED (the seam: generate calls only)."""

    def __init__(self, session):
        self._session = session

    def __getattr__(self, name):
        return getattr(self._session, name)

    def _refuse(self, *templates):
        import pkcs11.exceptions as p11_exc
        from pkcs11 import Attribute

        if any(Attribute.WRAP_WITH_TRUSTED in (t or {}) for t in templates):
            raise p11_exc.AttributeTypeInvalid()

    def generate_key(self, *args, template=None, **kwargs):
        self._refuse(template)
        return self._session.generate_key(*args, template=template, **kwargs)

    def generate_keypair(self, *args, public_template=None, private_template=None, **kwargs):
        self._refuse(public_template, private_template)
        return self._session.generate_keypair(*args, public_template=public_template,
                                              private_template=private_template, **kwargs)


def _old_style(settings, name="k", version=1, **raw):
    """A distributable key made before trusted wrapping: no CKA_WRAP_WITH_TRUSTED, metadata without the field."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_store import TokenKeyStore

    with _open(settings) as session:
        store = TokenKeyStore(NoWrapWithTrusted(session), settings.token_label).load()
        made = store.generate(_spec(name=name, distributable=True, recipients=["app"], **raw), version, "alice",
                              _now(), require_trusted_wrapping=False)
    return made


def _transport_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def _approve(settings, hsm_token, private_key, recipient="app", host="app"):
    """The Security Officer's step: the recipient's transport key as a trusted key, in an SO session."""
    import pkcs11

    from ansible_collections.secops.keylifecycle.plugins.module_utils._trusted_keys import approve_transport_key

    token = pkcs11.lib(PKCS11_MODULE).get_token(token_label=settings.token_label)
    with token.open(rw=True, so_pin=hsm_token.so_pin) as so_session:
        return approve_transport_key(so_session, recipient, host, private_key.public_key())


def _recipient(private_key, name="app"):
    from cryptography.hazmat.primitives import serialization

    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_distribution import parse_recipients
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE

    pem = private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return parse_recipients([{"name": name, "public_key_pem": pem}], BASELINE)


def _distribute(settings, recipients, policy=None, check_mode=False):
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _key_distribution as dist

    policy = policy or _policy()
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        plans = dist.plan_distribution(store, recipients, _now(), dist.approved_transport_keys(store),
                                       policy.require_trusted_wrapping)
        return dist.apply_distribution(store, plans, "sha1", _context(), check_mode)


def _unwrap_check_value(private_key, package):
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    raw = private_key.decrypt(base64.b64decode(package["wrapped"]),
                              padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
    encryptor = Cipher(algorithms.AES(raw), modes.ECB()).encryptor()
    return (encryptor.update(bytes(16)) + encryptor.finalize())[:3].hex()


# ---- generation ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("distributable", [True, False])
def test_distributable_keys_are_generated_wrap_with_trusted(settings, distributable):
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        version = store.generate(_spec(name="k", distributable=distributable), 1, "alice", _now())
        flags = _attrs(_key_object(session, "k:v1"), "EXTRACTABLE", "WRAP_WITH_TRUSTED", "SENSITIVE")
        reread = _store(session, settings.token_label).version("k", 1)
    assert flags == {"EXTRACTABLE": distributable, "WRAP_WITH_TRUSTED": distributable, "SENSITIVE": True}
    assert version.wrap_with_trusted is distributable and reread.wrap_with_trusted is distributable
    assert reread.metadata()["wrap_with_trusted"] is distributable


def test_distributable_rsa_private_key_is_wrap_with_trusted(settings):
    with _open(settings) as session:
        version = _store(session, settings.token_label).generate(
            _spec(name="r", type="rsa", distributable=True), 1, "alice", _now())
        flags = _attrs(_key_object(session, "r:v1", "PRIVATE_KEY"), "EXTRACTABLE", "WRAP_WITH_TRUSTED")
    assert flags == {"EXTRACTABLE": True, "WRAP_WITH_TRUSTED": True} and version.wrap_with_trusted


def test_a_token_without_the_attribute_is_refused_while_the_policy_requires_it(settings, hsm_token):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import CapabilityMissing
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_store import TokenKeyStore

    with _open(settings) as session:
        store = TokenKeyStore(NoWrapWithTrusted(session), settings.token_label).load()
        with pytest.raises(CapabilityMissing) as err:
            store.generate(_spec(name="k", distributable=True), 1, "alice", _now())
    assert "CKA_WRAP_WITH_TRUSTED" in str(err.value) and "policy.require_trusted_wrapping" in str(err.value)
    assert err.value.option == "policy.require_trusted_wrapping" and err.value.kind == "capability_missing"
    assert not [o for o in hsm_token.objects() if o["label"].startswith("k:")]


def test_policy_off_generates_without_the_attribute_and_records_it(settings):
    version = _old_style(settings)
    with _open(settings) as session:
        flags = _attrs(_key_object(session, "k:v1"), "EXTRACTABLE", "WRAP_WITH_TRUSTED")
        reread = _store(session, settings.token_label).version("k", 1)
    assert flags == {"EXTRACTABLE": True, "WRAP_WITH_TRUSTED": False}
    assert version.wrap_with_trusted is False and reread.wrap_with_trusted is False


def test_metadata_written_before_trusted_wrapping_reads_as_not_wrap_with_trusted():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import KeyVersion

    version = KeyVersion(spec=_spec(name="k", distributable=True), version=1, key_id="ab", state="active",
                         created=_now())
    doc = version.metadata()
    doc.pop("wrap_with_trusted")
    decoded = KeyVersion.decode("k:v1", json.dumps(doc).encode())
    assert decoded.wrap_with_trusted is False and decoded.sealed_at is None


# ---- the token enforces it ---------------------------------------------------------------------------------------

def test_the_token_refuses_to_wrap_under_an_untrusted_key(settings):
    """Raw python-pkcs11, outside the collection's checks: the refusal is the token's own."""
    import pkcs11.exceptions as p11_exc
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

    from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import oaep_parameters

    transport = _transport_key().public_key().public_numbers()
    with _open(settings) as session:
        _store(session, settings.token_label).generate(_spec(name="k", distributable=True), 1, "alice", _now())
        untrusted = session.create_object({
            Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.RSA, Attribute.TOKEN: False,
            Attribute.MODULUS: transport.n.to_bytes(384, "big"), Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01",
            Attribute.WRAP: True})
        with pytest.raises(p11_exc.KeyNotWrappable):
            untrusted.wrap_key(_key_object(session, "k:v1"), mechanism=Mechanism.RSA_PKCS_OAEP,
                               mechanism_param=oaep_parameters("sha1"))
        with pytest.raises(p11_exc.AttributeReadOnly):
            _key_object(session, "k:v1")[Attribute.WRAP_WITH_TRUSTED] = False


def test_an_unapproved_recipient_is_refused_before_any_wrap_in_check_mode_too(settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import PolicyViolation

    with _open(settings) as session:
        _store(session, settings.token_label).generate(_spec(name="k", distributable=True, recipients=["app"]), 1,
                                                       "alice", _now())
    recipients = _recipient(_transport_key())
    for check_mode in (True, False):
        with pytest.raises(PolicyViolation, match="ask the Security Officer|Ask the Security Officer") as err:
            _distribute(settings, recipients, check_mode=check_mode)
        assert "recipient 'app' on host app (transport key %s)" % recipients[0].fingerprint in str(err.value)


def test_an_approved_recipient_receives_signed_packages_wrapped_under_its_trusted_key(settings, hsm_token):
    with _open(settings) as session:
        version = _store(session, settings.token_label).generate(
            _spec(name="k", distributable=True, recipients=["app"]), 1, "alice", _now())
    private_key = _transport_key()
    trusted = _approve(settings, hsm_token, private_key)
    result = _distribute(settings, _recipient(private_key))
    entry = result.recipients[0]
    package = entry["packages"][0]
    assert entry["trusted_key_label"] == trusted.label and result.warnings == []
    assert _unwrap_check_value(private_key, package) == version.key_check_value.lower()
    assert package["signer_fingerprint"] == result.package_signer["fingerprint"] and package["signature"]
    distribute = [e for e in result.audit_events if e["event"]["action"] == "key-distribute"]
    assert [(e["key"]["trusted_wrapping"], e["key"]["trusted_key_label"]) for e in distribute] == [
        (True, trusted.label)]
    assert distribute[0]["key"]["package_signer_fingerprint"] == result.package_signer["fingerprint"]
    assert result.changed is True  # the package-signing key was generated on first use
    assert [e["key"]["name"] for e in result.audit_events if e["event"]["action"] == "key-generate"] == [
        "package-signing"]


def test_policy_off_wraps_old_keys_under_an_untrusted_key_with_a_warning(settings):
    _old_style(settings)
    private_key = _transport_key()
    result = _distribute(settings, _recipient(private_key), policy=_policy(require_trusted_wrapping=False))
    [event] = [e for e in result.audit_events if e["event"]["action"] == "key-distribute"]
    assert event["key"]["trusted_wrapping"] is False and "trusted_key_label" not in event["key"]
    assert "require_trusted_wrapping is off" in event["keylifecycle"]["warning"]
    assert len(result.warnings) == 1 and "recipient 'app'" in result.warnings[0]
    assert result.recipients[0]["packages"][0]["wrapped"]


# ---- migration by rotation ---------------------------------------------------------------------------------------

def _rotate(settings, check_mode=False, policy=None):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_rotation import apply_rotation, plan_rotation

    policy = policy or _policy()
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        plans = plan_rotation(store, ["k"], False, True, policy, _now())
        return apply_rotation(store, plans, _context(), "manual", policy, check_mode)


def test_rotation_seals_versions_made_before_trusted_wrapping(settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._drift import find_drift

    _old_style(settings)
    planned = _rotate(settings, check_mode=True)
    assert planned.plan[0]["seal_versions"] == [1] and planned.audit_events == []
    with _open(settings) as session:
        assert _attrs(_key_object(session, "k:v1"), "EXTRACTABLE") == {"EXTRACTABLE": True}
    result = _rotate(settings)
    assert result.rotated[0]["sealed_versions"] == [1]
    [seal] = [e for e in result.audit_events if e["event"]["action"] == "key-seal"]
    assert (seal["key"]["version"], seal["event"]["reason"]) == (1, "migration to trusted wrapping")
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        old, new = store.version("k", 1), store.version("k", 2)
        old_flags = _attrs(_key_object(session, "k:v1"), "EXTRACTABLE", "WRAP_WITH_TRUSTED")
        new_flags = _attrs(_key_object(session, "k:v2"), "EXTRACTABLE", "WRAP_WITH_TRUSTED")
        assert find_drift(store) == []
    assert old.sealed_at is not None and old.state == "deactivated" and not old.wrap_with_trusted
    assert old_flags == {"EXTRACTABLE": False, "WRAP_WITH_TRUSTED": False}
    assert new.wrap_with_trusted and new_flags == {"EXTRACTABLE": True, "WRAP_WITH_TRUSTED": True}
    again = _rotate(settings, check_mode=True)
    assert "seal_versions" not in again.plan[0]  # v1 sealed, v2 wrap-with-trusted: nothing left to seal


def test_a_sealed_version_is_blocked_for_a_recipient_that_lacks_it(settings, hsm_token):
    _old_style(settings)
    _rotate(settings)
    private_key = _transport_key()
    _approve(settings, hsm_token, private_key)
    result = _distribute(settings, _recipient(private_key))
    entry = result.recipients[0]
    assert [(p["name"], p["version"]) for p in entry["packages"]] == [("k", 2)]
    assert [(b["version"], b["why"]) for b in entry["blocked"]] == [
        (1, "not extractable: sealed at the migration to trusted wrapping")]
