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
switches off decrypt / unwrap. A compromise acts on the named keys whether or not they
are due, and can name versions: a deactivated version is then only marked compromised
(no new version; its retention is unchanged), and one already compromised is left alone.
The transition records who, when, why and the approval (approved_by, change_ref).

Migration to trusted wrapping: when a rotation makes a new version of a distributable key
and that version is wrap-with-trusted (CKA_WRAP_WITH_TRUSTED, ``_key_store.generate``),
every older version that is not destroyed, still extractable and not wrap-with-trusted is
sealed: CKA_EXTRACTABLE false on the token (a user session cannot add
CKA_WRAP_WITH_TRUSTED to an existing key, but can take CKA_EXTRACTABLE away), metadata
``sealed_at``, one ``key-seal`` event each. Recipients keep what they hold; nothing new
can be wrapped from a sealed version, so a recipient enrolled later receives only
wrap-with-trusted versions.

Rollover of the collection's signing keys: when ``package-signing`` or ``audit-checkpoint`` rotates
(not for a compromise), the old version, still active, signs a certificate of the new one before it
is deactivated (``_managed_signing.certify_successor``); the ``key-rotate`` event names it
(``certificate_label``). The repair of an interrupted rotation certifies the survivor the same
way, with the stale active version, before deactivating it. A new ``audit-checkpoint`` version's
public key is added to the token's key history (``_managed_signing.remember_public_keys``), which
keeps it after the version is destroyed.

Order matters for crash safety: after an interruption a key may have two active
versions (new one made, old one not yet deactivated). Every rotation run repairs
that first: the newest active version stays, older active ones are deactivated,
and the repair is audited.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event, key_section
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    InvalidOption,
    KeyNotFound,
    PolicyViolation,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import (
    MANAGED_KEY_NAMES,
    Transition,
    format_time,
    successor_policy_problem,
    utc_now,
    validate_name,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._managed_signing import (
    CERTIFICATE_PREFIXES,
    certificate_label,
    certify_successor,
    remember_public_keys,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    KEY_METADATA,
    SIGNER_CERTIFICATE,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_probe import require_generation
from ansible_collections.secops.keylifecycle.plugins.module_utils._version_repair import remove_half_made

REASONS = ("scheduled", "manual", "compromise")
SEAL_REASON = "migration to trusted wrapping"
# Usages a deactivated version loses; a compromised one may lose decrypt / unwrap as well.
PROTECTING_USAGES = ("encrypt", "wrap", "sign", "derive")
DECRYPTING_USAGES = ("decrypt", "unwrap")


@dataclass
class PlannedRotation:
    name: str
    action: str  # rotate | none | repair | retire | compromise
    current: object = None
    next_version: int = 0
    due: bool = False
    next_rotation_due: str = None
    stale_active: tuple = ()  # older active versions left by an interrupted rotation
    half_made: tuple = ()  # version numbers with key objects but no metadata (interrupted generation)
    compromise: tuple = ()  # retired (deactivated) versions to mark compromised, besides ``current``
    seal: tuple = ()  # version numbers made non-extractable by the rotation (migration to trusted wrapping)

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
        if self.compromise:
            entry["compromise_versions"] = [v.version for v in self.compromise]
        if self.seal:
            entry["seal_versions"] = list(self.seal)
        return entry


def versions_to_seal(versions):
    """Version numbers a rotation seals: distributable, not destroyed, extractable and not wrap-with-trusted."""
    return tuple(v.version for v in versions if v.spec.distributable and v.state != "destroyed"
                 and not v.wrap_with_trusted and v.sealed_at is None and v.evidence.get("extractable", True))


def plan_rotation(store, names, all_due, force, policy, now, retire=False, compromise=False, versions=None):
    """Which keys rotate; raises KeyNotFound for a named key without an active version.

    With ``retire`` the named keys' active versions are retired without a successor: the key
    is taken out of service (and can be destroyed once its retention has expired).
    With ``compromise`` the named keys always rotate (no ``force`` needed), and ``versions``
    (one named key) marks exactly those versions compromised (see plan_compromise).
    """
    if versions:
        return [plan_compromise(store, names[0], versions, policy, now, retire)]
    force = force or (compromise and not all_due)
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
                                     half_made=half_made,
                                     seal=versions_to_seal(versions) if action == "rotate" else ()))
    if missing:
        raise KeyNotFound("Cannot rotate, nothing was changed: %s. Generate a key with key_generate before "
                          "rotating it." % "; ".join(missing), option="name")
    return plans


