# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The key inventory and compliance report for the Security Officer: Markdown and a self-contained HTML page.

PRIVATE: not part of the public interface. Controller only (compliance_report's action plugin).

Built from what key_info and audit_verify returned and from the journal's records; it holds
names, versions, ids, check values, dates and outcomes, never key material or a PIN.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone

# The controls each lifecycle step serves (docs/access-control.md, docs/audit.md).
CONTROLS = [
    ("Generate in the HSM, strength by policy", "key_generate", "SOC 2 CC6.1", "HIPAA 164.312(a)(2)(iv)"),
    ("Rotate at least annually; old version decrypt-only, retained", "key_rotate", "SOC 2 CC6.1",
     "HIPAA 164.312(a)(2)(iv), 164.312(e)(2)(ii)"),
    ("Distribute wrapped only, to enrolled recipients", "key_distribute, key_install", "SOC 2 CC6.1",
     "HIPAA 164.312(e)(2)(ii)"),
    ("Destroy after retention, verified gone, dual control in prod", "key_destroy", "SOC 2 CC6.1, CC6.8",
     "HIPAA 164.312(a)(2)(iv)"),
    ("Authorize per action; name the operator", "policy.authorization", "SOC 2 CC6.1", "HIPAA 164.312(a)(2)(iv)"),
    ("Tamper-evident audit trail, HSM-anchored", "journal, audit_verify", "SOC 2 CC6.8", "HIPAA 164.312(b)"),
]
LIFECYCLE_ACTIONS = ("key-generate", "key-rotate", "key-destroy", "key-distribute", "key-install", "key-withdraw",
                     "key-update", "transport-key-enroll")
_COLORS = {"active": "#2e7d32", "deactivated": "#f9a825", "compromised": "#c62828", "destroyed": "#616161"}


def _time(text):
    return datetime.fromisoformat(text) if text else None


def last_events(journal_lines, count):
    """The newest ``count`` change records of lifecycle actions, newest first (outcome failures included)."""
    events = []
    for line in journal_lines:
        try:
            record = json.loads(line)
            event = record["event"]
        except (ValueError, KeyError, TypeError):
            continue
        phase = event.get("keylifecycle", {}).get("phase")
        action = event.get("event", {}).get("action")
        failed = phase == "outcome" and event.get("event", {}).get("outcome") == "failure"
        if action in LIFECYCLE_ACTIONS and (phase == "change" or failed):
            key = event.get("key") or {}
            events.append({
                "time": event.get("@timestamp"), "seq": record.get("seq"), "action": action,
                "outcome": event["event"].get("outcome"), "operator": event.get("user", {}).get("name"),
                "source": event.get("labels", {}).get("operator_source"), "host": event.get("host", {}).get("name"),
                "key": key.get("label") or ", ".join(event.get("keylifecycle", {}).get("requested_keys") or []),
                "id": key.get("id"), "recipient": key.get("recipient"),
                "error": (event.get("error") or {}).get("type"),
                "approved_by": event.get("keylifecycle", {}).get("approved_by"),
            })
    return list(reversed(events[-count:]))


def build_model(environment, key_info, audit, events, now=None):
    now = now or datetime.now(timezone.utc)
    versions = key_info.get("key_versions") or []
    keys = key_info.get("logical_keys") or []
    overdue = [k["name"] for k in keys if k.get("rotation_overdue")]
    expired = ["%s:v%d" % (v["name"], v["version"]) for v in versions
               if v.get("retention_expired") and v["state"] in ("deactivated", "compromised")]
    audit = audit or {}
    return {
        "environment": environment,
        "generated_at": now.isoformat(timespec="seconds"),
        "keys": keys,
        "versions": versions,
        "overdue": overdue,
        "retention_expired": expired,
        "compromised": ["%s:v%d" % (v["name"], v["version"]) for v in versions if v["state"] == "compromised"],
        "anomalies": key_info.get("anomalies") or [],
        "audit": {"ok": bool(audit.get("ok")), "records": audit.get("records"),
                  "checkpoints": audit.get("checkpoints_verified"), "problems": audit.get("problems") or [],
                  "journal": audit.get("journal"), "head": audit.get("head")},
        "events": events,
        "controls": CONTROLS,
    }


def summary(model):
    return {"keys": len(model["keys"]), "versions": len(model["versions"]),
            "rotation_overdue": model["overdue"], "retention_expired": model["retention_expired"],
            "compromised": model["compromised"], "anomalies": len(model["anomalies"]),
            "audit_ok": model["audit"]["ok"]}


def _days(seconds):
    return "%.0f d" % (seconds / 86400.0) if seconds is not None else ""


def render_markdown(model):
    out = ["# Key inventory and compliance report: %s" % model["environment"], "",
           "Generated %s. Audit chain: **%s** (%s records, %s checkpoint(s) verified)." % (
               model["generated_at"], "verifies" if model["audit"]["ok"] else "DOES NOT VERIFY",
               model["audit"]["records"], model["audit"]["checkpoints"]), ""]
    out += ["## Attention", ""]
    items = ([("Rotation overdue", k) for k in model["overdue"]] +
             [("Retention expired, not yet destroyed", v) for v in model["retention_expired"]] +
             [("Compromised", v) for v in model["compromised"]] +
             [("Anomaly", "%s: %s" % (a["label"], a["problem"])) for a in model["anomalies"]] +
             [("Audit problem", p) for p in model["audit"]["problems"]])
    out += ["- %s: %s" % item for item in items] or ["- Nothing overdue, expired, compromised or anomalous."]
    out += ["", "## Keys", "", "| key | state | active version | next rotation due | overdue |",
            "| --- | --- | --- | --- | --- |"]
    for key in model["keys"]:
        out.append("| %s | %s | %s | %s | %s |" % (key["name"], key["state"], key.get("active_version") or "",
                                                   key.get("next_rotation_due") or "",
                                                   "yes" if key.get("rotation_overdue") else "no"))
    out += ["", "## Versions", "",
            "| version | state | type | id | check value / fingerprint | created | age | retain until | expired |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for v in model["versions"]:
        out.append("| %s | %s | %s | `%s` | `%s` | %s | %s | %s | %s |" % (
            v["label"], v["state"], "%s-%s" % (v["type"], v.get("curve") or v["size"]), v["id"],
            v.get("key_check_value") or v.get("public_key_fingerprint") or "", v["created"],
            _days(v.get("age_seconds")), v.get("retain_until") or "", "yes" if v.get("retention_expired") else "no"))
    out += ["", "## Last lifecycle events", "", "| time | action | outcome | key | operator (source) | host | recipient |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for e in model["events"]:
        out.append("| %s | %s | %s%s | %s | %s (%s) | %s | %s |" % (
            e["time"], e["action"], e["outcome"], " (%s)" % e["error"] if e["error"] else "", e["key"] or "",
            e["operator"], e["source"], e["host"], e["recipient"] or ""))
    out += ["", "## Controls served", "", "| step | how | SOC 2 | HIPAA |", "| --- | --- | --- | --- |"]
    out += ["| %s | %s | %s | %s |" % row for row in model["controls"]]
    return "\n".join(out) + "\n"


def _timeline_svg(model, now):
    """One row per key version: active (green), deactivated (amber), compromised (red), until destroyed."""
    versions = model["versions"]
    if not versions:
        return "<p>No key versions.</p>"
    starts = [_time(v["created"]) for v in versions]
    ends = [now] + [_time(v["retain_until"]) for v in versions if v.get("retain_until")]
    first, last = min(starts), max(ends)
    span = max((last - first).total_seconds(), 1.0)
    width, left, row = 900, 170, 22

    def x(moment):
        return left + (width - left - 10) * ((moment - first).total_seconds() / span)

    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" role="img" '
             'aria-label="key version timeline">' % (width, row * len(versions) + 40)]
    for index, v in enumerate(versions):
        y = 20 + index * row
        parts.append('<text x="4" y="%d" font-size="12">%s</text>' % (y + 13, html.escape(v["label"])))
        moments = [(t["state"], _time(t["at"])) for t in v.get("transitions") or []]
        if not moments:
            moments = [("active", _time(v["created"]))]
        for position, (state, start) in enumerate(moments):
            stop = moments[position + 1][1] if position + 1 < len(moments) else now
            if state == "destroyed":
                parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="3"/>'
                             % (x(start), y, x(start), y + 16, _COLORS["destroyed"]))
                continue
            parts.append('<rect x="%.1f" y="%d" width="%.1f" height="16" fill="%s"><title>%s %s</title></rect>'
                         % (x(start), y, max(x(stop) - x(start), 2.0), _COLORS.get(state, "#999"),
                            html.escape(v["label"]), html.escape(state)))
        if v.get("retain_until") and v["state"] != "destroyed":
            parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#000" stroke-dasharray="3,2"/>'
                         % (x(_time(v["retain_until"])), y - 2, x(_time(v["retain_until"])), y + 18))
    parts.append('<line x1="%.1f" y1="10" x2="%.1f" y2="%d" stroke="#1565c0"/>' % (x(now), x(now), row * len(
        versions) + 30))
    parts.append('<text x="%.1f" y="%d" font-size="11" fill="#1565c0">now</text>' % (x(now) - 10, row * len(
        versions) + 38))
    parts.append("</svg>")
    return "".join(parts)


