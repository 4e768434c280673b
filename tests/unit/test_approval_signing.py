"""approval_sign's signing logic (plugin_utils/_approval_signing.py): pure, no token, no ansible-playbook.

The approvals it makes are read back with the lead's format module (``_approvals.parse_approval``,
``verify_signature``) and checked independently with cryptography over the bytes the design states.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import datetime, timezone

import pytest
import yaml

from tests.unit.test_policy_signing import documented_options

PASSPHRASE = "approver passphrase 2041"
NONCE = "0123456789abcdef0123456789abcdef"
NOW = datetime(2027, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
KEYS = [{"name": "payments-dek", "version": 1}]


def _module(name):
    import importlib

    return importlib.import_module("ansible_collections.secops.keylifecycle.plugins." + name)


def _signing():
    return _module("plugin_utils._approval_signing")


def _approvals():
    return _module("module_utils._approvals")


def _errors():
    return _module("module_utils._errors")


@pytest.fixture(scope="module")
def dana_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def erin_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_file(tmp_path, key, passphrase=PASSPHRASE, mode=0o600, name="approver.pem"):
    from cryptography.hazmat.primitives import serialization

    encryption = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
                  else serialization.NoEncryption())
    path = tmp_path / name
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    path.chmod(mode)
    return path


def _signer(tmp_path, key, **kwargs):
    """A PemSigner over a key file written with ``kwargs`` (passphrase, mode, name), given the passphrase."""
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._policy_signing import PemSigner

    return PemSigner(str(_key_file(tmp_path, key, **kwargs)), PASSPHRASE)


def _public_pem(key):
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _fingerprint(key):
    from cryptography.hazmat.primitives import serialization

    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _request(**overrides):
    args = dict(action="destroy", token="prod-hsm", keys=KEYS, change_ref="CHG-2041", not_after="24h", nonce=NONCE,
                now=NOW)
    args.update(overrides)
    return _signing().build_request(**args)


def _refused(option, call, *args, **kwargs):
    with pytest.raises(_errors().KeyLifecycleError) as caught:
        call(*args, **kwargs)
    assert caught.value.option == option, (caught.value.option, caught.value.message)
    assert option in caught.value.message, caught.value.message
    return caught.value


def _signed_policy(tmp_path, signer_key, approvers, **settings):
    """A signed policy as policy_sign makes it (the approver side reads only its shape and settings)."""
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._policy_signing import PemSigner, sign_policy

    policy = dict(settings, approvers={name: _public_pem(key) for name, key in approvers.items()})
    signer = PemSigner(str(_key_file(tmp_path, signer_key, name="policy-signer.pem")), PASSPHRASE)
    return sign_policy(policy, "prod", 7, "2099-01-01T00:00:00+00:00", "dana.officer", signer).signed_policy


def test_the_approval_parses_and_verifies(tmp_path, dana_key):
    request = _request(keys=[{"name": "z-kek", "version": 2}, {"name": "payments-dek", "version": 1},
                             {"name": "payments-dek", "version": 1}])
    # canonical: sorted, unique; not_after 24h after NOW, in UTC
    assert request == {"action": "destroy", "token": "prod-hsm", "change_ref": "CHG-2041", "nonce": NONCE,
                       "not_after": "2027-03-02T12:00:00+00:00",
                       "keys": [{"name": "payments-dek", "version": 1}, {"name": "z-kek", "version": 2}]}
    signed = _signing().sign_approval(request, "dana", _signer(tmp_path, dana_key))
    doc = signed.approval
    assert signed.unchanged is False
    assert set(doc) == {"format", "request", "approver", "approver_name", "signature"}
    assert doc["format"] == 1 and doc["request"] == request and doc["approver_name"] == "dana"
    assert doc["approver"] == _fingerprint(dana_key)
    approvals = _approvals()
    assert approvals.parse_approval(doc) == doc
    assert approvals.parse_approval(signed.text) == doc  # the file's JSON is the same document
    assert json.loads(signed.text) == doc
    assert approvals.verify_signature(dana_key.public_key(), doc)

    # independently: ECDSA P-256 / SHA-256 over the canonical JSON of approver, format and request
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    payload = json.dumps({"approver": doc["approver"], "format": 1, "request": request}, sort_keys=True,
                         separators=(",", ":"), ensure_ascii=True).encode("ascii")
    dana_key.public_key().verify(base64.b64decode(doc["signature"]), payload, ec.ECDSA(hashes.SHA256()))

    # altered after signing: no longer verifies; approver_name is not signed
    altered = json.loads(json.dumps(doc))
    altered["request"]["keys"][0]["version"] = 3
    assert not approvals.verify_signature(dana_key.public_key(), altered)
    assert approvals.verify_signature(dana_key.public_key(), dict(doc, approver_name="someone"))
    assert PASSPHRASE not in signed.text


def test_the_request_in_words_and_the_defaults():
    signing = _signing()
    request = _request(nonce=None, not_after=None)
    assert re.match(r"^[0-9a-f]{32}\Z", request["nonce"])
    assert request["nonce"] != _request(nonce=None)["nonce"]
    assert request["not_after"] == "2027-03-02T12:00:00+00:00"  # default 24h
    text = signing.request_text("dana", _request())
    assert text == ("dana approves: DESTROY (cryptographic erasure, irreversible) of payments-dek v1 on token "
                    "'prod-hsm', change CHG-2041, valid until 2027-03-02T12:00:00+00:00, nonce " + NONCE)
    assert _request(not_after="2027-03-01T16:00:00+02:00")["not_after"] == "2027-03-01T14:00:00+00:00"
    assert _request(not_after="2027-03-03T00:00:00Z")["not_after"] == "2027-03-03T00:00:00+00:00"
    assert _request(not_after="2d")["not_after"] == "2027-03-03T12:00:00+00:00"
    rollover = _request(action="journal_rollover", keys=None)
    assert rollover["keys"] == []
    assert "start a NEW AUDIT JOURNAL for no key (the token itself)" in signing.request_text("erin", rollover)


@pytest.mark.parametrize("overrides, option", [
    ({"action": "delete"}, "action"),
    ({"action": "policy"}, "action"),
    ({"token": ""}, "token"),
    ({"token": "x" * 33}, "token"),
    ({"change_ref": "CHG 2041; rm"}, "change_ref"),
    ({"change_ref": None}, "change_ref"),
    ({"keys": None}, "keys"),
    ({"keys": []}, "keys"),
    ({"keys": [{"name": "payments-dek"}]}, "keys"),
    ({"keys": [{"name": "payments-dek", "version": 0}]}, "keys"),
    ({"keys": [{"name": "payments dek/1", "version": 1}]}, "keys"),
    ({"keys": [{"name": "payments-dek", "version": 1, "id": "x"}]}, "keys"),
    ({"keys": "payments-dek"}, "keys"),
    ({"not_after": "2027-02-28T00:00:00+00:00"}, "not_after"),
    ({"not_after": "2027-03-01T12:00:00+00:00"}, "not_after"),
    ({"not_after": "2027-03-05T00:00:00"}, "not_after"),
    ({"not_after": "8d"}, "not_after"),
    ({"not_after": "tomorrow"}, "not_after"),
    ({"nonce": "XYZ"}, "nonce"),
    ({"nonce": "ABCDEF0123456789ABCDEF0123456789"}, "nonce"),
    ({"nonce": "abc"}, "nonce"),
])
def test_bad_options_are_refused_naming_the_option(overrides, option):
    _refused(option, _request, **overrides)


def test_a_past_not_after_is_refused_in_the_approvers_words():
    error = _refused("not_after", _request, not_after="2027-02-28T00:00:00+00:00")
    assert "not in the future" in error.message and "approval" in error.message and "policy" not in error.message
    error = _refused("not_after", _request, not_after="8d")
    assert "policy.approval_max_validity (7d)" in error.message


@pytest.mark.parametrize("name", ["", "dana smith", "dana/officer", "x" * 129, None])
def test_a_bad_approver_name_is_refused(tmp_path, dana_key, name):
    _refused("approver_name", _signing().sign_approval, _request(), name, _signer(tmp_path, dana_key))


def test_the_approvers_key_file_is_checked(tmp_path, dana_key):
    from cryptography.hazmat.primitives.asymmetric import ec

    signing = _signing()
    request = _request()
    clear = _signer(tmp_path, dana_key, passphrase=None, name="clear.pem")
    error = _refused("private_key_path", signing.sign_approval, request, "dana", clear)
    assert "not encrypted" in error.message
    loose = _signer(tmp_path, dana_key, mode=0o644, name="loose.pem")
    error = _refused("private_key_path", signing.sign_approval, request, "dana", loose)
    assert "0644" in error.message and "chmod 600" in error.message
    readable = _signer(tmp_path, dana_key, mode=0o640, name="group.pem")
    _refused("private_key_path", signing.sign_approval, request, "dana", readable)
    wrong = _signer(tmp_path, dana_key, name="wrong.pem")
    wrong.passphrase = "not the passphrase"
    _refused("private_key_passphrase", signing.sign_approval, request, "dana", wrong)
    p384 = _signer(tmp_path, ec.generate_private_key(ec.SECP384R1()), name="p384.pem")
    error = _refused("private_key_path", signing.sign_approval, request, "dana", p384)
    assert "signatures are ECDSA P-256 / SHA-256" in error.message and "policy signatures" not in error.message
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._policy_signing import PemSigner

    _refused("private_key_path", signing.sign_approval, request, "dana",
             PemSigner(str(tmp_path / "absent.pem"), PASSPHRASE))


def test_the_signed_policy_catches_a_wrong_key_or_name(tmp_path, dana_key, erin_key):
    from cryptography.hazmat.primitives.asymmetric import ec

    signing = _signing()
    policy = _signed_policy(tmp_path, ec.generate_private_key(ec.SECP256R1()), {"dana": dana_key, "erin": erin_key},
                            approvals_required={"destroy": 2}, approval_max_validity="2d")
    expected = signing.approver_in_policy(policy, "dana")
    assert expected.fingerprint == _fingerprint(dana_key) and expected.max_validity == 2 * 86400
    assert expected.environment == "prod" and expected.serial == 7

    # signed with dana's key: fine; with erin's key as dana: refused before it signs
    signed = signing.sign_approval(_request(), "dana", _signer(tmp_path, dana_key), expected=expected)
    assert signed.approval["approver"] == expected.fingerprint
    error = _refused("private_key_path", signing.sign_approval, _request(), "dana",
                     _signer(tmp_path, erin_key, name="erin.pem"), expected=expected)
    assert _fingerprint(erin_key) in error.message and expected.fingerprint in error.message

    # a name the policy does not list
    error = _refused("approver_name", signing.approver_in_policy, policy, "mallory")
    assert "dana, erin" in error.message
    # the policy's approval_max_validity bounds not_after
    error = _refused("not_after", _request, not_after="3d", max_validity=expected.max_validity)
    assert "(2d)" in error.message
    assert _request(not_after="36h", max_validity=expected.max_validity)["not_after"] == "2027-03-03T00:00:00+00:00"
    # not a signed policy at all
    _refused("signed_policy", signing.approver_in_policy, {"policy": {}}, "dana")
    _refused("signed_policy", signing.approver_in_policy, dict(policy, policy={"min_rsa_bits": 1024}), "dana")


def test_an_existing_approval_for_the_same_request_is_kept(tmp_path, dana_key, erin_key):
    signing = _signing()
    signer = _signer(tmp_path, dana_key)
    request = _request(not_after="2027-03-02T00:00:00+00:00")
    first = signing.sign_approval(request, "dana", signer)
    dest = tmp_path / "dana.json"
    dest.write_text(first.text)
    existing = signing.read_existing(str(dest))
    assert existing == first.approval

    again = signing.sign_approval(request, "dana", signer, existing=existing)
    assert again.unchanged is True and again.approval == first.approval and again.text == first.text
    # another nonce, another name, another key, or an altered file: signed anew
    other = signing.sign_approval(_request(not_after="2027-03-02T00:00:00+00:00", nonce="ab" * 16), "dana", signer,
                                  existing=existing)
    assert other.unchanged is False and other.approval["request"]["nonce"] == "ab" * 16
    assert signing.sign_approval(request, "dana.o", signer, existing=existing).unchanged is False
    assert signing.sign_approval(request, "dana", _signer(tmp_path, erin_key, name="e.pem"),
                                 existing=existing).unchanged is False
    forged = dict(existing, signature=other.approval["signature"])
    assert signing.sign_approval(request, "dana", signer, existing=forged).unchanged is False
    # check mode's view: same request in the file, and the would-be file without a signature
    assert signing.same_request(existing, request, "dana") and not signing.same_request(None, request, "dana")
    planned = json.loads(signing.planned_text(request, "dana"))
    assert planned["request"] == request and planned["signature"].startswith("<")
    (tmp_path / "junk.json").write_text("{not json")
    assert signing.read_existing(str(tmp_path / "junk.json")) is None
    assert signing.read_existing(str(tmp_path / "absent.json")) is None


def test_module_docs_match_the_argument_spec():
    from ansible_collections.secops.keylifecycle.plugins.modules import approval_sign

    documented = yaml.safe_load(approval_sign.DOCUMENTATION)
    assert set(documented["attributes"]) >= {"check_mode", "diff_mode", "idempotent"}
    yaml.safe_load(approval_sign.EXAMPLES)
    returned = yaml.safe_load(approval_sign.RETURN)
    assert {"approval", "request", "request_text", "dest"} <= set(returned)
    options = documented_options(approval_sign)
    assert set(options) == set(approval_sign.ARGUMENT_SPEC)
    for name, spec in approval_sign.ARGUMENT_SPEC.items():
        assert options[name]["type"] == spec["type"], name
        assert bool(options[name].get("required")) == bool(spec.get("required")), name
        assert options[name].get("default") == spec.get("default"), name
        assert options[name].get("choices") == spec.get("choices"), name
    assert options["keys"]["suboptions"].keys() == approval_sign.ARGUMENT_SPEC["keys"]["options"].keys()
    assert approval_sign.ARGUMENT_SPEC["private_key_passphrase"]["no_log"] is True
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import APPROVAL_ACTIONS

    assert tuple(approval_sign.ARGUMENT_SPEC["action"]["choices"]) == APPROVAL_ACTIONS


def test_no_secret_in_a_signer_repr(tmp_path, dana_key):
    assert PASSPHRASE not in repr(_signer(tmp_path, dana_key))


# ---- increment C: recipients and policy changes ----------------------------------------------------------------

FINGERPRINT = "sha256:" + "4f" * 32


def _new_policy(tmp_path, approvers, serial=8, environment="prod", **settings):
    """A signed policy (the NEW one of a policy change), signed by another officer key; approvers as in force."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._policy_signing import PemSigner, sign_policy

    policy = dict(settings, approvers={name: _public_pem(key) for name, key in approvers.items()})
    signer = PemSigner(str(_key_file(tmp_path, ec.generate_private_key(ec.SECP256R1()), name="new-signer.pem")),
                       PASSPHRASE)
    return sign_policy(policy, environment, serial, "2099-01-01T00:00:00+00:00", "prod-officer",
                       signer).signed_policy