def validate_versions(versions, names, reason):
    """Before the token is opened: every ``name`` well formed, and ``version`` (versions to mark compromised) only
    with reason compromise and one named key."""
    for name in names or ():
        validate_name(name)
    if not versions:
        return
    if reason != "compromise":
        raise InvalidOption("version names versions to mark compromised; it needs reason: compromise (a "
                            "scheduled or manual rotation always acts on the active version).", option="version")
    if not names or len(names) != 1:
        raise InvalidOption("version needs exactly one key in name: the versions are those of that key.",
                            option="version")
    bad = [n for n in versions if n < 1]
    if bad:
        raise InvalidOption("version %s is not a version number (1 or more)." % ", ".join(str(n) for n in bad),
                            option="version")


def plan_compromise(store, name, numbers, policy, now, retire=False):
    """Mark versions ``numbers`` of key ``name`` compromised: any version not destroyed.

    The active version among them is rotated (a successor is generated, unless ``retire``), a
    deactivated one is only marked; one already compromised is left alone (idempotent). Refuses a
    version that does not exist or was destroyed, before anything changes.
    """
    validate_name(name)
    versions = {v.version: v for v in store.versions(name)}
    missing = [n for n in numbers if n not in versions]
    if missing:
        raise KeyNotFound("Cannot mark compromised, nothing was changed: %s has no version %s on token %r. "
                          "key_info lists its versions." % (name, ", ".join(str(n) for n in missing),
                                                            store.token_label), option="version")
    destroyed = [n for n in numbers if versions[n].state == "destroyed"]
    if destroyed:
        raise InvalidOption("Cannot mark compromised, nothing was changed: %s v%s was destroyed, so its key no "
                            "longer exists anywhere to be misused. Name the versions that are not destroyed."
                            % (name, ", v".join(str(n) for n in destroyed)), option="version")
    active = [v for v in versions.values() if v.state == "active"]
    current = active[-1] if active else None
    marked = tuple(versions[n] for n in sorted(set(numbers)) if versions[n].state == "deactivated"
                   or (versions[n].state == "active" and versions[n] is not current))
    rotate = current is not None and current.version in numbers
    stale = tuple(active[:-1])
    half_made = tuple(store.half_made(name)) if current is not None else ()
    due_at = current.next_rotation_due(policy.max_rotation_period) if current is not None else None
    if rotate:
        action = "retire" if retire else "rotate"
    elif marked:
        action = "compromise"
    else:
        action = "repair" if stale or half_made else "none"
    # a stale active version named here is marked compromised rather than deactivated by the repair
    stale = tuple(v for v in stale if v not in marked)
    return PlannedRotation(name=name, action=action, current=current,
                           next_version=store.next_version(name) if rotate and not retire else 0,
                           due=bool(due_at and now >= due_at), next_rotation_due=format_time(due_at),
                           stale_active=stale, half_made=half_made, compromise=marked,
                           seal=versions_to_seal(versions.values()) if action == "rotate" else ())


def approval_action(compromise, retire):
    """The action a rotation's approvals are for (``_approvals``): a compromise, a retirement, or None (a scheduled
    or manual rotation needs no approval)."""
    if compromise:
        return "compromise_rotate"
    return "retire" if retire else None


