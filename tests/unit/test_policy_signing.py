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


def documented_options(module):
    """The module's options as ansible-doc shows them: its own and those of the signing_key doc fragment."""
    from ansible_collections.secops.keylifecycle.plugins.doc_fragments.signing_key import ModuleDocFragment

    documented = yaml.safe_load(module.DOCUMENTATION)
    assert "secops.keylifecycle.signing_key" in documented["extends_documentation_fragment"]
    return dict(yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"], **documented["options"])


def test_module_docs_match_the_argument_specs():
    from ansible_collections.secops.keylifecycle.plugins.modules import policy_sign, policy_signer

    for module in (policy_sign, policy_signer):
        documented = yaml.safe_load(module.DOCUMENTATION)
        assert set(documented["attributes"]) >= {"check_mode", "diff_mode"}
        yaml.safe_load(module.EXAMPLES)
        yaml.safe_load(module.RETURN)
    options = documented_options(policy_sign)
    assert set(options) == set(policy_sign.ARGUMENT_SPEC)
    for name, spec in policy_sign.ARGUMENT_SPEC.items():
        assert options[name]["type"] == spec["type"], name
        assert bool(options[name].get("required")) == bool(spec.get("required")), name
    assert policy_sign.ARGUMENT_SPEC["private_key_passphrase"]["no_log"] is True
    assert options["approvals"]["elements"] == policy_sign.ARGUMENT_SPEC["approvals"]["elements"] == "raw"
    from ansible_collections.secops.keylifecycle.plugins.doc_fragments.officer import ModuleDocFragment as Officer

    documented = yaml.safe_load(policy_signer.DOCUMENTATION)
    assert "secops.keylifecycle.officer" in documented["extends_documentation_fragment"]
    own = dict(yaml.safe_load(Officer.DOCUMENTATION)["options"], **documented["options"])
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


# ---- increment C: the approvals of a policy change ride with the new policy ------------------------------------

def _approver_pem(key):
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _approve(tmp_path, key, name, new_doc, nonce, action="policy_change"):
    """An approval of ``new_doc`` as approval_sign makes it (its own logic, with a PEM key)."""
    import importlib

    approving = importlib.import_module("ansible_collections.secops.keylifecycle.plugins.plugin_utils."
                                        "_approval_signing")
    described = approving.read_new_policy(new_doc, "policy_change")
    request = approving.build_request("policy_change", None, None, "CHG-9", "2d", nonce, new_policy=described)
    if action != "policy_change":
        request = approving.build_request(action, "prod-hsm", [{"name": "k", "version": 1}], "CHG-9", "2d", nonce)
    signer = _signing().PemSigner(str(_key_file(tmp_path, key, name=name + ".pem")), PASSPHRASE)
    return approving.sign_approval(request, name, signer).approval


def test_approvals_are_embedded_and_the_signature_is_kept(tmp_path, p256):
    from cryptography.hazmat.primitives.asymmetric import ec

    signing = _signing()
    dana, erin, mallory = (ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1()),
                           ec.generate_private_key(ec.SECP256R1()))
    approvers = {"dana": _approver_pem(dana), "erin": _approver_pem(erin)}
    signer = signing.PemSigner(str(_key_file(tmp_path, p256)), PASSPHRASE)
    in_force = signing.sign_policy({"approvers": approvers, "approvals_required": {"policy_change": 2}}, "prod", 4,
                                   "2099-01-01T00:00:00+00:00", "dana.officer", signer).signed_policy
    options = ({"approvers": approvers, "approvals_required": {"policy_change": 2}, "min_rsa_bits": 4096}, "prod", 5,
               "2099-01-01T00:00:00+00:00", "dana.officer", signer)
    # 1. the officer signs the new policy
    first = signing.sign_policy(*options)
    dest = tmp_path / "policy.yml"
    dest.write_text(first.text)
    new_doc = signing.read_existing(str(dest))
    assert "approvals" not in new_doc
    # 2. the approvers of the policy in force approve it (one of them twice: same nonce, as JSON text)
    by_erin = _approve(tmp_path, erin, "erin", new_doc, "e1" * 16)
    by_dana = _approve(tmp_path, dana, "dana", new_doc, "d1" * 16)
    given = [by_erin, json.dumps(by_dana), by_dana]
    # 3. the officer signs again with the same options plus the approvals: same signature, approvals embedded
    second = signing.sign_policy(*options, existing=signing.read_existing(str(dest)), approvals=given,
                                 in_force_policy=in_force)
    doc = second.signed_policy
    assert second.unchanged is False and second.text != first.text
    assert doc["signature"] == first.signed_policy["signature"] and second.sha256 == first.sha256
    assert doc["approvals"] == sorted([by_erin, by_dana], key=lambda item: item["approver"])
    assert _signed().parse_signed_policy(doc) == doc and _signed().policy_digest(doc) == first.sha256
    _verify(p256.public_key(), doc)
    loaded = yaml.safe_load(second.text)["key_policy_signed"]
    assert loaded == doc and "# approvals of this policy change" in second.text
    summary = "\n".join(second.summary)
    assert "Approval of this policy change by dana" in summary and "d1" * 16 in summary
    assert "by erin" in summary and "2 approver(s) of 2 required by the policy in force (serial 4" in summary
    dest.write_text(second.text)
    # the same again: unchanged; without approvals: the same signature, the approvals dropped
    again = signing.sign_policy(*options, existing=signing.read_existing(str(dest)), approvals=[by_dana, by_erin])
    assert again.unchanged is True and again.text == second.text
    bare = signing.sign_policy(*options, existing=signing.read_existing(str(dest)))
    assert bare.unchanged is False and "approvals" not in bare.signed_policy and bare.text == first.text

    # refused, naming approvals: another action, another document, an approver the policy in force does not
    # list, an altered approval; and a policy in force of another environment
    def refused(option, needle, **kwargs):
        with pytest.raises(_errors().KeyLifecycleError) as raised:
            signing.sign_policy(*options, **kwargs)
        assert raised.value.option == option and needle in raised.value.message, raised.value.message

    refused("approvals", "not a policy change",
            approvals=[_approve(tmp_path, dana, "dana", new_doc, "d2" * 16, action="destroy")])
    other = signing.sign_policy({}, "prod", 6, "2099-01-01T00:00:00+00:00", "dana.officer", signer).signed_policy
    refused("approvals", "not this document", approvals=[_approve(tmp_path, dana, "dana", other, "d3" * 16)])
    by_mallory = _approve(tmp_path, mallory, "mallory", new_doc, "a1" * 16)
    refused("approvals", "not an approver of in_force_policy", approvals=[by_mallory], in_force_policy=in_force)
    # without the policy in force only the shape and the digest are checked
    assert signing.sign_policy(*options, approvals=[by_mallory]).signed_policy["approvals"] == [by_mallory]
    altered = json.loads(json.dumps(by_dana))
    altered["signature"] = by_erin["signature"]
    refused("approvals", "does not verify", approvals=[altered], in_force_policy=in_force)
    refused("approvals", "not a valid approval", approvals=[{"format": 1}])
    staging = signing.sign_policy({"approvers": approvers}, "staging", 1, "2099-01-01T00:00:00+00:00", "dana.officer",
                                  signer).signed_policy
    refused("in_force_policy", "environment staging", approvals=[by_dana], in_force_policy=staging)
