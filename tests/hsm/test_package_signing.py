"""The HSM's package-signing key on a real token: generated once, signs inside the token, verified outside it."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from tests.hsm.test_key_store import _open, _store


def _package(**changes):
    package = {
        "format": 1, "action": "install", "recipient": "billing", "recipient_host": "r1",
        "transport_key_fingerprint": "sha256:" + "ab" * 32, "name": "payments-db", "version": 1,
        "id": "0a" * 16, "label": "payments-db:v1", "type": "aes", "size": 256, "usage": ["encrypt", "decrypt"],
        "state": "active", "retain_until": None, "key_check_value": "a1b2c3",
        "mechanism": "CKM_RSA_PKCS_OAEP:sha1", "oaep_hash": "sha1", "wrapped": base64.b64encode(b"x" * 384).decode(),
    }
    package.update(changes)
    return package


def _context():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext

    return AuditContext("alice", "test", "run-1", host="h")


def test_signer_is_generated_once_and_journaled(settings, hsm_token):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import (
        SIGNER_KEY_NAME,
        ensure_package_signer,
        signer_record,
    )

    with _open(settings) as session:
        store = _store(session, settings.token_label)
        assert signer_record(store) is None  # read-only: nothing generated
        assert not [o for o in hsm_token.objects() if o["label"].startswith(SIGNER_KEY_NAME)]
        events = []
        signer, created = ensure_package_signer(store, _context(), events)
        version = signer.version
        assert created and version.version == 1
        [event] = events
        assert event["event"]["action"] == "key-generate" and event["event"]["reason"] == "package signing key"
        assert event["key"]["name"] == SIGNER_KEY_NAME and event["key"]["curve"] == "P-256"
        again = []
        again_signer, again_created = ensure_package_signer(store, _context(), again)
        assert (again_signer.version, again_created) == (version, False) and again == []
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        events = []
        assert ensure_package_signer(store, _context(), events)[1] is False and events == []
        record = signer_record(store)
    assert record["name"] == SIGNER_KEY_NAME and record["version"] == 1
    assert record["fingerprint"] == version.public_key_fingerprint and "BEGIN PUBLIC KEY" in record["public_key_pem"]
    objects = [o for o in hsm_token.objects() if o["label"] == "%s:v1" % SIGNER_KEY_NAME]
    private = [o for o in objects if o["class"] == "PRIVATE_KEY"]
    assert len(private) == 1 and private[0]["sensitive"] is True and private[0]["extractable"] is False


def test_package_signed_in_the_token_verifies_outside_it(settings, hsm_token, tmp_path):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import PackageRejected
    from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import (
        PackageSigner,
        package_payload,
        verify_package,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._signatures import (
        load_public_key as load_signer_public_key,
    )

    with _open(settings) as session:
        store = _store(session, settings.token_label)
        signer = PackageSigner(store)
        _version, created = signer.prepare("alice")
        assert created
        package = _package()
        signed = signer.sign(package)
        record = signer.public_record()
    assert package == _package()  # a copy: the input is left alone
    assert set(signed) - set(package) == {"signed_at", "signer_fingerprint", "signature"}
    assert signed["signer_fingerprint"] == record["fingerprint"]
    public_key = load_signer_public_key(record["public_key_pem"])
    verify_package(signed, public_key)
    with pytest.raises(PackageRejected, match="does not verify"):
        verify_package(dict(signed, usage=["encrypt", "decrypt", "wrap"]), public_key)
    # openssl checks it too: the payload is canonical JSON, the signature DER
    (tmp_path / "payload.json").write_bytes(package_payload(signed))
    (tmp_path / "sig.der").write_bytes(base64.b64decode(signed["signature"]))
    (tmp_path / "signer.pem").write_text(record["public_key_pem"])
    result = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "signer.pem"), "-signature",
                             str(tmp_path / "sig.der"), str(tmp_path / "payload.json")], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0 and "Verified OK" in result.stdout
    payload = json.loads(package_payload(signed))
    assert "signature" not in payload and "wrapped" not in payload and len(payload["wrapped_sha256"]) == 64


def test_recipient_pins_the_signer_once_and_refuses_another(settings, hsm_token):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import PolicyViolation
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_installation import (
        InstallResult,
        pin_package_signer,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._pinned_signer import PACKAGE_SIGNER_LABEL
    from ansible_collections.secops.keylifecycle.plugins.module_utils._recipient_store import RecipientTokenStore

    def pem(key):
        return key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    signer, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def pin(raw, check_mode=False):
        with _open(settings) as session:
            store = RecipientTokenStore(session, settings.token_label, "keylifecycle-transport").load()
            result = InstallResult()
            return pin_package_signer(store, raw, _context(), check_mode, result), result

    assert pin(None) == (None, InstallResult())
    record, result = pin({"public_key_pem": pem(signer)}, check_mode=True)
    assert record is None and result.changed and result.audit_events == []
    record, result = pin({"public_key_pem": pem(signer)})
    assert result.changed and record["label"] == PACKAGE_SIGNER_LABEL and record["curve"] == "P-256"
    [event] = result.audit_events
    assert event["event"]["action"] == "package-signer-pin"
    assert event["key"]["package_signer_fingerprint"] == record["fingerprint"]
    again, result = pin({"public_key_pem": pem(signer), "fingerprint": record["fingerprint"]})
    assert again == record and not result.changed and result.audit_events == []
    with pytest.raises(PolicyViolation, match="already pins the HSM's package signer") as caught:
        pin({"public_key_pem": pem(other)})
    assert caught.value.option == "package_signer"
    assert pin(None)[0] == record
    [obj] = [o for o in hsm_token.objects() if o["label"] == PACKAGE_SIGNER_LABEL]
    assert obj["class"] == "PUBLIC_KEY" and obj["verify"] and not obj["encrypt"] and not obj["wrap"]
    import pkcs11

    from tests.conftest import PKCS11_MODULE

    with pkcs11.lib(PKCS11_MODULE).get_token(token_label=settings.token_label).open(
            user_pin=hsm_token.pin_file.read_text().strip()) as session:
        [found] = list(session.get_objects({pkcs11.Attribute.LABEL: PACKAGE_SIGNER_LABEL}))
        assert found[pkcs11.Attribute.MODIFIABLE] is False


def _rotate_signer(settings, reason="manual"):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_rotation import (
        apply_rotation,
        plan_rotation,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE
    from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import SIGNER_KEY_NAME
    from tests.hsm.test_key_store import _now

    with _open(settings) as session:
        store = _store(session, settings.token_label)
        plans = plan_rotation(store, [SIGNER_KEY_NAME], False, True, BASELINE, _now(),
                              compromise=reason == "compromise")
        return apply_rotation(store, plans, _context(), reason, BASELINE, check_mode=False)


def test_rotation_certifies_the_new_signer_with_the_old_one(settings, hsm_token):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import (
        certificate_payload,
        ensure_package_signer,
        follow_certificates,
        signer_record,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._signatures import (
        load_public_key as load_signer_public_key,
    )

    with _open(settings) as session:
        first = ensure_package_signer(_store(session, settings.token_label), _context(), [])[0].public_record()
    assert first["certificates"] == []
    records = [first]
    for _round in range(2):
        result = _rotate_signer(settings)
        [event] = [e for e in result.audit_events if e["event"]["action"] == "key-rotate"]
        with _open(settings) as session:
            records.append(signer_record(_store(session, settings.token_label)))
        assert event["key"]["certificate_label"] == "package-signer-certificate:" + records[-1]["key_id"]
    second, third = records[1], records[2]
    assert [c["version"] for c in third["certificates"]] == [2, 3]  # oldest first
    one, two = third["certificates"]
    assert one == second["certificates"][0]
    assert (one["previous_fingerprint"], one["fingerprint"]) == (first["fingerprint"], second["fingerprint"])
    assert (two["previous_fingerprint"], two["fingerprint"]) == (second["fingerprint"], third["fingerprint"])
    assert one["public_key_pem"] == second["public_key_pem"] and one["name"] == "package-signing"
    # each verifies with the old key, outside the token
    for certificate, old in ((one, first), (two, second)):
        load_signer_public_key(old["public_key_pem"]).verify(
            base64.b64decode(certificate["signature"]), certificate_payload(certificate), ec.ECDSA(hashes.SHA256()))
    # a recipient that pinned v1 reaches v3; one that pinned v2 too
    pinned = load_signer_public_key(first["public_key_pem"])
    reached = follow_certificates(pinned, third["certificates"], third["fingerprint"])
    assert reached.public_numbers() == load_signer_public_key(third["public_key_pem"]).public_numbers()
    follow_certificates(load_signer_public_key(second["public_key_pem"]), third["certificates"], third["fingerprint"])
    # stored on the token as append-only documents, one per new version; the old versions can no longer sign
    documents = [o for o in hsm_token.objects() if o.get("application") == "secops.keylifecycle.signer-certificate"]
    assert sorted(o["label"] for o in documents) == sorted(
        "package-signer-certificate:" + r["key_id"] for r in (second, third))
    states = {label: value["state"] for label, value in hsm_token.metadata().items()}
    assert states == {"package-signing:v1": "deactivated", "package-signing:v2": "deactivated",
                      "package-signing:v3": "active"}


def test_compromise_rotation_certifies_nothing(settings, hsm_token):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import (
        ensure_package_signer,
        signer_record,
    )

    with _open(settings) as session:
        ensure_package_signer(_store(session, settings.token_label), _context(), [])
    result = _rotate_signer(settings, reason="compromise")
    assert all("certificate_label" not in e["key"] for e in result.audit_events)
    with _open(settings) as session:
        record = signer_record(_store(session, settings.token_label))
    assert record["version"] == 2 and record["certificates"] == []


def test_recipient_follows_the_chain_at_enrollment(settings, hsm_token):
    """The same token plays HSM (rotates its signer) and recipient (pins it, then rolls over)."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import PackageRejected
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_installation import (
        InstallResult,
        pin_package_signer,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import (
        ensure_package_signer,
        signer_record,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._pinned_signer import PACKAGE_SIGNER_LABEL
    from ansible_collections.secops.keylifecycle.plugins.module_utils._recipient_store import RecipientTokenStore

    def pin(raw, check_mode=False):
        with _open(settings) as session:
            store = RecipientTokenStore(session, settings.token_label, "keylifecycle-transport").load()
            result = InstallResult()
            return pin_package_signer(store, raw, _context(), check_mode, result), result

    def pinned_objects():
        return [o for o in hsm_token.objects() if o["label"] == PACKAGE_SIGNER_LABEL]

    with _open(settings) as session:
        first = ensure_package_signer(_store(session, settings.token_label), _context(), [])[0].public_record()
    assert pin(first)[0]["fingerprint"] == first["fingerprint"]
    _rotate_signer(settings)
    with _open(settings) as session:
        second = signer_record(_store(session, settings.token_label))
    before = pinned_objects()
    forged = dict(second, certificates=[dict(second["certificates"][0], certified_at="2000-01-01")])
    with pytest.raises(PackageRejected, match="does not verify"):
        pin(forged)
    record, result = pin(second, check_mode=True)
    assert record["fingerprint"] == first["fingerprint"] and result.changed and result.audit_events == []
    assert pinned_objects() == before
    record, result = pin(second)
    assert record["fingerprint"] == second["fingerprint"] and result.changed
    [event] = result.audit_events
    assert event["event"]["action"] == "package-signer-pin"
    assert event["event"]["reason"] == "rollover certified by %s" % first["fingerprint"]
    assert len(pinned_objects()) == 1 and pinned_objects() != before
    assert not pin(second)[1].changed
