# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The key inventory and compliance report for the Security Officer: the data model and its rendering.

PRIVATE: not part of the public interface. Controller only (compliance_report's action plugin).

Built from what key_info and audit_verify returned and from the journal's records; it holds
names, versions, ids, check values, dates and outcomes, never key material or a PIN.

This module only builds the model (a dict, documented in docs/report.md); Jinja2 templates do all the
presentation. The collection ships ``templates/compliance_report/report.md.j2`` and ``report.html.j2`` at the
root of the collection (packaged by ``ansible-galaxy collection build``); an inventory can point
compliance_report's ``markdown_template`` / ``html_template`` at its own copies.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from ansible_collections.secops.keylifecycle.plugins.module_utils._version_repair import HALF_MADE_REASON

try:
    from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment
except ImportError as import_error:  # ansible-core requires Jinja2: only a broken controller gets here
    JINJA2_IMPORT_ERROR = import_error
else:
    JINJA2_IMPORT_ERROR = None

# The controls each lifecycle step serves (docs/access-control.md, docs/audit.md).
CONTROLS = [
    ("Generate in the HSM, strength by policy", "key_generate", "SOC 2 CC6.1", "HIPAA 164.312(a)(2)(iv)"),
    ("Rotate at least annually; old version decrypt-only, retained", "key_rotate", "SOC 2 CC6.1",
     "HIPAA 164.312(a)(2)(iv), 164.312(e)(2)(ii)"),
    ("Distribute wrapped only, under transport keys the Security Officer approved in the HSM; packages signed by "
     "the HSM", "recipient_approve, key_distribute, key_install", "SOC 2 CC6.1", "HIPAA 164.312(e)(2)(ii)"),
    ("Destroy after retention, verified gone, dual control in prod", "key_destroy", "SOC 2 CC6.1, CC6.8",
     "HIPAA 164.312(a)(2)(iv)"),
    ("Destroy, compromise, retire and journal rollover need M signed approvals from the policy's approvers, checked "
     "in the HSM host before the token changes; a Security Officer executing one is break-glass (two others approve, "
     "flagged)", "approvals, approval_sign", "SOC 2 CC6.1, CC6.8", "HIPAA 164.312(a)(2)(iv)"),
    ("Authorize per action; name the operator", "policy.authorization", "SOC 2 CC6.1", "HIPAA 164.312(a)(2)(iv)"),
    ("Tamper-evident audit trail, HSM-anchored", "journal, audit_verify", "SOC 2 CC6.8", "HIPAA 164.312(b)"),
]
LIFECYCLE_ACTIONS = ("key-generate", "key-rotate", "key-destroy", "key-distribute", "key-install", "key-withdraw",
                     "key-update", "transport-key-enroll", "recipient-approve", "recipient-revoke", "key-seal",
                     "package-signer-pin", "package-signer-approve", "key-replicate", "replica-install",
                     "replica-update", "replica-withdraw", "key-restore")
ROLLOVER_ACTION = "audit-journal-rollover"
# The Security Officer's approvals and revocations of recipients' transport keys (docs/distribution.md).
OFFICER_ACTIONS = ("recipient-approve", "recipient-revoke")

# The templates shipped with the collection: <collection>/templates/compliance_report/.
TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "templates", "compliance_report")
# option -> (file name of the output and of the shipped template, autoescape)
OUTPUTS = {
    "markdown_template": ("report.md", False),
    "html_template": ("report.html", True),
}

# Fields of key_info's records a template may rely on: always present in the model (None when key_info left
# them out), so templates render with StrictUndefined and a misspelt field fails loudly.
_KEY_FIELDS = ("active_version", "next_rotation_due", "rotation_overdue")
# key_info's drift findings (docs/monitoring.md)
_DRIFT_FIELDS = ("label", "id", "kind", "attribute", "expected", "actual", "object_class", "state", "detail")
_VERSION_FIELDS = ("curve", "size", "key_check_value", "public_key_fingerprint", "age_seconds", "retain_until",
                   "retention_expired", "transitions", "distributable", "recipients", "wrap_with_trusted",
                   "extractable")
# key_info's trusted transport keys (approved by the Security Officer)
_TRUSTED_KEY_FIELDS = ("label", "recipient", "host", "fingerprint", "key_id", "kind")
# key_info's policy signers (plugins/module_utils/_policy_signers.py, PolicySigner.as_dict)
_SIGNER_FIELDS = ("name", "label", "fingerprint", "destroyable")
# key_info's token_capabilities (probe_token; plugins/module_utils/_key_report.py, capability_summary)
_CAPABILITY_FIELDS = ("generates", "oaep_hashes", "best_oaep_hash", "aes_key_wrap", "aes_key_wrap_pad",
                      "trusted_wrapping", "destroyable", "modifiable", "mechanism_count", "missing")
