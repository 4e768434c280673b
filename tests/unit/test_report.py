"""The compliance report: the data model, the shipped Jinja2 templates, templates given by the options, and the one
argument spec. Pure: no token, no build."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import yaml

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
KEY_INFO = {
    "key_versions": [
        {"label": "payments-db:v1", "name": "payments-db", "version": 1, "state": "deactivated", "type": "aes",
         "size": 256, "id": "ab01", "key_check_value": "A1B2C3", "created": "2026-10-01T00:00:00+00:00",
         "age_seconds": 5270400, "retain_until": "2026-12-31T00:00:00+00:00", "retention_expired": True,
         "transitions": [{"state": "active", "at": "2026-10-01T00:00:00+00:00"},
                         {"state": "deactivated", "at": "2026-11-01T00:00:00+00:00"}]},
        {"label": "payments-db:v2", "name": "payments-db", "version": 2, "state": "active", "type": "aes",
         "size": 256, "id": "ab02", "key_check_value": "D4E5F6", "created": "2026-11-01T00:00:00+00:00"},
        {"label": "signing:v1", "name": "signing", "version": 1, "state": "active", "type": "ec", "size": None,
         "curve": "secp256r1", "id": "cd01", "public_key_fingerprint": "SHA256:xyz",
         "created": "2026-11-15T00:00:00+00:00"},
    ],
    "logical_keys": [{"name": "payments-db", "state": "active", "active_version": 2, "rotation_overdue": True},
                     {"name": "signing", "state": "active", "active_version": 1}],
    "anomalies": [{"label": "stray<1>", "problem": "no metadata"}],
}
AUDIT = {"ok": True, "records": 7, "checkpoints_verified": 2, "problems": []}
JOURNAL = [json.dumps({"seq": 3, "event": {
    "@timestamp": "2026-11-01T00:00:00+00:00", "event": {"action": "key-rotate", "outcome": "success"},
    "keylifecycle": {"phase": "change"}, "user": {"name": "alice"}, "labels": {"operator_source": "ci"},
    "host": {"name": "hsm-1"}, "key": {"label": "payments-db:v2", "id": "ab02"}}}),
    json.dumps({"seq": 4, "event": {
        "@timestamp": "2026-11-02T00:00:00+00:00", "event": {"action": "key-destroy", "outcome": "failure"},
        "keylifecycle": {"phase": "outcome", "requested_keys": ["payments-db"]}, "user": {"name": "bob"},
        "labels": {"operator_source": "cli"}, "host": {"name": "hsm-1"}, "error": {"type": "PolicyViolation"}}}),
    "not json"]


def _report():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _report

    return _report


def _model(environment="test-env", audit=None):
    audit = AUDIT if audit is None else audit
    report = _report()
    return report.build_model(environment, KEY_INFO, audit, report.last_events(JOURNAL, 25), now=NOW)


def test_the_model_holds_data_not_presentation():
    model = _model()
    assert model["overdue"] == ["payments-db"] and model["retention_expired"] == ["payments-db:v1"]
    assert [a["kind"] for a in model["attention"]] == ["rotation_overdue", "retention_expired", "anomaly"]
    assert [e["action"] for e in model["events"]] == ["key-destroy", "key-rotate"]  # newest first
    assert model["versions"][1]["retain_until"] is None  # optional fields always present
    rows = model["timeline"]["rows"]
    assert rows[0]["segments"][0] == {"state": "active", "start": 0.0, "stop": pytest.approx(31 / 91)}
    assert rows[0]["retain_until"] == 1.0 and rows[1]["retain_until"] is None
    assert not any("<" in json.dumps(value) for key, value in model.items() if key not in ("anomalies", "attention"))
    assert _report().build_model("e", {"key_versions": []}, None, [], now=NOW)["timeline"] is None


def test_shipped_templates_render_the_report():
    rendered = _report().render_all(_model())
    markdown, page = rendered["report.md"], rendered["report.html"]
    assert "Audit chain: **verifies** (7 records, 2 checkpoint(s) verified)." in markdown
    assert "| key-rotate | success | payments-db:v2 | alice (ci) | hsm-1 |  |" in markdown
    assert "| key-destroy | failure (PolicyViolation) | payments-db | bob (cli) |" in markdown
    assert "| signing:v1 | active | ec-secp256r1 | `cd01` | `SHA256:xyz` |" in markdown
    assert "- Retention expired, not yet destroyed: payments-db:v1" in markdown
    assert "SOC 2 CC6.1" in markdown and "HIPAA 164.312(e)(2)(ii)" in markdown
    assert "<svg" in page and "<td>Retention expired</td><td>payments-db:v1</td>" in page
    assert "stray&lt;1&gt;: no metadata" in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    failing = _report().render_all(_model(audit={"ok": False, "problems": ["record 3 <modified>"]}))
    assert "Audit chain: **DOES NOT VERIFY**" in failing["report.md"]
    assert '<span class="bad">Audit chain DOES NOT VERIFY</span>' in failing["report.html"]
    assert "record 3 &lt;modified&gt;" in failing["report.html"]


def test_html_is_autoescaped_and_markdown_is_not():
    rendered = _report().render_all(_model(environment="<script>x</script>"))
    assert "<script>" not in rendered["report.html"] and "&lt;script&gt;x&lt;/script&gt;" in rendered["report.html"]
    assert "# Key inventory and compliance report: <script>x</script>" in rendered["report.md"]


def test_a_custom_template_is_used_and_may_include_its_neighbours(tmp_path):
    (tmp_path / "part.j2").write_text("{{ keys | length }} keys")
    (tmp_path / "mine.md.j2").write_text("MINE {{ environment }}: {% include 'part.j2' %}.\n")
    rendered = _report().render_all(_model(), {"markdown_template": str(tmp_path / "mine.md.j2")})
    assert rendered["report.md"] == "MINE test-env: 2 keys.\n"  # trim_blocks, as ansible.builtin.template
    assert "<svg" in rendered["report.html"]  # the other output keeps the shipped template


@pytest.mark.parametrize("content, problem", [
    (None, "is not a readable file"),
    ("{% for %}", "is not a valid Jinja2 template (line 1:"),
    ("{{ no_such_variable }}", "failed to render the report (UndefinedError: 'no_such_variable' is undefined)"),
    ("{{ ''.__class__.__mro__ }}", "failed to render the report (SecurityError"),  # sandboxed
    (b"\xff\xfe", "is not UTF-8 text"),
])
def test_a_bad_template_is_refused_naming_the_option(tmp_path, content, problem):
    path = tmp_path / "bad.html.j2"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(_report().ReportTemplateError) as err:
        _report().render_all(_model(), {"html_template": str(path)})
    assert err.value.option == "html_template"
    assert str(err.value).startswith("html_template: %s %s" % (path, problem)), str(err.value)
    assert "Nothing was written" in str(err.value) and "leave it unset" in str(err.value)


def test_a_directory_is_not_a_template(tmp_path):
    with pytest.raises(_report().ReportTemplateError, match="^markdown_template: .* is not a readable file"):
        _report().render(_model(), "markdown_template", str(tmp_path))


def test_the_shipped_templates_are_in_the_collection_and_not_build_ignored():
    from tests.conftest import REPO

    for option in _report().OUTPUTS:
        path = _report().default_template(option)
        assert path.startswith(str(REPO)) or "ansible_collections" in path
        assert path.endswith("/templates/compliance_report/" + _report().OUTPUTS[option][0] + ".j2")
        assert (REPO / "templates" / "compliance_report" / (_report().OUTPUTS[option][0] + ".j2")).is_file()
    ignored = yaml.safe_load((REPO / "galaxy.yml").read_text()).get("build_ignore") or []
    assert not [p for p in ignored if p.startswith("templates")]


def test_options_are_declared_once_and_documented():
    from ansible_collections.secops.keylifecycle.plugins.modules import compliance_report

    documented = yaml.safe_load(compliance_report.DOCUMENTATION)["options"]
    assert set(documented) == set(compliance_report.ARGUMENT_SPEC)
    for name, spec in compliance_report.ARGUMENT_SPEC.items():
        assert documented[name]["type"] == spec["type"], name
        assert documented[name].get("default") == spec.get("default"), name
        assert bool(documented[name].get("required")) == bool(spec.get("required")), name
    assert set(_report().OUTPUTS) <= set(compliance_report.ARGUMENT_SPEC)
