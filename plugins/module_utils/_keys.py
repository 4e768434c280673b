# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Key model: logical keys, their numbered versions, specs and metadata.

PRIVATE: not part of the public interface.

A logical key (``payments-db``) has versions 1..n. Each version is one key object
(AES) or key pair (RSA, EC) on the token, labelled ``<name>:v<version>``, plus one
metadata object (CKO_DATA, CKA_APPLICATION ``secops.keylifecycle``, same label)
whose value is canonical JSON. The token is the system of record: this module only
describes and checks; ``_key_store`` reads and writes the token.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    InvalidOption,
    MetadataCorrupt,
    PolicyViolation,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import (
    CURVE_BITS,
    DEFAULT_SIZE,
    DEFAULT_USAGE,
    DEFAULT_KEY_TYPE,
    KEY_TYPES,
    MAX_DURATION,
    USAGES,
    allowed_sizes,
    canonical_curve,
    format_duration,
    parse_duration,
)

METADATA_APPLICATION = "secops.keylifecycle"
METADATA_SCHEMA = 1

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
#: the collection's own signing keys (``_managed_signing``): audit-checkpoint, package-signing and a replica's
#: restore-signing. The collection generates them (never extractable or distributable, unless backed up); a key
#: spec may not take their names
MANAGED_KEY_NAMES = ("audit-checkpoint", "package-signing", "restore-signing")
LABEL_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,62}):v([1-9][0-9]{0,8})\Z")

STATES = ("active", "deactivated", "compromised", "destroyed")

# Fields fixed at generation: a spec that differs here conflicts with the existing key.
IMMUTABLE_FIELDS = ("type", "size", "curve", "usage", "distributable")
# Fields that can change on an existing key: the metadata is rewritten.
MUTABLE_FIELDS = ("rotation_period", "retention_period", "recipients", "destroy_allowed", "backup")


def utc_now():
    return datetime.now(timezone.utc)


def format_time(moment):
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds") if moment else None


def parse_time(text):
    return datetime.fromisoformat(text) if text else None


def validate_name(name, option="name"):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidOption(
            "%s %r is not a valid key name: use 1 to 63 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (no '/', ':', spaces or control characters)." % (option, name), option=option)
    return name


def version_label(name, version):
    return "%s:v%d" % (name, version)


def parse_label(label):
    """Return ``(name, version)`` for one of our labels, else None."""
    match = LABEL_RE.match(label or "")
    return (match.group(1), int(match.group(2))) if match else None


@dataclass(frozen=True)
class KeySpec:
    """What an operator asks for: one logical key, checked against the policy."""

    name: str
    type: str
    size: int
    curve: str | None
    usage: tuple
    distributable: bool
    rotation_period: int
    retention_period: int
    recipients: tuple = ()
    destroy_allowed: bool = False
    #: versions generated from now on are extractable only under trusted wrapping, for replicas (docs/replication.md)
    backup: bool = False

    def as_dict(self):
        return {
            "name": self.name, "type": self.type, "size": self.size, "curve": self.curve,
            "usage": list(self.usage), "distributable": self.distributable,
            "rotation_period": format_duration(self.rotation_period),
            "retention_period": format_duration(self.retention_period),
            "recipients": list(self.recipients),
            "destroy_allowed": self.destroy_allowed,
            "backup": self.backup,
        }


def build_key_spec(raw, policy):
    """Validate one raw key spec (a dict of module options) and enforce the policy, field by field."""
    name = validate_name(raw.get("name"), "name")
    where = "key %r" % name
    key_type = _allowed_type(_key_type(raw, where), policy, where)
    if key_type == "ec":
        curve = _allowed_curve(_curve(raw, where), policy, where)
        size = CURVE_BITS[curve]
    else:
        curve = None
        size = _allowed_size(key_type, _size(raw, key_type, where), policy, where)
    usage = _allowed_usage(key_type, _usage(raw, key_type, where), policy, where)
    rotation = _rotation_period(raw, policy, where)
    retention = _retention_period(raw, policy, where)
    distributable, recipients = _distribution(raw, where)
    return KeySpec(name=name, type=key_type, size=size, curve=curve, usage=usage, distributable=distributable,
                   rotation_period=rotation, retention_period=retention, recipients=recipients,
                   destroy_allowed=bool(raw.get("destroy_allowed", False)), backup=_backup(raw, policy, where))


def _key_type(raw, where):
    key_type = str(raw.get("type") or DEFAULT_KEY_TYPE).lower()
    if key_type not in KEY_TYPES:
        raise InvalidOption("%s: type %r is not supported; use one of %s." % (where, key_type, ", ".join(KEY_TYPES)),
                            option="type")
    return key_type


