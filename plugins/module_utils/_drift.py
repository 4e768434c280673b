# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Drift: each key version's attributes on the token compared with its recorded state (procedure 4.3.3).

PRIVATE: not part of the public interface.

The metadata of a version says what the token must hold; a user session can change some
attributes behind the collection's back (SoftHSM2 lets it switch a deactivated key's
CKA_ENCRYPT back on, for one). Each key object under one of our labels (``<name>:v<n>``)
is read with one C_GetAttributeValue (CKA_ID, the usages its side of a pair carries, and
for the secret or private key the evidence attributes) and compared with the record:

* ``usage_enabled``: a usage is on that the version's state does not allow: any usage
  outside the spec; encrypt / wrap / sign / derive of a deactivated or compromised version;
  decrypt / unwrap of a compromised one where ``policy.compromise_disables_decrypt`` is on.
* ``destroyed_present``: the metadata says destroyed but a key object is still there.
* ``unexplained_object``: a key object no metadata explains: the label has no metadata,
  the object's class does not belong to the version's key type, its CKA_ID is not the
  recorded one, or it is a second object of its class under the label.
* ``lost_sensitive``: CKA_SENSITIVE false, or CKA_ALWAYS_SENSITIVE false (it was once readable). A backup
  version's copy on a replica or restored primary (CKA_LOCAL false) is unwrapped, which sets CKA_ALWAYS_SENSITIVE
  false: only CKA_SENSITIVE is checked there.
* ``gained_extractable``: a key that is neither distributable nor generated for backup
  (metadata ``wrap_with_trusted``) with CKA_EXTRACTABLE true, or
  CKA_NEVER_EXTRACTABLE false (it was once extractable); a version sealed at the migration
  to trusted wrapping (metadata ``sealed_at``) with CKA_EXTRACTABLE true again. A sealed
  version's CKA_EXTRACTABLE false is what its record says, not drift.
* ``key_missing``: a version recorded as active, deactivated or compromised whose key object(s) are gone from
  the token. Only key_destroy may destroy a version (after its retention, with its approvals, verified absent and
  journaled); key objects are destroyable in PKCS#11 (the module must be able to destroy them), so a user
  session's raw C_DestroyObject can remove one inside its retention, and with it every piece of data under it.
* ``managed_key_altered``: a version of one of the collection's own signing keys (``_keys.MANAGED_KEY_NAMES``)
  whose record is not what the collection makes: a sign/verify key pair (EC or RSA) that is not distributable.
  key_generate refuses those names; a token where an operator declared one before that, of another type or
  distributable, would otherwise sign packages, checkpoints or restores with it unnoticed.

The expected evidence follows from how every version is made (``_key_store.generate``:
inside the token, SENSITIVE true, EXTRACTABLE only when distributable or backed up); the metadata does
not store the evidence read at generation, so the spec is the record it is compared with.
A usage that is off although the record allows it is not drift here (nothing can leak).
Usages an EC key has no attribute for (``EC_NO_USAGES``) are not compared.
"""

from __future__ import annotations

from dataclasses import dataclass

from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import Attribute, ObjectClass
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import pkcs11_errors
from ansible_collections.secops.keylifecycle.plugins.module_utils._key_rotation import (
    DECRYPTING_USAGES,
    PROTECTING_USAGES,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import (
    MANAGED_KEY_NAMES,
    parse_label,
    version_label,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._managed_signing import (
    MANAGED_KEY_TYPES,
    MANAGED_KEY_USAGE,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    EC_NO_USAGES,
    EVIDENCE_ATTRIBUTES,
    USAGE_ATTRIBUTES,
    key_classes,
    usage_attribute,
)


DRIFT_KINDS = ("usage_enabled", "destroyed_present", "unexplained_object", "lost_sensitive", "gained_extractable",
               "managed_key_altered", "key_missing")


@dataclass(frozen=True)
class Finding:
    """One difference between the token and the record, for key_info's ``drift``, the report and the journal."""

    label: str
    kind: str
    key_id: str | None
    expected: str
    actual: str
    attribute: str | None = None
    object_class: str | None = None
    state: str | None = None

    def as_dict(self):
        parsed = parse_label(self.label) or (None, None)
        return {"label": self.label, "name": parsed[0], "version": parsed[1], "id": self.key_id,
                "kind": self.kind, "attribute": self.attribute, "expected": self.expected, "actual": self.actual,
                "object_class": self.object_class, "state": self.state, "detail": self.detail()}

    def detail(self):
        what = " ".join(filter(None, (self.object_class, self.attribute))) or "object"
        return "%s (%s): %s: %s, expected %s" % (self.label, self.state or "no metadata", what, self.actual,
                                                 self.expected)


