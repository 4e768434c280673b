# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Repair of half-made versions, shared by key generation and key rotation.

PRIVATE: not part of the public interface.

A generation cut short between C_GenerateKey and its metadata object leaves key
objects labelled ``<name>:v<n>`` with no metadata. The next generation or rotation
of that key removes them first, one audited event per version.

Two runs that generated the same version at once (before the token lease,
docs/concurrency.md, or another tool) leave two key objects under one label, and
often two metadata objects of one revision. The next lifecycle run repairs that
before its own work (``repair_duplicates``), losing no key: the key whose CKA_ID the
version's metadata records stays; every other one becomes the next free version of
the same key, deactivated, with its own metadata (reason "repair: duplicate label");
a revision carried by two metadata objects is resolved by a new revision. Each
repair is one audited event.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event, key_section
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import ObjectClass
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import pkcs11_errors
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import (
    KeyVersion,
    Transition,
    format_time,
    utc_now,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    EC_NO_USAGES,
    check_value,
    key_version_public_key,
    spki_fingerprint,
)

DUPLICATE_REASON = "repair: duplicate label"
#: the reason of a half-made version's removal (the compliance report tells it from a destruction by it)
HALF_MADE_REASON = "repair: removed half-made version"
# usages a deactivated version loses (as in _key_rotation.PROTECTING_USAGES)
_DEACTIVATED_OFF = ("encrypt", "wrap", "sign", "derive")


def remove_half_made(store, name, numbers, context, action):
    """Remove versions whose generation was cut short (key objects, no metadata), one audited event each."""
    events = []
    for number in numbers:
        key_id = store.discard_half_made(name, number)
        events.append(build_event(action, "success", context, reason=HALF_MADE_REASON,
                                  key={"name": name, "version": number, "id": key_id,
                                       "label": "%s:v%d" % (name, number), "token": store.token_label}))
    return events


def repair_duplicates(store, context, action, now=None):
    """Repair every version with two keys under its label or two metadata objects of its newest revision.

    Returns the audit events of the repairs (none when the token is clean).
    """
    now = now or utc_now()
    events = []
    for name, number in store.duplicated():
        events.extend(_repair_version(store, name, number, context, action, now))
    return events


def _repair_version(store, name, number, context, action, now):
    events = []
    current = store.version(name, number)
    documents = store.metadata_documents(name, number)
    groups = store.key_groups(name, number)
    keeper = current.key_id
    if keeper not in groups:  # the newest metadata names a key that is not there: keep one that has metadata
        recorded = [doc.key_id for _obj, doc in sorted(documents, key=lambda item: -item[1].revision)
                    if doc.key_id in groups]
        keeper = recorded[0] if recorded else keeper
    for key_id in sorted(set(groups) - {keeper}):
        own = [(obj, doc) for obj, doc in documents if doc.key_id == key_id]
        moved = _moved_version(store, current, key_id, groups[key_id], own, context.operator, now)
        disabled = [u for u in _DEACTIVATED_OFF if u in moved.spec.usage
                    and not (moved.spec.type == "ec" and u in EC_NO_USAGES)]
        moved = store.renumber(moved, groups[key_id], number, [obj for obj, _doc in own], disabled)
        key = key_section(moved, store.token_label)
        key.update({"previous_version": number, "retain_until": format_time(moved.retain_until)})
        events.append(build_event(action, "success", context, key=key, reason=DUPLICATE_REASON))
    documents = store.metadata_documents(name, number)
    kept = [doc for _obj, doc in documents if doc.key_id == keeper] or [doc for _obj, doc in documents]
    revisions = [doc.revision for _obj, doc in documents]
    top = max(revisions)
    if revisions.count(top) > 1:
        newest = max(kept, key=lambda doc: doc.revision)
        resolved = store.update_metadata(store.version(name, number), replace(newest, revision=top + 1))
        events.append(build_event(action, "success", context, key=key_section(resolved, store.token_label),
                                  reason="repair: duplicate metadata revision"))
    return events


def _moved_version(store, current, key_id, objects, own, operator, now):
    """The metadata of a key found under another version's label, at its new version number."""
    existing = [v for v in store.versions(current.name) if v.key_id == key_id and v.version != current.version]
    if existing:  # a repair cut short after it wrote the new version's metadata: use that number again
        return existing[0]
    if own:
        base = max((doc for _obj, doc in own), key=lambda doc: doc.revision)
    else:
        kcv, fingerprint = _describe_key(current.spec, objects, store.token_label)
        base = replace(current, key_id=key_id, key_check_value=kcv, public_key_fingerprint=fingerprint,
                       transitions=())
    state = base.state if base.state == "compromised" else "deactivated"
    repaired = Transition(state=state, at=now, by=operator, reason=DUPLICATE_REASON)
    return KeyVersion(
        spec=base.spec, version=store.next_version(current.name), key_id=key_id, state=state,
        created=base.created, transitions=base.transitions + (repaired,),
        retain_until=now + timedelta(seconds=base.spec.retention_period),
        key_check_value=base.key_check_value, public_key_fingerprint=base.public_key_fingerprint, revision=1)


def _describe_key(spec, objects, token_label):
    """``(key check value, public key fingerprint)`` of key objects that carry no metadata of their own."""
    secret = [obj for obj in objects if obj.object_class == ObjectClass.SECRET_KEY]
    public = [obj for obj in objects if obj.object_class == ObjectClass.PUBLIC_KEY]
    with pkcs11_errors("C_GetAttributeValue", token_label=token_label):
        if secret:
            try:
                return check_value(secret[0]), None
            except Exception:  # pylint: disable=broad-except
                return None, None  # its encrypt usage is off: no check value
        if public:
            return None, spki_fingerprint(key_version_public_key(spec, public[0]))
    return None, None
