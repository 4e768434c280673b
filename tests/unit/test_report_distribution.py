"""The report's trusted-distribution findings and records (docs/distribution.md, docs/report.md). Pure: model inputs
only, journal records built with the collection's own audit event builder."""

from __future__ import annotations

import json
from datetime import datetime, timezone

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
FP1, FP9, FPX = "sha256:" + "1" * 64, "sha256:" + "9" * 64, "sha256:" + "a" * 64


def _version(label, state="active", distributable=True, extractable=True, wrap_with_trusted=False,
             recipients=("svc1", "svc2"), **extra):
    name, number = label.split(":v")
    record = {"label": label, "name": name, "version": int(number), "state": state, "type": "aes", "size": 256,
              "id": "0a" + number, "created": "2026-10-01T00:00:00+00:00", "distributable": distributable,
              "recipients": list(recipients), "wrap_with_trusted": wrap_with_trusted, "extractable": extractable,
              "evidence": {"extractable": bool(extractable)} if extractable is not None else {}}
    record.update(extra)
    return record


def _legacy(label):
    """A version record of key_info from before trusted wrapping: no wrap_with_trusted, no extractable."""
    record = _version(label, state="deactivated")
    del record["wrap_with_trusted"], record["extractable"]
    return record


KEY_INFO = {
    "key_versions": [
        _version("db:v1", state="deactivated"),                       # finding: the old path would wrap it
        _version("db:v2", wrap_with_trusted=True),                    # trusted only
        _version("old:v1", state="deactivated", extractable=False),   # sealed at the migration
        _version("old:v2", wrap_with_trusted=True),
        _legacy("legacy:v1"),                                         # finding, from its evidence
        _version("gone:v1", state="destroyed", extractable=None, recipients=("svc9",)),
        _version("local:v1", distributable=False, extractable=False, recipients=()),
    ],
    "logical_keys": [{"name": n, "state": "active"} for n in ("db", "old", "legacy", "gone", "local")],
    "trusted_transport_keys": [
        {"label": "trusted-transport:svc1@app1:" + FP1, "recipient": "svc1", "host": "app1", "fingerprint": FP1,
         "key_id": "11" * 16},
        # its recipient is named only by a destroyed version: nothing may be distributed to it any more
        {"label": "trusted-transport:svc9@app9:" + FP9, "recipient": "svc9", "host": "app9", "fingerprint": FP9,
         "key_id": "99" * 16},
        # a trusted wrapping key the collection did not make
        {"label": "vendor-wrap", "recipient": None, "host": None, "fingerprint": FPX, "key_id": "aa" * 16},
    ],
    "package_signer": {"name": "package-signing", "key_id": "5e" * 16, "version": 1, "fingerprint": FPX,
                       "public_key_pem": "-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n"},
}


def _report():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _report

    return _report


def _journal():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _audit_event as audit

    def context(operator, host="hsm1"):
        return audit.AuditContext(operator=operator, operator_source="controller_os_user", run_id="r-1", host=host)

    def at(day):
        return datetime(2026, 11, day, 9, 0, tzinfo=timezone.utc)

    events = [
        audit.build_event("transport-key-enroll", "success", context("deploy", "app1"), when=at(1), key={
            "label": "keylifecycle-transport", "id": "11" * 16, "type": "rsa", "size": 3072,
            "public_key_fingerprint": FP1}),
        audit.build_event("recipient-approve", "success", context("ops"), when=at(2), key={
            "recipient": "svc1", "recipient_host": "app1", "transport_key_fingerprint": FP1,
            "trusted_key_label": "trusted-transport:svc1@app1:" + FP1},
            extra={"approved_by": "olga.officer", "change_ref": "CHG-7"}),
        audit.build_event("recipient-approve", "success", context("ops"), when=at(2), key={
            "recipient": "svc9", "recipient_host": "app9", "public_key_fingerprint": FP9,
            "label": "trusted-transport:svc9@app9:" + FP9}),
        audit.build_event("key-seal", "success", context("cron"), when=at(3), reason="migration to trusted wrapping",
                          key={"label": "old:v1", "id": "0a1", "name": "old", "version": 1}),
        audit.build_event("key-distribute", "success", context("dev"), when=at(4), key={
            "label": "db:v1", "id": "0a1", "recipient": "svc2", "recipient_host": "app2",
            "transport_key_fingerprint": FP9, "trusted_wrapping": False},
            extra={"warning": "wrapped under an untrusted transport key (require_trusted_wrapping off)"}),
        audit.build_event("key-distribute", "success", context("dev"), when=at(5), key={
            "label": "db:v2", "id": "0a2", "recipient": "svc1", "recipient_host": "app1",
            "transport_key_fingerprint": FP1, "trusted_wrapping": True,
            "trusted_key_label": "trusted-transport:svc1@app1:" + FP1}),
        audit.build_event("recipient-revoke", "success", context("ops"), when=at(6), key={
            "recipient": "svc2", "recipient_host": "app2", "transport_key_fingerprint": FP9},
            extra={"approved_by": "olga.officer"}),
        # an intent and a failed outcome are not changes: not listed
        audit.build_event("recipient-approve", "failure", context("ops"), when=at(7), phase="outcome",
                          error_kind="policy_violation"),
    ]
    return [json.dumps({"seq": seq, "event": event}) for seq, event in enumerate(events, start=1)] + ["not json"]