def _allowed_type(key_type, policy, where):
    if key_type not in policy.allowed_key_types:
        raise PolicyViolation("%s: type %s is not allowed by policy.allowed_key_types (%s)."
                              % (where, key_type, ", ".join(policy.allowed_key_types)), option="type")
    return key_type


def _curve(raw, where):
    """An EC key's curve (the size follows from it)."""
    if raw.get("size") not in (None, ""):
        raise InvalidOption("%s: size does not apply to EC keys; choose the curve instead." % where, option="size")
    return canonical_curve(raw.get("curve") or "P-256")


def _allowed_curve(curve, policy, where):
    if curve not in policy.allowed_curves:
        raise PolicyViolation("%s: curve %s is not allowed by policy; allowed curves: %s."
                              % (where, curve, ", ".join(policy.allowed_curves)), option="curve")
    return curve


def _size(raw, key_type, where):
    """An AES or RSA key's size in bits (unset: the type's default; 0 is a size, and refused as one)."""
    if raw.get("curve"):
        raise InvalidOption("%s: curve applies only to EC keys." % where, option="curve")
    size = raw.get("size")
    if size is None or size == "":
        return DEFAULT_SIZE[key_type]
    try:
        if isinstance(size, bool):
            raise TypeError(size)
        return int(size)
    except (TypeError, ValueError):
        raise InvalidOption("%s: size must be a number of bits, got %r." % (where, size), option="size") from None


def _allowed_size(key_type, size, policy, where):
    """A size from the policy's list for the key type (KEY_SIZES at or above the policy minimum)."""
    minimum = policy.min_aes_bits if key_type == "aes" else policy.min_rsa_bits
    choices = allowed_sizes(key_type, policy)
    listed = ", ".join(str(s) for s in choices) or "none (the policy minimum is above every size the token takes)"
    if size < minimum:
        raise PolicyViolation(
            "%s: size %d is below the policy minimum for %s keys (%d bits). Request one of: %s."
            % (where, size, key_type.upper(), minimum, listed), option="size")
    if size not in choices:
        raise InvalidOption("%s: size %d is not a size the policy allows for %s keys; choose one of: %s."
                            % (where, size, key_type.upper(), listed), option="size")
    return size


def _usage(raw, key_type, where):
    usage = raw.get("usage") or DEFAULT_USAGE[key_type]
    if isinstance(usage, str):
        usage = [usage]
    usage = tuple(sorted(set(str(u).lower() for u in usage)))
    unknown = [u for u in usage if u not in USAGES]
    if unknown:
        raise InvalidOption("%s: unknown usage %s; known usages: %s." % (where, ", ".join(unknown), ", ".join(USAGES)),
                            option="usage")
    return usage


def _allowed_usage(key_type, usage, policy, where):
    refused = [u for u in usage if u not in policy.allowed_usages.get(key_type, ())]
    if refused:
        raise PolicyViolation("%s: usage %s is not allowed for %s keys by policy.allowed_usages (allowed: %s)."
                              % (where, ", ".join(refused), key_type, ", ".join(policy.allowed_usages[key_type])),
                              option="usage")
    return usage


def _rotation_period(raw, policy, where):
    """The rotation period given (at most the policy maximum), else the policy maximum."""
    if raw.get("rotation_period") in (None, ""):
        return policy.max_rotation_period
    rotation = parse_duration(raw["rotation_period"], "rotation_period")
    if rotation > policy.max_rotation_period:
        raise PolicyViolation(
            "%s: rotation_period %s is longer than the policy maximum %s. Rotate at least every %s."
            % (where, raw["rotation_period"], format_duration(policy.max_rotation_period),
               format_duration(policy.max_rotation_period)), option="rotation_period")
    return rotation


def _retention_period(raw, policy, where):
    """The retention period given, else the policy default; at least the policy minimum either way."""
    if raw.get("retention_period") in (None, ""):
        retention = policy.default_retention_period
    else:
        retention = parse_duration(raw["retention_period"], "retention_period")
    if retention < policy.min_retention_period:
        raise PolicyViolation("%s: retention_period %s is shorter than the policy minimum %s."
                              % (where, format_duration(retention), format_duration(policy.min_retention_period)),
                              option="retention_period")
    return retention


def _distribution(raw, where):
    """``(distributable, recipients)``: recipients only for a distributable key."""
    recipients = raw.get("recipients") or ()
    if isinstance(recipients, str):
        recipients = [recipients]
    recipients = tuple(sorted(set(validate_name(r, "recipients") for r in recipients)))
    distributable = bool(raw.get("distributable", False))
    if recipients and not distributable:
        raise InvalidOption("%s: recipients are listed but distributable is false; a key that is not "
                            "distributable never leaves the token." % where, option="recipients")
    return distributable, recipients


