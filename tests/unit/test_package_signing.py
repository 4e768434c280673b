"""Package payload and signature checks (plugins/module_utils/_package_signing.py), with a software signer."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


@pytest.fixture
def signing():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _package_signing

    return _package_signing


@pytest.fixture(scope="module")
def signer_key():
    return ec.generate_private_key(ec.SECP256R1())


def fingerprint(key):
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def package(**changes):
    value = {
        "format": 1, "action": "install", "recipient": "billing", "recipient_host": "r1",
        "transport_key_fingerprint": "sha256:" + "ab" * 32, "name": "payments-db", "version": 2,
        "id": "0a" * 16, "label": "payments-db:v2", "type": "aes", "size": 256, "usage": ["decrypt"],
        "state": "deactivated", "retain_until": "2030-01-01T00:00:00+00:00", "key_check_value": "a1b2c3",
        "mechanism": "CKM_RSA_PKCS_OAEP:sha1", "oaep_hash": "sha1", "wrapped": base64.b64encode(b"w" * 384).decode(),
    }
    value.update(changes)
    return value


def sign(signing, key, value):
    signed = dict(value, signed_at="2025-05-01T10:00:00.000001+00:00", signer_fingerprint=fingerprint(key))
    der = key.sign(signing.package_payload(signed), ec.ECDSA(hashes.SHA256()))
    return dict(signed, signature=base64.b64encode(der).decode())


def test_payload_is_canonical_and_covers_the_blob_by_its_hash(signing):
    value = package()
    payload = signing.package_payload(value)
    assert payload == json.dumps(json.loads(payload), sort_keys=True, separators=(",", ":")).encode()
    decoded = json.loads(payload)
    assert "wrapped" not in decoded and "signature" not in decoded
    assert decoded["wrapped_sha256"] == hashlib.sha256(value["wrapped"].encode()).hexdigest()
    assert signing.package_payload(dict(reversed(list(value.items())))) == payload  # key order does not matter
    assert signing.package_payload(dict(value, signature="x")) == payload
    assert json.loads(signing.package_payload(package(wrapped=None)))["wrapped_sha256"] is None


def test_a_signed_package_verifies(signing, signer_key):
    signing.verify_package(sign(signing, signer_key, package()), signer_key.public_key())
    signing.verify_package(sign(signing, signer_key, package(wrapped=None, action="update")),
                           signer_key.public_key())


@pytest.mark.parametrize("field, value", [
    ("name", "other-key"), ("version", 3), ("id", "0b" * 16), ("label", "other-key:v2"),
    ("usage", ["decrypt", "encrypt", "wrap", "sign"]), ("state", "active"), ("retain_until", None),
    ("key_check_value", "000000"), ("recipient", "intruder"), ("recipient_host", "r2"),
    ("transport_key_fingerprint", "sha256:" + "cd" * 32), ("signed_at", "2026-01-01T00:00:00.000000+00:00"),
    ("wrapped", base64.b64encode(b"v" * 384).decode()), ("wrapped", None), ("size", 128), ("action", "update"),
    ("extra", "added"),
])
def test_each_altered_field_is_refused(signing, signer_key, field, value):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import PackageRejected

    altered = dict(sign(signing, signer_key, package()), **{field: value})
    with pytest.raises(PackageRejected, match="does not verify with the HSM's package signer") as caught:
        signing.verify_package(altered, signer_key.public_key())
    assert caught.value.option == "packages" and "Nothing was installed" in str(caught.value)


def test_unsigned_foreign_signer_and_garbage_signature_are_refused(signing, signer_key):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import PackageRejected

    signed = sign(signing, signer_key, package())
    unsigned = {k: v for k, v in signed.items() if k != "signature"}
    with pytest.raises(PackageRejected, match="not signed by the HSM"):
        signing.verify_package(unsigned, signer_key.public_key())
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(PackageRejected, match="names package signer"):  # signed by another key, named as such
        signing.verify_package(sign(signing, other, package()), signer_key.public_key())
    forged = dict(sign(signing, other, package()), signer_fingerprint=fingerprint(signer_key))
    with pytest.raises(PackageRejected, match="does not verify"):  # another key claiming to be the pinned signer
        signing.verify_package(forged, signer_key.public_key())
    with pytest.raises(PackageRejected, match="does not verify"):
        signing.verify_package(dict(signed, signature="not base64!"), signer_key.public_key())


# ---- signer rollover: the certificate chain a recipient follows from its pinned signer ---------------------------


def pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def certify(signing, old, new, version, by=None):
    """A certificate of ``new`` by ``old`` (``by`` signs instead, for a forgery)."""
    certificate = {"name": "package-signing", "previous_version": version - 1, "previous_fingerprint": fingerprint(old),
                   "version": version, "fingerprint": fingerprint(new), "public_key_pem": pem(new),
                   "certified_at": "2030-01-0%dT00:00:00.000000+00:00" % version}
    signature = (by or old).sign(signing.certificate_payload(certificate), ec.ECDSA(hashes.SHA256()))
    return dict(certificate, signature=base64.b64encode(signature).decode())


@pytest.fixture(scope="module")
def signers():
    return [ec.generate_private_key(ec.SECP256R1()) for _index in range(4)]


@pytest.fixture
def chain(signing, signers):
    one, two, three, _other = signers
    return [certify(signing, one, two, 2), certify(signing, two, three, 3)]


def test_a_good_chain_reaches_the_new_signer(signing, signers, chain):
    one, two, three, _other = signers
    reached = signing.follow_certificates(one.public_key(), chain, fingerprint(three))
    assert reached.public_numbers() == three.public_key().public_numbers()
    # pinned later: the older link is skipped, not needed
    assert signing.follow_certificates(two.public_key(), chain, fingerprint(three)).public_numbers() == \
        three.public_key().public_numbers()
    # a step short of the end
    assert signing.follow_certificates(one.public_key(), chain, fingerprint(two)).public_numbers() == \
        two.public_key().public_numbers()


def refused(signing, pinned, certificates, target, message):
    with pytest.raises(signing.PackageRejected, match=message) as caught:
        signing.follow_certificates(pinned.public_key(), certificates, target)
    assert "Nothing was changed" in str(caught.value) and caught.value.option == "package_signer"


def test_a_chain_not_starting_at_the_pin_is_refused(signing, signers, chain):
    one, _two, three, other = signers
    refused(signing, other, chain, fingerprint(three), "no certificate .* starts at the signer this token pinned")
    refused(signing, one, [], fingerprint(three), "starts at the signer this token pinned")
    refused(signing, one, None, fingerprint(three), "starts at the signer this token pinned")


def test_a_broken_link_is_refused(signing, signers, chain):
    one, two, three, other = signers
    # v2 -> v3 left out: the next certificate names another previous signer
    broken = [chain[0], certify(signing, other, three, 3)]
    refused(signing, one, broken, fingerprint(three), "the chain is broken")
    # the chain ends before the signer the packages name
    refused(signing, one, chain[:1], fingerprint(three), "not to %s" % fingerprint(three))
    refused(signing, one, chain, fingerprint(other), "not to %s" % fingerprint(other))
    assert two  # (the middle signer is only reached through the chain)


FORGERIES = ("signed by another key", "key swapped", "fingerprint swapped", "signature garbage",
             "mismatched key, validly signed", "not a certificate", "other key name")


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_certificate_is_refused(signing, signers, chain, forgery):
    one, two, three, other = signers
    mismatched = certify(signing, one, two, 2)
    mismatched = dict(mismatched, public_key_pem=pem(other))
    mismatched["signature"] = base64.b64encode(one.sign(signing.certificate_payload(mismatched),
                                                        ec.ECDSA(hashes.SHA256()))).decode()
    # (certificates, the signer the packages name, what the refusal says)
    certificates, target, message = {
        # an attacker's key certified as the successor of the pinned signer, signed by the attacker
        "signed by another key": ([certify(signing, one, other, 2, by=other)], other, "does not verify"),
        # the genuine certificate with the attacker's key or fingerprint put in
        "key swapped": ([dict(chain[0], public_key_pem=pem(other))], two, "does not verify"),
        "fingerprint swapped": ([dict(chain[0], fingerprint=fingerprint(other))], other, "does not verify"),
        "signature garbage": ([dict(chain[0], signature="!!")], two, "does not verify"),
        "mismatched key, validly signed": ([mismatched], two, "is not the EC key"),
        "not a certificate": ([chain[0], "package-signing"], three, "is not a certificate"),
        "other key name": ([dict(chain[0], name="audit-checkpoint")], two, "is not a certificate"),
    }[forgery]
    refused(signing, one, certificates, fingerprint(target), message)


@pytest.mark.parametrize("curve", [ec.SECP256K1(), ec.BrainpoolP256R1()])
def test_a_package_signer_on_a_curve_no_token_holds_is_refused_before_pinning(curve):
    """load_public_key accepts any EC curve of 256 bits or more; the pin is a token object on a named curve of
    _token_objects.TOKEN_CURVES, so any other curve is a bad package_signer option (nothing reaches the token)."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_installation import _signer_key

    pem = ec.generate_private_key(curve).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(InvalidOption, match="curve %s" % curve.name) as refused:
        _signer_key({"public_key_pem": pem})
    assert refused.value.option == "package_signer"
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    assert _signer_key({"public_key_pem": p256})[1].startswith("sha256:")