@dataclass(frozen=True)
class ObjectAttributes:
    """What drift needs of one key object, read with one C_GetAttributeValue."""

    object_class: str
    key_id: str | None
    usages: dict
    evidence: dict


def _side(object_class):
    return {ObjectClass.PRIVATE_KEY: "private", ObjectClass.PUBLIC_KEY: "public"}.get(object_class)


def read_key_object(obj):
    """CKA_ID, the usages this object carries and (secret or private key) the evidence: one C_GetAttributeValue.

    Attributes the token does not have for the object are left out of the answer (python-pkcs11 drops them).
    """
    side = _side(obj.object_class)
    usages = [u for u, (_attribute, carrier) in USAGE_ATTRIBUTES.items() if side in (None, carrier)]
    evidence = list(EVIDENCE_ATTRIBUTES) if side != "public" else []
    wanted = [Attribute.ID] + [usage_attribute(u) for u in usages] + [
        getattr(Attribute, EVIDENCE_ATTRIBUTES[e]) for e in evidence]
    values = obj.get_attributes(wanted)
    key_id = values.get(Attribute.ID)
    return ObjectAttributes(
        object_class=obj.object_class.name, key_id=bytes(key_id).hex() if key_id is not None else None,
        usages={u: bool(values[usage_attribute(u)]) for u in usages if usage_attribute(u) in values},
        evidence={e: bool(values[getattr(Attribute, EVIDENCE_ATTRIBUTES[e])]) for e in evidence
                  if getattr(Attribute, EVIDENCE_ATTRIBUTES[e]) in values})


def allowed_usages(version, compromise_disables_decrypt=False):
    """The usages the token may have on for this version in its recorded state."""
    allowed = set(version.spec.usage)
    if version.state in ("deactivated", "compromised"):
        allowed -= set(PROTECTING_USAGES)
    if version.state == "compromised" and compromise_disables_decrypt:
        allowed -= set(DECRYPTING_USAGES)
    return allowed


def _expected_classes(spec):
    return ("SECRET_KEY",) if spec.type == "aes" else ("PRIVATE_KEY", "PUBLIC_KEY")


def _bool(value):
    return "true" if value else "false"


def version_drift(label, version, objects, compromise_disables_decrypt=False):
    """Findings for the key objects under ``label`` (``objects``: ObjectAttributes) against ``version`` or None."""
    if version is None:
        return [Finding(label, "unexplained_object", o.key_id, "no object (no metadata records this label)",
                        "%s object present" % o.object_class, object_class=o.object_class) for o in objects]
    if version.state == "destroyed":
        return [Finding(label, "destroyed_present", o.key_id, "absent (destroyed)",
                        "%s object present" % o.object_class, object_class=o.object_class, state=version.state)
                for o in objects]
    findings = _managed_key_drift(label, version)
    expected = _expected_classes(version.spec)
    explained = set()
    for obj in objects:
        if obj.object_class not in expected or obj.object_class in explained or obj.key_id != version.key_id:
            findings.append(Finding(
                label, "unexplained_object", obj.key_id,
                "one %s object with CKA_ID %s" % (" and one ".join(expected), version.key_id),
                "%s object with CKA_ID %s%s" % (obj.object_class, obj.key_id,
                                                " (another one)" if obj.object_class in explained else ""),
                object_class=obj.object_class, state=version.state))
            continue
        explained.add(obj.object_class)
        findings.extend(_attribute_drift(label, version, obj, compromise_disables_decrypt))
    return findings