_TOKEN_FIELDS = ("label", "serial", "manufacturer", "model", "hardware_version", "firmware_version", "pin_length")
_RSA_FIELDS = ("generated", "min_bits", "max_bits")


class ReportTemplateError(Exception):
    """A template given to compliance_report cannot be read, parsed or rendered; names the option."""

    def __init__(self, message, option):
        super().__init__(message)
        self.option = option


def _time(text):
    return datetime.fromisoformat(text) if text else None


def _policy_of(event):
    """The intent's ``keylifecycle.policy`` as the model holds it (docs/report.md), or None when it has none.

    ``signed``, ``serial``, ``signer`` (fingerprint) and ``signer_short`` (``sha256:`` and its first 16 hex digits),
    ``environment``, ``sha256`` and ``short`` (its first 12 hex digits); ``signer_name`` is filled in by build_model
    from key_info's policy_signers (None if not on the token).
    """
    policy = (event.get("keylifecycle") or {}).get("policy")
    if not isinstance(policy, dict) or not isinstance(policy.get("sha256"), str):
        return None
    signer = policy.get("signer") if isinstance(policy.get("signer"), str) else None
    return {"signed": policy.get("signed") is True, "serial": policy.get("serial"), "signer": signer,
            "signer_short": signer[:23] if signer else None, "signer_name": None,
            "environment": policy.get("environment"), "sha256": policy["sha256"], "short": policy["sha256"][:12]}


def _names(value):
    """``approved_by`` as the report shows it: the approvers' names (a list, where signed approvals were used) joined
    with ", ", or the one name of a legacy unsigned approval; None when there is none."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(name) for name in value if isinstance(name, str) and name) or None
    return value if isinstance(value, str) and value else None


def _approvers(approvals):
    """``keylifecycle.approvals`` of a record as the model holds them: ``name``, ``fingerprint`` (``sha256:`` and 64
    hex digits), ``short`` (its first 12 hex digits after ``sha256:``), ``nonce`` and ``not_after``. Entries that
    are not dicts are left out; an empty list when the record has none."""
    rows = []
    for entry in approvals if isinstance(approvals, list) else ():
        if not isinstance(entry, dict):
            continue
        fingerprint = entry.get("fingerprint") if isinstance(entry.get("fingerprint"), str) else None
        rows.append({"name": entry.get("name") if isinstance(entry.get("name"), str) else None,
                     "fingerprint": fingerprint,
                     "short": fingerprint[7:19] if fingerprint and fingerprint.startswith("sha256:") else None,
                     "nonce": entry.get("nonce"), "not_after": entry.get("not_after")})
    return rows


def describe_approvers(approvers):
    """The approvers of a record in one line: ``dana (3f2a9c41d0b7), erin (...)``; ``none`` when there is none."""
    return ", ".join("%s (%s)" % (a["name"], a["short"]) if a["short"] else str(a["name"])
                     for a in approvers) or "none"


def _records(journal_lines):
    """(record, event) of every parseable journal line, in journal order."""
    for line in journal_lines:
        try:
            record = json.loads(line)
            event = record["event"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(event, dict):
            yield record, event


def last_events(journal_lines, count):
    """The newest ``count`` change records of lifecycle actions, newest first (outcome failures included).

    Each carries ``policy``: the policy in force for its task, as its intent record states it (``_policy_of``;
    None when the intent records none, as before policies were recorded, or is not in these lines).
    """
    events, intents = [], {}
    for record, event in _records(journal_lines):
        phase = event.get("keylifecycle", {}).get("phase")
        action = event.get("event", {}).get("action")
        if phase == "intent" and record.get("record_id"):
            intents[record["record_id"]] = _policy_of(event)
        failed = phase == "outcome" and event.get("event", {}).get("outcome") == "failure"
        if action in LIFECYCLE_ACTIONS and (phase == "change" or failed):
            key = event.get("key") or {}
            events.append({
                "time": event.get("@timestamp"), "seq": record.get("seq"), "action": action,
                "outcome": event["event"].get("outcome"), "operator": event.get("user", {}).get("name"),
                "source": event.get("labels", {}).get("operator_source"), "host": event.get("host", {}).get("name"),
                "key": key.get("label") or key.get("trusted_key_label")
                or ", ".join(event.get("keylifecycle", {}).get("requested_keys") or []),
                "id": key.get("id"), "recipient": key.get("recipient"),
                "error": (event.get("error") or {}).get("type"),
                "approved_by": _names(event.get("keylifecycle", {}).get("approved_by")),
                "approvers": _approvers(event.get("keylifecycle", {}).get("approvals")),
                "break_glass": event.get("keylifecycle", {}).get("break_glass") is True,
                "change_ref": event.get("keylifecycle", {}).get("change_ref"),
                "policy": intents.get(event.get("keylifecycle", {}).get("intent_id")),
            })
    return list(reversed(events[-count:]))


def _describe_policy(policy):
    """One line naming a policy of the model (``_policy_of``), for a finding's subject."""
    if policy is None:
        return "none recorded"
    if policy["signed"]:
        signer = policy["signer_short"]
        signer = "%s (%s)" % (policy["signer_name"], signer) if policy["signer_name"] else signer
        return "serial %s signed by %s" % (policy["serial"], signer)
    return "unsigned %s" % policy["short"]