def rotation_targets(plans, compromise):
    """The (name, version) pairs the approvals must cover: the versions a compromise marks (the active one where it
    is rotated or retired, and the retired ones it marks), or the active versions a retirement retires."""
    targets = []
    for plan in plans:
        if plan.action in ("rotate", "retire") and plan.current is not None and (compromise or plan.action == "retire"):
            targets.append((plan.name, plan.current.version))
        targets.extend((version.name, version.version) for version in plan.compromise)
    return targets


@dataclass
class RotationResult:
    changed: bool
    rotated: list
    plan: list
    audit_events: list
    diff: dict
    compromised: list = field(default_factory=list)


def _transition(state, now, operator, reason, approval):
    """The transition record; a compromise records who approved it and the change reference."""
    approval = approval or {}
    return Transition(state=state, at=now, by=operator, reason=reason, approved_by=approval.get("approved_by"),
                      change_ref=approval.get("change_ref"))


def _retire(store, version, state, operator, reason, now, disable_decrypt, approval=None):
    """Deactivate (or mark compromised) one version: usages off on the token first, then its metadata.

    A version retired earlier keeps its ``retain_until``; an active one is retained from now.
    """
    disabled = [u for u in PROTECTING_USAGES if u in version.spec.usage]
    if state == "compromised" and disable_decrypt:
        disabled += [u for u in DECRYPTING_USAGES if u in version.spec.usage]
    retain_until = _retain_until(version, now)  # before anything changes: it is what can fail on bad metadata
    store.set_usage(version, disabled)
    sealed_at, flags = version.sealed_at, None
    if state == "compromised" and _sealed_by_compromise(version):
        flags, sealed_at = store.make_unextractable(version), now
    transition = _transition(state, now, operator, reason, approval if state == "compromised" else None)
    updated = replace(version, state=state, retain_until=retain_until, revision=version.revision + 1,
                      transitions=version.transitions + (transition,), sealed_at=sealed_at)
    return store.update_metadata(version, updated, flags)


def _sealed_by_compromise(version):
    """A compromised distributable version is made non-extractable, so that the token itself refuses to wrap it for
    anyone again (a user session can wrap an extractable version under any trusted key). A backup version keeps
    CKA_EXTRACTABLE: its replicas must still receive it (docs/replication.md)."""
    return (version.spec.distributable and not version.spec.backup and version.sealed_at is None
            and version.evidence.get("extractable", True))


def _retain_until(version, now):
    """How long a version being retired is kept: its earlier retain_until, else now + its retention period."""
    if version.state != "active" and version.retain_until:
        return version.retain_until
    try:
        return now + timedelta(seconds=version.spec.retention_period)
    except OverflowError:
        raise InvalidOption("%s: retention_period %ds puts the end of retention beyond the dates this system can "
                            "record. Set a retention_period of at most 36500d with key_generate."
                            % (version.label, version.spec.retention_period), option="retention_period") from None


def _undo_generation(store, new):
    """Remove a version generated by a rotation that then failed: metadata first, so that an interruption here
    leaves at worst key objects without metadata, which the next rotation removes as a half-made version."""
    metadata = store.objects.document_objects(KEY_METADATA, new.label)
    store.objects.destroy_key_objects(new.label, objects=metadata,
                                      operation="C_DestroyObject for %s (undoing a failed rotation)" % new.label)
    if new.name in CERTIFICATE_PREFIXES:
        certificates = store.objects.document_objects(SIGNER_CERTIFICATE, certificate_label(new))
        store.objects.destroy_key_objects(certificate_label(new), objects=certificates,
                                          operation="C_DestroyObject for the certificate of %s" % new.label)
    store.discard_half_made(new.name, new.version)