def _model(key_info=None, journal=None):
    report = _report()
    lines = _journal() if journal is None else journal
    return report.build_model("dev", KEY_INFO if key_info is None else key_info, {"ok": True}, report.last_events(
        lines, 25), now=NOW, distribution=report.distribution_records(lines))


def test_distributable_extractable_versions_not_wrap_with_trusted_are_findings():
    model = _model()
    # not: wrap-with-trusted versions, the sealed one, the destroyed one, a key that is not distributable
    assert model["untrusted_versions"] == ["db:v1", "legacy:v1"]
    kinds = [(a["kind"], a["subject"]) for a in model["attention"]]
    assert ("untrusted_version", "db:v1") in kinds and ("untrusted_version", "legacy:v1") in kinds


def test_trusted_keys_not_tied_to_an_enrolled_recipient_are_findings():
    model = _model()
    rows = {k["label"].split(":")[1] if k["recipient"] else k["label"]: k for k in model["trusted_keys"]}
    assert rows["svc1@app1"]["enrolled"] is True and rows["svc1@app1"]["enroll_recorded"] is True
    # svc9 was enrolled and approved, but only a destroyed version names it: tied to no key any more
    assert rows["svc9@app9"]["enrolled"] is False and rows["svc9@app9"]["enroll_recorded"] is False
    assert rows["vendor-wrap"]["enrolled"] is False and rows["vendor-wrap"]["host"] is None
    assert model["unbound_trusted_keys"] == ["trusted-transport:svc9@app9:" + FP9, "vendor-wrap"]
    subjects = [a["subject"] for a in model["attention"] if a["kind"] == "unbound_trusted_key"]
    assert subjects == ["trusted-transport:svc9@app9:" + FP9, "vendor-wrap (%s)" % FPX]


def test_a_replica_key_is_bound_while_the_token_holds_a_backed_up_version():
    replica = {"label": "trusted-replica:dr@hsm-b:" + FP9, "recipient": "dr", "host": "hsm-b", "fingerprint": FP9,
               "key_id": "ab" * 16, "kind": "replica"}
    backed_up = [{"name": "vault", "version": 1, "state": "active", "backup": True, "recipients": []}]
    not_backed_up = [dict(backed_up[0], backup=False), dict(backed_up[0], version=2, state="destroyed")]
    report = _report()
    assert report.trusted_keys({"trusted_transport_keys": [replica]}, backed_up)[0]["enrolled"] is True
    assert report.trusted_keys({"trusted_transport_keys": [replica]}, not_backed_up)[0]["enrolled"] is False


