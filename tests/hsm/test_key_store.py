"""Generation and enumeration on a real token, checked through the independent reader."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from tests.conftest import PKCS11_MODULE


def _store(session, label):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_store import TokenKeyStore

    return TokenKeyStore(session, label).load()


def _spec(**raw):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import build_key_spec
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE

    return build_key_spec(raw, BASELINE)


def _now():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import utc_now

    return utc_now()


def _open(settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_session

    return open_session(settings)


def by_label(objects, label, cls):
    found = [o for o in objects if o["label"] == label and o["class"] == cls]
    assert len(found) == 1, (label, cls, objects)
    return found[0]


@pytest.mark.parametrize("usage", [["encrypt", "decrypt"], ["wrap", "unwrap"], ["decrypt"]])
@pytest.mark.parametrize("distributable", [False, True])
def test_aes_generation_attributes(settings, hsm_token, usage, distributable):
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        version = store.generate(_spec(name="k", usage=usage, distributable=distributable), 1, "alice", _now())
    objects = hsm_token.objects()
    key = by_label(objects, "k:v1", "SECRET_KEY")
    meta = by_label(objects, "k:v1", "DATA")
    assert key["id"] == version.key_id and len(key["id"]) == 32
    assert key["value_len"] == 32
    assert key["sensitive"] and key["always_sensitive"] and key["local"] and key["private"] and key["token"]
    assert key["extractable"] is distributable
    assert key["never_extractable"] is (not distributable)
    for flag in ("encrypt", "decrypt", "wrap", "unwrap", "sign", "verify", "derive"):
        assert key[flag] is (flag in usage), flag
    assert meta["application"] == "secops.keylifecycle" and meta["private"]
    assert meta["value"]["state"] == "active" and meta["value"]["id"] == version.key_id
    assert meta["value"]["key_check_value"] == version.key_check_value
    assert version.evidence == {"local": True, "sensitive": True, "always_sensitive": True,
                                "never_extractable": not distributable, "extractable": distributable}
    if "encrypt" in usage:
        # The independent reader computes the KCV itself with the token's AES-ECB.
        assert key["kcv"] == version.key_check_value


def test_kcv_matches_reference_vector_computation(settings, hsm_token):
    """The KCV is the first 3 bytes of AES-ECB(zero block), checked against cryptography on a known key."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_templates import aes_check_value

    known = bytes(range(32))
    with _open(settings) as session:
        key = session.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                                     Attribute.VALUE: known, Attribute.ENCRYPT: True, Attribute.TOKEN: False})
        kcv = aes_check_value(key, keep_encrypt=True)
        assert bytes(key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))[:3].hex() == kcv
    encryptor = Cipher(algorithms.AES(known), modes.ECB()).encryptor()
    assert kcv == (encryptor.update(bytes(16)) + encryptor.finalize())[:3].hex()


@pytest.mark.parametrize("raw,label_class", [
    ({"name": "r", "type": "rsa", "size": 3072, "usage": ["sign", "verify"]}, "rsa"),
    ({"name": "e", "type": "ec", "curve": "P-256", "usage": ["sign", "verify"]}, "ec"),
])
def test_key_pair_generation_and_fingerprint(settings, hsm_token, raw, label_class, tmp_path):
    with _open(settings) as session:
        version = _store(session, settings.token_label).generate(_spec(**raw), 1, "alice", _now())
    label = "%s:v1" % raw["name"]
    objects = hsm_token.objects()
    private = by_label(objects, label, "PRIVATE_KEY")
    public = by_label(objects, label, "PUBLIC_KEY")
    assert private["sensitive"] and not private["extractable"] and private["local"] and private["sign"]
    assert not private["decrypt"] and not private["unwrap"]
    assert public["verify"] and not public["private"]
    assert private["id"] == public["id"] == version.key_id
    if label_class == "rsa":
        assert public["modulus_bits"] == 3072
    # Independent fingerprint: pkcs11-tool exports the public key as DER SPKI, hashed here.
    der = tmp_path / "pub.der"
    subprocess.run(["pkcs11-tool", "--module", PKCS11_MODULE, "--token-label", hsm_token.label,
                    "--read-object", "--type", "pubkey", "--label", label, "-o", str(der)],
                   check=True, capture_output=True, env={"SOFTHSM2_CONF": str(hsm_token.conf), "PATH": "/usr/bin:/bin"})
    assert version.public_key_fingerprint == "sha256:" + hashlib.sha256(der.read_bytes()).hexdigest()


def test_enumeration_indexes_versions_and_ignores_foreign_objects(settings, hsm_token):
    from pkcs11 import Attribute, KeyType

    with _open(settings) as session:
        session.generate_key(KeyType.AES, 256, label="someone-elses-key", store=True,
                             template={Attribute.SENSITIVE: True})
        store = _store(session, settings.token_label)
        for name in ("a", "b", "c"):
            store.generate(_spec(name=name), 1, "alice", _now())
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        assert store.names() == ["a", "b", "c"]
        assert [v.version for v in store.versions("b")] == [1]
        assert store.versions("b")[0].evidence["sensitive"] is True
        assert store.versions("missing") == []
        assert store.anomalies == []


def test_orphan_key_without_metadata_is_reported(settings):
    from pkcs11 import Attribute, KeyType

    with _open(settings) as session:
        session.generate_key(KeyType.AES, 256, label="half-made:v1", store=True,
                             template={Attribute.SENSITIVE: True})
        store = _store(session, settings.token_label)
        assert store.versions("half-made") == []
        assert [a.label for a in store.anomalies] == ["half-made:v1"]
        assert "without a metadata object" in store.anomalies[0].problem


def test_metadata_update_adds_a_revision(settings, hsm_token):
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        version = store.generate(_spec(name="k", rotation_period="90d"), 1, "alice", _now())
        store.update_metadata(version, version.with_spec(_spec(name="k", rotation_period="30d")))
    metas = sorted((o for o in hsm_token.objects() if o["class"] == "DATA"), key=lambda o: o["value"]["revision"])
    assert [(m["value"]["revision"], m["value"]["rotation_period"]) for m in metas] == [(1, "90d"), (2, "30d")]
    with _open(settings) as session:  # a fresh read takes the highest revision
        assert _store(session, settings.token_label).versions("k")[0].spec.rotation_period == 30 * 86400
