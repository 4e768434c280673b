"""A rotation that fails after its new version was generated leaves no new version behind."""

from __future__ import annotations

import pytest

from tests.hsm.test_key_store import _now, _open, _spec, _store


@pytest.fixture
def one_key(settings, hsm_token):
    """Key k:v1 on the token; returns (audit context, the token's objects before the rotation)."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext

    with _open(settings) as session:
        _store(session, settings.token_label).generate(_spec(name="k"), 1, "alice", _now())
    return AuditContext("alice", "test", "run-1", host="h"), hsm_token.objects()


def _rotate(settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_rotation import (
        apply_rotation,
        plan_rotation,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE

    def run(context):
        with _open(settings) as session:
            store = _store(session, settings.token_label)
            return apply_rotation(store, plan_rotation(store, ["k"], False, True, BASELINE, _now()), context,
                                  "scheduled", BASELINE, check_mode=False)
    return run


def test_failed_rotation_removes_its_new_version(settings, hsm_token, one_key, monkeypatch):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import TokenOperationFailed
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_store import TokenKeyStore

    context, before = one_key

    def refuse(self, version, disabled):
        raise TokenOperationFailed("C_SetAttributeValue refused (test)")

    monkeypatch.setattr(TokenKeyStore, "set_usage", refuse)
    with pytest.raises(TokenOperationFailed) as err:
        _rotate(settings)(context)
    assert err.value.audit_events[-1]["event"]["outcome"] == "failure"
    assert hsm_token.objects() == before  # no k:v2, no second metadata revision of k:v1
    monkeypatch.undo()
    result = _rotate(settings)(context)  # the next try rotates to v2, the number the failed try would have used
    assert result.rotated[0]["new_version"] == 2
    states = {label: v["state"] for label, v in hsm_token.metadata().items()}
    assert states == {"k:v1": "deactivated", "k:v2": "active"}


def test_unexpected_failure_keeps_events_and_is_typed(settings, hsm_token, one_key, monkeypatch):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import UnexpectedError
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_store import TokenKeyStore

    context, before = one_key
    monkeypatch.setattr(TokenKeyStore, "update_metadata", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError) as err:
        _rotate(settings)(context)
    typed = UnexpectedError.wrap(err.value, "key_rotate")
    assert typed.kind == "unexpected_error" and "ZeroDivisionError" in typed.message
    assert typed.audit_events and typed.audit_events[-1]["error"]["type"] == "unexpected_error"
    after = {(o["label"], o["class"]) for o in hsm_token.objects()}
    assert ("k:v2", "SECRET_KEY") not in after and after >= {(o["label"], o["class"]) for o in before}