def _backup(raw, policy, where):
    """``backup`` as given, else what the policy requires; refuses ``false`` where the policy requires it."""
    given = raw.get("backup")
    if given is None:
        return policy.require_backup
    if not given and policy.require_backup:
        raise PolicyViolation("%s: backup is false, but policy.require_backup is on: every key of this environment "
                              "must survive the loss of its token. Remove backup: false from the key spec."
                              % where, option="backup")
    return bool(given)


def build_key_specs(raw_specs, policy, option="keys"):
    """The task's key specs, checked; ``option`` names the option they came from in errors (``keys`` or ``name``)."""
    specs = [build_key_spec(raw, policy) for raw in raw_specs]
    seen = set()
    for spec in specs:
        if spec.name in MANAGED_KEY_NAMES:
            raise InvalidOption("key %r is the name of one of the collection's own signing keys (%s), which it "
                                "generates itself; give the key another name. Nothing was changed."
                                % (spec.name, ", ".join(MANAGED_KEY_NAMES)), option=option)
        if spec.name in seen:
            raise InvalidOption("key %r is listed twice in keys; list each key once." % spec.name, option="keys")
        seen.add(spec.name)
    return specs


def successor_policy_problem(spec, policy):
    """Why the policy in force does not allow a new version of a key recorded with ``spec`` (its type, size or curve
    and usage), or None. A rotation generates the successor from the recorded spec, so this is checked again at
    rotation: the policy may have been tightened since the key was generated."""
    where = "key %r" % spec.name
    try:
        _allowed_type(spec.type, policy, where)
        if spec.type == "ec":
            _allowed_curve(spec.curve, policy, where)
        else:
            _allowed_size(spec.type, spec.size, policy, where)
        _allowed_usage(spec.type, spec.usage, policy, where)
    except (PolicyViolation, InvalidOption) as exc:
        return exc.message.rstrip(".")
    return None


def _stored_duration(value, option):
    """A duration read from metadata. One longer than MAX_DURATION (written before durations were bounded) is
    read as MAX_DURATION, so that the dates derived from it stay representable and the key can still rotate."""
    return min(parse_duration(value, option, bounded=False), MAX_DURATION)


@dataclass(frozen=True)
class Transition:
    state: str
    at: datetime
    by: str
    reason: str | None = None
    #: for a compromise under dual control: the second person who approved it, and the change reference
    approved_by: str | None = None
    change_ref: str | None = None

    def as_dict(self):
        recorded = {"state": self.state, "at": format_time(self.at), "by": self.by, "reason": self.reason}
        recorded.update({k: v for k, v in (("approved_by", self.approved_by), ("change_ref", self.change_ref)) if v})
        return recorded


