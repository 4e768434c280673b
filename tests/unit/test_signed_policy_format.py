"""The signed policy's format (design 14, section 1), pure: payload bytes, shape checks, digests, comparison.

The signature over the payload is checked with ``cryptography`` here (the token's check is
tests/hsm/test_signed_policy.py).
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

SIGNER = "sha256:" + "ab" * 32


@pytest.fixture
def sp():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _signed_policy

    return _signed_policy


def _doc(**changes):
    doc = {"format": 1, "environment": "prod", "serial": 3, "not_after": "2027-06-30T00:00:00+00:00",
           "policy": {"min_rsa_bits": 4096, "destroy_requires_approval": True}, "signer": SIGNER,
           "signer_name": "dana", "signature": base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()}
    doc.update(changes)
    return doc


def test_payload_is_canonical_json_of_the_signed_fields(sp):
    doc = _doc(policy={"min_rsa_bits": 4096, "allowed_curves": ["P-384"], "groups": {"é": ["x"]}})
    payload = sp.policy_payload(doc)
    expected = json.dumps({name: doc[name] for name in ("environment", "format", "not_after", "policy", "serial",
                                                        "signer")},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    assert payload == expected
    assert payload.startswith(b'{"environment":"prod","format":1,"not_after":"2027-06-30T00:00:00+00:00",'
                              b'"policy":{"allowed_curves":["P-384"],"groups":{"\\u00e9":["x"]},"min_rsa_bits":4096},'
                              b'"serial":3,"signer":"sha256:')
    payload.decode("ascii")
    # neither signer_name nor signature is signed
    assert sp.policy_payload(dict(doc, signer_name="eve", signature="AAAA")) == payload
    for field, value in (("serial", 4), ("environment", "dev"), ("not_after", "2028-01-01T00:00:00+00:00"),
                         ("policy", {"min_rsa_bits": 3072}), ("signer", "sha256:" + "cd" * 32)):
        assert sp.policy_payload(dict(doc, **{field: value})) != payload, field


def test_payload_signed_with_cryptography_verifies(sp):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    doc = _doc()
    doc["signature"] = base64.b64encode(key.sign(sp.policy_payload(doc), ec.ECDSA(hashes.SHA256()))).decode()
    parsed = sp.parse_signed_policy(doc)
    key.public_key().verify(base64.b64decode(parsed["signature"]), sp.policy_payload(parsed), ec.ECDSA(hashes.SHA256()))


def test_parse_accepts_a_document_and_its_json(sp):
    doc = _doc()
    assert sp.parse_signed_policy(doc) == doc
    assert sp.parse_signed_policy(json.dumps(doc)) == doc
    assert sp.parse_signed_policy(doc) is not doc
    without_name = _doc()
    del without_name["signer_name"]
    assert sp.parse_signed_policy(without_name)["signer_name"] == ""


@pytest.mark.parametrize("raw,why", [
    ("not json", "not JSON"),
    (["a"], "got list"),
    (None, "got NoneType"),
    (_doc(extra=1), "unknown field(s) extra"),
    ({k: v for k, v in _doc().items() if k != "signature"}, "missing field(s) signature"),
    ({k: v for k, v in _doc().items() if k != "policy"}, "missing field(s) policy"),
    (_doc(format=2), "format 2 is not 1"),
    (_doc(format=True), "format True is not 1"),
    (_doc(format="1"), "format '1' is not 1"),
    (_doc(environment="prod env"), "environment"),
    (_doc(environment=""), "environment"),
    (_doc(environment="x" * 65), "environment"),
    (_doc(serial=0), "serial 0"),
    (_doc(serial="3"), "serial '3'"),
    (_doc(serial=True), "serial True"),
    (_doc(serial=2.0), "serial 2.0"),
    (_doc(not_after="2027-06-30"), "not_after"),
    (_doc(not_after="2027-06-30T00:00:00Z"), "not_after"),
    (_doc(not_after="2027-06-30T00:00:00+02:00"), "not_after"),
    (_doc(not_after="next year+00:00"), "not an ISO 8601 time"),
    (_doc(policy=["min_rsa_bits"]), "policy must be a dict"),
    (_doc(signer="ab" * 32), "signer"),
    (_doc(signer="sha256:" + "AB" * 32), "signer"),
    (_doc(signer_name="bad name"), "signer_name"),
    (_doc(signature=""), "signature"),
    (_doc(signature="not base64!"), "signature is not base64"),
    (_doc(signature="A" * 400), "signature"),
    (_doc(policy={"min_rsa_bits": float("nan")}), "JSON"),
])
def test_parse_refuses_a_malformed_document(sp, raw, why):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption

    with pytest.raises(InvalidOption) as caught:
        sp.parse_signed_policy(raw)
    assert caught.value.option == "signed_policy"
    assert caught.value.message.startswith("signed_policy")
    assert why in caught.value.message


def test_parse_names_the_option(sp):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption

    with pytest.raises(InvalidOption) as caught:
        sp.parse_signed_policy(_doc(serial=0), option="key_policy_signed")
    assert caught.value.option == "key_policy_signed" and "key_policy_signed" in caught.value.message
    with pytest.raises(InvalidOption) as caught:
        sp.parse_signed_policy(_doc(not_after="tomorrow"), option="key_policy_signed")
    assert caught.value.option == "key_policy_signed"


def test_digest_of_a_signed_document_is_of_its_payload(sp):
    doc = _doc()
    assert sp.policy_digest(doc) == hashlib.sha256(sp.policy_payload(doc)).hexdigest()
    assert sp.policy_digest(dict(doc, signature="AAAA", signer_name="x")) == sp.policy_digest(doc)
    assert sp.policy_digest(dict(doc, serial=4)) != sp.policy_digest(doc)


def test_digest_of_unsigned_settings(sp):
    policy = {"min_rsa_bits": 4096, "allowed_curves": ["P-384"]}
    expected = hashlib.sha256(json.dumps(policy, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert sp.policy_digest(policy) == expected
    # unset settings (as AnsibleModule leaves them) do not change it
    assert sp.policy_digest(dict(policy, min_aes_bits=None)) == expected
    assert sp.policy_digest({}) == sp.policy_digest(None) == hashlib.sha256(b"{}").hexdigest()
    assert sp.policy_digest(policy) != sp.policy_digest(_doc(policy=policy))


def test_differences_name_the_settings(sp):
    signed = {"min_rsa_bits": 4096, "destroy_requires_approval": True, "allowed_curves": ["P-384"]}
    assert sp.policy_differences(dict(signed), signed) == []
    assert sp.policy_differences({}, signed) == ["allowed_curves", "destroy_requires_approval", "min_rsa_bits"]
    assert sp.policy_differences(dict(signed, min_rsa_bits=3072), signed) == ["min_rsa_bits"]
    assert sp.policy_differences(dict(signed, min_aes_bits=256), signed) == ["min_aes_bits"]
    assert sp.policy_differences(dict(signed, min_aes_bits=None), signed) == []
    assert sp.policy_differences({"allowed_curves": ["P-384", "P-521"]}, {"allowed_curves": ["P-384"]}) \
        == ["allowed_curves"]


def test_differences_compare_as_the_policy_option_takes_them(sp):
    """What AnsibleModule makes of a setting ("4096" -> 4096, yes -> true) is the same setting."""
    assert sp.policy_differences({"min_rsa_bits": 4096, "destroy_requires_approval": True},
                                 {"min_rsa_bits": "4096", "destroy_requires_approval": "yes"}) == []
    # a value the option refuses is compared as given
    assert sp.policy_differences({"min_rsa_bits": 4096}, {"min_rsa_bits": "lots"}) == ["min_rsa_bits"]
    assert sp.policy_differences({"min_rsa_bits": 4096}, {"no_such_setting": 1, "min_rsa_bits": 4096}) \
        == ["no_such_setting"]


def test_not_after_is_utc(sp):
    from datetime import datetime, timezone

    assert sp.parse_not_after("2027-06-30T00:00:00+00:00") == datetime(2027, 6, 30, tzinfo=timezone.utc)


def test_policy_refused_kinds():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError, PolicyRefused

    error = PolicyRefused("refused.", "policy_expired")
    assert isinstance(error, KeyLifecycleError)
    assert (error.kind, error.option) == ("policy_expired", "signed_policy")
    assert PolicyRefused("x", "policy_mismatch", option="policy").option == "policy"
    with pytest.raises(ValueError):
        raise PolicyRefused("x", "policy_whatever")
