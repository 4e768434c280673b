"""Audit events: the schema whitelist refuses anything outside it."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def audit():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _audit_event

    return _audit_event


@pytest.fixture
def context(audit):
    return audit.AuditContext(operator="alice", operator_source="controller_os_user", run_id="abc-123", host="hsm1")


def test_event_shape(audit, context):
    event = audit.build_event("key-generate", "success", context,
                              key={"name": "k", "version": 1, "id": "ab" * 16, "check_value": "4b75b7",
                                   "token": "kl-dev", "type": "aes", "size": 256})
    assert event["event"]["action"] == "key-generate"
    assert event["event"]["category"] == ["configuration"] and event["event"]["type"] == ["creation"]
    assert event["@timestamp"].endswith("+00:00") and "T" in event["@timestamp"]
    assert event["user"]["name"] == "alice" and event["host"]["name"] == "hsm1"
    assert event["labels"]["run_id"] == "abc-123"
    json.dumps(event)


@pytest.mark.parametrize("key", [
    {"name": "k", "value": "00" * 32},              # a field outside the schema (key material would go here)
    {"name": "k", "check_value": "00" * 32},        # a 'check value' long enough to be a key
    {"name": "k", "id": "not hex"},
    {"name": "k/../x"},
    {"name": "k", "version": True},
])
def test_values_outside_schema_are_refused(audit, context, key):
    with pytest.raises(ValueError):
        audit.build_event("key-generate", "success", context, key=key)


def test_unknown_action_refused(audit, context):
    with pytest.raises(KeyError):
        audit.build_event("key-export", "success", context)


def test_operator_with_control_characters_refused(audit):
    bad = audit.AuditContext(operator="alice\nroot", operator_source="x", run_id="r", host="h")
    with pytest.raises(ValueError):
        audit.build_event("key-generate", "success", bad)


def test_the_schema_document_lists_every_action(audit):
    """docs/audit-schema.md names each event.action the schema accepts, and no other."""
    import re

    from tests.conftest import REPO

    row = [line for line in (REPO / "docs" / "audit-schema.md").read_text().splitlines()
           if line.startswith("| `event.action` |")]
    assert len(row) == 1
    listed = re.findall(r"`([a-z-]+)`", row[0].split("|")[3])
    assert sorted(listed) == sorted(audit.ACTIONS)
