"""The compliance report's policy: the policy in force for each listed action (from its intent record), every change
of policy between consecutive intents, and the finding for a token without a policy signer. Pure."""

from __future__ import annotations

import json
from datetime import datetime, timezone

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
DANA = "sha256:" + "d" * 64
ERIN = "sha256:" + "e" * 64
DANA_SHORT = "sha256:" + "d" * 16
ERIN_SHORT = "sha256:" + "e" * 16
UNSIGNED_A = {"sha256": "a" * 64, "signed": False}
UNSIGNED_B = {"sha256": "b" * 64, "signed": False}
SIGNED_3 = {"sha256": "3" * 64, "signed": True, "serial": 3, "signer": DANA, "environment": "prod"}
SIGNED_4 = {"sha256": "4" * 64, "signed": True, "serial": 4, "signer": ERIN, "environment": "prod"}
KEY_INFO = {"key_versions": [], "logical_keys": [],
            "policy_signers": [{"name": "dana", "label": "policy-signer:dana", "fingerprint": DANA,
                                "destroyable": False}]}


def _report():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _report

    return _report


def _journal(*tasks):
    """One intent + change (or failed outcome) per task: (action, policy or None, outcome, operator)."""
    lines, seq = [], 0
    for number, (action, policy, outcome, operator) in enumerate(tasks):
        seq += 1
        intent_id = "intent-%d" % number
        common = {"user": {"name": operator}, "labels": {"operator_source": "controller_os_user"},
                  "host": {"name": "hsm-1"}}
        lifecycle = {"phase": "intent", "requested_keys": ["db"]}
        if policy is not None:
            lifecycle["policy"] = policy
        lines.append(json.dumps({"seq": seq, "record_id": intent_id, "event": dict(
            common, **{"@timestamp": "2026-11-%02dT00:00:00+00:00" % (number + 1),
                       "event": {"action": action, "outcome": "unknown"}, "keylifecycle": lifecycle})}))
        seq += 1
        phase = "change" if outcome == "success" else "outcome"
        lines.append(json.dumps({"seq": seq, "record_id": "r%d" % seq, "event": dict(
            common, **{"@timestamp": "2026-11-%02dT00:00:01+00:00" % (number + 1),
                       "event": {"action": action, "outcome": outcome},
                       "keylifecycle": {"phase": phase, "intent_id": intent_id, "requested_keys": ["db"]},
                       "key": {"label": "db:v%d" % (number + 1)}})}))
    return lines


def _model(lines, key_info=None):
    report = _report()
    return report.build_model("prod", KEY_INFO if key_info is None else key_info, {"ok": True},
                              report.last_events(lines, 25), now=NOW, distribution=report.distribution_records(lines))


JOURNAL = _journal(("key-generate", None, "success", "alice"),  # written before policies were recorded
                   ("key-rotate", UNSIGNED_A, "success", "alice"),
                   ("key-rotate", UNSIGNED_A, "success", "bob"),
                   ("key-destroy", UNSIGNED_B, "failure", "mallory"),  # e.g. -e key_policy={}
                   ("key-rotate", SIGNED_3, "success", "alice"),
                   ("key-rotate", SIGNED_3, "success", "alice"),
                   ("key-rotate", SIGNED_4, "success", "alice"))


def test_each_listed_action_shows_the_policy_of_its_intent():
    events = _model(JOURNAL)["events"]  # newest first
    assert [(e["action"], e["key"]) for e in events][:2] == [("key-rotate", "db:v7"), ("key-rotate", "db:v6")]
    newest = events[0]["policy"]
    assert newest["signed"] and newest["serial"] == 4 and newest["signer"] == ERIN
    assert newest["signer_name"] is None  # erin's key is not on the token
    assert events[1]["policy"]["signer_name"] == "dana" and events[1]["policy"]["serial"] == 3
    assert events[3]["action"] == "key-destroy" and events[3]["outcome"] == "failure"
    assert events[3]["policy"] == {"signed": False, "serial": None, "signer": None, "signer_short": None,
                                   "signer_name": None, "environment": None, "sha256": "b" * 64, "short": "b" * 12}
    assert events[-1]["policy"] is None  # before policies were recorded