def test_wraps_under_untrusted_keys_officer_actions_and_seals_come_from_the_journal():
    model = _model()
    assert [(w["label"], w["recipient"], w["host"], w["operator"]) for w in model["untrusted_wraps"]] == [
        ("db:v1", "svc2", "app2", "dev")]
    assert model["untrusted_wraps"][0]["warning"].startswith("wrapped under an untrusted transport key")
    assert [a["subject"] for a in model["attention"] if a["kind"] == "untrusted_wrap"] == [
        "db:v1 to svc2 at 2026-11-04T09:00:00.000+00:00: wrapped under an untrusted transport key "
        "(require_trusted_wrapping off)"]
    officer = [(a["action"], a["recipient"], a["host"], a["fingerprint"], a["officer"], a["operator"], a["change_ref"])
               for a in model["officer_actions"]]
    assert officer == [("recipient-approve", "svc1", "app1", FP1, "olga.officer", "ops", "CHG-7"),
                       ("recipient-approve", "svc9", "app9", FP9, "ops", "ops", None),  # no approved_by: who ran it
                       ("recipient-revoke", "svc2", "app2", FP9, "olga.officer", "ops", None)]
    assert model["officer_actions"][0]["label"] == "trusted-transport:svc1@app1:" + FP1
    assert [(s["label"], s["operator"], s["reason"]) for s in model["seals"]] == [
        ("old:v1", "cron", "migration to trusted wrapping")]
    # the new actions are lifecycle events: listed among the last events too, newest first
    actions = [e["action"] for e in model["events"]]
    assert actions[:3] == ["recipient-approve", "recipient-revoke", "key-distribute"]
    assert "key-seal" in actions and "transport-key-enroll" in actions
    summary = _report().summary(model)
    assert summary["untrusted_versions"] == ["db:v1", "legacy:v1"] and summary["untrusted_wraps"] == 1
    assert summary["unbound_trusted_keys"] == model["unbound_trusted_keys"]


def test_shipped_templates_show_trusted_distribution():
    rendered = _report().render_all(_model())
    markdown, page = rendered["report.md"], rendered["report.html"]
    assert "- Wrappable under any key (not wrap-with-trusted): db:v1" in markdown
    assert "- Trusted transport key of no enrolled recipient: vendor-wrap (%s)" % FPX in markdown
    assert "- Wrapped under an untrusted key: db:v1 to svc2 at 2026-11-04T09:00:00.000+00:00" in markdown
    assert ("Versions the token would wrap under any key (distributable, extractable, not wrap-with-trusted): "
            "db:v1, legacy:v1.") in markdown
    assert "Package signer: `%s` (package-signing:v1, id `%s`)." % (FPX, "5e" * 16) in markdown
    assert "| trusted-transport:svc1@app1:%s | svc1 | app1 | `%s` | `%s` | yes | yes |" % (FP1, FP1, "11" * 16) \
        in markdown
    assert "| vendor-wrap |  |  | `%s` | `%s` | NO | no |" % (FPX, "aa" * 16) in markdown
    assert "| recipient-approve | svc1 | app1 | `%s` | olga.officer | ops | CHG-7 |" % FP1 in markdown
    assert "| db:v1 | svc2 | app2 | dev | wrapped under an untrusted transport key" in markdown
    assert "| old:v1 | `0a1` | cron | migration to trusted wrapping |" in markdown
    wrapping = {line.split(" | ")[0][2:]: line.split(" | ")[-1].rstrip(" |") for line in markdown.splitlines()
                if line.startswith("| ") and line.count(" | ") == 9}
    assert wrapping["db:v1"] == "ANY KEY" and wrapping["db:v2"] == "trusted keys only"
    assert wrapping["old:v1"] == "not extractable" and wrapping["gone:v1"] == "" and wrapping["local:v1"] == ""
    assert "<h2>Trusted distribution</h2>" in page and '<span class="bad">db:v1, legacy:v1</span>' in page
    assert "<td>Trusted key of no enrolled recipient</td><td>vendor-wrap (%s)</td>" % FPX in page
    assert "<td>recipient-revoke</td><td>svc2</td><td>app2</td>" in page


def test_a_token_without_trusted_distribution_renders_plainly():
    key_info = {"key_versions": [_version("k:v1", wrap_with_trusted=True)],
                "logical_keys": [{"name": "k", "state": "active"}]}
    model = _model(key_info=key_info, journal=[])
    assert model["untrusted_versions"] == [] and model["trusted_keys"] == [] and model["package_signer"] is None
    assert model["officer_actions"] == model["seals"] == model["untrusted_wraps"] == []
    markdown = _report().render_all(model)["report.md"]
    assert "not wrap-with-trusted): none." in markdown and "Package signer: none on the token yet." in markdown
    assert "No trusted transport key on the token." in markdown
    assert "Every wrap in the journal was under a trusted transport key." in markdown
    # build_model without journal records (older callers) gives the same empty lists
    bare = _report().build_model("dev", key_info, None, [], now=NOW)
    assert bare["officer_actions"] == bare["seals"] == bare["untrusted_wraps"] == []
