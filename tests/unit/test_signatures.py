"""The signature schemes of the collection's own signing keys (``_signatures``): which key a token's mechanisms
give, which public keys may sign, and that each scheme verifies (and nothing else does). Signatures here are made
in software with ``cryptography``; the same schemes made inside a real token are in tests/hsm/test_signatures.py."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

PAYLOAD = b'{"head_hash":"00","journal_id":"j","seq":1,"signed_at":"t"}'


@pytest.fixture(scope="module")
def sig():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _signatures

    return _signatures


@pytest.fixture(scope="module")
def rsa3072():
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.mark.parametrize("offered, expected", [
    ({"CKM_EC_KEY_PAIR_GEN", "CKM_ECDSA", "CKM_RSA_PKCS_KEY_PAIR_GEN", "CKM_SHA256_RSA_PKCS_PSS"}, ("ec", "ecdsa")),
    ({"CKM_RSA_PKCS_KEY_PAIR_GEN", "CKM_SHA256_RSA_PKCS_PSS", "CKM_RSA_PKCS"}, ("rsa", "pss")),
    ({"CKM_EC_KEY_PAIR_GEN", "CKM_RSA_PKCS_KEY_PAIR_GEN", "CKM_RSA_PKCS_PSS"}, ("rsa", "pss")),  # EC without ECDSA
    ({"CKM_RSA_PKCS_KEY_PAIR_GEN", "CKM_SHA256_RSA_PKCS"}, ("rsa", "pkcs1")),
    ({"CKM_RSA_PKCS_KEY_PAIR_GEN", "CKM_RSA_PKCS"}, ("rsa", "pkcs1")),
    ({"CKM_RSA_PKCS_KEY_PAIR_GEN"}, (None, None)),
    ({"CKM_AES_KEY_GEN", "CKM_ECDSA"}, (None, None)),
])
def test_the_managed_key_follows_the_mechanisms_offered(sig, offered, expected):
    names = {"ecdsa": sig.ECDSA_P256, "pss": sig.RSA_PSS, "pkcs1": sig.RSA_PKCS1, None: None}
    assert sig.managed_key_type(sorted(offered)) == (expected[0], names[expected[1]])


def test_only_strong_keys_may_sign(sig, rsa3072):
    assert sig.load_public_key(pem(ec.generate_private_key(ec.SECP256R1()))) is not None
    assert sig.load_public_key(pem(ec.generate_private_key(ec.SECP384R1()))) is not None
    assert sig.load_public_key(pem(rsa3072)).key_size == 3072
    assert sig.load_public_key(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))) is None
    assert sig.load_public_key(pem(ec.generate_private_key(ec.SECP224R1()))) is None
    assert sig.load_public_key("garbage") is None
    assert sig.load_public_key(None) is None


def test_each_scheme_verifies_and_a_changed_payload_does_not(sig, rsa3072):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    made = [
        (ec_key, ec_key.sign(PAYLOAD, ec.ECDSA(hashes.SHA256()))),
        (rsa3072, rsa3072.sign(PAYLOAD, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                               hashes.SHA256())),
        (rsa3072, rsa3072.sign(PAYLOAD, padding.PKCS1v15(), hashes.SHA256())),
    ]
    for key, raw in made:
        signature = base64.b64encode(raw).decode()
        assert sig.signature_valid(key.public_key(), signature, PAYLOAD)
        assert not sig.signature_valid(key.public_key(), signature, PAYLOAD + b" ")
        assert not sig.signature_valid(key.public_key(), "not base64!", PAYLOAD)
    other = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    assert not sig.signature_valid(other.public_key(), base64.b64encode(made[1][1]).decode(), PAYLOAD)
    # a PSS signature with a SHA-1 MGF is not one of the schemes
    sha1_mgf = rsa3072.sign(PAYLOAD, padding.PSS(mgf=padding.MGF1(hashes.SHA1()), salt_length=32), hashes.SHA256())
    assert not sig.signature_valid(rsa3072.public_key(), base64.b64encode(sha1_mgf).decode(), PAYLOAD)
