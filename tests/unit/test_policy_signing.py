"""policy_sign's signing logic and policy_signer's option checks: pure, no token, no ansible-playbook."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml

PASSPHRASE = "correct horse battery staple"


def _signing():
    import importlib

    return importlib.import_module("ansible_collections.secops.keylifecycle.plugins.plugin_utils._policy_signing")


def _signed():
    import importlib

    return importlib.import_module("ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy")


def _install():
    import importlib

    return importlib.import_module(
        "ansible_collections.secops.keylifecycle.plugins.module_utils._policy_signer_install")


def _errors():
    import importlib

    return importlib.import_module("ansible_collections.secops.keylifecycle.plugins.module_utils._errors")


@pytest.fixture(scope="module")
def p256():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem(key, passphrase=PASSPHRASE):
    from cryptography.hazmat.primitives import serialization

    encryption = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _key_file(tmp_path, key, passphrase=PASSPHRASE, mode=0o600, name="signer.pem"):
    path = tmp_path / name
    path.write_bytes(_pem(key, passphrase))
    path.chmod(mode)
    return path


def _verify(public_key, doc):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    public_key.verify(base64.b64decode(doc["signature"]), _signed().policy_payload(doc), ec.ECDSA(hashes.SHA256()))


def _fingerprint(public_key):
    import hashlib

    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def test_sign_with_pem_verifies_and_renders_the_file(tmp_path, p256):
    signing = _signing()
    signer = signing.PemSigner(str(_key_file(tmp_path, p256)), PASSPHRASE)
    result = signing.sign_policy({"min_rsa_bits": "4096", "destroy_requires_approval": True}, "prod", 3,
                                 "2099-06-30T00:00:00Z", "dana", signer)
    doc = result.signed_policy
    assert doc["policy"] == {"min_rsa_bits": 4096, "destroy_requires_approval": True}  # as the option holds it
    assert doc["not_after"] == "2099-06-30T00:00:00+00:00" and doc["format"] == 1 and doc["serial"] == 3
    assert doc["signer"] == _fingerprint(p256.public_key()) and doc["signer_name"] == "dana"
    _verify(p256.public_key(), doc)
    assert result.sha256 == _signed().policy_digest(doc)
    assert _signed().parse_signed_policy(doc) == doc
    assert any("policy.min_rsa_bits: 4096 (baseline 3072)" in line for line in result.summary)
    assert "serial 3" in result.summary[0] and "2099-06-30T00:00:00+00:00" in result.summary[0]
    loaded = yaml.safe_load(result.text)
    assert set(loaded) == {"key_policy_signed", "key_policy"}
    assert loaded["key_policy_signed"] == doc and loaded["key_policy"] == "{{ key_policy_signed.policy }}"
    assert result.text.startswith("---\n# ") and PASSPHRASE not in result.text
    assert PASSPHRASE not in repr(signer)


def test_an_existing_identical_signature_is_kept(tmp_path, p256):
    signing = _signing()
    signer = signing.PemSigner(str(_key_file(tmp_path, p256)), PASSPHRASE)
    first = signing.sign_policy({}, "dev", 1, "2099-01-01T00:00:00+00:00", "dana", signer)
    dest = tmp_path / "policy.yml"
    dest.write_text(first.text)
    again = signing.sign_policy({}, "dev", 1, "2099-01-01T00:00:00+00:00", "dana", signer,
                                existing=signing.read_existing(str(dest)))
    assert again.unchanged and again.text == first.text
    other = signing.sign_policy({}, "dev", 2, "2099-01-01T00:00:00+00:00", "dana", signer,
                                existing=signing.read_existing(str(dest)))
    assert not other.unchanged and other.signed_policy["serial"] == 2


def test_a_duration_not_after_is_from_now(tmp_path, p256):
    signing = _signing()
    now = datetime(2030, 1, 1, 12, 0, 0, 500, tzinfo=timezone.utc)
    assert signing.resolve_not_after("180d", now) == (now + timedelta(days=180)).replace(
        microsecond=0).isoformat()
    assert signing.resolve_not_after("2031-01-01T02:00:00+02:00", now) == "2031-01-01T00:00:00+00:00"
    for bad, needle in (("2029-01-01T00:00:00+00:00", "not in the future"), ("2031-01-01T00:00:00", "time zone"),
                        ("tomorrow", "duration"), ("", "required")):
        with pytest.raises(_errors().InvalidOption) as raised:
            signing.resolve_not_after(bad, now)
        assert raised.value.option == "not_after" and needle in str(raised.value), bad


def test_a_policy_that_weakens_the_baseline_is_refused_as_load_policy_refuses_it(tmp_path, p256):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy

    signing = _signing()
    signer = signing.PemSigner(str(_key_file(tmp_path, p256)), PASSPHRASE)
    with pytest.raises(_errors().PolicyViolation) as raised:
        signing.sign_policy({"min_rsa_bits": 2048}, "prod", 1, "30d", "dana", signer)
    with pytest.raises(_errors().PolicyViolation) as expected:
        load_policy({"min_rsa_bits": 2048})
    assert str(raised.value) == str(expected.value) and raised.value.option == "policy.min_rsa_bits"
    with pytest.raises(_errors().InvalidOption) as raised:
        signing.sign_policy({"no_such_setting": 1}, "prod", 1, "30d", "dana", signer)
    assert "unknown setting" in str(raised.value)


@pytest.mark.parametrize("options, option", [
    (("prod env", 1, "dana"), "environment"),
    (("prod", 0, "dana"), "serial"),
    (("prod", True, "dana"), "serial"),
    (("prod", 1, "dana smith"), "signer_name"),
])
def test_document_options_are_checked(options, option):
    with pytest.raises(_errors().InvalidOption) as raised:
        _signing().check_document_options(*options)
    assert raised.value.option == option and option in str(raised.value)


def test_pem_refusals(tmp_path, p256):
    from cryptography.hazmat.primitives.asymmetric import ec

    signing, errors = _signing(), _errors()

    def refused(path, passphrase=PASSPHRASE):
        with pytest.raises(errors.KeyLifecycleError) as raised:
            signing.sign_policy({}, "dev", 1, "30d", "dana", signing.PemSigner(str(path), passphrase))
        return raised.value

    error = refused(_key_file(tmp_path, p256, passphrase=None, name="clear.pem"))
    assert isinstance(error, errors.PolicyViolation) and error.option == "private_key_path"
    assert "not encrypted" in str(error)
    error = refused(_key_file(tmp_path, p256, mode=0o644, name="open.pem"))
    assert error.option == "private_key_path" and "0644" in str(error) and "chmod 600" in str(error)
    error = refused(_key_file(tmp_path, p256, mode=0o640, name="group.pem"))
    assert error.option == "private_key_path" and "0640" in str(error)
    error = refused(_key_file(tmp_path, p256, name="wrong.pem"), passphrase="not it")
    assert error.option == "private_key_passphrase" and "does not decrypt" in str(error)
    assert "not it" not in str(error)
    error = refused(_key_file(tmp_path, ec.generate_private_key(ec.SECP384R1()), name="p384.pem"))
    assert error.option == "private_key_path" and "P-256" in str(error)
    error = refused(tmp_path / "missing.pem")
    assert error.option == "private_key_path" and "does not exist" in str(error)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    garbage.chmod(0o600)
    assert refused(garbage).option == "private_key_path"


def test_signer_request_is_checked_before_the_token(p256):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    install, errors = _install(), _errors()

    def pem(key):
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    request = install.parse_signer_request("dana", pem(p256.public_key()), "dana", "CHG-1")
    assert request.fingerprint == _fingerprint(p256.public_key()) and request.label == "policy-signer:dana"
    cases = [
        (("dana smith", pem(p256.public_key())), "name"),
        (("", pem(p256.public_key())), "name"),
        (("dana", ""), "public_key_pem"),
        (("dana", "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----\n"), "public_key_pem"),
        (("dana", pem(ec.generate_private_key(ec.SECP384R1()).public_key())), "public_key_pem"),
        (("dana", pem(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())),
         "public_key_pem"),
        (("dana", pem(p256.public_key()), "bad name!"), "approved_by"),
        (("dana", pem(p256.public_key()), None, "bad ref with spaces"), "change_ref"),
    ]
    for args, option in cases:
        with pytest.raises(errors.InvalidOption) as raised:
            install.parse_signer_request(*args)
        assert raised.value.option == option, (args, raised.value)


def test_the_event_is_in_the_schema(p256):
    from cryptography.hazmat.primitives import serialization

    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext

    install = _install()
    pem = p256.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    request = install.parse_signer_request("dana", pem)
    context = AuditContext.from_params({"operator": "dana", "operator_source": "test", "run_id": "r1"})
    event = install._event(request, False, "kl-test", context, "dana", "CHG-7")
    assert event["event"]["action"] == "policy-signer-approve"
    assert event["keylifecycle"]["policy_signer"] == {"name": "dana", "fingerprint": request.fingerprint,
                                                      "destroyable": False}
    assert event["keylifecycle"]["change_ref"] == "CHG-7" and event["key"]["token"] == "kl-test"
    json.dumps(event)


def test_module_docs_match_the_argument_specs():
    from ansible_collections.secops.keylifecycle.plugins.modules import policy_sign, policy_signer

    for module in (policy_sign, policy_signer):
        documented = yaml.safe_load(module.DOCUMENTATION)
        assert set(documented["attributes"]) >= {"check_mode", "diff_mode"}
        yaml.safe_load(module.EXAMPLES)
        yaml.safe_load(module.RETURN)
    options = yaml.safe_load(policy_sign.DOCUMENTATION)["options"]
    assert set(options) == set(policy_sign.ARGUMENT_SPEC)
    for name, spec in policy_sign.ARGUMENT_SPEC.items():
        assert options[name]["type"] == spec["type"], name
        assert bool(options[name].get("required")) == bool(spec.get("required")), name
    assert policy_sign.ARGUMENT_SPEC["private_key_passphrase"]["no_log"] is True
    own = yaml.safe_load(policy_signer.DOCUMENTATION)["options"]
    for name in ("name", "public_key_pem", "approved_by", "change_ref", "so_pin", "so_pin_file"):
        assert name in own and own[name]["type"] == policy_signer.ARGUMENT_SPEC[name]["type"], name
    assert policy_signer.ARGUMENT_SPEC["so_pin"]["no_log"] is True


class _FakeSession:
    """A session whose token refuses what ``refuse`` says (no signer on it; C_FindObjects finds nothing)."""

    def __init__(self, refuse):
        self.refuse = refuse
        self.created = []

    def get_objects(self, template):
        return iter(())

    def create_object(self, template):
        from pkcs11 import Attribute

        error = self.refuse(Attribute.DESTROYABLE in template)
        if error is not None:
            raise error
        self.created.append(template)
        return object()


@pytest.mark.parametrize("refuse, created, error_kind, option", [
    # a token without CKA_DESTROYABLE: created without it, destroyable, with a warning
    (lambda with_destroyable: __import__("pkcs11").exceptions.AttributeTypeInvalid() if with_destroyable else None,
     1, None, None),
    # a user session: the token refuses CKA_TRUSTED
    (lambda with_destroyable: __import__("pkcs11").exceptions.AttributeReadOnly(), 0, "policy_violation", "so_pin"),
    # a token without CKA_TRUSTED at all
    (lambda with_destroyable: __import__("pkcs11").exceptions.AttributeTypeInvalid(), 0, "capability_missing",
     "name"),
])
def test_token_refusals_when_installing(p256, refuse, created, error_kind, option):
    from cryptography.hazmat.primitives import serialization

    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext

    install = _install()
    pem = p256.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    request = install.parse_signer_request("dana", pem)
    context = AuditContext.from_params({"operator": "dana", "operator_source": "test", "run_id": "r1"})
    session = _FakeSession(refuse)
    if error_kind is None:
        result = install.install_policy_signer(session, "kl-test", request, context)
        assert result.changed and len(session.created) == created
        assert result.audit_events[0]["keylifecycle"]["policy_signer"]["destroyable"] is True
        assert result.warnings and "CKA_DESTROYABLE" in result.warnings[0]
    else:
        with pytest.raises(_errors().KeyLifecycleError) as raised:
            install.install_policy_signer(session, "kl-test", request, context)
        assert raised.value.kind == error_kind and raised.value.option == option
        assert session.created == []
