"""The report's compromised versions: who marked them, when, why, the approver and the change. Pure."""

from __future__ import annotations

from datetime import datetime, timezone

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def _version(label, state, transitions):
    name, number = label.split(":v")
    return {"label": label, "name": name, "version": int(number), "state": state, "type": "aes", "size": 256,
            "id": "id-" + label, "created": "2026-10-01T00:00:00+00:00", "transitions": transitions}


KEY_INFO = {"key_versions": [
    _version("k:v1", "compromised", [
        {"state": "active", "at": "2026-10-01T00:00:00+00:00", "by": "alice", "reason": None},
        {"state": "compromised", "at": "2026-10-05T00:00:00+00:00", "by": "alice",
         "reason": "compromise", "approved_by": "bob", "change_ref": "INC-1"}]),
    _version("k:v2", "compromised", [
        {"state": "active", "at": "2026-10-05T00:00:00+00:00", "by": "alice", "reason": None},
        {"state": "deactivated", "at": "2026-11-05T00:00:00+00:00", "by": "cron", "reason": "scheduled"},
        {"state": "compromised", "at": "2026-11-20T00:00:00+00:00", "by": "carol", "reason": "compromise",
         "approved_by": "dave", "change_ref": "INC-2"}]),
    _version("k:v3", "active", [{"state": "active", "at": "2026-11-05T00:00:00+00:00", "by": "cron"}]),
], "logical_keys": [{"name": "k", "state": "active", "active_version": 3}]}


def test_model_and_templates_list_compromised_versions():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._report import build_model, render

    model = build_model("prod", KEY_INFO, {"ok": True}, [], now=NOW)
    rows = {row["label"]: row for row in model["compromised_versions"]}
    assert sorted(rows) == ["k:v1", "k:v2"]
    assert {k: rows["k:v1"][k] for k in ("at", "by", "approved_by", "change_ref", "reason", "previous_state")} == {
        "at": "2026-10-05T00:00:00+00:00", "by": "alice", "approved_by": "bob", "change_ref": "INC-1",
        "reason": "compromise", "previous_state": "active"}
    assert (rows["k:v2"]["by"], rows["k:v2"]["approved_by"], rows["k:v2"]["change_ref"],
            rows["k:v2"]["previous_state"]) == ("carol", "dave", "INC-2", "deactivated")
    markdown = render(model, "markdown_template")
    section = markdown.split("## Compromised versions")[1].split("\n## ")[0]
    assert "| k:v1 | `id-k:v1` | 2026-10-05T00:00:00+00:00 | alice | bob | INC-1 | compromise | active |" in section
    assert "| k:v2 |" in section and "k:v3" not in section
    page = render(model, "html_template")
    assert "<h2>Compromised versions</h2>" in page and "INC-2" in page


def test_no_compromised_version():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._report import build_model, render

    model = build_model("prod", {"key_versions": [KEY_INFO["key_versions"][2]]}, {"ok": True}, [], now=NOW)
    assert model["compromised_versions"] == []
    assert "No version is marked compromised." in render(model, "markdown_template")
