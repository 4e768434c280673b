"""Rotation planning and the repair of an interrupted rotation, on a real token."""

from __future__ import annotations

from tests.hsm.test_key_store import _now, _open, _spec, _store


def test_two_active_versions_are_repaired(settings, hsm_token):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_rotation import (
        apply_rotation,
        plan_rotation,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE

    context = AuditContext("alice", "test", "run-1", host="h")
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        store.generate(_spec(name="k"), 1, "alice", _now())
        store.generate(_spec(name="k"), 2, "alice", _now())  # an interrupted rotation: v1 never deactivated
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        plans = plan_rotation(store, ["k"], False, False, BASELINE, _now())
        assert plans[0].action == "repair" and [v.version for v in plans[0].stale_active] == [1]
        result = apply_rotation(store, plans, context, "scheduled", BASELINE, check_mode=False)
        assert result.changed and result.audit_events[0]["event"]["reason"] == "repair of an interrupted rotation"
    states = {label: value["state"] for label, value in hsm_token.metadata().items()}
    assert states == {"k:v1": "deactivated", "k:v2": "active"}
    v1 = [o for o in hsm_token.objects() if o["label"] == "k:v1" and o["class"] == "SECRET_KEY"][0]
    assert v1["encrypt"] is False and v1["decrypt"] is True


def test_half_made_version_is_skipped_by_numbering(settings):
    from pkcs11 import Attribute, KeyType

    with _open(settings) as session:
        store = _store(session, settings.token_label)
        store.generate(_spec(name="k"), 1, "alice", _now())
        session.generate_key(KeyType.AES, 256, label="k:v2", store=True, template={Attribute.SENSITIVE: True})
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        assert store.next_version("k") == 3
