"""The compliance report's signed approvals: approved_by as a list of approvers, the approvers (with short
fingerprints) and change of every action taken under signed approvals, and every break-glass action as a finding.
Pure: journal lines and key_info written here, no token, no build."""

from __future__ import annotations

import json
from datetime import datetime, timezone

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
DANA = "sha256:" + "da" * 32
ERIN = "sha256:" + "e1" * 32
FRANK = "sha256:" + "f0" * 32
DANA_SHORT, ERIN_SHORT, FRANK_SHORT = "da" * 6, "e1" * 6, "f0" * 6


def _approval(name, fingerprint, nonce):
    return {"name": name, "fingerprint": fingerprint, "nonce": nonce * 32, "not_after": "2026-11-21T00:00:00+00:00"}


def _record(seq, day, action, phase, operator, outcome="success", key=None, reason=None, **lifecycle):
    happened = {"action": action, "outcome": outcome}
    if reason:
        happened["reason"] = reason
    event = {"@timestamp": "2026-11-%02dT10:00:00+00:00" % day, "event": happened, "user": {"name": operator},
             "labels": {"operator_source": "awx_job"}, "host": {"name": "hsm-1"},
             "keylifecycle": dict(lifecycle, phase=phase, intent_id="intent-%d" % day)}
    if key:
        event["key"] = {"label": key, "id": "id-" + key}
    return json.dumps({"seq": seq, "record_id": "r%d" % seq, "event": event})


SIGNED = {"approved_by": ["dana", "erin"], "change_ref": "CHG-2041",
          "approvals": [_approval("dana", DANA, "1"), _approval("erin", ERIN, "2")]}
BREAK_GLASS = {"approved_by": ["erin", "frank"], "change_ref": "INC-7", "break_glass": True,
               "approvals": [_approval("erin", ERIN, "3"), _approval("frank", FRANK, "4")]}
JOURNAL = [
    # the intent names what is asked; it is not an approved action itself
    _record(1, 1, "key-destroy", "intent", "alice", outcome="unknown", **SIGNED),
    _record(2, 1, "key-destroy", "change", "alice", key="payments-dek:v1", **SIGNED),
    _record(3, 1, "key-destroy", "change", "alice", key="payments-dek:v2", **SIGNED),
    _record(4, 1, "key-destroy", "outcome", "alice", **SIGNED),  # the successful outcome repeats nothing
    # a legacy destroy, asserted approved_by: no signed approval, not listed
    _record(5, 2, "key-destroy", "change", "bob", key="old:v1", approved_by="carol", change_ref="CHG-1"),
    # a Security Officer marks a version compromised: break-glass
    _record(6, 3, "key-rotate", "change", "dana", key="api-sign:v3", reason="compromise", **BREAK_GLASS),
    # a break-glass destroy that failed on the token
    _record(7, 4, "key-destroy", "outcome", "dana", outcome="failure",
            **{**BREAK_GLASS, "change_ref": "INC-8", "requested_keys": ["api-sign"]}),
    # a journal rollover: no key
    _record(8, 5, "audit-journal-rollover", "change", "bob", approved_by=["dana"], change_ref="CHG-9",
            approvals=[_approval("dana", DANA, "5")]),
    "not json",
    json.dumps({"seq": 9, "event": {"keylifecycle": {"phase": "change", "approvals": "nonsense",
                                                     "break_glass": "yes"}}}),
]
KEY_INFO = {"logical_keys": [{"name": "api-sign", "state": "active", "active_version": 4}], "key_versions": [
    {"label": "api-sign:v3", "name": "api-sign", "version": 3, "state": "compromised", "type": "ec",
     "curve": "P-256", "id": "a3", "created": "2026-10-01T00:00:00+00:00", "transitions": [
         {"state": "active", "at": "2026-10-01T00:00:00+00:00", "by": "alice"},
         {"state": "compromised", "at": "2026-11-03T10:00:00+00:00", "by": "dana", "reason": "compromise",
          "approved_by": ["erin", "frank"], "change_ref": "INC-7"}]},
    {"label": "api-sign:v4", "name": "api-sign", "version": 4, "state": "active", "type": "ec", "curve": "P-256",
     "id": "a4", "created": "2026-11-03T10:00:00+00:00"}],
    "policy_signers": [{"name": "dana", "label": "policy-signer:dana", "fingerprint": DANA, "destroyable": False}]}


def _report():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _report

    return _report


def _model(lines=None, key_info=None):
    lines = JOURNAL if lines is None else lines
    key_info = KEY_INFO if key_info is None else key_info
    report = _report()
    return report.build_model("prod", key_info, {"ok": True}, report.last_events(lines, 25), now=NOW,
                              distribution=report.distribution_records(lines))


