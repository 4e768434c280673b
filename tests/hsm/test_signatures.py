"""Signatures made inside a real SoftHSM2 token by each mechanism the collection's signing keys may use
(``_signatures.sign_in_token``), checked by the verifier audit_verify and key_install use, and by openssl."""

from __future__ import annotations

import subprocess

import pytest

PAYLOAD = b'{"head_hash":"ab","journal_id":"j","seq":7,"signed_at":"2026-12-01T00:00:00.000000+00:00"}'


@pytest.fixture
def session(hsm_token):
    import pkcs11

    from tests.conftest import PKCS11_MODULE

    token = pkcs11.lib(PKCS11_MODULE).get_token(token_label=hsm_token.label)
    with token.open(rw=True, user_pin=hsm_token.user_pin) as opened:
        yield opened


def _pair(session, key_type):
    from pkcs11 import Attribute, KeyType

    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import TOKEN_CURVES

    if key_type == "ec":
        return session.generate_keypair(KeyType.EC, store=False, public_template={
            Attribute.EC_PARAMS: TOKEN_CURVES["P-256"].ec_params()})
    return session.generate_keypair(KeyType.RSA, 3072, store=False)


@pytest.mark.parametrize("key_type, offered", [
    ("ec", ["CKM_ECDSA"]),
    ("rsa", ["CKM_SHA256_RSA_PKCS_PSS", "CKM_RSA_PKCS_PSS"]),
    ("rsa", ["CKM_RSA_PKCS_PSS"]),
    ("rsa", ["CKM_SHA256_RSA_PKCS"]),
    ("rsa", ["CKM_RSA_PKCS"]),
])
def test_a_signature_made_in_the_token_verifies(session, tmp_path, key_type, offered):
    import base64

    from ansible_collections.secops.keylifecycle.plugins.module_utils import _signatures
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
        key_version_public_key,
        public_key_pem,
    )

    public, private = _pair(session, key_type)
    signature = _signatures.sign_in_token(private, key_type, offered, PAYLOAD)
    spec = type("Spec", (), {"type": key_type, "curve": "P-256"})
    public_key = _signatures.load_public_key(public_key_pem(key_version_public_key(spec, public)))
    assert public_key is not None
    assert _signatures.signature_valid(public_key, signature, PAYLOAD)
    assert not _signatures.signature_valid(public_key, signature, PAYLOAD.replace(b'"seq":7', b'"seq":8'))
    # the recipe of docs/audit.md
    (tmp_path / "pub.pem").write_text(public_key_pem(public_key))
    (tmp_path / "payload.json").write_bytes(PAYLOAD)
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(signature))
    options = []
    if key_type == "rsa" and "PSS" in offered[0]:
        options = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"]
    proc = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"), *options,
                           "-signature", str(tmp_path / "sig.bin"), str(tmp_path / "payload.json")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "Verified OK" in proc.stdout, proc.stdout + proc.stderr