@dataclass(frozen=True)
class KeyVersion:
    """One version of a logical key as recorded in its metadata object."""

    spec: KeySpec
    version: int
    key_id: str
    state: str
    created: datetime
    transitions: tuple = ()
    retain_until: datetime | None = None
    key_check_value: str | None = None
    public_key_fingerprint: str | None = None
    revision: int = 1
    evidence: dict = field(default_factory=dict, compare=False)
    #: generated with CKA_WRAP_WITH_TRUSTED true: the token wraps it only under a CKA_TRUSTED key (metadata written
    #: before trusted wrapping has no such field: false)
    wrap_with_trusted: bool = False
    #: when the version was made non-extractable at the migration to trusted wrapping (``_key_rotation``), or None
    sealed_at: datetime | None = None

    @property
    def name(self):
        return self.spec.name

    @property
    def label(self):
        return version_label(self.spec.name, self.version)

    def identity(self):
        """What names this version wherever it is described (audit events, packages): no state, no material."""
        return {"name": self.name, "version": self.version, "id": self.key_id, "label": self.label,
                "type": self.spec.type, "size": self.spec.size}

    def next_rotation_due(self, max_rotation_period=None):
        """When this version must be rotated: created + rotation period (capped by the policy's maximum)."""
        if self.state != "active":
            return None
        period = self.spec.rotation_period
        if max_rotation_period:
            period = min(period, max_rotation_period)
        return datetime.fromtimestamp(self.created.timestamp() + period, timezone.utc)

    def with_spec(self, spec):
        return replace(self, spec=spec, revision=self.revision + 1)

    def metadata(self):
        """The metadata document stored on the token (never key material)."""
        doc = {
            "schema": METADATA_SCHEMA,
            "revision": self.revision,
            "version": self.version,
            "id": self.key_id,
            "state": self.state,
            "created": format_time(self.created),
            "retain_until": format_time(self.retain_until),
            "key_check_value": self.key_check_value,
            "public_key_fingerprint": self.public_key_fingerprint,
            "transitions": [t.as_dict() for t in self.transitions],
            "wrap_with_trusted": self.wrap_with_trusted,
        }
        if self.sealed_at is not None:
            doc["sealed_at"] = format_time(self.sealed_at)
        doc.update(self.spec.as_dict())
        return doc

    def encode(self):
        return json.dumps(self.metadata(), sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, label, blob):
        try:
            doc = json.loads(bytes(blob).decode("utf-8"))
            if doc.get("schema") != METADATA_SCHEMA:
                raise ValueError("unknown metadata schema %r" % doc.get("schema"))
            spec = KeySpec(
                name=doc["name"], type=doc["type"], size=int(doc["size"]), curve=doc.get("curve"),
                usage=tuple(doc["usage"]), distributable=bool(doc["distributable"]),
                rotation_period=_stored_duration(doc["rotation_period"], "rotation_period"),
                retention_period=_stored_duration(doc["retention_period"], "retention_period"),
                recipients=tuple(doc.get("recipients") or ()),
                destroy_allowed=bool(doc.get("destroy_allowed", False)),
                backup=doc.get("backup", False) is True,
            )
            version = cls(
                spec=spec, version=int(doc["version"]), key_id=doc["id"], state=doc["state"],
                created=parse_time(doc["created"]),
                transitions=tuple(Transition(state=t["state"], at=parse_time(t["at"]), by=t["by"],
                                             reason=t.get("reason"), approved_by=t.get("approved_by"),
                                             change_ref=t.get("change_ref")) for t in doc.get("transitions", ())),
                retain_until=parse_time(doc.get("retain_until")),
                key_check_value=doc.get("key_check_value"),
                public_key_fingerprint=doc.get("public_key_fingerprint"),
                revision=int(doc.get("revision", 1)),
                wrap_with_trusted=doc.get("wrap_with_trusted", False) is True,
                sealed_at=parse_time(doc.get("sealed_at")),
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, InvalidOption) as exc:
            raise MetadataCorrupt("The metadata object %r on the token cannot be read (%s). Inspect it with "
                                  "pkcs11-tool --list-objects; do not delete key objects by hand." % (label, exc)) from None
        if version.label != label or version.state not in STATES:
            raise MetadataCorrupt("The metadata object %r does not match its label or has an unknown state." % label)
        return version

    def record(self, now=None, max_rotation_period=None):
        """The version record returned to the play: metadata, evidence and derived dates."""
        now = now or utc_now()
        due = self.next_rotation_due(max_rotation_period)
        record = {
            "name": self.name,
            "version": self.version,
            "label": self.label,
            "id": self.key_id,
            "state": self.state,
            "type": self.spec.type,
            "size": self.spec.size,
            "curve": self.spec.curve,
            "usage": list(self.spec.usage),
            "distributable": self.spec.distributable,
            "recipients": list(self.spec.recipients),
            "destroy_allowed": self.spec.destroy_allowed,
            "backup": self.spec.backup,
            "created": format_time(self.created),
            "age_seconds": max(0, int((now - self.created).total_seconds())),
            "rotation_period": format_duration(self.spec.rotation_period),
            "next_rotation_due": format_time(due),
            "rotation_overdue": bool(due and now >= due),
            "retention_period": format_duration(self.spec.retention_period),
            "retain_until": format_time(self.retain_until),
            "retention_expired": bool(self.retain_until and now >= self.retain_until),
            "key_check_value": self.key_check_value,
            "public_key_fingerprint": self.public_key_fingerprint,
            "wrap_with_trusted": self.wrap_with_trusted,
            "sealed_at": format_time(self.sealed_at),
            "evidence": dict(self.evidence),
            "transitions": [t.as_dict() for t in self.transitions],
        }
        return record

    def review(self):
        """Metadata shown in diffs: what a change reviewer needs, nothing else."""
        return {
            "version": self.version, "id": self.key_id, "state": self.state,
            "type": self.spec.type, "size": self.spec.size, "curve": self.spec.curve,
            "usage": list(self.spec.usage), "distributable": self.spec.distributable,
            "rotation_period": format_duration(self.spec.rotation_period),
            "retention_period": format_duration(self.spec.retention_period),
            "recipients": list(self.spec.recipients),
            "destroy_allowed": self.spec.destroy_allowed,
            "backup": self.spec.backup,
        }


def spec_conflicts(spec, existing):
    """Immutable fields where ``spec`` differs from an existing version's spec."""
    return [(name, getattr(existing.spec, name), getattr(spec, name))
            for name in IMMUTABLE_FIELDS if getattr(spec, name) != getattr(existing.spec, name)]


def spec_updates(spec, existing):
    return [name for name in MUTABLE_FIELDS if getattr(spec, name) != getattr(existing.spec, name)]
