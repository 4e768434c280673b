# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The signature schemes of the collection's own signing keys (``audit-checkpoint``, ``package-signing``).

PRIVATE: not part of the public interface. docs/audit.md gives the openssl recipe for each scheme.

The key follows the token (issue "Proven on more than one PKCS#11 token"): ECDSA P-256 where the token generates EC
keys and signs with CKM_ECDSA; otherwise RSA-3072 with RSASSA-PSS (SHA-256, MGF1-SHA-256, a 32-byte salt), or
RSASSA-PKCS1-v1_5 with SHA-256 on a token that offers no PSS. A signature is always made inside the token over the
SHA-256 of the payload and given in base64: DER (r, s) for ECDSA, the raw signature block for RSA.

Which scheme a key signs with follows from its type (and, for RSA, from what the token offers), so a verifier needs
only the public key: an EC key must be P-256 or stronger and verifies ECDSA / SHA-256; an RSA key must be 3072 bits
or more and verifies either RSA scheme, both of which are sound for such a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import (
    MGF,
    InvalidSignature,
    Mechanism,
    ec,
    encode_ecdsa_signature,
    hashes,
    padding,
    rsa,
    serialization,
)


ECDSA_P256 = "ecdsa-p256-sha256"
RSA_PSS = "rsa-pss-sha256"
RSA_PKCS1 = "rsa-pkcs1v15-sha256"
#: the smallest RSA key (bits) and EC curve (bits) a managed signing key may have
MIN_RSA_BITS = 3072
MIN_EC_BITS = 256
PSS_SALT_BYTES = 32
#: DER DigestInfo prefix of SHA-256 (RFC 8017, 9.2 note 1), for CKM_RSA_PKCS over a digest
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def managed_key_type(offered):
    """The key a token with the mechanisms ``offered`` (CKM_ names) makes for the collection's own signatures:
    ``("ec", ECDSA_P256)``, ``("rsa", RSA_PSS)`` or ``("rsa", RSA_PKCS1)``, or ``(None, None)`` when it can make
    none of them."""
    offered = set(offered)
    if {"CKM_EC_KEY_PAIR_GEN", "CKM_ECDSA"} <= offered:
        return "ec", ECDSA_P256
    if "CKM_RSA_PKCS_KEY_PAIR_GEN" in offered:
        scheme = rsa_scheme(offered)
        if scheme:
            return "rsa", scheme
    return None, None


def rsa_scheme(offered):
    """The RSA signature scheme the token offers, PSS first; None when it offers neither."""
    if {"CKM_SHA256_RSA_PKCS_PSS", "CKM_RSA_PKCS_PSS"} & set(offered):
        return RSA_PSS
    if {"CKM_SHA256_RSA_PKCS", "CKM_RSA_PKCS"} & set(offered):
        return RSA_PKCS1
    return None


def sign_in_token(private_key, key_type, offered, payload):
    """Base64 of the signature of ``payload`` by ``private_key`` (a python-pkcs11 private key), made in the token.

    ``offered``: the token's mechanism names (CKM_...), which choose among the RSA mechanisms."""
    digest = hashlib.sha256(payload).digest()
    if key_type == "ec":
        return _b64(encode_ecdsa_signature(private_key.sign(digest, mechanism=Mechanism.ECDSA)))
    offered = set(offered)
    pss = (Mechanism.SHA256, MGF.SHA256, PSS_SALT_BYTES)
    if "CKM_SHA256_RSA_PKCS_PSS" in offered:
        return _b64(private_key.sign(payload, mechanism=Mechanism.SHA256_RSA_PKCS_PSS, mechanism_param=pss))
    if "CKM_RSA_PKCS_PSS" in offered:
        return _b64(private_key.sign(digest, mechanism=Mechanism.RSA_PKCS_PSS, mechanism_param=pss))
    if "CKM_SHA256_RSA_PKCS" in offered:
        return _b64(private_key.sign(payload, mechanism=Mechanism.SHA256_RSA_PKCS))
    return _b64(private_key.sign(_SHA256_DIGEST_INFO + digest, mechanism=Mechanism.RSA_PKCS))


def _b64(raw):
    return base64.b64encode(raw).decode("ascii")


def load_public_key(pem):
    """A ``cryptography`` public key from PEM when it may sign for the collection (EC P-256 or stronger, RSA 3072
    bits or more); None otherwise."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError, AttributeError, TypeError):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size >= MIN_EC_BITS:
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return key
    return None


def signature_valid(public_key, signature, payload):
    """True when ``signature`` (base64) by ``public_key`` verifies over ``payload`` in one of the schemes above."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return False
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        attempts = [(ec.ECDSA(hashes.SHA256()),)]
    elif isinstance(public_key, rsa.RSAPublicKey):
        attempts = [(padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_BYTES), hashes.SHA256()),
                    (padding.PKCS1v15(), hashes.SHA256())]
    else:
        return False
    for arguments in attempts:
        try:
            public_key.verify(raw, payload, *arguments)
        except (InvalidSignature, ValueError, TypeError):
            continue
        return True
    return False
