"""Transport key checks and package validation (plugins/module_utils/_wrap.py)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@pytest.fixture
def wrap():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _wrap

    return _wrap


@pytest.fixture
def errors():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _errors

    return _errors


def pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="module")
def rsa3072():
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def test_strong_rsa_transport_key_is_accepted_and_fingerprinted(wrap, rsa3072):
    public_key, fingerprint = wrap.load_transport_public_key(pem(rsa3072), "r")
    assert public_key.key_size == 3072
    der = rsa3072.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    assert fingerprint == "sha256:" + hashlib.sha256(der).hexdigest()
    # pinned: the same fingerprint passes, another is refused
    wrap.load_transport_public_key(pem(rsa3072), "r", pinned_fingerprint=fingerprint)


def test_weak_or_unsupported_transport_keys_are_refused(wrap, errors, rsa3072):
    weak_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(errors.PolicyViolation, match="RSA 2048.*3072"):
        wrap.load_transport_public_key(pem(weak_rsa), "r")
    with pytest.raises(errors.PolicyViolation, match="below P-256"):
        wrap.load_transport_public_key(pem(ec.generate_private_key(ec.SECP192R1())), "r")
    with pytest.raises(errors.InvalidOption, match="RSA-OAEP"):
        wrap.load_transport_public_key(pem(ec.generate_private_key(ec.SECP384R1())), "r")
    with pytest.raises(errors.PolicyViolation, match="4096"):  # a stricter policy raises the bar
        wrap.load_transport_public_key(pem(rsa3072), "r", min_rsa_bits=4096)
    with pytest.raises(errors.PolicyViolation, match="pinned"):
        wrap.load_transport_public_key(pem(rsa3072), "r", pinned_fingerprint="sha256:" + "ab" * 32)
    with pytest.raises(errors.InvalidOption, match="public_key_pem"):
        wrap.load_transport_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "r")


PACKAGE = {"format": 1, "recipient": "billing", "name": "k", "version": 1, "id": "00" * 16, "type": "aes",
           "size": 256, "usage": ["encrypt", "decrypt"], "state": "active", "key_check_value": "a1b2c3",
           "transport_key_fingerprint": "sha256:" + "0" * 64, "oaep_hash": "sha1",
           "mechanism": "CKM_RSA_PKCS_OAEP:sha1", "wrapped": "AAAA",
           "signed_at": "2025-05-01T10:00:00.000001+00:00", "signer_fingerprint": "sha256:" + "1" * 64,
           "signature": "MEUCIQ=="}


def test_a_well_formed_package_passes(wrap):
    assert wrap.validate_package(dict(PACKAGE), 0, "billing")["name"] == "k"


@pytest.mark.parametrize("field,value,message", [
    ("type", "rsa", "only AES keys"),
    ("state", "destroyed", "active or deactivated"),
    ("key_check_value", "zz", "six hex digits"),
    ("mechanism", "CKM_RSA_PKCS:sha1", "wrapping mechanism"),
    ("oaep_hash", "md5", "one of sha1"),
    ("wrapped", "not base64!", "base64"),
    ("version", True, "positive number"),
    ("name", "../etc", "key's name"),
    ("format", 2, "package format 1"),
    ("signed_at", "yesterday", "the time the HSM signed"),
    ("signed_at", "2025-05-01T10:00:00", "UTC offset"),
    ("signer_fingerprint", "md5:00", "package signer"),
    ("signature", "not base64!", "DER ECDSA signature"),
])
def test_malformed_packages_are_refused_naming_the_field(wrap, errors, field, value, message):
    with pytest.raises(errors.InvalidOption, match=message) as caught:
        wrap.validate_package(dict(PACKAGE, **{field: value}), 3, "billing")
    assert caught.value.option == "packages"
    assert "packages[3]" in caught.value.message or "addressed" in caught.value.message


def test_a_malformed_blob_is_not_echoed(wrap, errors):
    for field in ("wrapped", "signature"):
        with pytest.raises(errors.InvalidOption, match="not valid") as caught:
            wrap.validate_package(dict(PACKAGE, **{field: "U0VDUkVUS0VZQllURVM=\n"}), 0, "billing")
        assert "U0VDUkVU" not in caught.value.message and "(21 characters, not shown)" in caught.value.message


@pytest.mark.parametrize("field, value, message", [
    ("recipient", "reports", "addressed to recipient 'reports'"),
    ("signature", None, "carries no signature: it is not signed by the HSM"),
    ("signed_at", None, "carries no signed_at"),
])
def test_packages_for_others_or_unsigned_are_rejected(wrap, errors, field, value, message):
    with pytest.raises(errors.PackageRejected, match=message) as caught:
        wrap.validate_package(dict(PACKAGE, **{field: value}), 3, "billing")
    assert caught.value.option == "packages" and "Nothing was installed" in caught.value.message


def test_recipient_copy_keeps_only_decrypt_side_usages_when_deactivated(wrap):
    usage = ("decrypt", "encrypt", "unwrap", "wrap")
    assert wrap.usage_for_state(usage, "active") == usage
    assert wrap.usage_for_state(usage, "deactivated") == ("decrypt", "unwrap")