def test_a_recipient_approval_names_recipient_and_fingerprint(tmp_path, dana_key):
    signing = _signing()
    # as the module passes them: every suboption, those not given None
    keys = [{"name": None, "version": None, "recipient": "partner-bank", "fingerprint": FINGERPRINT, "policy": None},
            {"name": None, "version": None, "recipient": "acme", "fingerprint": "sha256:" + "0a" * 32,
             "policy": None}]
    request = _request(action="recipient_approve", keys=keys)
    assert request["keys"] == [{"recipient": "acme", "fingerprint": "sha256:" + "0a" * 32},
                               {"recipient": "partner-bank", "fingerprint": FINGERPRINT}]
    assert request["token"] == "prod-hsm"
    text = signing.request_text("dana", request)
    assert text.startswith("dana approves: APPROVE as a trusted recipient")
    assert "partner-bank" in text and FINGERPRINT in text and "'prod-hsm'" in text
    revoke = _request(action="recipient_revoke", keys=keys[1:])
    assert "REVOKE" in signing.request_text("dana", revoke) and "acme" in signing.request_text("dana", revoke)
    signed = signing.sign_approval(request, "dana", _signer(tmp_path, dana_key))
    assert _approvals().parse_approval(signed.approval) == signed.approval
    assert _approvals().verify_signature(dana_key.public_key(), signed.approval)
    # a recipient action needs a token and recipients; a key version is not a recipient
    error = _refused("token", _request, action="recipient_approve", keys=keys, token=None)
    assert "required for recipient_approve" in error.message
    error = _refused("keys", _request, action="recipient_revoke", keys=None)
    assert "recipient, fingerprint" in error.message
    _refused("keys", _request, action="recipient_approve", keys=KEYS)
    _refused("keys", _request, action="recipient_approve", keys=[{"recipient": "acme", "fingerprint": "md5:ab"}])
    _refused("keys", _request, action="destroy", keys=[{"recipient": "acme", "fingerprint": FINGERPRINT}])
    _refused("token", _request, action="recipient_approve", keys=keys, token="*")