def policy_changes(journal_lines):
    """Every change of the policy in force between consecutive intents of the journal, oldest first."""
    return policy_history(journal_lines)[0]


def policy_history(journal_lines):
    """``(changes, last)``: every change of the policy in force between consecutive intents of the journal, oldest
    first, and the policy of the newest intent that records one (None if none does).

    Each change: time, seq, action, operator, source, host of the intent that brought the new policy, ``before``
    and ``after`` (``_policy_of``). Intents that record no policy (written before policies were recorded) are
    skipped: the first intent that records one is not a change.
    """
    changes, previous = [], None
    for record, event in _records(journal_lines):
        lifecycle = event.get("keylifecycle") or {}
        policy = _policy_of(event) if lifecycle.get("phase") == "intent" else None
        if policy is None:
            continue
        if previous is not None and (policy["sha256"], policy["signed"]) != (previous["sha256"], previous["signed"]):
            changes.append({"time": event.get("@timestamp"), "seq": record.get("seq"),
                            "action": event.get("event", {}).get("action"), "operator": _who(event),
                            "source": event.get("labels", {}).get("operator_source"),
                            "host": event.get("host", {}).get("name"), "before": previous, "after": policy})
        previous = policy
    return changes, previous


def _changes(journal_lines, actions):
    """(record, event) of every successful change record of ``actions``, oldest first."""
    for line in journal_lines:
        try:
            record = json.loads(line)
            event = record["event"]
            action = event["event"]["action"]
        except (ValueError, KeyError, TypeError):
            continue
        if (action in actions and event.get("keylifecycle", {}).get("phase") == "change"
                and event["event"].get("outcome", "success") == "success"):
            yield record, event


def _who(event):
    return event.get("user", {}).get("name")


def distribution_records(journal_lines):
    """What the journal says about trusted distribution, oldest first (docs/report.md):

    - ``officer``: every recipient-approve / recipient-revoke change: when, which recipient, host, fingerprint and
      trusted key, the approving officer (``keylifecycle.approved_by``, else the operator who ran it), the change.
    - ``seals``: every key-seal change (a version made non-extractable at the migration to trusted wrapping).
    - ``untrusted_wraps``: every key-distribute change with ``key.trusted_wrapping`` false (the token wrapped under
      a key the Security Officer did not approve: policy require_trusted_wrapping off), with its warning.
    - ``enrolled_fingerprints``: the transport key fingerprints of the transport-key-enroll changes.
    - ``policy_changes`` / ``policy_in_force``: every change of the policy in force between consecutive intents,
      and the newest intent's policy (``policy_history``); here so that compliance_report's one call feeds them.
    - ``approved_actions`` / ``break_glass``: the records of actions taken under signed approvals, and of those a
      Security Officer executed as break-glass (``approval_records``); here for the same reason.
    """
    changes, in_force = policy_history(journal_lines)
    approved, break_glass = approval_records(journal_lines)
    officer, seals, untrusted, enrolled = [], [], [], set()
    for record, event in _changes(journal_lines, OFFICER_ACTIONS + ("key-seal", "key-distribute",
                                                                    "transport-key-enroll")):
        action, key, lifecycle = event["event"]["action"], event.get("key") or {}, event.get("keylifecycle") or {}
        common = {"time": event.get("@timestamp"), "seq": record.get("seq"), "operator": _who(event),
                  "change_ref": lifecycle.get("change_ref")}
        if action in OFFICER_ACTIONS:
            officer.append(dict(common, action=action, recipient=key.get("recipient"),
                                host=key.get("recipient_host"),
                                fingerprint=key.get("transport_key_fingerprint") or key.get("public_key_fingerprint"),
                                label=key.get("trusted_key_label") or key.get("label"),
                                officer=_names(lifecycle.get("approved_by")) or _who(event)))
        elif action == "key-seal":
            seals.append(dict(common, label=key.get("label"), id=key.get("id"),
                              reason=event["event"].get("reason")))
        elif action == "key-distribute" and key.get("trusted_wrapping") is False:
            untrusted.append(dict(common, label=key.get("label"), id=key.get("id"), recipient=key.get("recipient"),
                                  host=key.get("recipient_host"),
                                  fingerprint=key.get("transport_key_fingerprint"),
                                  warning=lifecycle.get("warning")))
        elif action == "transport-key-enroll" and key.get("public_key_fingerprint"):
            enrolled.add(key["public_key_fingerprint"])
    return {"officer": officer, "seals": seals, "untrusted_wraps": untrusted,
            "enrolled_fingerprints": sorted(enrolled), "policy_changes": changes, "policy_in_force": in_force,
            "approved_actions": approved, "break_glass": break_glass}


