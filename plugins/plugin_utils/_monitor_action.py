# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Controller side of the read-only monitoring modules (key_info, token_check): their findings journaled.

PRIVATE: not part of the public interface.

The module runs first (it only reads the token); then the action plugin appends its
observations (``keylifecycle.phase: observation``) to the same fail-closed journal the
lifecycle modules write (``_journal.Journal``, fsync'ed, hash-chained): one ``key-drift``
record per drift finding of key_info, one ``token-check`` record per token_check run.
If the journal cannot be written, the task fails and says which findings are not journaled.

Differences from a lifecycle task (``_lifecycle_action``), on purpose:

* no intent record and no token lock: nothing is changed on the token, so there is nothing to
  announce before and nothing to serialise;
* no checkpoint is anchored on the token (that needs a read-write session and the signing
  key); the next lifecycle task's checkpoint covers these records like every record before it;
* check mode journals nothing, as for every module of the collection;
* the operator is the resolved identity (``resolve_operator``); ``keylifecycle_operator`` is
  not used, since no one acts on anyone's behalf by reading.
"""

from __future__ import annotations

import os
import re

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext, build_event
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import NAME_RE
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import (
    Journal,
    JournalError,
    register_journal,
    resolve_journal_path,
    task_token,
)
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._lifecycle_action import audit_context
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._pin_guard import PinGuardedAction

_HEX_ID = re.compile(r"^[0-9a-f]{2,64}\Z")
_TOKEN_LABEL = re.compile(r"^[\x20-\x7e]{1,32}\Z")


def printable(text, limit=128):
    """``text`` as the schema's printable field: ASCII 0x20-0x7e (others become '?'), at most ``limit`` chars."""
    text = "".join(c if " " <= c <= "~" else "?" for c in str(text))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _token(module_args):
    label = module_args.get("token_label")
    return label if isinstance(label, str) and _TOKEN_LABEL.match(label) else None


def drift_events(drift, token_label, context, module):
    """One ``key-drift`` observation per finding of key_info (``drift`` as the module returned it)."""
    events = []
    for finding in drift or ():
        key = {"label": printable(finding.get("label")), "token": token_label}
        if isinstance(finding.get("name"), str) and NAME_RE.match(finding["name"]):
            key["name"] = finding["name"]
        if isinstance(finding.get("version"), int) and finding["version"] > 0:
            key["version"] = finding["version"]
        if isinstance(finding.get("id"), str) and _HEX_ID.match(finding["id"]):
            key["id"] = finding["id"]
        if finding.get("state") in ("active", "deactivated", "compromised", "destroyed"):
            key["state"] = finding["state"]
        section = {"kind": finding.get("kind"), "expected": printable(finding.get("expected")),
                   "actual": printable(finding.get("actual"))}
        for field in ("attribute", "object_class"):
            if finding.get(field):
                section[field] = finding[field]
        events.append(build_event(
            "key-drift", "failure", context, key={k: v for k, v in key.items() if v is not None},
            reason=printable(finding.get("detail") or finding.get("kind")), error_kind=finding.get("kind"),
            phase="observation", extra={"module": module, "drift": section}))
    return events


def token_check_event(module_result, token_label, context, module):
    """The ``token-check`` observation of one token_check run: outcome, failed checks and warnings by name."""
    checks = [c for c in module_result.get("checks") or () if isinstance(c, dict)]
    failed = bool(module_result.get("failed"))
    warnings = [printable(c.get("name")) for c in checks if not c.get("ok") and c.get("severity") == "warning"]
    section = {"checks": len(checks), "warnings": warnings,
               "failed": [printable(name) for name in module_result.get("failed_checks") or ()]}
    return build_event(
        "token-check", "failure" if failed else "success", context,
        key={"token": token_label} if token_label else None,
        reason=printable(module_result.get("msg")) if module_result.get("msg") else None,
        error_kind=(module_result.get("error_kind") or "token_check_failed") if failed else None,
        phase="observation", extra={"module": module, "token_check": section})


class JournaledReadAction(PinGuardedAction):
    """Run a read-only module, then journal what it observed (``observations``), fail-closed."""

    def observations(self, module_result, token_label, context):
        """The events to journal for this module result (each action plugin says which)."""
        return []

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)  # the PIN guard, then the module
        if self._task.check_mode or result.get("skipped"):
            return result
        context = AuditContext(**audit_context(task_vars, os.environ, self._task._uuid))
        try:
            events = self.observations(result, _token(self._task.args), context)
        except (ValueError, TypeError, KeyError) as exc:
            result.update(failed=True, msg="%s The module's findings could not be journaled: %s."
                          % (result.get("msg") or "", exc))
            return result
        if not events:
            return result
        journal = Journal(resolve_journal_path({}, task_vars, self._templar, token=task_token(self._task.args)))
        try:
            journal.append(events)
            register_journal(journal.path)
        except (JournalError, OSError) as exc:
            result["failed"] = True
            result["msg"] = ("%s%s The token was only read, but %d observation(s) of this task are not journaled; "
                             "fix the journal and run the task again."
                             % ("%s " % result["msg"] if result.get("msg") else "", exc, len(events)))
        return result