def test_a_policy_change_approves_the_new_policys_digest_on_every_token(tmp_path, dana_key, erin_key):
    from cryptography.hazmat.primitives.asymmetric import ec

    from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import policy_digest

    signing = _signing()
    approvers = {"dana": dana_key, "erin": erin_key}
    in_force = _signed_policy(tmp_path, ec.generate_private_key(ec.SECP256R1()), approvers,
                              approvals_required={"destroy": 2, "policy_change": 2})
    new = _new_policy(tmp_path, approvers, approvals_required={"destroy": 2, "policy_change": 2},
                      max_rotation_period="90d", min_rsa_bits=4096)
    digest = policy_digest(new)

    described = signing.read_new_policy(new, "policy_change", in_force=in_force)
    assert described.as_dict() == {"sha256": digest, "environment": "prod", "serial": 8,
                                   "signer_name": "prod-officer", "changes": ["max_rotation_period", "min_rsa_bits"],
                                   "approvals_required": {"destroy": 2, "policy_change": 2},
                                   "approvers": ["dana", "erin"]}
    request = _request(action="policy_change", keys=None, token=None, new_policy=described)
    assert request["keys"] == [{"policy": digest}] and request["token"] == "*"
    text = signing.request_text("dana", request, described)
    assert text == ("dana approves: put in force the signed policy of SHA-256 %s (environment prod, serial 8, signed "
                    "by prod-officer; it requires signed approvals for destroy 2, policy_change 2, from dana, erin; "
                    "changes from the signed_policy given (its signature is checked on the HSM host, not here): "
                    "max_rotation_period, min_rsa_bits) on every token of the environment, change CHG-2041, valid "
                    "until 2027-03-02T12:00:00+00:00, nonce %s" % (digest, NONCE))
    # a forged policy in force (its signature is not checked here) hides the changes, not what the new policy says
    lax = _new_policy(tmp_path, approvers, max_rotation_period="90d", min_rsa_bits=4096)
    forged = _new_policy(tmp_path, approvers, max_rotation_period="90d", min_rsa_bits=4096)
    lax_described = signing.read_new_policy(lax, "policy_change", in_force=forged)
    lax_request = _request(action="policy_change", keys=None, token=None, new_policy=lax_described)
    words = signing.request_text("dana", lax_request, lax_described)
    assert "changes from the signed_policy given" in words and ": none)" in words
    assert "it requires no signed approval for any action" in words
    # without the policy in force the changes are not compared; keys naming the same digest are fine
    alone = signing.read_new_policy(new, "policy_change")
    assert alone.changes is None and "changes not compared" in signing.request_text("dana", request, alone)
    same = _request(action="policy_change", keys=[{"policy": digest, "name": None, "version": None}], token=None,
                    new_policy=alone)
    assert same == request
    # one token only, when the approver says so
    assert _request(action="policy_change", keys=None, token="prod-hsm", new_policy=alone)["token"] == "prod-hsm"
    # keys alone (the digest policy_sign returned), without new_policy
    assert _request(action="policy_change", keys=[{"policy": digest}], token=None)["keys"] == [{"policy": digest}]

    # signed by dana, the approver the policy in force lists; parses and verifies as the HSM host reads it
    expected = signing.approver_in_policy(in_force, "dana")
    signed = signing.sign_approval(request, "dana", _signer(tmp_path, dana_key), expected=expected)
    assert _approvals().parse_approval(signed.approval)["request"] == request
    assert _approvals().verify_signature(dana_key.public_key(), signed.approval)

    # refused, naming the option
    error = _refused("keys", _request, action="policy_change", keys=[{"policy": "ab" * 32}], token=None,
                     new_policy=alone)
    assert digest in error.message
    error = _refused("keys", _request, action="policy_change", keys=None, token=None)
    assert "new_policy" in error.message
    _refused("keys", _request, action="policy_change", keys=[{"policy": digest}, {"policy": "ab" * 32}], token=None)
    _refused("keys", _request, action="policy_change", keys=KEYS, token=None)
    _refused("token", _request, action="destroy", token=None)
    error = _refused("new_policy", signing.read_new_policy, new, "destroy")
    assert "only for action policy_change" in error.message
    other_env = _new_policy(tmp_path, approvers, environment="staging")
    error = _refused("new_policy", signing.read_new_policy, other_env, "policy_change", in_force=in_force)
    assert "environment staging" in error.message and "environment prod" in error.message
    older = _new_policy(tmp_path, approvers, serial=6)
    error = _refused("new_policy", signing.read_new_policy, older, "policy_change", in_force=in_force)
    assert "serial 6" in error.message and "serial 7" in error.message
    _refused("new_policy", signing.read_new_policy, {"policy": {}}, "policy_change")
    _refused("new_policy", signing.read_new_policy, dict(new, policy={"min_rsa_bits": 1024}), "policy_change")