def approval_records(journal_lines):
    """``(approved, break_glass)``: the records of actions taken under signed approvals, and those a Security Officer
    executed as break-glass, oldest first (docs/report.md, docs/access-control.md).

    Change records, and failure outcomes, that carry ``keylifecycle.approvals`` (destroy, compromise, retire, journal
    rollover under a signed policy that asks for approvals) or ``keylifecycle.break_glass`` true are ``approved``;
    those with ``break_glass`` are in ``break_glass`` too. Each: time, seq, action, reason, outcome, key, operator,
    source, host, change_ref, approved_by (names joined), approvers (``_approvers``), break_glass. ``key`` is the
    version's label, else the keys the task asked about (a failure), else None (a journal rollover).
    """
    approved, break_glass = [], []
    for record, event in _records(journal_lines):
        lifecycle = event.get("keylifecycle")
        if not isinstance(lifecycle, dict):
            continue
        happened = event.get("event") if isinstance(event.get("event"), dict) else {}
        phase, outcome = lifecycle.get("phase"), happened.get("outcome")
        if not (phase == "change" or (phase == "outcome" and outcome == "failure")):
            continue
        approvers, flagged = _approvers(lifecycle.get("approvals")), lifecycle.get("break_glass") is True
        if not approvers and not flagged:
            continue
        key = event.get("key") if isinstance(event.get("key"), dict) else {}
        row = {"time": event.get("@timestamp"), "seq": record.get("seq"), "action": happened.get("action"),
               "reason": happened.get("reason"), "outcome": outcome,
               "key": key.get("label") or ", ".join(str(k) for k in lifecycle.get("requested_keys") or []) or None,
               "operator": _who(event), "source": (event.get("labels") or {}).get("operator_source"),
               "host": (event.get("host") or {}).get("name"), "change_ref": lifecycle.get("change_ref"),
               "approved_by": _names(lifecycle.get("approved_by")), "approvers": approvers, "break_glass": flagged}
        approved.append(row)
        if flagged:
            break_glass.append(row)
    return approved, break_glass


def break_glass_findings(rows):
    """One ``break_glass`` finding per record of a break-glass action (``approval_records``): who, what, when, the
    approvers."""
    def what(row):
        return row["key"] or ("the journal" if row["action"] == ROLLOVER_ACTION else "(no key recorded)")

    return [{"kind": "break_glass", "subject": "%s %s %s%s at %s (seq %s%s), approved by %s" % (
        r["operator"], r["action"], what(r), " (%s)" % r["reason"] if r["reason"] else "", r["time"], r["seq"],
        ", change %s" % r["change_ref"] if r["change_ref"] else "", describe_approvers(r["approvers"]))}
        for r in rows]


def untrusted_versions(versions):
    """Labels of the versions the token would still wrap under any key: distributable, extractable now (as key_info
    read CKA_EXTRACTABLE) and not generated with CKA_WRAP_WITH_TRUSTED. Rotation migrates them (docs/distribution.md).
    """
    rows = []
    for v in versions:
        extractable = v.get("extractable")
        if extractable is None:  # key_info from before trusted wrapping: its evidence holds CKA_EXTRACTABLE
            extractable = (v.get("evidence") or {}).get("extractable")
        if v.get("distributable") and extractable and not v.get("wrap_with_trusted") and v["state"] != "destroyed":
            rows.append(v["label"])
    return rows