def _missing(label, version):
    """A finding when ``version`` (recorded, not destroyed) has no key object left on the token."""
    if version is None or version.state == "destroyed":
        return []
    classes = " and ".join(_expected_classes(version.spec))
    return [Finding(label, "key_missing", version.key_id,
                    "the %s object(s) of a version that is %s" % (classes, version.state),
                    "absent (destroyed outside key_destroy)", state=version.state)]


def _managed_key_drift(label, version):
    """A finding when ``version`` is of a managed signing key but its record is not what the collection makes."""
    spec = version.spec
    if spec.name not in MANAGED_KEY_NAMES or (
            spec.type in MANAGED_KEY_TYPES and tuple(sorted(spec.usage)) == MANAGED_KEY_USAGE
            and not spec.distributable):
        return []
    return [Finding(label, "managed_key_altered", version.key_id,
                    "EC or RSA key pair, usage sign and verify, not distributable",
                    "%s, usage %s, %sdistributable" % (spec.type.upper(), " and ".join(sorted(spec.usage)),
                                                       "" if spec.distributable else "not "),
                    state=version.state)]


def _attribute_drift(label, version, obj, compromise_disables_decrypt):
    findings = []

    def found(kind, attribute, expected, actual):
        findings.append(Finding(label, kind, version.key_id, _bool(expected), _bool(actual), attribute,
                                obj.object_class, version.state))

    allowed = allowed_usages(version, compromise_disables_decrypt)
    skip = EC_NO_USAGES if version.spec.type == "ec" else ()
    for usage, on in sorted(obj.usages.items()):
        if on and usage not in allowed and usage not in skip:
            found("usage_enabled", "CKA_" + USAGE_ATTRIBUTES[usage][0], False, True)
    flags = obj.evidence
    # a copy on a replica, or on a primary restored from one, was unwrapped there (CKA_LOCAL false): the token sets
    # CKA_ALWAYS_SENSITIVE false on every unwrapped key, however it was made; CKA_SENSITIVE must still be true
    copy = version.wrap_with_trusted and flags.get("local") is False
    for name in ("sensitive",) if copy else ("sensitive", "always_sensitive"):
        if flags.get(name) is False:
            found("lost_sensitive", "CKA_" + EVIDENCE_ATTRIBUTES[name], True, False)
    if version.spec.distributable and version.sealed_at is not None and flags.get("extractable") is True:
        found("gained_extractable", "CKA_EXTRACTABLE", False, True)
    if not version.spec.distributable and not version.wrap_with_trusted:  # a backup version leaves only to replicas
        if flags.get("extractable") is True:
            found("gained_extractable", "CKA_EXTRACTABLE", False, True)
        if flags.get("never_extractable") is False:
            found("gained_extractable", "CKA_NEVER_EXTRACTABLE", True, False)
    return findings


def find_drift(store, names=None, compromise_disables_decrypt=False):
    """Every finding on the token (``_key_store.TokenKeyStore``, loaded), for the keys ``names`` (default: all)."""
    selected = set(names) if names else None
    labels = sorted(filter(None, map(parse_label, store.objects.labels())))
    findings = []
    recorded = {}
    for name, number in labels:
        if selected is not None and name not in selected:
            continue
        label = version_label(name, number)
        key_objects = [obj for object_class in key_classes() for obj in store.objects.key_objects(object_class, label)]
        if name not in recorded:
            recorded[name] = {v.version: v for v in store.versions(name)}
        if not key_objects:
            findings.extend(_missing(label, recorded[name].get(number)))
            continue
        with pkcs11_errors("C_GetAttributeValue (drift check of %s)" % label, token_label=store.token_label):
            attributes = [read_key_object(obj) for obj in key_objects]
        findings.extend(version_drift(label, recorded[name].get(number), attributes, compromise_disables_decrypt))
    return findings