def _certify(store, old, new, now, old_state="deactivated"):
    """The certificate of ``new`` by ``old`` (still active) of a collection signing key (package signer, audit
    checkpoint); its label, or None for other keys and for a compromise (a compromised key vouches for nothing)."""
    if new.name not in CERTIFICATE_PREFIXES or old_state == "compromised":
        return None
    return certify_successor(store, old, new, now)[0]


def _rotate_one(store, plan, old_state, context, why, now, policy, approval):
    """Generate the successor, (collection signing keys) certify it with the current version, then retire the
    current version; if certifying or retiring fails, the successor is removed again, so a failed rotation leaves
    no new version behind (and the next try uses the same number). Returns ``(new, old, certificate label or None)``."""
    _retain_until(plan.current, now)  # refused before anything is generated
    spec = plan.current.spec
    if policy.require_backup and not spec.backup:  # an older key takes the environment's backup rule at rotation
        spec = replace(spec, backup=True)
    new = store.generate(spec, plan.next_version, context.operator, now,
                         require_trusted_wrapping=policy.require_trusted_wrapping)
    try:
        certificate = _certify(store, plan.current, new, now, old_state)
        remember_public_keys(store, new.name, [new])  # audit-checkpoint: kept after the version is destroyed
        old = _retire(store, plan.current, old_state, context.operator, why, now, policy.compromise_disables_decrypt,
                      approval)
    except Exception:
        try:
            _undo_generation(store, new)
        except Exception:  # pylint: disable=broad-except
            pass  # the next rotation repairs what is left (a half-made version, or a second active version)
        raise
    return new, old, certificate


def _compromised_entry(old, previous_state, approval):
    """One entry of the ``compromised`` return value."""
    last = old.transitions[-1]
    return {"name": old.name, "version": old.version, "id": old.key_id, "previous_state": previous_state,
            "at": format_time(last.at), "by": last.by, "reason": last.reason,
            "approved_by": (approval or {}).get("approved_by"), "change_ref": (approval or {}).get("change_ref"),
            "retain_until": format_time(old.retain_until)}


def _mark_compromised(store, plan, context, now, policy, approval, compromised):
    """Mark the plan's retired versions compromised (no new version); one audit event each."""
    events = []
    for version in plan.compromise:
        marked = _retire(store, version, "compromised", context.operator, "compromise", now,
                         policy.compromise_disables_decrypt, approval)
        key = key_section(marked, store.token_label)
        key.update(previous_state=version.state, retain_until=format_time(marked.retain_until))
        events.append(build_event("key-rotate", "success", context, key=key,
                                  reason="marked compromised (%s earlier)" % version.state, extra=approval))
        compromised.append(_compromised_entry(marked, version.state, approval))
    return events


def _seal(store, plan, new, context, now):
    """Seal the plan's older versions once the new version is wrap-with-trusted; one ``key-seal`` event each."""
    if not new.wrap_with_trusted:
        return [], []  # the token could not make a trusted-wrapping successor: sealing would stop distribution
    events, sealed = [], []
    for number in plan.seal:
        version = store.version(plan.name, number)  # re-read: the rotation just retired the previous active one
        sealed_version = store.seal(version, now)
        events.append(build_event("key-seal", "success", context, key=key_section(sealed_version, store.token_label),
                                  reason=SEAL_REASON))
        sealed.append(number)
    return events, sealed


def _repair(store, plan, context, now):
    """Finish what an interrupted run left, before anything else; every repair is audited."""
    events = remove_half_made(store, plan.name, plan.half_made, context, "key-rotate")
    for stale in plan.stale_active:
        certificate = _certify(store, stale, plan.current, now) if stale is plan.stale_active[-1] else None
        retired = _retire(store, stale, "deactivated", context.operator, "repair", now, False)
        events.append(_event("repair of an interrupted rotation", context, store.token_label, plan.current, retired,
                             certificate=certificate))
    return events