def trusted_keys(key_info, versions, enrolled_fingerprints=()):
    """key_info's trusted transport keys, each with ``enrolled`` and ``enroll_recorded``.

    ``enrolled``: the key names a recipient (its label, as recipient_approve writes it) that some version not yet
    destroyed lists among its recipients; a replica's key (kind ``replica``), while some version not yet destroyed
    is backed up. That list is read from the token by key_info, the same list
    key_distribute plans against, so it is complete whatever the journal holds (a journal started after the
    enrollment, or recipients enrolled from another controller). A trusted key whose recipient no key lists any
    more, or whose label is not the collection's, is a finding: the Security Officer revokes it.
    ``enroll_recorded``: a transport-key-enroll record of this journal carries the key's fingerprint (shown for
    reference, not a finding: the journal may not hold every enrollment).
    """
    named = {r for v in versions if v["state"] != "destroyed" for r in v.get("recipients") or ()}
    backed_up = any(v.get("backup") for v in versions if v["state"] != "destroyed")
    enrolled_fingerprints = set(enrolled_fingerprints)

    def bound(key):
        if not key.get("recipient"):
            return False
        # a replica token's key is bound while the token holds a key that is backed up to replicas
        return backed_up if key.get("kind") == "replica" else key["recipient"] in named

    return [dict(_complete(k, _TRUSTED_KEY_FIELDS), enrolled=bound(k),
                 enroll_recorded=k.get("fingerprint") in enrolled_fingerprints)
            for k in key_info.get("trusted_transport_keys") or []]


#: journal actions whose successful record says a version's key objects are on the record's token from then on
_VERSION_MADE = ("key-generate", "key-rotate", "replica-install", "key-restore")
#: ... and those that say they are gone (key_destroy, a replica's withdrawal)
_VERSION_GONE = ("key-destroy", "replica-withdraw")


def vanished_versions(journal_lines, key_info):
    """Versions the journal records on key_info's token (generated, rotated in, replicated, restored) that the
    token no longer holds as recorded, while no record says they were destroyed or withdrawn.

    A version is named when key_info does not list its id, lists it under another label than the journal's last
    one for it, or lists it as destroyed without a destruction record: its key objects and metadata were removed
    (or its metadata replaced) outside the collection with raw PKCS#11, which key_info's drift check cannot see
    (it compares the token with its metadata), or were lost with the token (a re-initialised token restored from a
    replica that did not hold them). A destroyed version keeps its metadata, so key_info lists it.

    A repair's removal of a half-made version counts as gone only for an id no record ever made: a generation cut
    short journals nothing, so a completed version removed that way (its metadata deleted first) is named.

    Only when key_info listed every version of the token (``all_keys``); [] otherwise. Each entry: label, id, and
    the action and time of the record that made it.
    """
    token = key_info.get("token_label")
    if not key_info.get("all_keys") or not token:
        return []
    made, gone = {}, set()
    for _record, event in _records(journal_lines):
        key = event.get("key")
        details = event.get("event")
        if not isinstance(key, dict) or not isinstance(details, dict) or key.get("token") != token \
                or details.get("outcome") != "success" or not isinstance(key.get("id"), str):
            continue
        action, key_id = details.get("action"), key["id"]
        label = key.get("label") or "%s:v%s" % (key.get("name"), key.get("version"))
        if action in _VERSION_GONE or (action in _VERSION_MADE and key.get("state") == "destroyed"):
            gone.add(key_id)  # destroyed, withdrawn, or copied as a tombstone
        elif details.get("reason") == HALF_MADE_REASON:
            if key_id not in made:
                gone.add(key_id)
        elif action in _VERSION_MADE:
            entry = made.setdefault(key_id, {"id": key_id, "action": action, "time": event.get("@timestamp")})
            entry["label"] = label  # the last label: a repair renumbers a duplicate under its id
    held = {version.get("id"): version for version in key_info.get("key_versions") or ()}
    vanished = []
    for key_id, entry in made.items():
        version = held.get(key_id)
        if key_id not in gone and (version is None or version.get("label") != entry["label"]
                                   or version.get("state") == "destroyed"):
            vanished.append(entry)
    return vanished


def _complete(record, fields):
    return dict({name: None for name in fields}, **record)