def test_every_change_of_policy_between_consecutive_intents_is_flagged():
    model = _model(JOURNAL)
    changes = [(c["seq"], c["action"], c["operator"], c["before"]["short"], c["after"]["short"])
               for c in model["policy_changes"]]
    # the first intent that records a policy is not a change; the same policy twice is not one either
    assert changes == [(7, "key-destroy", "mallory", "a" * 12, "b" * 12),
                       (9, "key-rotate", "alice", "b" * 12, "3" * 12),
                       (13, "key-rotate", "alice", "3" * 12, "4" * 12)]
    flagged = [f["subject"] for f in model["policy_findings"] if f["kind"] == "policy_change"]
    assert len(flagged) == 3
    assert flagged[1] == ("2026-11-05T00:00:00+00:00 (seq 9, key-rotate by alice): unsigned bbbbbbbbbbbb -> "
                          "serial 3 signed by dana (%s)" % DANA_SHORT)
    assert model["policy_in_force"]["serial"] == 4
    assert _report().summary(model)["policy_changes"] == 3
    assert _report().summary(model)["policy_signers"] == ["dana"]


def test_a_token_without_a_policy_signer_is_a_finding():
    for key_info in ({"key_versions": []}, {"key_versions": [], "policy_signers": []}):
        model = _model(JOURNAL[:4], key_info)
        assert [f["kind"] for f in model["policy_findings"]] == ["no_policy_signer"]
        assert model["policy_signers"] == [] and model["policy_changes"] == []
    assert not [f for f in _model(JOURNAL[:4])["policy_findings"] if f["kind"] == "no_policy_signer"]


def test_the_shipped_templates_show_the_policy():
    rendered = _report().render_all(_model(JOURNAL))
    markdown, page = rendered["report.md"], rendered["report.html"]
    assert "| dana | `%s` | no |" % DANA in markdown
    assert "Policy in force at the newest journaled action: serial 4, signer `%s`." % ERIN_SHORT in markdown
    assert "| key-rotate | success | db:v6 | alice (controller_os_user) | hsm-1 |  | serial 3, signer dana `%s` |" % (
        DANA_SHORT) in markdown
    assert "| key-destroy | failure | db:v4 | mallory (controller_os_user) | hsm-1 |  | unsigned `bbbbbbbbbbbb` |" in (
        markdown)
    assert "| not recorded |" in markdown
    assert "- Policy changed: 2026-11-04T00:00:00+00:00 (seq 7, key-destroy by mallory): unsigned aaaaaaaaaaaa -> " \
           "unsigned bbbbbbbbbbbb" in markdown
    assert "No policy signer" not in markdown
    assert "<td>Policy changed</td>" in page and "<td>unsigned bbbbbbbbbbbb</td>" in page
    assert "<td>serial 3, signer dana %s</td>" % DANA_SHORT in page
    bare = _report().render_all(_model([], {"key_versions": []}))
    assert "- No policy signer on the token: the token holds no policy signer" in bare["report.md"]
    assert "**No policy signer on the token**" in bare["report.md"]
    assert "No change of policy in the journal." in bare["report.md"]
    assert "Policy in force at the newest journaled action: not recorded." in bare["report.md"]
    assert '<p class="bad">No policy signer on the token' in bare["report.html"]


def test_malformed_policy_fields_in_the_journal_do_not_break_the_report():
    lines = _journal(("key-rotate", {"sha256": 7}, "success", "a"), ("key-rotate", "x", "success", "a"),
                     ("key-rotate", UNSIGNED_A, "success", "a")) + ["not json", json.dumps({"event": "x"})]
    model = _model(lines)
    assert [e["policy"] for e in model["events"]][1:] == [None, None] and model["policy_changes"] == []
    _report().render_all(model)
