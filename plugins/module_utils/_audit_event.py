# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Audit events: one schema (ECS field names), built from a whitelist of fields.

PRIVATE: not part of the public interface. The schema is documented in
docs/audit-schema.md; keep the two in step.

An event is built only from typed values (names, numbers, hex ids, check values,
fingerprints, timestamps); every leaf is checked against the field's pattern
before the event leaves ``build_event``, so no PIN, no key value and no free-form
task argument can enter it.
"""

from __future__ import annotations

import getpass
import re
import socket
import uuid

from ansible_collections.secops.keylifecycle.plugins.module_utils._journal_chain import is_task_outcome
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import NAME_RE, utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import CHANGE_REF_RE, PERSON_RE

SCHEMA_VERSION = "1"
EVENT_DATASET = "secops.keylifecycle"

# event.action -> (event.category, event.type), ECS allowed values.
ACTIONS = {
    "key-generate": (["configuration"], ["creation"]),
    "key-update": (["configuration"], ["change"]),
    "audit-checkpoint": (["configuration"], ["info"]),
    "key-rotate": (["configuration"], ["change"]),
    "key-destroy": (["configuration"], ["deletion"]),
    "key-distribute": (["configuration"], ["access"]),
    "key-install": (["configuration"], ["creation"]),
    "key-withdraw": (["configuration"], ["deletion"]),
    "transport-key-enroll": (["configuration"], ["creation"]),
    # trusted distribution (docs/distribution.md): the Security Officer approves or revokes a recipient's transport
    # key in the HSM; rotation seals older versions that could be wrapped outside trusted keys; a recipient pins the
    # HSM's package-signing key
    "recipient-approve": (["configuration", "iam"], ["creation"]),
    "recipient-revoke": (["configuration", "iam"], ["deletion"]),
    "key-seal": (["configuration"], ["change"]),
    "package-signer-pin": (["configuration"], ["creation"]),
    # the Security Officer pins the package signer a token may be restored from, trusted (docs/replication.md)
    "package-signer-approve": (["configuration", "iam"], ["creation"]),
    # monitoring (read-only modules, docs/monitoring.md): one record per drift finding, one per token check
    "key-drift": (["configuration"], ["info"]),
    "token-check": (["configuration"], ["info"]),
    # the journal itself (docs/audit.md): a new journal started for a token that already names one (its genesis
    # record), and a torn last line cut off before the next append
    "audit-journal-rollover": (["configuration"], ["change"]),
    "audit-journal-repair": (["configuration"], ["change"]),
    # governance (docs/access-control.md, "Signed policy"): the Security Officer installs a policy signer in the HSM
    "policy-signer-approve": (["configuration", "iam"], ["creation"]),
    # a signed policy put in force on the token (recorded there), with the approvals of the change where the policy
    # in force asked for them
    "policy-accept": (["configuration"], ["change"]),
    # replica tokens (docs/replication.md): a version wrapped for a replica; a copy stored, updated or withdrawn on
    # the replica; a copy stored on a primary token rebuilt from a replica
    "key-replicate": (["configuration"], ["access"]),
    "replica-install": (["configuration"], ["creation"]),
    "replica-update": (["configuration"], ["change"]),
    "replica-withdraw": (["configuration"], ["deletion"]),
    "key-restore": (["configuration"], ["creation"]),
}
# keylifecycle.phase: an intent is journaled before the HSM is touched, each change the module made
# follows, and the task's outcome closes the sequence. A read-only module's finding is an observation, outside
# any intent/outcome pair.
PHASES = ("intent", "change", "outcome", "observation")
_PHASE_TYPES = {"intent": ["start"], "outcome": ["end"]}

_HEX_ID = re.compile(r"^[0-9a-f]{2,64}\Z")
_KCV = re.compile(r"^[0-9a-f]{6}\Z")
_FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_TOKEN_LABEL = re.compile(r"^[\x20-\x7e]{0,32}\Z")
_PRINTABLE = re.compile(r"^[\x20-\x7e]{0,128}\Z")
_SIGNER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,62}\Z")
#: a file path on the controller (a journal kept aside at a rollover)
_PATH = re.compile(r"^[\x20-\x7e]{1,1024}\Z")
UUID_RE = re.compile(r"^[0-9a-f-]{36}\Z")
#: base64 of a signature by the collection's signing key: DER ECDSA (about 96 characters) up to RSA-8192 (1368)
_SIGNATURE = re.compile(r"^[A-Za-z0-9+/=]{16,1400}\Z")
_RUN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")
_OUTCOMES = ("success", "failure", "unknown")
_KEY_TYPES = ("aes", "rsa", "ec")
_CURVES = ("P-256", "P-384", "P-521")


def _is_approval(entry):
    """One accepted signed approval as events record it (``_approvals.ApprovalOutcome``)."""
    return (isinstance(entry, dict) and set(entry) == {"name", "fingerprint", "nonce", "not_after"}
            and isinstance(entry["name"], str) and bool(PERSON_RE.match(entry["name"]))
            and isinstance(entry["fingerprint"], str) and bool(_FINGERPRINT.match(entry["fingerprint"]))
            and isinstance(entry["nonce"], str) and bool(re.match(r"^[0-9a-f]{32,64}\Z", entry["nonce"]))
            and isinstance(entry["not_after"], str) and entry["not_after"].endswith("+00:00"))


# Every field an event may carry, with its check. Dotted names are ECS paths.
_FIELD_CHECKS = {
    "@timestamp": lambda v: isinstance(v, str) and v.endswith("+00:00"),
    "event.id": lambda v: isinstance(v, str) and bool(UUID_RE.match(v)),
    "event.kind": lambda v: v == "event",
    "event.category": lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
    "event.type": lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
    "event.action": lambda v: v in ACTIONS,
    "event.outcome": lambda v: v in _OUTCOMES,
    "event.dataset": lambda v: v == EVENT_DATASET,
    "event.reason": lambda v: isinstance(v, str) and bool(_PRINTABLE.match(v)),
    "user.name": lambda v: isinstance(v, str) and bool(PERSON_RE.match(v)),
    "host.name": lambda v: isinstance(v, str) and bool(_PRINTABLE.match(v)),
    "labels.run_id": lambda v: isinstance(v, str) and bool(_RUN_ID.match(v)),
    "labels.operator_source": lambda v: isinstance(v, str) and bool(_RUN_ID.match(v)),
    "labels.schema_version": lambda v: v == SCHEMA_VERSION,
    "error.type": lambda v: isinstance(v, str) and bool(re.match(r"^[a-z_]{1,40}\Z", v)),
    "key.name": lambda v: isinstance(v, str) and bool(NAME_RE.match(v)),
    "key.version": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "key.id": lambda v: isinstance(v, str) and bool(_HEX_ID.match(v)),
    "key.label": lambda v: isinstance(v, str) and bool(_PRINTABLE.match(v)),
    "key.type": lambda v: v in _KEY_TYPES,
    "key.size": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "key.curve": lambda v: v in _CURVES,
    "key.state": lambda v: v in ("active", "deactivated", "compromised", "destroyed"),
    "key.check_value": lambda v: isinstance(v, str) and bool(_KCV.match(v)),
    "key.public_key_fingerprint": lambda v: isinstance(v, str) and bool(_FINGERPRINT.match(v)),
    "key.token": lambda v: isinstance(v, str) and bool(_TOKEN_LABEL.match(v)),
    "key.previous_version": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "key.previous_id": lambda v: isinstance(v, str) and bool(_HEX_ID.match(v)),
    "key.previous_state": lambda v: v in ("active", "deactivated", "compromised", "destroyed"),
    "key.retain_until": lambda v: isinstance(v, str) and v.endswith("+00:00"),
    "key.recipient": lambda v: isinstance(v, str) and bool(NAME_RE.match(v)),
    "key.recipient_host": lambda v: isinstance(v, str) and bool(_PRINTABLE.match(v)),
    "key.mechanism": lambda v: isinstance(v, str) and bool(re.match(r"^CKM_[A-Z0-9_]{1,40}:[a-z0-9]{1,12}\Z", v)),
    "key.transport_key_fingerprint": lambda v: isinstance(v, str) and bool(_FINGERPRINT.match(v)),
    # trusted distribution: whether the token wrapped under a Security-Officer-approved (CKA_TRUSTED) key, and which
    "key.trusted_wrapping": lambda v: isinstance(v, bool),
    "key.trusted_key_label": lambda v: isinstance(v, str) and bool(re.match(r"^[\x20-\x7e]{1,256}\Z", v)),
    # which kind of trusted key: a recipient's or a replica token's (docs/replication.md)
    "key.trusted_kind": lambda v: v in ("recipient", "replica"),
    "key.package_signer_fingerprint": lambda v: isinstance(v, str) and bool(_FINGERPRINT.match(v)),
    "key.certificate_label": lambda v: isinstance(v, str) and bool(_PRINTABLE.match(v)),
    "keylifecycle.warning": lambda v: isinstance(v, str) and bool(re.match(r"^[\x20-\x7e]{1,256}\Z", v)),
    "keylifecycle.phase": lambda v: v in PHASES,
    "keylifecycle.module": lambda v: isinstance(v, str) and bool(re.match(r"^[a-z0-9_.]{1,80}\Z", v)),
    "keylifecycle.intent_id": lambda v: isinstance(v, str) and bool(UUID_RE.match(v)),
    "keylifecycle.requested_keys": lambda v: isinstance(v, list) and all(
        isinstance(i, str) and NAME_RE.match(i) for i in v),
    "keylifecycle.changed": lambda v: isinstance(v, bool),
    "keylifecycle.resolved_operator.name": lambda v: isinstance(v, str) and bool(PERSON_RE.match(v)),
    "keylifecycle.resolved_operator.source": lambda v: isinstance(v, str) and bool(_RUN_ID.match(v)),
    "keylifecycle.verified_absent": lambda v: isinstance(v, bool),
    # the approver: one asserted name (legacy approved_by), or the names the signed policy gives the approvers whose
    # signed approvals were accepted (_approvals), with their key fingerprints and nonces
    "keylifecycle.approved_by": lambda v: (isinstance(v, str) and bool(PERSON_RE.match(v))) or (
        isinstance(v, list) and bool(v) and all(isinstance(i, str) and PERSON_RE.match(i) for i in v)),
    "keylifecycle.approvals": lambda v: isinstance(v, list) and bool(v) and all(_is_approval(i) for i in v),
    "keylifecycle.break_glass": lambda v: v is True,
    "keylifecycle.change_ref": lambda v: isinstance(v, str) and bool(CHANGE_REF_RE.match(v)),
    "keylifecycle.checkpoint.journal_id": lambda v: isinstance(v, str) and bool(UUID_RE.match(v)),
    "keylifecycle.checkpoint.seq": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "keylifecycle.checkpoint.head_hash": lambda v: isinstance(v, str) and bool(re.match(r"^[0-9a-f]{64}\Z", v)),
    "keylifecycle.checkpoint.signed_at": lambda v: isinstance(v, str) and v.endswith("+00:00"),
    "keylifecycle.checkpoint.signature": lambda v: isinstance(v, str) and bool(_SIGNATURE.match(v)),
    "keylifecycle.checkpoint.key_id": lambda v: isinstance(v, str) and bool(_HEX_ID.match(v)),
    "keylifecycle.checkpoint.key_version": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "keylifecycle.checkpoint.public_key_fingerprint": lambda v: isinstance(v, str) and bool(_FINGERPRINT.match(v)),
    # the token the checkpoint was signed on, and (the first checkpoint of a new signing key) the previous key's
    # co-signature over the same payload
    "keylifecycle.checkpoint.token_label": lambda v: isinstance(v, str) and bool(_TOKEN_LABEL.match(v)),
    "keylifecycle.checkpoint.token_serial": lambda v: isinstance(v, str) and bool(_PRINTABLE.match(v)),
    "keylifecycle.checkpoint.previous_key_id": lambda v: isinstance(v, str) and bool(_HEX_ID.match(v)),
    "keylifecycle.checkpoint.previous_signature": lambda v: isinstance(v, str) and bool(_SIGNATURE.match(v)),
    # the task's outcome the token's pin remembers: how many audit events, and their digest (_journal_pin)
    "keylifecycle.checkpoint.outcome.events": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "keylifecycle.checkpoint.outcome.sha256": lambda v: isinstance(v, str) and bool(re.match(r"^[0-9a-f]{64}\Z", v)),
    # a journal rollover's genesis record: the journal it continues (id, head seq and hash, where it was archived),
    # the token's pin of that journal when the rollover started, and why
    "keylifecycle.previous_journal.journal_id": lambda v: isinstance(v, str) and bool(UUID_RE.match(v)),
    "keylifecycle.previous_journal.head_seq": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "keylifecycle.previous_journal.head_hash": lambda v: isinstance(v, str) and bool(re.match(r"^[0-9a-f]{64}\Z", v)),
    "keylifecycle.previous_journal.path": lambda v: isinstance(v, str) and bool(_PATH.match(v)),
    "keylifecycle.previous_journal.pinned_seq": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "keylifecycle.previous_journal.pinned_hash": lambda v: isinstance(v, str) and bool(
        re.match(r"^[0-9a-f]{64}\Z", v)),
    "keylifecycle.previous_journal.lost": lambda v: isinstance(v, bool),
    # continued where it is, not moved aside (other tokens may still write it: it may grow after the named head)
    "keylifecycle.previous_journal.in_place": lambda v: isinstance(v, bool),
    # the outcomes of the continued journal's last tasks, as the token's pin remembered them (_journal_pin)
    "keylifecycle.previous_journal.outcomes": lambda v: isinstance(v, list) and all(is_task_outcome(o) for o in v),
    # ... and the intent seqs of those whose events the continued journal did not hold (declared lost)
    "keylifecycle.previous_journal.lost_outcomes": lambda v: isinstance(v, list) and all(
        isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in v),
    "keylifecycle.superseded_journal.journal_id": lambda v: isinstance(v, str) and bool(UUID_RE.match(v)),
    "keylifecycle.superseded_journal.path": lambda v: isinstance(v, str) and bool(_PATH.match(v)),
    # the policy in force for the task (every intent): the SHA-256 of its canonical JSON (the signed payload when
    # signed), its serial, signer fingerprint and environment when signed
    "keylifecycle.policy.sha256": lambda v: isinstance(v, str) and bool(re.match(r"^[0-9a-f]{64}\Z", v)),
    "keylifecycle.policy.signed": lambda v: isinstance(v, bool),
    "keylifecycle.policy.serial": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "keylifecycle.policy.signer": lambda v: isinstance(v, str) and bool(_FINGERPRINT.match(v)),
    "keylifecycle.policy.environment": lambda v: isinstance(v, str) and bool(re.match(r"^[A-Za-z0-9._-]{1,64}\Z", v)),
    # a policy signer the Security Officer installed (policy-signer-approve)
    "keylifecycle.policy_signer.name": lambda v: isinstance(v, str) and bool(_SIGNER_NAME.match(v)),
    "keylifecycle.policy_signer.fingerprint": lambda v: isinstance(v, str) and bool(_FINGERPRINT.match(v)),
    "keylifecycle.policy_signer.destroyable": lambda v: isinstance(v, bool),
    # a torn tail cut off: where, how long, and the SHA-256 of the bytes removed (never the bytes)
    "keylifecycle.repair.offset": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "keylifecycle.repair.length": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "keylifecycle.repair.sha256": lambda v: isinstance(v, str) and bool(re.match(r"^[0-9a-f]{64}\Z", v)),
    "keylifecycle.drift.kind": lambda v: v in ("usage_enabled", "destroyed_present", "unexplained_object",
                                               "lost_sensitive", "gained_extractable", "managed_key_altered",
                                               "key_missing"),
    "keylifecycle.drift.attribute": lambda v: isinstance(v, str) and bool(re.match(r"^CKA_[A-Z_]{1,30}\Z", v)),
    "keylifecycle.drift.object_class": lambda v: v in ("SECRET_KEY", "PRIVATE_KEY", "PUBLIC_KEY"),
    "keylifecycle.drift.expected": lambda v: isinstance(v, str) and bool(_PRINTABLE.match(v)),
    "keylifecycle.drift.actual": lambda v: isinstance(v, str) and bool(_PRINTABLE.match(v)),
    "keylifecycle.token_check.checks": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "keylifecycle.token_check.failed": lambda v: isinstance(v, list) and all(
        isinstance(i, str) and _PRINTABLE.match(i) for i in v),
    "keylifecycle.token_check.warnings": lambda v: isinstance(v, list) and all(
        isinstance(i, str) and _PRINTABLE.match(i) for i in v),
}


class AuditContext:
    """Who acts, from where, in which run. Resolved on the controller when possible."""

    def __init__(self, operator, operator_source, run_id, host=None, intent_id=None, resolved_operator=None,
                 resolved_operator_source=None):
        self.operator = operator
        self.operator_source = operator_source
        self.run_id = run_id
        self.host = host or socket.gethostname()
        self.intent_id = intent_id
        # with an operator override (policy.allow_operator_override): who the controller resolved
        self.resolved_operator = resolved_operator
        self.resolved_operator_source = resolved_operator_source

    @classmethod
    def from_params(cls, given):
        """Build the context from the module's ``audit_context`` option (set by the action plugin)."""
        given = given or {}
        operator = given.get("operator")
        source = given.get("operator_source")
        if not operator:
            operator, source = getpass.getuser(), "target_os_user"
        return cls(operator=str(operator), operator_source=str(source or "unspecified"),
                   run_id=str(given.get("run_id") or uuid.uuid4()), intent_id=given.get("intent_id"),
                   host=given.get("host"), resolved_operator=given.get("resolved_operator"),
                   resolved_operator_source=given.get("resolved_operator_source"))


