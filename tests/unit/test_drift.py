"""Drift: a version's token attributes against its record (_drift), and the journal records made of the findings
(_monitor_action). Pure: fake key objects, no token, no build."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def drift():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _drift

    return _drift


def version(state="deactivated", key_type="aes", usage=("decrypt", "encrypt"), distributable=False):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import KeySpec, KeyVersion

    spec = KeySpec(name="k", type=key_type, size=256, curve="P-256" if key_type == "ec" else None, usage=usage,
                   distributable=distributable, rotation_period=86400, retention_period=86400)
    return KeyVersion(spec=spec, version=1, key_id="ab01", state=state, created=NOW)


def attributes(drift, object_class="SECRET_KEY", key_id="ab01", usages=None, **evidence):
    flags = {"local": True, "sensitive": True, "always_sensitive": True, "never_extractable": True,
             "extractable": False}
    flags.update(evidence)
    if object_class == "PUBLIC_KEY":
        flags = {}
    return drift.ObjectAttributes(object_class=object_class, key_id=key_id, usages=usages or {}, evidence=flags)


def kinds(findings):
    return [(f.kind, f.attribute) for f in findings]


def test_a_clean_version_has_no_finding(drift):
    obj = attributes(drift, usages={"encrypt": False, "decrypt": True, "wrap": False, "sign": False})
    assert drift.version_drift("k:v1", version(), [obj]) == []
    active = attributes(drift, usages={"encrypt": True, "decrypt": True})
    assert drift.version_drift("k:v1", version("active"), [active]) == []


@pytest.mark.parametrize("usage", ["encrypt", "wrap", "sign", "derive"])
def test_a_deactivated_version_with_a_protecting_usage_back_on(drift, usage):
    obj = attributes(drift, usages={"decrypt": True, usage: True})
    [finding] = drift.version_drift("k:v1", version(usage=("decrypt", "encrypt", "wrap", "sign")), [obj])
    assert (finding.kind, finding.attribute, finding.expected, finding.actual) == (
        "usage_enabled", "CKA_" + usage.upper(), "false", "true")
    assert finding.as_dict()["detail"] == "k:v1 (deactivated): SECRET_KEY CKA_%s: true, expected false" % (
        usage.upper())


@pytest.mark.parametrize("name", ["audit-checkpoint", "package-signing", "restore-signing"])
def test_a_managed_signing_key_recorded_otherwise_than_the_collection_makes_it(drift, name):
    """An operator-declared package-signing (say) of another type, or distributable, is reported once per version;
    one as the collection makes it (EC or RSA, sign and verify, not distributable) is not."""
    from dataclasses import replace

    made = version("active", key_type="ec", usage=("verify", "sign"))
    made = replace(made, spec=replace(made.spec, name=name))
    private = attributes(drift, "PRIVATE_KEY", usages={"sign": True})
    public = attributes(drift, "PUBLIC_KEY", usages={"verify": True})
    assert drift.version_drift("%s:v1" % name, made, [private, public]) == []
    assert drift.version_drift("%s:v1" % name, replace(made, spec=replace(made.spec, type="rsa", curve=None)),
                               [private, public]) == []
    for altered, actual in (
            (replace(made.spec, distributable=True), "EC, usage sign and verify, distributable"),
            (replace(made.spec, type="aes", curve=None, usage=("decrypt", "encrypt")),
             "AES, usage decrypt and encrypt, not distributable"),
            (replace(made.spec, usage=("derive", "sign", "verify")), "EC, usage derive and sign and verify, "
                                                                     "not distributable")):
        findings = drift.version_drift("%s:v1" % name, replace(made, spec=altered), [private, public])
        managed = [f for f in findings if f.kind == "managed_key_altered"]
        assert len(managed) == 1 and managed[0].actual == actual, findings
        assert managed[0].expected == "EC or RSA key pair, usage sign and verify, not distributable"
    # an ordinary key of the same shape is not a managed key
    assert drift.version_drift("k:v1", replace(made, spec=replace(made.spec, name="k", distributable=True)),
                               [private, public]) == []


def test_every_drift_kind_is_in_the_audit_schema(drift):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import _FIELD_CHECKS

    assert all(_FIELD_CHECKS["keylifecycle.drift.kind"](kind) for kind in drift.DRIFT_KINDS)
    assert not _FIELD_CHECKS["keylifecycle.drift.kind"]("something_else")


def test_a_usage_outside_the_spec_is_drift_even_while_active(drift):
    obj = attributes(drift, usages={"encrypt": True, "decrypt": True, "sign": True})
    assert kinds(drift.version_drift("k:v1", version("active"), [obj])) == [("usage_enabled", "CKA_SIGN")]


def test_a_compromised_version_may_keep_decrypt_unless_the_policy_disables_it(drift):
    obj = attributes(drift, usages={"decrypt": True})
    assert drift.version_drift("k:v1", version("compromised"), [obj]) == []
    assert kinds(drift.version_drift("k:v1", version("compromised"), [obj], compromise_disables_decrypt=True)) == [
        ("usage_enabled", "CKA_DECRYPT")]


def test_ec_usages_without_an_attribute_are_not_compared(drift):
    private = attributes(drift, "PRIVATE_KEY", usages={"sign": True, "decrypt": True, "derive": False})
    public = attributes(drift, "PUBLIC_KEY", usages={"verify": True, "encrypt": True, "wrap": True})
    ec = version("active", "ec", ("sign", "verify"))
    assert drift.version_drift("k:v1", ec, [private, public]) == []


def test_destroyed_version_with_a_key_object(drift):
    [finding] = drift.version_drift("k:v1", version("destroyed"), [attributes(drift)])
    assert (finding.kind, finding.expected, finding.actual) == (
        "destroyed_present", "absent (destroyed)", "SECRET_KEY object present")


def test_objects_no_metadata_explains(drift):
    no_metadata = drift.version_drift("k:v1", None, [attributes(drift)])
    assert kinds(no_metadata) == [("unexplained_object", None)] and no_metadata[0].state is None
    pair_class = attributes(drift, "PRIVATE_KEY")
    other_id = attributes(drift, key_id="ffff")
    second = attributes(drift)
    findings = drift.version_drift("k:v1", version(), [attributes(drift), pair_class, other_id, second])
    assert kinds(findings) == [("unexplained_object", None)] * 3
    assert [f.key_id for f in findings] == ["ab01", "ffff", "ab01"]
    assert "(another one)" in findings[2].actual


def test_lost_sensitive_and_gained_extractable(drift):
    loose = attributes(drift, sensitive=False, always_sensitive=False, extractable=True, never_extractable=False)
    assert sorted(kinds(drift.version_drift("k:v1", version(), [loose]))) == [
        ("gained_extractable", "CKA_EXTRACTABLE"), ("gained_extractable", "CKA_NEVER_EXTRACTABLE"),
        ("lost_sensitive", "CKA_ALWAYS_SENSITIVE"), ("lost_sensitive", "CKA_SENSITIVE")]
    # a distributable key is extractable by design
    shared = attributes(drift, extractable=True, never_extractable=False)
    assert drift.version_drift("k:v1", version(distributable=True), [shared]) == []


class FakeObject:
    """A key object as python-pkcs11 shows it: one get_attributes call answers what the token has."""

    def __init__(self, object_class, values):
        self.object_class = object_class
        self.values = values
        self.calls = 0

    def get_attributes(self, wanted):
        self.calls += 1
        return {a: self.values[a] for a in wanted if a in self.values}


def test_read_key_object_uses_one_call_and_the_usage_map(drift):
    from pkcs11 import Attribute, ObjectClass

    public = FakeObject(ObjectClass.PUBLIC_KEY, {Attribute.ID: b"\xab\x01", Attribute.ENCRYPT: True,
                                                 Attribute.VERIFY: False, Attribute.SENSITIVE: True})
    read = drift.read_key_object(public)
    assert public.calls == 1
    assert read == drift.ObjectAttributes("PUBLIC_KEY", "ab01", {"encrypt": True, "verify": False}, {})
    secret = FakeObject(ObjectClass.SECRET_KEY, {Attribute.ID: b"\x01", Attribute.DERIVE: False,
                                                 Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
    read = drift.read_key_object(secret)
    assert secret.calls == 1 and read.usages == {"derive": False}
    assert read.evidence == {"sensitive": True, "extractable": False}


def test_findings_become_schema_valid_journal_records(drift):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._monitor_action import (
        drift_events,
        token_check_event,
    )

    context = AuditContext(operator="alice", operator_source="controller_os_user", run_id="run-1", host="h")
    obj = attributes(drift, key_id="x" * 100, usages={"encrypt": True})  # an id the schema cannot hold is left out
    finding = drift.version_drift("k:v1", version(), [obj])[0].as_dict()
    [event] = drift_events([finding], "kl-test", context, "secops.keylifecycle.key_info")
    assert event["event"]["action"] == "key-drift" and event["event"]["outcome"] == "failure"
    assert event["keylifecycle"]["phase"] == "observation" and event["error"]["type"] == "unexplained_object"
    assert "id" not in event["key"] and event["key"]["label"] == "k:v1"
    assert len(event["keylifecycle"]["drift"]["actual"]) <= 128
    passed = token_check_event({"checks": [{"name": "so_pin_differs", "ok": False, "severity": "warning"}],
                                "failed_checks": []}, "kl-test", context, "secops.keylifecycle.token_check")
    assert passed["event"]["outcome"] == "success" and "error" not in passed
    assert passed["keylifecycle"]["token_check"] == {"checks": 1, "failed": [], "warnings": ["so_pin_differs"]}
    failed = token_check_event({"failed": True, "msg": "bad\x00" + "x" * 300, "checks": [],
                                "failed_checks": ["storage:/tmp/\u00e9"]}, None, context, "m")
    assert failed["error"]["type"] == "token_check_failed" and "key" not in failed
    assert failed["keylifecycle"]["token_check"]["failed"] == ["storage:/tmp/?"]
    assert len(failed["event"]["reason"]) == 128


def test_the_report_lists_drift_under_attention_and_in_its_own_section():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _report

    finding = {"label": "k:v1", "name": "k", "version": 1, "id": "ab01", "kind": "usage_enabled",
               "attribute": "CKA_ENCRYPT", "expected": "false", "actual": "true", "object_class": "SECRET_KEY",
               "state": "deactivated", "detail": "k:v1 (deactivated): SECRET_KEY CKA_ENCRYPT: true, expected false"}
    model = _report.build_model("test", {"key_versions": [], "logical_keys": [], "drift": [finding]}, {}, [], now=NOW)
    assert {"kind": "drift", "subject": finding["detail"]} in model["attention"]
    assert _report.summary(model)["drift"] == 1
    pages = _report.render_all(model)
    assert "| k:v1 | usage_enabled | SECRET_KEY | CKA_ENCRYPT | false | true | deactivated |" in pages["report.md"]
    assert "<td>CKA_ENCRYPT</td>" in pages["report.html"]
    clean = _report.render_all(_report.build_model("test", {"key_versions": []}, {}, [], now=NOW))
    assert "The token's key objects match their records." in clean["report.md"]
