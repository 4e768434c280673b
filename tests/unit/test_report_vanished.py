"""The report names versions the journal records on the token and the token no longer holds, with no destruction
record: their key objects and metadata removed outside the collection. Pure (journal lines and key_info results
written here)."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
TOKEN = "prod-keys"
_SEQ = itertools.count(1)


def _line(action, label, key_id, token=TOKEN, outcome="success", reason=None):
    seq = next(_SEQ)
    name, number = label.split(":v")
    event = {"@timestamp": "2026-11-%02dT10:00:00.000+00:00" % seq,
             "event": {"action": action, "outcome": outcome},
             "key": {"name": name, "version": int(number), "id": key_id, "label": label, "token": token}}
    if reason:
        event["event"]["reason"] = reason
    return json.dumps({"seq": seq, "event": event})


def _key_info(*held, all_keys=True, token=TOKEN):
    return {"token_label": token, "all_keys": all_keys, "logical_keys": [],
            "key_versions": [{"label": label, "name": label.split(":v")[0], "version": int(label.split(":v")[1]),
                              "id": key_id, "state": state, "type": "aes", "size": 256,
                              "created": "2026-11-01T10:00:00+00:00", "transitions": []}
                             for label, key_id, state in held]}


JOURNAL = [
    _line("key-generate", "pay:v1", "01"),
    _line("key-rotate", "pay:v2", "02"),  # v1 deactivated, v2 active
    _line("key-generate", "gone:v1", "03"),
    _line("key-destroy", "gone:v1", "03"),  # destroyed through key_destroy: its tombstone is listed, or not
    _line("key-generate", "half:v1", "04", reason="repair: removed half-made version"),
    _line("key-generate", "other:v1", "05", token="staging-keys"),  # another token of a shared journal
    _line("key-generate", "failed:v1", "06", outcome="failure"),
    _line("replica-install", "copy:v1", "07"),
    _line("replica-withdraw", "copy:v1", "07"),
    _line("key-restore", "back:v1", "08"),
    "not json",
]


def test_a_version_gone_without_a_destruction_record_is_named():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._report import vanished_versions

    # the token lost pay:v1 (key and metadata) and back:v1; everything else is held, destroyed or not ours
    held = _key_info(("pay:v2", "02", "active"))
    vanished = vanished_versions(JOURNAL, held)
    assert [(v["label"], v["id"], v["action"]) for v in vanished] == [
        ("pay:v1", "01", "key-generate"), ("back:v1", "08", "key-restore")]
    assert vanished[0]["time"] == "2026-11-01T10:00:00.000+00:00"
    # all held (a destroyed version keeps its metadata, so key_info lists it): nothing to name
    assert vanished_versions(JOURNAL, _key_info(("pay:v1", "01", "deactivated"), ("pay:v2", "02", "active"),
                                                ("back:v1", "08", "active"))) == []


def test_no_comparison_without_a_complete_listing_of_the_token():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._report import vanished_versions

    assert vanished_versions(JOURNAL, _key_info(("pay:v2", "02", "active"), all_keys=False)) == []
    assert vanished_versions(JOURNAL, {"key_versions": []}) == []  # a key_info result of before these fields
    # another token's listing: this journal's records of prod-keys do not concern it
    assert vanished_versions(JOURNAL, _key_info(("other:v1", "05", "active"), token="staging-keys")) == []


def test_model_attention_summary_and_both_templates_name_it():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._report import (
        build_model,
        render_all,
        summary,
        vanished_versions,
    )

    key_info = _key_info(("pay:v2", "02", "active"))
    model = build_model("prod", key_info, {"ok": True}, [], now=NOW, vanished=vanished_versions(JOURNAL, key_info))
    assert model["attention"][0] == {"kind": "version_vanished",
                                     "subject": "pay:v1 (id 01, key-generate at 2026-11-01T10:00:00.000+00:00)"}
    assert summary(model)["vanished_versions"] == ["pay:v1", "back:v1"]
    rendered = render_all(model)
    assert "- Gone from the token, no destruction recorded: pay:v1 (id 01, key-generate" in rendered["report.md"]
    assert "Gone from the token, no destruction recorded" in rendered["report.html"]
    clean = build_model("prod", key_info, {"ok": True}, [], now=NOW)
    assert clean["vanished_versions"] == [] and summary(clean)["vanished_versions"] == []


def test_a_forged_tombstone_another_label_or_a_repair_of_a_completed_version_does_not_hide_it():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._report import vanished_versions

    # metadata rewritten with raw PKCS#11: the version "destroyed" with no key-destroy record, or its id under
    # another label
    tombstone = _key_info(("pay:v1", "01", "destroyed"), ("pay:v2", "02", "active"), ("back:v1", "08", "active"))
    assert [v["label"] for v in vanished_versions(JOURNAL, tombstone)] == ["pay:v1"]
    relabelled = _key_info(("spare:v9", "01", "deactivated"), ("pay:v2", "02", "active"), ("back:v1", "08", "active"))
    assert [v["label"] for v in vanished_versions(JOURNAL, relabelled)] == ["pay:v1"]
    # a completed version's metadata deleted, then its key removed by the next task's half-made repair
    repaired = JOURNAL + [_line("key-rotate", "pay:v1", "01", reason="repair: removed half-made version")]
    assert [v["label"] for v in vanished_versions(repaired, tombstone)] == ["pay:v1"]
    # a repair that renumbered a duplicate keeps the id under its new label, which is where the token holds it
    renumbered = JOURNAL + [_line("key-rotate", "pay:v3", "01", reason="repair: duplicate label")]
    assert vanished_versions(renumbered, _key_info(("pay:v3", "01", "deactivated"), ("pay:v2", "02", "active"),
                                                   ("back:v1", "08", "active"))) == []
    # a tombstone copied to a replica, or restored, is a destruction on record
    copied = JOURNAL + [_line("replica-install", "old:v1", "09")]
    copied[-1] = copied[-1].replace('"label": "old:v1"', '"label": "old:v1", "state": "destroyed"')
    assert vanished_versions(copied, _key_info(("old:v1", "09", "destroyed"), ("pay:v1", "01", "deactivated"),
                                               ("pay:v2", "02", "active"), ("back:v1", "08", "active"))) == []


def test_losses_a_rollover_declared_are_named_in_the_attention_list_and_both_templates():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._report import build_model, render_all

    audit = {"ok": True, "journals": [
        {"journal_id": "j-3", "ok": True},
        {"journal_id": "j-2", "ok": True, "lost_outcomes": [6, 9]},
        {"journal_id": "j-1", "present": False, "lost": True}]}
    model = build_model("prod", _key_info(), audit, [], now=NOW)
    assert [a for a in model["attention"] if a["kind"] == "records_lost"] == [
        {"kind": "records_lost", "subject": "journal j-2: the audit events of the task(s) whose intent is record 6, 9 "
                                            "(declared lost at a rollover)"},
        {"kind": "records_lost", "subject": "journal j-1: the whole journal (declared lost at a rollover)"}]
    rendered = render_all(model)
    for name in ("report.md", "report.html"):
        assert "Audit records declared lost at a journal rollover" in rendered[name]
        assert "record 6, 9" in rendered[name]
    # more rollovers than audit_verify follows: the token's pin still names every declaration, once each
    pinned = {"ok": True, "journals": [{"journal_id": "j-12", "ok": True}], "token_pin": {"declared_losses": [
        {"journal_id": "j-2", "lost": False, "lost_outcomes": [6, 9]}, {"journal_id": "j-1", "lost": True,
                                                                        "lost_outcomes": []}]}}
    assert [a["subject"] for a in build_model("prod", _key_info(), pinned, [], now=NOW)["attention"]
            if a["kind"] == "records_lost"] == [loss["subject"] for loss in model["attention"]
                                                if loss["kind"] == "records_lost"]
    both = dict(audit, token_pin=pinned["token_pin"])
    assert len([a for a in build_model("prod", _key_info(), both, [], now=NOW)["attention"]
                if a["kind"] == "records_lost"]) == 2
    assert not [a for a in build_model("prod", _key_info(), {"ok": True}, [], now=NOW)["attention"]
                if a["kind"] == "records_lost"]