def declared_losses(audit):
    """What journal rollovers declared lost: a whole journal (``lost``), or the events of finished tasks the token
    remembered and the continued journal did not hold (``lost_outcomes``). The token's pin keeps every such
    declaration (``declared_losses``), however many rollovers followed; audit_verify's ``journals`` name those of
    the journals it followed. The chain verifies with them, so they are no audit problem; they are still records an
    auditor will not find."""
    losses, seen = [], set()
    pin = audit.get("token_pin") or {}
    for journal in list(pin.get("declared_losses") or ()) + list(audit.get("journals") or ()):
        key = (journal.get("journal_id"), bool(journal.get("lost")), tuple(journal.get("lost_outcomes") or ()))
        if key in seen:
            continue
        seen.add(key)
        if journal.get("lost"):
            losses.append("journal %s: the whole journal (declared lost at a rollover)" % journal.get("journal_id"))
        elif journal.get("lost_outcomes"):
            losses.append("journal %s: the audit events of the task(s) whose intent is record %s (declared lost at a "
                          "rollover)" % (journal.get("journal_id"), ", ".join(str(s) for s in journal["lost_outcomes"])))
    return losses


def _attention(overdue, expired, compromised, anomalies, problems, drift=(), untrusted=(), unbound=(),
               untrusted_wraps=(), break_glass=(), vanished=(), losses=()):
    """What needs attention, in the order the report lists it; the templates word each kind."""
    gone = ["%s (id %s, %s at %s)" % (v["label"], v["id"], v["action"], v["time"]) for v in vanished]
    return ([{"kind": "version_vanished", "subject": subject} for subject in gone] +
            [{"kind": "rotation_overdue", "subject": k} for k in overdue] +
            [{"kind": "retention_expired", "subject": v} for v in expired] +
            [{"kind": "compromised", "subject": v} for v in compromised] +
            [{"kind": "untrusted_version", "subject": v} for v in untrusted] +
            [{"kind": "unbound_trusted_key", "subject": "%s (%s)" % (k["label"], k["fingerprint"])
              if k["recipient"] is None else k["label"]} for k in unbound] +
            [{"kind": "untrusted_wrap", "subject": "%s to %s at %s%s" % (
                w["label"], w["recipient"], w["time"], ": %s" % w["warning"] if w["warning"] else "")}
             for w in untrusted_wraps] +
            break_glass_findings(break_glass) +
            [{"kind": "anomaly", "subject": "%s: %s" % (a["label"], a["problem"])} for a in anomalies] +
            [{"kind": "drift", "subject": d["detail"] or "%s: %s" % (d["label"], d["kind"])} for d in drift] +
            [{"kind": "audit_problem", "subject": p} for p in problems] +
            [{"kind": "records_lost", "subject": loss} for loss in losses])


def _marking(transition):
    """approved_by (names joined with ", "), change_ref and reason of a compromise transition (None where the record
    has none)."""
    return {"reason": transition.get("reason"), "approved_by": _names(transition.get("approved_by")),
            "change_ref": transition.get("change_ref")}


def compromised_versions(versions):
    """The versions marked compromised, each with its marking as its transition records it: when, by whom,
    why, who approved it and the change reference (None where the record has no such field)."""
    rows = []
    for v in versions:
        if v["state"] != "compromised":
            continue
        history = v.get("transitions") or []
        marked = ([t for t in history if t.get("state") == "compromised"] or [{}])[-1]
        earlier = [t.get("state") for t in history[:history.index(marked)]] if marked in history else []
        rows.append(dict(_marking(marked), label=v["label"], name=v["name"], version=v["version"], id=v.get("id"),
                         at=marked.get("at"), by=marked.get("by"), previous_state=earlier[-1] if earlier else None))
    return rows


def timeline(versions, now):
    """The timeline of key versions, positions as fractions (0 to 1) of the time from the first creation to the
    later of now and the last retain-until; the template decides the drawing. None if there are no versions.

    Each row: label, segments (state, start, stop; a destroyed segment is a point in time) and retain_until
    (position of the retention end of a version not yet destroyed, or None).
    """
    if not versions:
        return None
    starts = [_time(v["created"]) for v in versions]
    ends = [now] + [_time(v["retain_until"]) for v in versions if v.get("retain_until")]
    first, last = min(starts), max(ends)
    span = max((last - first).total_seconds(), 1.0)

    def at(moment):
        return (moment - first).total_seconds() / span

    rows = []
    for v in versions:
        moments = [(t["state"], _time(t["at"])) for t in v.get("transitions") or []]
        if not moments:
            moments = [("active", _time(v["created"]))]
        segments = []
        for position, (state, start) in enumerate(moments):
            stop = moments[position + 1][1] if position + 1 < len(moments) else now
            segments.append({"state": state, "start": at(start), "stop": at(stop)})
        retain = at(_time(v["retain_until"])) if v.get("retain_until") and v["state"] != "destroyed" else None
        rows.append({"label": v["label"], "state": v["state"], "segments": segments, "retain_until": retain})
    return {"rows": rows, "now": at(now), "start": first.isoformat(timespec="seconds"),
            "end": last.isoformat(timespec="seconds")}