def _event(action_reason, context, token_label, new, old, approval=None, certificate=None):
    key = key_section(new, token_label)
    key.update({"previous_version": old.version, "previous_id": old.key_id, "previous_state": old.state,
                "retain_until": format_time(old.retain_until)})
    if certificate:
        key["certificate_label"] = certificate
    return build_event("key-rotate", "success", context, key=key, reason=action_reason, extra=approval)


def refuse_disallowed_successors(specs, policy):
    """Refuse the whole batch (check mode too) where the policy in force no longer allows a key's next version:
    rotation generates it from the key's recorded spec, which key_generate checked against the policy of its day.
    The collection's own signing keys (MANAGED_KEY_NAMES) keep the shape the collection gives them."""
    problems = [problem for problem in (successor_policy_problem(spec, policy) for spec in specs
                                        if spec.name not in MANAGED_KEY_NAMES) if problem]
    if problems:
        raise PolicyViolation(
            "Cannot rotate, nothing was changed: a rotation generates the next version with the key's recorded "
            "spec, and the policy in force no longer allows it: %s. Generate a key that the policy allows under a "
            "new name, move its users to it, and retire this one (key_rotate retire: true; with reason: compromise "
            "for a compromised key), or leave it out of this rotation." % "; ".join(problems), option="name")


def apply_rotation(store, plans, context, reason, policy, check_mode, approval=None):
    """Carry out a rotation plan (repairs first); in check mode only describe it.

    ``approval`` (``approved_by``, ``change_ref``) is recorded in the rotation events. A successor the token cannot
    generate refuses the whole batch first, in check mode too (``require_generation``).
    """
    successors = [plan.current.spec for plan in plans if plan.action == "rotate"]
    refuse_disallowed_successors(successors, policy)
    require_generation(store.session, store.token_label, successors, policy.require_trusted_wrapping)
    now = utc_now()
    before, after, rotated, events, compromised = {}, {}, [], [], []
    old_state = "compromised" if reason == "compromise" else "deactivated"
    try:
        for plan in plans:
            before[plan.name] = plan.current.review() if plan.current else None
            for version in plan.compromise:  # the versions marked compromised, shown by label
                before[version.label] = version.review()
                after[version.label] = dict(version.review(), state="compromised")
            if not check_mode and plan.compromise:
                events.extend(_mark_compromised(store, plan, context, now, policy, approval, compromised))
            if plan.action in ("none", "compromise"):
                if plan.action == "compromise" and not check_mode:
                    events.extend(_repair(store, plan, context, now))
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
                new, old, certificate = _rotate_one(store, plan, old_state, context, why, now, policy, approval)
                events.append(_event(why, context, store.token_label, new, old, approval, certificate))
                seal_events, sealed = _seal(store, plan, new, context, now)
                events.extend(seal_events)
                if old_state == "compromised":
                    compromised.append(_compromised_entry(old, "active", approval))
                rotated.append({"name": plan.name, "old_version": old.version, "old_id": old.key_id,
                                "old_state": old.state, "retain_until": format_time(old.retain_until),
                                "new_version": new.version, "new_id": new.key_id, "sealed_versions": sealed})
                after[plan.name] = new.review()
            elif plan.action == "retire":
                old = _retire(store, plan.current, old_state, context.operator, "retired: " + reason, now,
                              policy.compromise_disables_decrypt, approval)
                if old_state == "compromised":
                    compromised.append(_compromised_entry(old, "active", approval))
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
    except Exception as exc:  # an unexpected one too keeps the events so far (see _lifecycle_module)
        failed = {"name": plan.name, "token": store.token_label}
        exc.audit_events = events + [build_event("key-rotate", "failure", context, key=failed,
                                                 error_kind=getattr(exc, "kind", "unexpected_error"))]
        exc.changed = bool(events)
        raise
    return RotationResult(changed=any(p.action != "none" for p in plans), rotated=rotated,
                          plan=[p.as_dict() for p in plans], audit_events=events,
                          diff={"before": before, "after": after}, compromised=compromised)
