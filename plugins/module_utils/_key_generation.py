# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Plan and apply key generation for a batch of key specs (the work of key_generate).

PRIVATE: not part of the public interface.

``plan_generation`` compares every requested spec with the token in one pass and
refuses the whole batch if any spec conflicts, before anything is written; so does
``apply_generation`` for a spec the token cannot generate (``_token_probe.require_generation``).
``apply_generation`` then carries the plan out in the same session. When it generates a
distributable key it also makes sure the token has its package-signing key
(``_package_signing``), so that recipients can pin it at enrollment, before any package.
"""

from __future__ import annotations

from dataclasses import dataclass

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event, key_section
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyConflict, KeyLifecycleError
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import (
    spec_conflicts,
    spec_updates,
    utc_now,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import ensure_package_signer
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_probe import require_generation
from ansible_collections.secops.keylifecycle.plugins.module_utils._version_repair import remove_half_made


@dataclass
class PlannedKey:
    spec: object
    action: str  # create | update | none
    current: object = None  # the active KeyVersion, if any
    next_version: int = 1
    changes: tuple = ()
    half_made: tuple = ()  # versions whose generation was cut short, removed before creating

    def as_dict(self):
        entry = {"name": self.spec.name, "action": self.action}
        if self.action == "create":
            entry["version"] = self.next_version
        elif self.current is not None:
            entry["version"] = self.current.version
        if self.changes:
            entry["changes"] = list(self.changes)
        return entry


def plan_generation(store, specs):
    """Decide, for each spec, create / update / none; raise KeyConflict for the batch."""
    plans, conflicts = [], []
    for spec in specs:
        versions = store.versions(spec.name)
        active = [v for v in versions if v.state == "active"]
        if not versions:
            plans.append(PlannedKey(spec=spec, action="create", next_version=store.next_version(spec.name),
                                    half_made=tuple(store.half_made(spec.name))))
            continue
        if not active:
            states = ", ".join("v%d %s" % (v.version, v.state) for v in versions)
            conflicts.append("key %r has no active version (%s): key_generate does not revive a key; rotate it "
                             "with key_rotate or choose a new name" % (spec.name, states))
            continue
        current = active[-1]
        differences = spec_conflicts(spec, current)
        if differences:
            detail = "; ".join("%s is %s on the token, requested %s" % (name, _show(old), _show(new))
                               for name, old, new in differences)
            conflicts.append("key %r v%d conflicts with the request: %s" % (spec.name, current.version, detail))
            continue
        updates = spec_updates(spec, current)
        plans.append(PlannedKey(spec=spec, action="update" if updates else "none", current=current,
                                next_version=store.next_version(spec.name), changes=tuple(updates)))
    if conflicts:
        raise KeyConflict(
            "Refusing the whole batch, nothing was changed: " + "; ".join(conflicts) + ". Keep the existing key's "
            "type, size, curve, usage and distributable, or generate the new spec under a new key name.",
            option="keys")
    return plans


def _show(value):
    return ",".join(value) if isinstance(value, tuple) else str(value)


@dataclass
class GenerationResult:
    changed: bool
    key_versions: list
    generated: list
    plan: list
    audit_events: list
    diff: dict


def apply_generation(store, plans, context, check_mode, policy=BASELINE):
    """Carry out a plan; in check mode only describe it.

    ``policy.require_trusted_wrapping`` decides what a token without CKA_WRAP_WITH_TRUSTED does (``_key_store``).
    A spec the token cannot generate refuses the whole batch first, in check mode too (``require_generation``).
    """
    require_generation(store.session, store.token_label, [plan.spec for plan in plans if plan.action == "create"],
                       policy.require_trusted_wrapping)
    now = utc_now()
    before, after, key_versions, generated, events = {}, {}, [], [], []
    try:
        for plan in plans:
            name = plan.spec.name
            before[name] = plan.current.review() if plan.current else None
            if plan.action == "none":
                after[name] = before[name]
                key_versions.append(plan.current.record(now))
                continue
            if check_mode:
                after[name] = _planned_review(plan)
                continue
            if plan.action == "create":
                events.extend(remove_half_made(store, name, plan.half_made, context, "key-generate"))
                version = store.generate(plan.spec, plan.next_version, context.operator, now,
                                         require_trusted_wrapping=policy.require_trusted_wrapping)
                generated.append({"name": version.name, "version": version.version, "label": version.label,
                                  "id": version.key_id})
                action = "key-generate"
            else:
                version = store.update_metadata(plan.current, plan.current.with_spec(plan.spec))
                action = "key-update"
            after[name] = version.review()
            key_versions.append(version.record(now))
            events.append(build_event(action, "success", context, key=key_section(version, store.token_label),
                                      reason=", ".join(plan.changes) or None))
        # recipients and replicas pin the package signer at enrollment: it exists from the first key that leaves
        if any(plan.action == "create" and (plan.spec.distributable or plan.spec.backup) for plan in plans) \
                and not check_mode:
            ensure_package_signer(store, context, events)
    except KeyLifecycleError as exc:
        exc.audit_events = events + [_failure_event(plan, context, store.token_label, exc)]
        exc.changed = bool(events)
        raise
    changed = any(plan.action != "none" for plan in plans)
    return GenerationResult(
        changed=changed,
        key_versions=key_versions,
        generated=generated,
        plan=[plan.as_dict() for plan in plans],
        audit_events=events,
        diff={"before": before, "after": after},
    )


def _planned_review(plan):
    if plan.action == "update":
        return plan.current.with_spec(plan.spec).review()
    review = {"version": plan.next_version, "id": "(known after generation)", "state": "active"}
    review.update({k: v for k, v in plan.spec.as_dict().items() if k != "name"})
    return review


def _failure_event(plan, context, token_label, exc):
    key = {"name": plan.spec.name, "token": token_label, "type": plan.spec.type, "size": plan.spec.size}
    if plan.action == "create":
        key["version"] = plan.next_version
    elif plan.current is not None:
        key = key_section(plan.current, token_label)
    action = "key-generate" if plan.action == "create" else "key-update"
    return build_event(action, "failure", context, key=key, error_kind=exc.kind)
