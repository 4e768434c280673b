# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Plan and apply the destruction of expired key versions (the work of key_destroy).

PRIVATE: not part of the public interface.

Only a deactivated or compromised version whose ``retain_until`` has passed can be
destroyed, and, where the policy asks for it, only with the key's opt-in and the
approvals the policy requires (``_approvals.ApprovalGate``, checked by the module
between the plan and its application). The key objects go through C_DestroyObject, then the
token is searched again by CKA_ID and CKA_LABEL to confirm nothing is left; only
then does the metadata become a tombstone (state ``destroyed``, no key material;
id, check value and transitions kept for the record). An interruption between the
two leaves metadata whose key objects are gone; the next run finishes it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event, key_section
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    InvalidOption,
    KeyLifecycleError,
    KeyNotFound,
    PolicyViolation,
    TokenOperationFailed,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import (
    Transition,
    format_time,
    utc_now,
    validate_name,
)

RETIRED_STATES = ("deactivated", "compromised")


@dataclass
class PlannedDestruction:
    version: object
    action: str  # destroy | none | blocked
    why: str = ""

    def as_dict(self):
        entry = {"name": self.version.name, "version": self.version.version, "id": self.version.key_id,
                 "state": self.version.state, "retain_until": format_time(self.version.retain_until),
                 "action": self.action}
        if self.why:
            entry["why"] = self.why
        return entry


def _refusal(version, policy, now):
    """Why this version may not be destroyed now, or None."""
    if version.state == "active":
        return ("%s is active: rotate the key first (key_rotate); an active version is never destroyed"
                % version.label)
    if version.retain_until is None or now < version.retain_until:
        return ("%s is still inside its retention period: retain_until is %s (now %s)"
                % (version.label, format_time(version.retain_until), format_time(now)))
    if policy.destroy_requires_opt_in and not version.spec.destroy_allowed:
        return ("%s: the policy requires an opt-in and key %r was not generated with destroy_allowed: true"
                % (version.label, version.name))
    return None


def validate_destroy_target(name, version_number):
    """Before the token is opened: a named version is a well-formed name and a version number (1 or more)."""
    if name is None:
        return
    validate_name(name)
    if version_number is not None and version_number < 1:
        raise InvalidOption("version %d is not a version number (1 or more)." % version_number, option="version")


def plan_destruction(store, name, version_number, all_expired, policy, now):
    """Which versions are destroyed. A named version that may not be destroyed refuses the whole call."""
    if all_expired:
        candidates = [v for key in store.names() for v in store.versions(key) if v.state in RETIRED_STATES]
        plans = []
        for version in candidates:
            why = _refusal(version, policy, now)
            plans.append(PlannedDestruction(version, "blocked" if why else "destroy", why or ""))
        return plans
    validate_name(name)
    if version_number is None:
        raise InvalidOption("version is required with name: give the version number to destroy.", option="version")
    versions = {v.version: v for v in store.versions(name)}
    if version_number not in versions:
        raise KeyNotFound("%s:v%d is not on the token (versions on record: %s)." % (
            name, version_number, ", ".join("v%d" % n for n in sorted(versions)) or "none"), option="version")
    version = versions[version_number]
    if version.state == "destroyed":
        return [PlannedDestruction(version, "none", "already destroyed")]
    why = _refusal(version, policy, now)
    if why:
        raise PolicyViolation("Refusing to destroy, nothing was changed: %s." % why,
                              option="retain_until" if "retain_until" in why else "name")
    return [PlannedDestruction(version, "destroy")]


def destruction_targets(plans):
    """The (name, version) pairs the plan destroys: what the approvals must cover."""
    return [(plan.version.name, plan.version.version) for plan in plans if plan.action == "destroy"]


def _destroyed_because(approved_by, break_glass):
    if not approved_by:
        return "retention expired"
    names = ", ".join(approved_by) if isinstance(approved_by, (list, tuple)) else approved_by
    return "%sapproved by %s" % ("break-glass, " if break_glass else "", names)


@dataclass
class DestructionResult:
    changed: bool
    destroyed: list
    plan: list
    audit_events: list


def apply_destruction(store, plans, context, approval, check_mode):
    """Destroy the planned versions; ``approval`` is the ``ApprovalOutcome`` the module's gate accepted (its fields
    go into every event and the tombstone's transition)."""
    now = utc_now()
    approved_by = approval.approved_by
    extra_fields = approval.event_fields()
    destroyed, events = [], []
    try:
        for plan in plans:
            if plan.action != "destroy" or check_mode:
                continue
            version = plan.version
            store.destroy_key_objects(version)
            left = store.verify_absent(version)
            if left:
                raise TokenOperationFailed(
                    "%s: after C_DestroyObject the token still holds %s; the metadata was left unchanged. "
                    "Investigate before retrying." % (version.label, "; ".join(left)))
            tombstone = replace(version, state="destroyed", revision=version.revision + 1,
                                transitions=version.transitions + (Transition(
                                    state="destroyed", at=now, by=context.operator,
                                    reason=_destroyed_because(approved_by, approval.break_glass),
                                    approved_by=approved_by, change_ref=approval.change_ref),))
            tombstone = store.update_metadata(version, tombstone)
            extra = dict(extra_fields, verified_absent=True)
            events.append(build_event("key-destroy", "success", context,
                                      key=key_section(tombstone, store.token_label), extra=extra))
            destroyed.append({"name": version.name, "version": version.version, "id": version.key_id,
                              "verified_absent": True})
    except KeyLifecycleError as exc:
        exc.audit_events = events + [build_event("key-destroy", "failure", context,
                                                 key=key_section(plan.version, store.token_label),
                                                 error_kind=exc.kind)]
        exc.changed = bool(events)
        raise
    changed = any(p.action == "destroy" for p in plans)
    return DestructionResult(changed=changed, destroyed=destroyed, plan=[p.as_dict() for p in plans],
                             audit_events=events)