def test_actions_under_signed_approvals_list_their_approvers_and_change():
    rows = _model()["approved_actions"]
    assert [(r["seq"], r["action"], r["key"], r["outcome"]) for r in rows] == [
        (2, "key-destroy", "payments-dek:v1", "success"), (3, "key-destroy", "payments-dek:v2", "success"),
        (6, "key-rotate", "api-sign:v3", "success"), (7, "key-destroy", "api-sign", "failure"),
        (8, "audit-journal-rollover", None, "success")]
    first = rows[0]
    assert first["approvers"] == [
        {"name": "dana", "fingerprint": DANA, "short": DANA_SHORT, "nonce": "1" * 32,
         "not_after": "2026-11-21T00:00:00+00:00"},
        {"name": "erin", "fingerprint": ERIN, "short": ERIN_SHORT, "nonce": "2" * 32,
         "not_after": "2026-11-21T00:00:00+00:00"}]
    assert (first["approved_by"], first["change_ref"], first["break_glass"], first["operator"]) == (
        "dana, erin", "CHG-2041", False, "alice")
    assert rows[2]["reason"] == "compromise" and rows[2]["break_glass"] is True
    assert _report().describe_approvers(first["approvers"]) == "dana (%s), erin (%s)" % (DANA_SHORT, ERIN_SHORT)


def test_every_break_glass_action_is_a_finding():
    model = _model()
    assert [(r["seq"], r["change_ref"]) for r in model["break_glass_actions"]] == [(6, "INC-7"), (7, "INC-8")]
    findings = [f["subject"] for f in model["attention"] if f["kind"] == "break_glass"]
    assert findings == [
        "dana key-rotate api-sign:v3 (compromise) at 2026-11-03T10:00:00+00:00 (seq 6, change INC-7), approved by "
        "erin (%s), frank (%s)" % (ERIN_SHORT, FRANK_SHORT),
        "dana key-destroy api-sign at 2026-11-04T10:00:00+00:00 (seq 7, change INC-8), approved by "
        "erin (%s), frank (%s)" % (ERIN_SHORT, FRANK_SHORT)]
    assert _report().summary(model)["break_glass"] == 2
    assert not [f for f in _model(JOURNAL[:5])["attention"] if f["kind"] == "break_glass"]


def test_approved_by_lists_are_joined_and_legacy_names_kept():
    model = _model()
    events = {e["seq"]: e for e in model["events"]}
    assert events[2]["approved_by"] == "dana, erin" and events[5]["approved_by"] == "carol"
    assert events[6]["break_glass"] is True and events[6]["change_ref"] == "INC-7"
    assert [a["short"] for a in events[6]["approvers"]] == [ERIN_SHORT, FRANK_SHORT]
    assert events[5]["approvers"] == [] and events[5]["break_glass"] is False
    (marked,) = model["compromised_versions"]
    assert (marked["by"], marked["approved_by"], marked["change_ref"]) == ("dana", "erin, frank", "INC-7")


def test_the_shipped_templates_show_approvals_and_break_glass():
    rendered = _report().render_all(_model())
    markdown, page = rendered["report.md"], rendered["report.html"]
    section = markdown.split("## Signed approvals")[1].split("\n## ")[0]
    assert ("| 2026-11-01T10:00:00+00:00 | 2 | key-destroy | payments-dek:v1 | success | alice (awx_job) | "
            "dana `%s`, erin `%s` | CHG-2041 | no |" % (DANA_SHORT, ERIN_SHORT)) in section
    assert ("| 6 | key-rotate (compromise) | api-sign:v3 | success | dana (awx_job) | erin `%s`, frank `%s` | INC-7 | "
            "**YES** |" % (ERIN_SHORT, FRANK_SHORT)) in section
    assert "| audit-journal-rollover | (journal) | success | bob (awx_job) | dana `%s` | CHG-9 | no |" % (
        DANA_SHORT) in section
    assert "old:v1" not in section
    assert "- Break-glass: a Security Officer executed: dana key-rotate api-sign:v3 (compromise)" in markdown
    compromised = markdown.split("## Compromised versions")[1].split("\n## ")[0]
    assert "| dana | erin, frank | INC-7 | compromise | active |" in compromised
    assert "<td>Break-glass: a Security Officer executed</td>" in page
    assert "<td>dana %s, erin %s</td>" % (DANA_SHORT, ERIN_SHORT) in page
    assert '<td class="bad">YES</td>' in page and "<td>erin, frank</td>" in page


def test_a_journal_without_signed_approvals_renders_plainly():
    model = _model(JOURNAL[4:5], {"key_versions": []})
    assert model["approved_actions"] == [] and model["break_glass_actions"] == []
    rendered = _report().render_all(model)
    assert "No action in the journal was taken under signed approvals." in rendered["report.md"]
    assert "No action in the journal was taken under signed approvals." in rendered["report.html"]
    # a model built without distribution records (as before this report had approvals) still renders
    bare = _report().build_model("dev", {"key_versions": []}, None, [], now=NOW)
    assert bare["approved_actions"] == [] and "Signed approvals" in _report().render(bare, "markdown_template")


def test_approver_names_and_fingerprints_are_escaped_in_html():
    hostile = _record(1, 1, "key-destroy", "change", "alice", key="k:v1", change_ref="C-1",
                      approvals=[{"name": "<b>x</b>", "fingerprint": "sha256:<script>"}])
    page = _report().render(_model([hostile], {"key_versions": []}), "html_template")
    assert "<b>x</b>" not in page and "<script>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