def policy_signers(key_info):
    """key_info's policy signers (trusted keys the Security Officer installed in the token), each with name,
    label, fingerprint and destroyable (None where key_info left it out). Empty when key_info lists none or
    predates them."""
    signers = key_info.get("policy_signers")
    return [_complete(s, _SIGNER_FIELDS) for s in signers if isinstance(s, dict)] if isinstance(signers, list) else []


def token_capabilities(key_info):
    """key_info's ``token_capabilities`` (the probe summary, option ``probe_token``) with every field a template
    relies on (None where the summary left one out; the lists of ``generates`` and ``oaep_hashes`` empty); None
    when key_info did not probe the token."""
    probed = key_info.get("token_capabilities")
    if not isinstance(probed, dict):
        return None
    model = _complete(probed, _CAPABILITY_FIELDS)
    token = probed.get("token")
    model["token"] = _complete(token if isinstance(token, dict) else {}, _TOKEN_FIELDS)
    generates = probed.get("generates") if isinstance(probed.get("generates"), dict) else {}
    rsa = generates.get("rsa") if isinstance(generates.get("rsa"), dict) else {}
    model["generates"] = {"aes": list(generates.get("aes") or []), "rsa": _complete(rsa, _RSA_FIELDS),
                          "ec": list(generates.get("ec") or [])}
    model["oaep_hashes"] = list(probed.get("oaep_hashes") or [])
    missing = probed.get("missing")
    if isinstance(missing, list):
        model["missing"] = [_complete(m, ("capability", "reason")) for m in missing if isinstance(m, dict)]
    else:  # the summary does not say what the token lacks, so the report does not either
        model["missing"] = None
    return model


def _name_signers(policies, signers):
    """Fill in ``signer_name`` of each policy from the token's signers (by fingerprint)."""
    names = {s["fingerprint"]: s["name"] for s in signers if s.get("fingerprint")}
    for policy in policies:
        if policy is not None:
            policy["signer_name"] = names.get(policy["signer"])


def policy_findings(signers, changes):
    """The report's governance findings, in the Attention list after the others (the templates word each kind):
    ``no_policy_signer`` when the token holds no policy signer, one ``policy_change`` per change of policy."""
    findings = []
    if not signers:
        findings.append({"kind": "no_policy_signer", "subject": (
            "the token holds no policy signer: every task's policy is the one it passes, unsigned, and holds only "
            "as long as whoever runs the play keeps it (docs/access-control.md, \"Signed policy\")")})
    for change in changes:
        findings.append({"kind": "policy_change", "subject": "%s (seq %s, %s by %s): %s -> %s" % (
            change["time"], change["seq"], change["action"], change["operator"], _describe_policy(change["before"]),
            _describe_policy(change["after"]))})
    return findings