def _flatten(event, prefix=""):
    for name, value in event.items():
        path = prefix + name
        if isinstance(value, dict):
            yield from _flatten(value, path + ".")
        else:
            yield path, value


def validate_event(event):
    """Raise ValueError if the event holds a field or value outside the schema."""
    for path, value in _flatten(event):
        check = _FIELD_CHECKS.get(path)
        if check is None:
            raise ValueError("audit event field %r is not in the schema" % path)
        if value is not None and not check(value):
            raise ValueError("audit event field %r has a value outside the schema" % path)
    return event


def key_section(version, token_label):
    """The event's ``key`` section for one key version."""
    section = dict(version.identity(), state=version.state, token=token_label)
    if version.spec.curve:
        section["curve"] = version.spec.curve
    if version.key_check_value:
        section["check_value"] = version.key_check_value
    if version.public_key_fingerprint:
        section["public_key_fingerprint"] = version.public_key_fingerprint
    return section


def build_event(action, outcome, context, key=None, reason=None, error_kind=None, when=None, phase="change",
                extra=None):
    """Return one validated audit event.

    ``extra`` adds fields of the ``keylifecycle`` section (module, requested_keys, changed).
    """
    category, event_type = ACTIONS[action]
    event_type = _PHASE_TYPES.get(phase, event_type)
    event = {
        "@timestamp": (when or utc_now()).isoformat(timespec="milliseconds"),
        "event": {
            "id": str(uuid.uuid4()),
            "kind": "event",
            "category": list(category),
            "type": list(event_type),
            "action": action,
            "outcome": outcome,
            "dataset": EVENT_DATASET,
        },
        "user": {"name": context.operator},
        "host": {"name": context.host},
        "labels": {
            "run_id": context.run_id,
            "operator_source": context.operator_source,
            "schema_version": SCHEMA_VERSION,
        },
    }
    if reason:
        event["event"]["reason"] = reason
    if error_kind:
        event["error"] = {"type": error_kind}
    if key:
        event["key"] = dict(key)
    section = {"phase": phase}
    if context.intent_id:
        section["intent_id"] = context.intent_id
    if context.resolved_operator:
        section["resolved_operator"] = {"name": context.resolved_operator, "source": context.resolved_operator_source}
    section.update(extra or {})
    event["keylifecycle"] = section
    return validate_event(event)