def render_html(model):
    now = _time(model["generated_at"])
    esc = html.escape

    def table(headers, rows):
        head = "".join("<th>%s</th>" % esc(h) for h in headers)
        body = "".join("<tr>%s</tr>" % "".join("<td>%s</td>" % esc(str(c)) for c in r) for r in rows)
        return "<table><thead><tr>%s</tr></thead><tbody>%s</tbody></table>" % (head, body)

    attention = ([("Rotation overdue", k) for k in model["overdue"]] +
                 [("Retention expired", v) for v in model["retention_expired"]] +
                 [("Compromised", v) for v in model["compromised"]] +
                 [("Anomaly", "%s: %s" % (a["label"], a["problem"])) for a in model["anomalies"]] +
                 [("Audit problem", p) for p in model["audit"]["problems"]])
    audit_ok = model["audit"]["ok"]
    sections = [
        "<h1>Key inventory and compliance report: %s</h1>" % esc(model["environment"]),
        "<p>Generated %s. <span class=\"%s\">Audit chain %s</span> (%s records, %s checkpoint(s) verified).</p>" % (
            esc(model["generated_at"]), "ok" if audit_ok else "bad", "verifies" if audit_ok else "DOES NOT VERIFY",
            esc(str(model["audit"]["records"])), esc(str(model["audit"]["checkpoints"]))),
        "<h2>Attention</h2>",
        table(["item", "what"], attention) if attention else
        "<p class=\"ok\">Nothing overdue, expired, compromised or anomalous.</p>",
        "<h2>Timeline of key versions</h2>",
        "<p class=\"legend\"><span style=\"color:%s\">&#9632; active</span> <span style=\"color:%s\">&#9632; "
        "deactivated</span> <span style=\"color:%s\">&#9632; compromised</span> | destroyed, dashed: retain until"
        "</p>" % (_COLORS["active"], _COLORS["deactivated"], _COLORS["compromised"]),
        _timeline_svg(model, now),
        "<h2>Keys</h2>",
        table(["key", "state", "active version", "next rotation due", "overdue"],
              [(k["name"], k["state"], k.get("active_version") or "", k.get("next_rotation_due") or "",
                "yes" if k.get("rotation_overdue") else "no") for k in model["keys"]]),
        "<h2>Versions</h2>",
        table(["version", "state", "type", "id", "check value / fingerprint", "created", "age", "retain until",
               "expired"],
              [(v["label"], v["state"], "%s-%s" % (v["type"], v.get("curve") or v["size"]), v["id"],
                v.get("key_check_value") or v.get("public_key_fingerprint") or "", v["created"],
                _days(v.get("age_seconds")), v.get("retain_until") or "", "yes" if v.get("retention_expired") else "no")
               for v in model["versions"]]),
        "<h2>Last lifecycle events</h2>",
        table(["time", "action", "outcome", "key", "operator (source)", "host", "recipient"],
              [(e["time"], e["action"], e["outcome"] + (" (%s)" % e["error"] if e["error"] else ""), e["key"] or "",
                "%s (%s)" % (e["operator"], e["source"]), e["host"], e["recipient"] or "") for e in model["events"]]),
        "<h2>Controls served</h2>",
        table(["step", "how", "SOC 2", "HIPAA"], model["controls"]),
    ]
    style = ("body{font-family:'Liberation Sans',Arial,sans-serif;margin:24px;color:#212121}"
             "table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;"
             "font-size:13px;text-align:left}th{background:#eceff1}.ok{color:#2e7d32}.bad{color:#c62828;"
             "font-weight:bold}h2{margin-top:22px}.legend{font-size:13px}")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Key report %s</title>"
            "<style>%s</style></head><body>%s</body></html>\n" % (esc(model["environment"]), style,
                                                                  "\n".join(sections)))