def build_model(environment, key_info, audit, events, now=None, distribution=None, vanished=()):
    """The report's data model: everything the templates show, nothing about how (docs/report.md).

    ``distribution``: ``distribution_records`` of the journal (None: no journal records about distribution).
    ``vanished``: ``vanished_versions`` of the journal and key_info.
    """
    now = now or datetime.now(timezone.utc)
    distribution = distribution or distribution_records(())
    versions = [_complete(v, _VERSION_FIELDS) for v in key_info.get("key_versions") or []]
    keys = [_complete(k, _KEY_FIELDS) for k in key_info.get("logical_keys") or []]
    overdue = [k["name"] for k in keys if k.get("rotation_overdue")]
    expired = ["%s:v%d" % (v["name"], v["version"]) for v in versions
               if v.get("retention_expired") and v["state"] in ("deactivated", "compromised")]
    compromised = ["%s:v%d" % (v["name"], v["version"]) for v in versions if v["state"] == "compromised"]
    anomalies = key_info.get("anomalies") or []
    drift = [_complete(d, _DRIFT_FIELDS) for d in key_info.get("drift") or []]
    audit = audit or {}
    problems = audit.get("problems") or []
    untrusted = untrusted_versions(versions)
    trusted = trusted_keys(key_info, versions, distribution["enrolled_fingerprints"])
    unbound = [k for k in trusted if not k["enrolled"]]
    untrusted_wraps = distribution["untrusted_wraps"]
    signers = policy_signers(key_info)
    changes = distribution.get("policy_changes") or []
    in_force = distribution.get("policy_in_force")
    approved = distribution.get("approved_actions") or []
    break_glass = distribution.get("break_glass") or []
    _name_signers([e.get("policy") for e in events] + [c[side] for c in changes for side in ("before", "after")]
                  + [in_force], signers)
    return {
        "environment": environment,
        "generated_at": now.isoformat(timespec="seconds"),
        "keys": keys,
        "versions": versions,
        "overdue": overdue,
        "retention_expired": expired,
        "compromised": compromised,
        "compromised_versions": compromised_versions(versions),
        "anomalies": anomalies,
        "drift": drift,
        "attention": _attention(overdue, expired, compromised, anomalies, problems, drift=drift, untrusted=untrusted,
                                unbound=unbound, untrusted_wraps=untrusted_wraps, break_glass=break_glass,
                                vanished=vanished, losses=declared_losses(audit)),
        "vanished_versions": list(vanished),
        "untrusted_versions": untrusted,
        "trusted_keys": trusted,
        "unbound_trusted_keys": [k["label"] for k in unbound],
        "package_signer": key_info.get("package_signer"),
        "untrusted_wraps": untrusted_wraps,
        "officer_actions": distribution["officer"],
        "seals": distribution["seals"],
        "audit": {"ok": bool(audit.get("ok")), "records": audit.get("records"),
                  "checkpoints": audit.get("checkpoints_verified"), "problems": problems,
                  "journal": audit.get("journal"), "head": audit.get("head")},
        "events": events,
        "policy_signers": signers,
        "token_capabilities": token_capabilities(key_info),
        "policy_changes": changes,
        "policy_in_force": in_force,
        "policy_findings": policy_findings(signers, changes),
        "approved_actions": approved,
        "break_glass_actions": break_glass,
        "controls": CONTROLS,
        "timeline": timeline(versions, now),
    }


def summary(model):
    return {"keys": len(model["keys"]), "versions": len(model["versions"]),
            "rotation_overdue": model["overdue"], "retention_expired": model["retention_expired"],
            "compromised": model["compromised"], "anomalies": len(model["anomalies"]), "drift": len(model["drift"]),
            "untrusted_versions": model["untrusted_versions"], "unbound_trusted_keys": model["unbound_trusted_keys"],
            "untrusted_wraps": len(model["untrusted_wraps"]), "audit_ok": model["audit"]["ok"],
            "policy_signers": [s["name"] for s in model["policy_signers"]],
            "policy_changes": len(model["policy_changes"]), "break_glass": len(model["break_glass_actions"]),
            "vanished_versions": [v["label"] for v in model["vanished_versions"]]}


def default_template(option):
    """Path of the template the collection ships for ``option`` (markdown_template or html_template)."""
    return os.path.join(TEMPLATE_DIR, OUTPUTS[option][0] + ".j2")


def _refused(option, path, problem):
    return ReportTemplateError(
        "%s: %s %s. Nothing was written. Point %s at a readable Jinja2 template on the controller (a copy of the "
        "collection's %s), or leave it unset for the shipped one." % (option, path, problem, option,
                                                                      default_template(option)), option)


def render(model, option, path=None):
    """Render the model with the template for ``option`` (``path``, or the shipped one); return the text.

    Sandboxed Jinja2 with StrictUndefined; autoescape for HTML. ``{% include %}`` and ``{% extends %}`` find
    templates beside ``path``. Raises ReportTemplateError naming the option.
    """
    if JINJA2_IMPORT_ERROR is not None:
        raise ReportTemplateError("compliance_report needs Jinja2 on the controller (ansible-core requires it): "
                                  "%s" % JINJA2_IMPORT_ERROR, option)
    path = path or default_template(option)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise _refused(option, path, "is not a readable file")
    path = os.path.abspath(path)
    environment = SandboxedEnvironment(loader=FileSystemLoader(os.path.dirname(path)), autoescape=OUTPUTS[option][1],
                                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                       keep_trailing_newline=True)
    try:
        return environment.get_template(os.path.basename(path)).render(model)
    except TemplateSyntaxError as exc:
        raise _refused(option, path, "is not a valid Jinja2 template (line %s: %s)" % (exc.lineno, exc.message))
    except UnicodeDecodeError as exc:
        raise _refused(option, path, "is not UTF-8 text (%s)" % exc)
    except (TemplateError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise _refused(option, path, "failed to render the report (%s: %s)" % (type(exc).__name__, exc))


def render_all(model, templates=None):
    """Render every output before any is written: {file name: text}. ``templates`` maps option -> path or None."""
    templates = templates or {}
    return {name: render(model, option, templates.get(option)) for option, (name, _escape) in OUTPUTS.items()}
