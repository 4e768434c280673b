"""A managed signing key recorded as something the collection does not make is drift (managed_key_altered), on a
real SoftHSM2 token. key_generate refuses the names now; a token where an operator declared package-signing before
that keeps the key, and the drift check is what reports it."""

from __future__ import annotations

from tests.hsm.test_key_store import _now, _open, _spec, _store


def test_an_operator_declared_package_signer_is_reported_and_the_collections_own_is_not(settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._drift import find_drift
    from ansible_collections.secops.keylifecycle.plugins.module_utils._managed_signing import ManagedSigningKey

    with _open(settings) as session:
        store = _store(session, settings.token_label)
        # what key_generate name=package-signing distributable=true did before it was refused
        store.generate(_spec(name="package-signing", type="ec", curve="P-256", usage=["sign", "verify"],
                             distributable=True), 1, "mallory", _now())
        ManagedSigningKey(store, "audit-checkpoint", "audit checkpoint").prepare("ops")  # as the collection makes it
    with _open(settings) as session:
        findings = [f.as_dict() for f in find_drift(_store(session, settings.token_label))]
    assert [(f["label"], f["kind"], f["attribute"]) for f in findings] == [
        ("package-signing:v1", "managed_key_altered", None)], findings
    assert findings[0]["actual"] == "EC, usage sign and verify, distributable"
    assert findings[0]["state"] == "active" and findings[0]["id"]


def test_a_version_destroyed_outside_key_destroy_is_reported_missing(settings):
    """A user session's raw C_DestroyObject of an active key inside its retention leaves its record: key_missing
    (the other key, untouched, is no finding)."""
    from pkcs11 import Attribute, ObjectClass

    from ansible_collections.secops.keylifecycle.plugins.module_utils._drift import find_drift

    with _open(settings) as session:
        store = _store(session, settings.token_label)
        store.generate(_spec(name="payments"), 1, "ops", _now())
        store.generate(_spec(name="kept"), 1, "ops", _now())
    with _open(settings) as session:  # raw PKCS#11 with the user PIN, outside the collection
        for obj in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: "payments:v1"}):
            obj.destroy()
    with _open(settings) as session:
        findings = [f.as_dict() for f in find_drift(_store(session, settings.token_label))]
    assert [(f["label"], f["kind"], f["state"], f["attribute"]) for f in findings] == [
        ("payments:v1", "key_missing", "active", None)], findings
    assert findings[0]["expected"] == "the SECRET_KEY object(s) of a version that is active"
    assert findings[0]["actual"] == "absent (destroyed outside key_destroy)"
