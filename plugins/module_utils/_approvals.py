# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Signed approvals, M of N: their format (one home) and their check on the HSM host.

PRIVATE: not part of the public interface. docs/access-control.md ("Signed approvals") explains the model.

An approval is what ``approval_sign`` writes for one approver and a lifecycle task takes in its ``approvals``
option::

    {"format": 1,
     "request": {"action": "destroy", "token": "prod-hsm", "keys": [{"name": "payments-dek", "version": 1}],
                 "change_ref": "CHG-2041", "not_after": "2027-03-02T12:00:00+00:00", "nonce": "<32 hex digits>"},
     "approver": "sha256:<SPKI SHA-256 of the approver's P-256 public key>", "approver_name": "dana",
     "signature": "<base64 DER ECDSA P-256 / SHA-256>"}

The signed bytes (``approval_payload``) are the canonical JSON of ``{"approver", "format", "request"}``
(``approver_name`` and ``signature`` are not signed; the name that counts is the one the signed policy gives the
approver's key). The request's keys are sorted and unique.

``ApprovalGate.check`` runs inside the lifecycle module on the HSM host, after the task's plan is known and before
the token changes. The approver keys come from the signed policy (``policy.approvers``), which the token's policy
signer vouched for (``_signed_policy.check_policy``), so the operator can neither add an approver nor lower M.
Each approval must verify with the key of an approver the policy lists, approve this action on this token for
every key version the task acts on and this ``change_ref``, be unexpired (and not valid for longer than
``policy.approval_max_validity``), carry a nonce this token has not seen, and not be signed by the operator.
The nonces of an accepted task are written to the token before the work starts, one ``APPROVAL_NONCE`` record each:
a public object that neither a user nor a Security Officer session can change or delete, so an approval is good for
one task whoever holds a PIN (and the officer's own actions, in a Security Officer session, use the same records).

What an approval approves depends on its action (``SUBJECTS_BY_ACTION``): key versions, recipients' transport keys
(recipient_approve, recipient_revoke, checked by ``_trusted_keys`` in the officer's session), or a new signed policy
(policy_change, checked by ``_signed_policy`` against the approvers of the policy in force).

A Security Officer executing a high-risk action (``BREAK_GLASS_ACTIONS``) with the user PIN is break-glass: it
needs at least two approvals from other people, whatever M is, and every record of it says ``break_glass``.
"""

from __future__ import annotations

import base64
import copy
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ansible_collections.secops.keylifecycle.plugins.module_utils._approval import check_approval
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import (
    InvalidSignature,
    ec,
    hashes,
    serialization,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    ApprovalRefused,
    InvalidOption,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import NAME_RE, format_time
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import (
    APPROVAL_ACTIONS,
    CHANGE_REF_RE,
    format_duration,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import (
    canonical_bytes,
    check_signature_text,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    APPROVAL_NONCE,
    APPROVAL_NONCE_PREFIX,
    APPROVAL_SCHEMA,
    spki_fingerprint,
)


FORMAT = 1
#: the high-risk actions a Security Officer may execute only as break-glass (two approvals from other people)
BREAK_GLASS_ACTIONS = ("destroy", "compromise_rotate", "retire")
BREAK_GLASS_APPROVALS = 2
#: the actions a Security Officer executes with the SO PIN (recipient_approve); approved_by names that officer there
OFFICER_ACTIONS = ("recipient_approve", "recipient_revoke")
REQUEST_FIELDS = ("action", "change_ref", "keys", "nonce", "not_after", "token")
FIELDS = ("format", "request", "approver", "approver_name", "signature")
SIGNED_FIELDS = ("approver", "format", "request")
NONCE_RE = re.compile(r"^[0-9a-f]{32,64}\Z")
FINGERPRINT_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
TOKEN_RE = re.compile(r"^[\x20-\x7e]{1,32}\Z")
APPROVER_NAME_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,128}\Z")  # a person, as _policy.PERSON_RE
UTC_SUFFIX = "+00:00"
#: at most this many approvals in one task (M is at most the number of approvers)
MAX_APPROVALS = 32


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def parse_time(text, option):
    """An ISO 8601 UTC time ending in ``+00:00`` as an aware datetime; InvalidOption naming ``option`` otherwise."""
    if not isinstance(text, str) or not text.endswith(UTC_SUFFIX):
        raise InvalidOption("%s must be an ISO 8601 UTC time ending in +00:00, got %r." % (option, text),
                            option=option.split(".")[0].split("[")[0])
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except ValueError:
        raise InvalidOption("%s %r is not an ISO 8601 time." % (option, text),
                            option=option.split(".")[0].split("[")[0]) from None


#: what a request's ``keys`` may name, per action: key versions, recipients' transport keys, or a new policy
SUBJECTS_BY_ACTION = {
    "destroy": "key", "compromise_rotate": "key", "retire": "key", "journal_rollover": None,
    "recipient_approve": "recipient", "recipient_revoke": "recipient", "policy_change": "policy",
}
_SUBJECT_FIELDS = {"key": {"name", "version"}, "recipient": {"recipient", "fingerprint"}, "policy": {"policy"}}
_SUBJECT_WORDS = {"key": "key versions ({name, version})", "recipient": "recipients' transport keys "
                  "({recipient, fingerprint})", "policy": "the new policy ({policy: the SHA-256 of its payload})"}
POLICY_DIGEST_RE = re.compile(r"^[0-9a-f]{64}\Z")
#: the token of a policy_change request: a policy is the environment's, every token of it sees the change once
ANY_TOKEN = "*"


def _subject_kind(entry):
    for kind, fields in _SUBJECT_FIELDS.items():
        if isinstance(entry, dict) and set(entry) == fields:
            return kind
    return None


def _check_subject(kind, entry, where, top):
    if kind == "key":
        if not isinstance(entry["name"], str) or not NAME_RE.match(entry["name"]):
            raise InvalidOption("%s.name %r is not a key name." % (where, entry["name"]), option=top)
        if not _is_int(entry["version"]) or entry["version"] < 1:
            raise InvalidOption("%s.version %r is not a version number (1 or more)." % (where, entry["version"]),
                                option=top)
    elif kind == "recipient":
        if not isinstance(entry["recipient"], str) or not NAME_RE.match(entry["recipient"]):
            raise InvalidOption("%s.recipient %r is not a recipient name." % (where, entry["recipient"]), option=top)
        if not isinstance(entry["fingerprint"], str) or not FINGERPRINT_RE.match(entry["fingerprint"]):
            raise InvalidOption("%s.fingerprint %r is not sha256: and 64 hex digits." % (where, entry["fingerprint"]),
                                option=top)
    elif not isinstance(entry["policy"], str) or not POLICY_DIGEST_RE.match(entry["policy"]):
        raise InvalidOption("%s.policy %r is not the 64 hex digits of a signed policy's SHA-256."
                            % (where, entry["policy"]), option=top)


def canonical_keys(keys, option="keys", action=None):
    """What a request approves: key versions ``{"name", "version"}``, recipients' transport keys
    ``{"recipient", "fingerprint"}`` or a new policy ``{"policy"}`` (which one ``action`` takes, when given);
    sorted and unique."""
    top = option.split(".")[0].split("[")[0]
    wanted = SUBJECTS_BY_ACTION.get(action, "key") if action else None
    if not isinstance(keys, (list, tuple)):
        raise InvalidOption("%s must be a list of %s." % (option, _SUBJECT_WORDS[wanted or "key"]), option=top)
    seen = {}
    for index, entry in enumerate(keys):
        where = "%s[%d]" % (option, index)
        kind = _subject_kind(entry)
        if kind is None or (action and kind != wanted):
            if action and wanted is None:
                expected = "nothing: %s names no key" % action
            elif wanted:
                expected = "one of %s for %s" % (_SUBJECT_WORDS[wanted], action or "this request")
            else:
                expected = "a key version, a recipient's transport key or a policy"
            raise InvalidOption("%s must be %s, got %r." % (where, expected, entry), option=top)
        _check_subject(kind, entry, where, top)
        seen[canonical_bytes(entry)] = dict(entry)
    if action == "policy_change" and len(seen) != 1:
        raise InvalidOption("%s must name exactly one policy for policy_change." % option, option=top)
    return [seen[name] for name in sorted(seen)]


def make_request(action, token, keys, change_ref, not_after, nonce, option="request"):
    """A checked, canonical approval request (what an approver signs, with ``approver`` and ``format``)."""
    top = option.split(".")[0].split("[")[0]
    if action not in APPROVAL_ACTIONS:
        raise InvalidOption("%s.action %r is not an action that takes approvals (%s)."
                            % (option, action, ", ".join(APPROVAL_ACTIONS)), option=top)
    if not isinstance(token, str) or not TOKEN_RE.match(token) or (token == ANY_TOKEN and action != "policy_change"):
        raise InvalidOption("%s.token %r is not a token label (1 to 32 printable characters)." % (option, token),
                            option=top)
    if not isinstance(change_ref, str) or not CHANGE_REF_RE.match(change_ref):
        raise InvalidOption("%s.change_ref %r is not a change or ticket reference (letters, digits and . _ : / # "
                            "-, up to 64 characters)." % (option, change_ref), option=top)
    parse_time(not_after, option + ".not_after")
    if not isinstance(nonce, str) or not NONCE_RE.match(nonce):
        raise InvalidOption("%s.nonce must be 32 to 64 lowercase hex digits (a random number used once)."
                            % option, option=top)
    return {"action": action, "token": token, "keys": canonical_keys(keys, option + ".keys", action),
            "change_ref": change_ref, "not_after": not_after, "nonce": nonce}


def approval_payload(doc):
    """The exact bytes an approver signs: the canonical JSON of ``{"approver", "format", "request"}``."""
    return canonical_bytes({name: doc[name] for name in SIGNED_FIELDS})


def describe_subject(entry):
    kind = _subject_kind(entry)
    if kind == "recipient":
        return "recipient %s's transport key %s" % (entry["recipient"], entry["fingerprint"])
    if kind == "policy":
        return "the signed policy of SHA-256 %s" % entry["policy"]
    return "%s v%d" % (entry["name"], entry["version"])


def describe_keys(keys):
    if not keys:
        return "no key (the token itself)"
    return ", ".join(describe_subject(entry) for entry in keys)


_ACTION_WORDS = {
    "destroy": "DESTROY (cryptographic erasure, irreversible) of",
    "compromise_rotate": "mark COMPROMISED (and rotate where active)",
    "retire": "RETIRE without successor",
    "journal_rollover": "start a NEW AUDIT JOURNAL for",
    "recipient_approve": "APPROVE as a trusted recipient (keys may be wrapped to it)",
    "recipient_revoke": "REVOKE as a trusted recipient",
    "policy_change": "put in force",
}


def describe_request(request):
    """The request in words, as ``approval_sign`` prints it before signing and refusals quote it."""
    token = "every token of the environment" if request["token"] == ANY_TOKEN else "token %r" % request["token"]
    return ("%s %s on %s, change %s, valid until %s, nonce %s"
            % (_ACTION_WORDS[request["action"]], describe_keys(request["keys"]), token,
               request["change_ref"], request["not_after"], request["nonce"]))


def parse_approval(raw, option="approvals"):
    """One approval document (a dict, or its JSON text), checked for shape; InvalidOption naming ``option``.

    Returns a new dict with exactly ``FIELDS`` and a canonical request. The signature is not checked here.
    """
    if isinstance(raw, (str, bytes)):
        import json

        try:
            raw = json.loads(raw)
        except ValueError:
            raise InvalidOption("%s is not an approval: it is not JSON." % option, option="approvals") from None
    if not isinstance(raw, dict):
        raise InvalidOption("%s must be an approval document written by secops.keylifecycle.approval_sign (a dict "
                            "with format, request, approver and signature), got %s."
                            % (option, type(raw).__name__), option="approvals")

    def bad(why):
        return InvalidOption("%s is not a valid approval: %s." % (option, why), option="approvals")

    unknown = sorted(str(name) for name in set(raw) - set(FIELDS))
    if unknown:
        raise bad("unknown field(s) %s" % ", ".join(unknown))
    missing = [name for name in FIELDS if name not in raw and name != "approver_name"]
    if missing:
        raise bad("missing field(s) %s" % ", ".join(missing))
    if not _is_int(raw["format"]) or raw["format"] != FORMAT:
        raise bad("format %r is not %d" % (raw["format"], FORMAT))
    request = raw["request"]
    if not isinstance(request, dict) or set(request) != set(REQUEST_FIELDS):
        raise bad("request must have exactly the fields %s" % ", ".join(REQUEST_FIELDS))
    canonical = make_request(request["action"], request["token"], request["keys"], request["change_ref"],
                             request["not_after"], request["nonce"], option=option + ".request")
    if canonical != request:
        raise bad("request.keys are not sorted and unique as approval_sign writes them")
    if not isinstance(raw["approver"], str) or not FINGERPRINT_RE.match(raw["approver"]):
        raise bad("approver must be sha256: and the 64 hex digits of the approver's public key fingerprint")
    name = raw.get("approver_name") or ""
    if not isinstance(name, str) or (name and not APPROVER_NAME_RE.match(name)):
        raise bad("approver_name %r is not a person's name" % (name,))
    check_signature_text(raw["signature"], bad)
    return {"format": FORMAT, "request": copy.deepcopy(canonical), "approver": raw["approver"],
            "approver_name": name, "signature": raw["signature"]}


def approver_keys(policy):
    """``{fingerprint: (name, public_key)}`` of the policy's approvers (``policy.approvers``: name -> PEM)."""
    keys = {}
    for name, pem in sorted((policy.approvers or {}).items()):
        public_key = serialization.load_pem_public_key(pem.encode("ascii"))
        keys[spki_fingerprint(public_key)] = (name, public_key)
    return keys


def verify_signature(public_key, doc):
    """Whether the approval's signature verifies with ``public_key`` (ECDSA P-256 / SHA-256)."""
    try:
        public_key.verify(base64.b64decode(doc["signature"]), approval_payload(doc), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def count_recorded_approvals(policy, action, approvals, token_label, targets):
    """How many distinct approvers of ``policy`` signed one of ``approvals`` for ``action`` on every one of
    ``targets`` on this token: the check of approvals kept in a record the token accepted earlier (a signed policy
    record). Their nonces were consumed and their validity checked when the record was accepted; what is checked
    again is what a forged record could not bring: signatures of the policy's approvers over this very change."""
    keys = approver_keys(policy)
    wanted = {canonical_bytes(entry) for entry in canonical_keys([_as_subject(t) for t in targets], "targets")}
    approvers = set()
    for index, raw in enumerate(approvals or ()):
        try:
            doc = parse_approval(raw, "approvals[%d]" % index)
        except InvalidOption:
            continue
        known, request = keys.get(doc["approver"]), doc["request"]
        if known is None or request["action"] != action or not verify_signature(known[1], doc):
            continue
        if request["token"] != token_label and not (action == "policy_change" and request["token"] == ANY_TOKEN):
            continue
        if wanted <= {canonical_bytes(entry) for entry in request["keys"]}:
            approvers.add(doc["approver"])
    return len(approvers)


@dataclass
class ApprovalOutcome:
    """What a checked set of approvals gives the task: the fields of its audit events and its return value."""

    required: int
    break_glass: bool
    accepted: list = field(default_factory=list)  # [{"name", "fingerprint", "nonce", "not_after"}]
    request: dict = None  # the request the approvers sign for this task (without not_after and nonce)
    legacy_approved_by: str = None
    change_ref: str = None

    @property
    def approved_by(self):
        if self.accepted:
            return [entry["name"] for entry in self.accepted]
        return self.legacy_approved_by

    def event_fields(self):
        """The ``keylifecycle`` fields every audit event of the action carries."""
        extra = {}
        if self.approved_by:
            extra["approved_by"] = self.approved_by
        if self.change_ref:
            extra["change_ref"] = self.change_ref
        if self.accepted:
            extra["approvals"] = [dict(entry) for entry in self.accepted]
        if self.break_glass:
            extra["break_glass"] = True
        return extra

    def as_dict(self):
        """The module's ``approvals`` return value."""
        return {"required": self.required, "break_glass": self.break_glass, "accepted": list(self.accepted),
                "missing": max(0, self.required - len(self.accepted)), "request": self.request}


class ApprovalGate:
    """The approvals of one task for one lifecycle ``action``, checked against the signed policy.

    ``params``: the module's ``approvals``, ``approved_by`` and ``change_ref``; ``context``: the AuditContext (the
    operator, and the resolved identity behind an override); ``now``: an aware datetime (``_keys.utc_now()``).
    """

    def __init__(self, policy, action, params, context, token_label, now):
        self.policy = policy
        self.action = action
        self.approvals = params.get("approvals") or []
        self.approved_by = params.get("approved_by")
        self.change_ref = params.get("change_ref")
        self.operator = context.operator
        self.operators = {name for name in (context.operator, context.resolved_operator) if name}
        if action in OFFICER_ACTIONS and self.approved_by:  # the officer who approves with the SO PIN
            self.operators.add(self.approved_by)
        self.token_label = token_label
        self.now = now
        officers = set(policy.security_officers or ())
        self.break_glass = action in BREAK_GLASS_ACTIONS and bool(self.operators & officers)
        required = (policy.approvals_required or {}).get(action, 0)
        self.required = max(required, BREAK_GLASS_APPROVALS) if self.break_glass else required

    @property
    def signed(self):
        """Whether this action needs signed approvals (M > 0, or a break-glass)."""
        return self.required > 0

    def _refuse(self, kind, message):
        return ApprovalRefused(message + " Nothing was changed on the token.", kind)

    def check(self, objects, targets, check_mode):
        """Check the approvals for ``targets`` (``[(name, version)]`` key versions, or subject dicts: what the task
        acts on) before the token changes; consume their nonces on the token (``objects``, the session's
        TokenObjects) unless ``check_mode``. Returns an ApprovalOutcome.

        With no target (nothing to do) nothing is required. In check mode fewer approvals than required is not a
        refusal: the outcome says how many are missing and which request to sign.
        """
        targets = canonical_keys([_as_subject(target) for target in targets], "targets")
        request = {"action": self.action, "token": self.token_label, "keys": targets,
                   "change_ref": self.change_ref}
        if self.action != "journal_rollover" and not targets:
            return ApprovalOutcome(required=0, break_glass=False, legacy_approved_by=self.approved_by,
                                   change_ref=self.change_ref)
        if not self.signed and not self.approvals:
            if self.action in ("destroy", "compromise_rotate", "journal_rollover"):
                check_approval(self.policy, self.action, self.approved_by, self.operator)
            return ApprovalOutcome(required=0, break_glass=False, request=request,
                                   legacy_approved_by=self.approved_by, change_ref=self.change_ref)
        if self.approved_by and self.action not in OFFICER_ACTIONS:  # there approved_by names the acting officer
            raise InvalidOption(
                "approved_by is not used where the environment's signed policy binds %s to signed approvals "
                "(policy.approvals_required.%s = %d%s): pass the approvers' documents from "
                "secops.keylifecycle.approval_sign as approvals, and remove approved_by."
                % (self.action.replace("_", " "), self.action, (self.policy.approvals_required or {}).get(
                    self.action, 0), ", break-glass: %d" % self.required if self.break_glass else ""),
                option="approved_by")
        if not self.change_ref and self.action != "policy_change":  # a policy change names its change in the request
            raise InvalidOption("change_ref is required: the approvals of %s name the change they approve, and the "
                                "task must name the same one." % self.action.replace("_", " "), option="change_ref")
        outcome = ApprovalOutcome(required=self.required, break_glass=self.break_glass, request=request,
                                  change_ref=self.change_ref)
        if len(self.approvals) > MAX_APPROVALS:
            raise InvalidOption("approvals lists %d documents; at most %d are read."
                                % (len(self.approvals), MAX_APPROVALS), option="approvals")
        keys = approver_keys(self.policy)
        used = used_nonces(objects)
        seen_approvers, seen_nonces = set(), set()
        for index, raw in enumerate(self.approvals):
            accepted = self._check_one(index, raw, keys, targets, used, seen_nonces)
            if accepted["fingerprint"] in seen_approvers:
                continue  # the same approver twice counts once
            seen_approvers.add(accepted["fingerprint"])
            outcome.accepted.append(accepted)
        outcome.accepted.sort(key=lambda entry: entry["name"])
        if len(outcome.accepted) < self.required and not check_mode:
            raise self._missing(outcome, keys)
        if not check_mode and outcome.accepted:
            consume_nonces(objects, self.action, outcome.accepted, self.now)
        return outcome

    def _missing(self, outcome, keys):
        others = sorted(name for name, _key in keys.values() if name not in self.operators)
        given = ", ".join(entry["name"] for entry in outcome.accepted) or "none"
        why = ("a Security Officer executing %s is break-glass: it needs %d approvals from other people"
               % (self.action.replace("_", " "), self.required)) if self.break_glass else (
            "the signed policy requires %d approvals for %s (policy.approvals_required.%s)"
            % (self.required, self.action.replace("_", " "), self.action))
        return self._refuse("approval_missing", (
            "%s, and this task has %d valid (%s). Ask the approvers listed in the policy (%s) to sign the request "
            "with secops.keylifecycle.approval_sign: action %s, token %r, keys %s, change_ref %s."
            % (why[0].upper() + why[1:], len(outcome.accepted), given, ", ".join(others) or "none",
               self.action, self.token_label, describe_keys(outcome.request["keys"]), self.change_ref)))

    def _check_one(self, index, raw, keys, targets, used, seen_nonces):
        where = "approvals[%d]" % index
        try:
            doc = parse_approval(raw, where)
        except InvalidOption as exc:
            raise self._refuse("approval_invalid", exc.message.rstrip(".") + ".") from None
        request = doc["request"]
        known = keys.get(doc["approver"])
        if known is None:
            raise self._refuse("approval_unknown_approver", (
                "%s is signed by %s%s, which is not an approver of the signed policy (policy.approvers lists %s)."
                % (where, doc["approver"], " (%s)" % doc["approver_name"] if doc["approver_name"] else "",
                   ", ".join(sorted(name for name, _key in keys.values())) or "nobody")))
        name, public_key = known
        if not verify_signature(public_key, doc):
            raise self._refuse("approval_invalid", (
                "The signature of %s (approver %s, %s) does not verify: the approval was altered after it was "
                "signed, or it was not signed with that approver's key." % (where, name, doc["approver"])))
        if name in self.operators:
            raise self._refuse("approval_self", (
                "%s is signed by %s, the operator running this task: an approval must come from another person."
                % (where, name)))
        self._check_matches(where, name, request, targets)
        not_after = parse_time(request["not_after"], where + ".request.not_after")
        if not_after < self.now:
            raise self._refuse("approval_expired", (
                "%s by %s expired at %s (it is now %s). Ask %s to sign the request again."
                % (where, name, request["not_after"], format_time(self.now), name)))
        longest = self.policy.approval_max_validity
        if (not_after - self.now).total_seconds() > longest:
            raise self._refuse("approval_expired", (
                "%s by %s is valid until %s, longer than policy.approval_max_validity (%s) allows from now (%s): "
                "ask %s to sign it again with a nearer not_after."
                % (where, name, request["not_after"], format_duration(longest), format_time(self.now), name)))
        if request["nonce"] in used or request["nonce"] in seen_nonces:
            raise self._refuse("approval_replayed", (
                "%s by %s (nonce %s) was already used%s: every approval is good for one task. Ask %s for a new "
                "approval." % (where, name, request["nonce"],
                               " on token %r" % self.token_label if request["nonce"] in used else " in this task",
                               name)))
        seen_nonces.add(request["nonce"])
        return {"name": name, "fingerprint": doc["approver"], "nonce": request["nonce"],
                "not_after": request["not_after"]}

    def _check_matches(self, where, name, request, targets):
        what = "%s by %s approves %s" % (where, name, describe_request(request))
        if request["action"] != self.action:
            raise self._refuse("approval_mismatch", "%s, not %s." % (what, self.action.replace("_", " ")))
        if request["token"] != self.token_label and not (self.action == "policy_change" and request["token"] == ANY_TOKEN):
            raise self._refuse("approval_mismatch", "%s, not token %r." % (what, self.token_label))
        if self.change_ref is not None and request["change_ref"] != self.change_ref:
            raise self._refuse("approval_mismatch", "%s, not change_ref %s." % (what, self.change_ref))
        approved = {canonical_bytes(entry) for entry in request["keys"]}
        outside = [target for target in targets if canonical_bytes(target) not in approved]
        if outside:
            raise self._refuse("approval_mismatch", "%s; it does not cover %s, which this task acts on." % (
                what, describe_keys(outside)))


def _as_subject(target):
    """A gate target: a (name, version) pair of a key version, or a subject dict as requests hold them."""
    if isinstance(target, tuple):
        return {"name": target[0], "version": target[1]}
    return target


def used_nonces(objects):
    """The nonces of the approvals this token accepted (``APPROVAL_NONCE`` records of the enumeration)."""
    return {label[len(APPROVAL_NONCE_PREFIX):] for label in objects.document_labels(APPROVAL_NONCE)}


def consume_nonces(objects, action, accepted, now):
    """Record the accepted approvals' nonces on the token: one immutable public object each, before the work."""
    for entry in accepted:
        objects.write(APPROVAL_NONCE, APPROVAL_NONCE_PREFIX + entry["nonce"], {
            "schema": APPROVAL_SCHEMA, "nonce": entry["nonce"], "action": action, "approver": entry["fingerprint"],
            "not_after": entry["not_after"], "used_at": format_time(now)}, operation="C_CreateObject (approval nonce)")
