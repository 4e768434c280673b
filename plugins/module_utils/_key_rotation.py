# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Plan and apply key rotation (the work of key_rotate).

PRIVATE: not part of the public interface.

A rotation generates the new version in the token first, then deactivates the
previous active version: its encrypt / wrap / sign / derive usages are switched off
on the token object (the token itself refuses them from then on) and its metadata
records the transition and ``retain_until = now + retention_period``. A compromise
rotation marks the old version ``compromised`` and, when the policy says so, also
switches off decrypt / unwrap.

Order matters for crash safety: after an interruption a key may have two active
versions (new one made, old one not yet deactivated). Every rotation run repairs
that first: the newest active version stays, older active ones are deactivated,
and the repair is audited.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event, key_section
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError, KeyNotFound
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import (
    Transition,
    format_time,
    utc_now,
    validate_name,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._version_repair import remove_half_made

REASONS = ("scheduled", "manual", "compromise")
# Usages a deactivated version loses; a compromised one may lose decrypt / unwrap as well.
PROTECTING_USAGES = ("encrypt", "wrap", "sign", "derive")
DECRYPTING_USAGES = ("decrypt", "unwrap")


@dataclass
class PlannedRotation:
    name: str
    action: str  # rotate | none | repair | retire
    current: object = None
    next_version: int = 0
    due: bool = False
    next_rotation_due: str = None
    stale_active: tuple = ()  # older active versions left by an interrupted rotation
    half_made: tuple = ()  # version numbers with key objects but no metadata (interrupted generation)

    def as_dict(self):
        entry = {"name": self.name, "action": self.action, "due": self.due,
                 "next_rotation_due": self.next_rotation_due}
        if self.current is not None:
            entry["from_version"] = self.current.version
        if self.action == "rotate":
            entry["to_version"] = self.next_version
        if self.action == "retire":
            entry["to_version"] = None
        repairs = sorted({v.version for v in self.stale_active} | set(self.half_made))
        if repairs:
            entry["repair_versions"] = repairs
        return entry


def plan_rotation(store, names, all_due, force, policy, now, retire=False):
    """Which keys rotate; raises KeyNotFound for a named key without an active version.

    With ``retire`` the named keys' active versions are retired without a successor: the key
    is taken out of service (and can be destroyed once its retention has expired).
    """
    if all_due:
        names = store.names()
    plans, missing = [], []
    for name in names:
        validate_name(name)
        versions = store.versions(name)
        active = [v for v in versions if v.state == "active"]
        if not active:
            if not all_due:
                found = ", ".join("v%d %s" % (v.version, v.state) for v in versions)
                missing.append("%s (%s)" % (name, "no active version: " + found if versions else "not on the token"))
            continue
        current, stale = active[-1], tuple(active[:-1])
        half_made = tuple(store.half_made(name))
        due_at = current.next_rotation_due(policy.max_rotation_period)
        due = now >= due_at
        if retire:
            action = "retire"
        else:
            action = "rotate" if (due or force) else ("repair" if stale or half_made else "none")
        plans.append(PlannedRotation(name=name, action=action, current=current, next_version=store.next_version(name),
                                     due=due, next_rotation_due=format_time(due_at), stale_active=stale,
                                     half_made=half_made))
    if missing:
        raise KeyNotFound("Cannot rotate, nothing was changed: %s. Generate a key with key_generate before "
                          "rotating it." % "; ".join(missing), option="name")
    return plans


@dataclass
class RotationResult:
    changed: bool
    rotated: list
    plan: list
    audit_events: list
    diff: dict


def _retire(store, version, state, operator, reason, now, disable_decrypt):
    """Deactivate (or mark compromised) one version: usages off on the token first, then its metadata."""
    disabled = [u for u in PROTECTING_USAGES if u in version.spec.usage]
    if state == "compromised" and disable_decrypt:
        disabled += [u for u in DECRYPTING_USAGES if u in version.spec.usage]
    store.set_usage(version, disabled)
    retain_until = now + timedelta(seconds=version.spec.retention_period)
    updated = replace(version, state=state, retain_until=retain_until, revision=version.revision + 1,
                      transitions=version.transitions + (Transition(state=state, at=now, by=operator,
                                                                    reason=reason),))
    return store.update_metadata(version, updated)


def _repair(store, plan, context, now):
    """Finish what an interrupted run left, before anything else; every repair is audited."""
    events = remove_half_made(store, plan.name, plan.half_made, context, "key-rotate")
    for stale in plan.stale_active:
        retired = _retire(store, stale, "deactivated", context.operator, "repair", now, False)
        events.append(_event("repair of an interrupted rotation", context, store.token_label, plan.current, retired))
    return events


def _event(action_reason, context, token_label, new, old, approval=None):
    key = key_section(new, token_label)
    key.update({"previous_version": old.version, "previous_id": old.key_id, "previous_state": old.state,
                "retain_until": format_time(old.retain_until)})
    return build_event("key-rotate", "success", context, key=key, reason=action_reason, extra=approval)


def apply_rotation(store, plans, context, reason, policy, check_mode, approval=None):
    """Carry out a rotation plan (repairs first); in check mode only describe it.

    ``approval`` (``approved_by``, ``change_ref``) is recorded in the rotation events.
    """
    now = utc_now()
    before, after, rotated, events = {}, {}, [], []
    old_state = "compromised" if reason == "compromise" else "deactivated"
    try:
        for plan in plans:
            before[plan.name] = plan.current.review() if plan.current else None
            if plan.action == "none":
                after[plan.name] = before[plan.name]
                continue
            if check_mode:
                if plan.action == "rotate":
                    after[plan.name] = dict(before[plan.name], version=plan.next_version, id="(known after rotation)")
                elif plan.action == "retire":
                    after[plan.name] = dict(before[plan.name], state=old_state)
                else:
                    after[plan.name] = before[plan.name]
                continue
            events.extend(_repair(store, plan, context, now))
            if plan.action == "rotate":
                # a forced rotation of a key that was not due is not a scheduled one, whatever the task said
                why = "manual" if reason == "scheduled" and not plan.due else reason
                new = store.generate(plan.current.spec, plan.next_version, context.operator, now)
                old = _retire(store, plan.current, old_state, context.operator, why, now,
                              policy.compromise_disables_decrypt)
                events.append(_event(why, context, store.token_label, new, old, approval))
                rotated.append({"name": plan.name, "old_version": old.version, "old_id": old.key_id,
                                "old_state": old.state, "retain_until": format_time(old.retain_until),
                                "new_version": new.version, "new_id": new.key_id})
                after[plan.name] = new.review()
            elif plan.action == "retire":
                old = _retire(store, plan.current, old_state, context.operator, "retired: " + reason, now,
                              policy.compromise_disables_decrypt)
                key = key_section(old, store.token_label)
                key["retain_until"] = format_time(old.retain_until)
                events.append(build_event("key-rotate", "success", context, key=key,
                                          reason="retired without successor (%s)" % reason, extra=approval))
                rotated.append({"name": plan.name, "old_version": old.version, "old_id": old.key_id,
                                "old_state": old.state, "retain_until": format_time(old.retain_until),
                                "new_version": None, "new_id": None})
                after[plan.name] = old.review()
            else:
                after[plan.name] = plan.current.review()
    except KeyLifecycleError as exc:
        failed = {"name": plan.name, "token": store.token_label}
        exc.audit_events = events + [build_event("key-rotate", "failure", context, key=failed,
                                                 error_kind=exc.kind)]
        exc.changed = bool(events)
        raise
    return RotationResult(changed=any(p.action != "none" for p in plans), rotated=rotated,
                          plan=[p.as_dict() for p in plans], audit_events=events,
                          diff={"before": before, "after": after})
