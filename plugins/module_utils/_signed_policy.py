# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The environment's signed policy: its format (one home) and its check on the HSM host.

PRIVATE: not part of the public interface. docs/access-control.md ("Signed policy") explains it.

A signed policy is the document ``policy_sign`` writes, inventories hold as ``key_policy_signed`` and lifecycle
modules take as option ``signed_policy``::

    {"format": 1, "environment": "prod", "serial": 3, "not_after": "2027-06-30T00:00:00+00:00",
     "policy": {<the policy settings, exactly as the policy option takes them>},
     "signer": "sha256:<SPKI SHA-256 of the signer's P-256 public key>", "signer_name": "dana",
     "signature": "<base64 DER ECDSA P-256 / SHA-256>"}

The signed bytes (``policy_payload``) are the canonical JSON (sorted keys, no blanks, ASCII) of
``{"environment", "format", "not_after", "policy", "serial", "signer"}``: ``signer_name`` (a label for people)
and ``signature`` are not signed.

``check_policy`` runs in every state-changing lifecycle module on the HSM token, after the journal pin check and
before anything changes the token (``_lifecycle_module``). Once the token holds a policy signer
(``_policy_signers``: a CKA_TRUSTED key only a Security Officer session can install), the task must bring a
signed policy that verifies inside the token with one of them, has not expired, is not older than the newest
serial the token accepted (kept in its journal pin, ``_checkpoint``), and equals the ``policy`` option the task
runs with. A token without a policy signer keeps the unsigned ``policy`` option.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import POLICY_ARGSPEC, policy_overrides
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import Attribute, p11_exc
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    InvalidOption,
    MetadataCorrupt,
    PolicyRefused,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import format_time
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    APPROVAL_SCHEMA,
    SIGNED_POLICY_PREFIX,
    SIGNED_POLICY_RECORD,
)

FORMAT = 1
#: the fields of a signed policy; SIGNED_FIELDS are those the signature covers
FIELDS = ("format", "environment", "serial", "not_after", "policy", "signer", "signer_name", "signature", "approvals")
#: fields a signed policy may leave out: signer_name (a label), approvals (the signed approvals of this policy as a
#: change of the policy in force, ``_approvals``; not covered by the policy signer's signature)
OPTIONAL_FIELDS = ("signer_name", "approvals")
#: at most this many approvals ride with a policy
MAX_POLICY_APPROVALS = 32
SIGNED_FIELDS = ("environment", "format", "not_after", "policy", "serial", "signer")
ENVIRONMENT_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
SIGNER_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
SIGNER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,62}\Z")  # as _policy_signers.NAME_RE
UTC_SUFFIX = "+00:00"
#: a DER ECDSA P-256 signature is at most 72 bytes; anything far longer is not a signature
MAX_SIGNATURE_CHARS = 256


def canonical_bytes(doc):
    """Canonical JSON: sorted keys, separators (",", ":"), ASCII only (no NaN or infinity: not JSON)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def check_signature_text(signature, bad):
    """Refuse (``raise bad(why)``) what cannot be the base64 text of a DER ECDSA P-256 signature."""
    if not isinstance(signature, str) or not signature or len(signature) > MAX_SIGNATURE_CHARS:
        raise bad("signature must be the base64 text of a DER ECDSA signature")
    try:
        base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise bad("signature is not base64") from None


def policy_payload(doc):
    """The exact bytes a policy signer signs: the canonical JSON of the signed fields of ``doc``."""
    return canonical_bytes({field: doc[field] for field in SIGNED_FIELDS})


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def parse_not_after(text, option="signed_policy.not_after"):
    """``not_after`` as an aware UTC datetime: ISO 8601, ending in ``+00:00``; InvalidOption otherwise."""
    if not isinstance(text, str) or not text.endswith(UTC_SUFFIX):
        raise InvalidOption("%s must be an ISO 8601 UTC time ending in +00:00 (for example "
                            "2027-06-30T00:00:00+00:00), got %r." % (option, text), option=option.split(".")[0])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidOption("%s %r is not an ISO 8601 time (for example 2027-06-30T00:00:00+00:00)."
                            % (option, text), option=option.split(".")[0]) from None
    return moment.astimezone(timezone.utc)


def parse_signed_policy(raw, option="signed_policy"):
    """The signed policy document ``raw`` (a dict, or its JSON text), checked for shape; InvalidOption naming
    ``option`` on anything malformed. Returns a new dict with exactly ``FIELDS`` (``signer_name`` may be "").

    The signature is not checked here (that is ``check_policy``'s work, inside the token).
    """
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise InvalidOption("%s is not a signed policy document: it is not JSON." % option,
                                option=option) from None
    if not isinstance(raw, dict):
        raise InvalidOption("%s must be a signed policy document (a dict with format, environment, serial, "
                            "not_after, policy, signer and signature), got %s." % (option, type(raw).__name__),
                            option=option)

    def bad(why):
        return InvalidOption("%s is not a valid signed policy document: %s." % (option, why), option=option)

    unknown = sorted(str(name) for name in set(raw) - set(FIELDS))
    if unknown:
        raise bad("unknown field(s) %s" % ", ".join(unknown))
    missing = [name for name in FIELDS if name not in raw and name not in OPTIONAL_FIELDS]
    if missing:
        raise bad("missing field(s) %s" % ", ".join(missing))
    if raw["format"] != FORMAT or not _is_int(raw["format"]):
        raise bad("format %r is not %d" % (raw["format"], FORMAT))
    if not isinstance(raw["environment"], str) or not ENVIRONMENT_RE.match(raw["environment"]):
        raise bad("environment %r must be 1 to 64 letters, digits, '.', '_' or '-'" % (raw["environment"],))
    if not _is_int(raw["serial"]) or raw["serial"] < 1:
        raise bad("serial %r must be a whole number of at least 1" % (raw["serial"],))
    parse_not_after(raw["not_after"], option + ".not_after")
    if not isinstance(raw["policy"], dict):
        raise bad("policy must be a dict of policy settings")
    if not isinstance(raw["signer"], str) or not SIGNER_RE.match(raw["signer"]):
        raise bad("signer %r must be sha256: and the 64 hex digits of the signer's public key fingerprint"
                  % (raw["signer"],))
    signer_name = raw.get("signer_name")
    if signer_name is None:
        signer_name = ""
    if not isinstance(signer_name, str) or (signer_name and not SIGNER_NAME_RE.match(signer_name)):
        raise bad("signer_name %r is not a signer name" % (signer_name,))
    check_signature_text(raw["signature"], bad)
    try:
        canonical_bytes(raw["policy"])
    except (TypeError, ValueError) as exc:
        raise bad("policy cannot be written as JSON (%s)" % exc) from None
    approvals = raw.get("approvals")
    if approvals is not None and not (isinstance(approvals, list) and len(approvals) <= MAX_POLICY_APPROVALS
                                      and all(isinstance(item, (dict, str)) for item in approvals)):
        raise bad("approvals must be a list of at most %d approval documents" % MAX_POLICY_APPROVALS)
    doc = {name: copy.deepcopy(raw[name]) for name in FIELDS if name in raw}
    doc["signer_name"] = signer_name
    return doc


def _is_signed_document(doc):
    return isinstance(doc, dict) and "format" in doc and "policy" in doc and "signature" in doc


def _without_unset(policy):
    return {name: value for name, value in (policy or {}).items() if value is not None}


def policy_digest(doc_or_policy):
    """SHA-256 hex of a signed policy's payload (``policy_payload``), or, for the settings of an unsigned policy
    (a ``policy`` option's value), of their canonical JSON (settings left unset, None, are left out)."""
    if _is_signed_document(doc_or_policy):
        return hashlib.sha256(policy_payload(doc_or_policy)).hexdigest()
    return hashlib.sha256(canonical_bytes(_without_unset(doc_or_policy))).hexdigest()


def normalised_policy(policy):
    """The settings of ``policy`` as the module's ``policy`` option holds them after AnsibleModule checked it
    (``"4096"`` becomes 4096, ``yes`` true), unset ones left out. A value the option would refuse is kept as it is:
    the comparison then shows it differs."""
    if not isinstance(policy, dict):
        return policy
    try:
        from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    except ImportError:  # pragma: no cover - ansible-core older than 2.11
        return _without_unset(policy)
    result = ArgumentSpecValidator(copy.deepcopy(POLICY_ARGSPEC)).validate({"policy": copy.deepcopy(policy)})
    if result.error_messages:
        return _without_unset(policy)
    return policy_overrides(result.validated_parameters)


def policy_differences(given, signed):
    """The names of the settings where ``given`` (the policy option) and ``signed`` differ, sorted."""
    given, signed = normalised_policy(given), normalised_policy(signed)
    names = sorted(set(given) | set(signed))
    return [name for name in names
            if name not in given or name not in signed or canonical_bytes(given[name]) != canonical_bytes(signed[name])]


def unsigned_in_force(params):
    """The ``policy_in_force`` of a task on a token without a policy signer: the unsigned ``policy`` option."""
    return {"signed": False, "sha256": policy_digest(policy_overrides(params))}


def _refuse(kind, message, option="signed_policy"):
    return PolicyRefused(message + " Nothing was changed on the token.", kind, option=option)


def _names(signers):
    return ", ".join("%s (%s)" % (signer.name, signer.fingerprint) for signer in signers)


@dataclass
class PolicyAcceptance:
    """A signed policy the token has not recorded yet: written (``record``) once the task succeeded."""

    doc: dict
    sha256: str
    approval: object = None  # the _approvals.ApprovalOutcome of the change, where the policy in force required one

    def record(self, objects, context, now):
        """Write the signed policy record (immutable) and the approvals' nonces; return the ``policy-accept`` event."""
        from ansible_collections.secops.keylifecycle.plugins.module_utils._approvals import consume_nonces
        from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event

        if self.approval is not None and self.approval.accepted:
            consume_nonces(objects, "policy_change", self.approval.accepted, now)
        objects.write(SIGNED_POLICY_RECORD, "%s%d" % (SIGNED_POLICY_PREFIX, self.doc["serial"]), {
            "schema": APPROVAL_SCHEMA, "serial": self.doc["serial"], "sha256": self.sha256,
            "accepted_at": format_time(now), "document": self.doc}, operation="C_CreateObject (signed policy record)")
        extra = {"policy": {"sha256": self.sha256, "signed": True, "serial": self.doc["serial"],
                            "signer": self.doc["signer"], "environment": self.doc["environment"]}}
        if self.approval is not None:
            extra.update(self.approval.event_fields())
        return build_event("policy-accept", "success", context, reason="signed policy serial %d put in force"
                           % self.doc["serial"], extra=extra)


def policy_records(objects, signers, token):
    """``(records, signed_serials, rejected)``: the signed policies the token recorded that prove themselves, by
    serial; the serials of every record whose document at least verifies with one of the token's policy signers (the
    floor); and the labels of the records that do not prove themselves, with why.

    The records are public data objects (``SIGNED_POLICY_RECORD``): a Security Officer session cannot be required
    to write them, so any user session could create one. Each is therefore checked again, in serial order, before
    it counts as a floor or as the policy in force (``_record_problem``): a document that verifies in the token with
    one of its policy signers (``signers``: fingerprint -> PolicySigner), the digest and serial the record names,
    and, after the first, the approvals of the policy recorded before it. A record that fails counts for nothing
    (it cannot lower anything, and it cannot be destroyed either); its label and why are returned to be reported.

    The floor counts every record signed by the token's signers, approved or not: a forged record of an older serial
    can make a genuine later one fail its approval check (against the forged one's approvers), and the floor must
    not drop with it. A floor raised by an officer-signed record can refuse tasks, never weaken them.
    """
    candidates, rejected, signed_serials = [], [], set()
    for label in objects.document_labels(SIGNED_POLICY_RECORD):
        for obj in objects.document_objects(SIGNED_POLICY_RECORD, label):
            try:
                record = SIGNED_POLICY_RECORD.decode(label, obj[Attribute.VALUE])
            except (MetadataCorrupt, p11_exc.PKCS11Error):
                rejected.append("%s (not a signed policy record)" % label)
                continue
            candidates.append((record["serial"], label, record))
    records = {}
    for serial, label, record in sorted(candidates, key=lambda item: item[0]):
        problem = _signature_problem(record, signers)
        if problem is None:
            signed_serials.add(serial)
            problem = _approval_problem(record, records, token)
        if problem is None and serial in records and records[serial]["sha256"] != record["sha256"]:
            problem = "a second record of serial %d" % serial
        if problem is not None:
            rejected.append("%s (%s)" % (label, problem))
        else:
            records.setdefault(serial, record)
    return records, signed_serials, rejected


def _signature_problem(record, signers):
    """Why ``record``'s document is not the one it names, signed by a policy signer of the token, or None."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy_signers import verify_in_token

    try:
        doc = parse_signed_policy(record["document"], option="the recorded policy")
    except InvalidOption:
        return "its document is not a signed policy"
    if doc["serial"] != record["serial"] or policy_digest(doc) != record["sha256"]:
        return "its document is not the serial and digest it names"
    signer = signers.get(doc["signer"])
    if signer is None or not verify_in_token(signer, policy_payload(doc), doc["signature"]):
        return "its document does not verify with a policy signer of the token"
    return None


def _approval_problem(record, earlier, token):
    """Why ``record`` (signed) lacks the approvals of a change that the ``earlier`` valid record before it
    requires, or None."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._approvals import count_recorded_approvals
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy

    before = [serial for serial in earlier if serial < record["serial"]]
    if not before:
        return None  # the first policy the token accepted: nothing was in force to approve it
    try:
        previous = load_policy(earlier[max(before)]["document"]["policy"])
    except (InvalidOption, PolicyRefused, ValueError, TypeError):
        return "the policy before it cannot be read"
    required = (previous.approvals_required or {}).get("policy_change", 0)
    if required and count_recorded_approvals(previous, "policy_change", record["document"].get("approvals"), token,
                                             [{"policy": record["sha256"]}]) < required:
        return "it lacks the %d approval(s) for a policy change that the policy before it requires" % required
    return None


def _check_change(doc, digest, records, token, context, objects, now, check_mode):
    """A policy other than the one the token recorded last: refuse a reused serial, check the approvals the policy in
    force requires for a change (``approvals_required.policy_change``, its approvers); the PolicyAcceptance to record,
    or None when this very policy is the one in force."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._approvals import ApprovalGate
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy

    same_serial = records.get(doc["serial"])
    if same_serial is not None:
        if same_serial["sha256"] == digest:
            return None
        raise _refuse("policy_rolled_back", (
            "signed_policy (environment %r, serial %d) is not the policy token %r accepted with that serial (sha256 "
            "%s): a serial is used once. Have the Security Officer sign the changed policy with a higher serial."
            % (doc["environment"], doc["serial"], token, same_serial["sha256"])))
    approval = None
    if records:
        in_force = records[max(records)]
        previous = load_policy(in_force["document"]["policy"])
        gate = ApprovalGate(previous, "policy_change", {"approvals": doc.get("approvals") or []}, context, token,
                            now)
        if gate.signed:
            approval = gate.check(objects, [{"policy": digest}], check_mode)
    return PolicyAcceptance(doc=doc, sha256=digest, approval=approval)


def check_policy(session, params, journal_pin, now, context=None, objects=None, check_mode=False):
    """The policy in force for a lifecycle task on the HSM token (``verify_policy`` with the token's journal pin);
    the policy to record once the task succeeded is left on ``journal_pin.policy_acceptance``."""
    return verify_policy(session, params, journal_pin, now, context, objects, check_mode)[0]


def verify_policy(session, params, journal_pin, now, context=None, objects=None, check_mode=False):
    """Check the task's policy against the policy signers in the token (before anything changes the token).

    ``params``: the module's parameters (``policy``, ``signed_policy``, ``token_label``); ``journal_pin``: the
    ``_journal_pin.JournalPin`` that accepted the task (its ``pin`` holds ``policy_serial`` and ``policy_signers``);
    ``now``: an aware datetime (``_keys.utc_now()``).

    Returns the policy in force: ``{"signed": False, "sha256"}`` on a token without a policy signer, else
    ``{"signed": True, "sha256", "serial", "signer", "signer_name", "environment", "not_after"}``; also kept on
    ``journal_pin.policy_in_force`` (and the token's signer fingerprints on ``journal_pin.policy_signers``) for the
    pin. Raises PolicyRefused (kinds ``PolicyRefused.KINDS``) otherwise.

    ``objects`` (the TokenObjects of the session) holds the signed policies the token recorded: the highest serial is
    the floor (with the pin's), and a policy other than the last recorded one is a change that the approvers of
    the policy in force must approve where it says so (ApprovalRefused). Returns ``(policy in force, acceptance)``:
    the PolicyAcceptance to ``record`` once the task succeeded, or None. ``journal_pin`` is None in a Security
    Officer session, which cannot read the (private) pin: the recorded policies are its floor.
    """
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy_signers import (
        find_policy_signers,
        verify_in_token,
    )

    token = params.get("token_label")
    signers = find_policy_signers(session)
    pin = getattr(journal_pin, "pin", None) or {}
    pinned = [str(fingerprint) for fingerprint in pin.get("policy_signers") or ()]
    present = {signer.fingerprint: signer for signer in signers}
    removed = [fingerprint for fingerprint in pinned if fingerprint not in present]
    if removed:
        raise _refuse("policy_signer_removed", (
            "Token %r had the policy signer(s) %s, which are no longer on it: a policy signer was deleted from the "
            "token, so its signed policy can no longer be checked. A policy signer cannot be removed: have the "
            "Security Officer restore the token from a backup that holds it, and find out who deleted it."
            % (token, ", ".join(removed))))
    if journal_pin is not None:
        journal_pin.policy_signers = sorted(present)
    if not signers:
        in_force = unsigned_in_force(params)
        if journal_pin is not None:
            journal_pin.policy_in_force = in_force
            journal_pin.policy_acceptance = None
        return in_force, None

    raw = params.get("signed_policy")
    how = ("Sign the policy with secops.keylifecycle.policy_sign and pass it as signed_policy (the inventory's "
           "key_policy_signed).")
    if raw is None or raw == {} or raw == "":
        raise _refuse("policy_unsigned", (
            "Token %r holds the policy signer(s) %s: every lifecycle task must bring the environment's signed "
            "policy, and this one has no signed_policy. %s" % (token, _names(signers), how)))
    try:
        doc = parse_signed_policy(raw)
    except InvalidOption as exc:
        raise _refuse("policy_unsigned", (
            "Token %r holds the policy signer(s) %s, and this task's policy is not a signed policy: %s %s"
            % (token, _names(signers), exc.message, how))) from None
    described = "signed_policy (environment %r, serial %d)" % (doc["environment"], doc["serial"])
    signer = present.get(doc["signer"])
    if signer is None:
        raise _refuse("policy_signature_invalid", (
            "%s is signed by %s%s, which is not a policy signer on token %r (its signers: %s). Have one of them "
            "sign the policy (secops.keylifecycle.policy_sign)."
            % (described, doc["signer"], " (%s)" % doc["signer_name"] if doc["signer_name"] else "", token,
               _names(signers))))
    if not verify_in_token(signer, policy_payload(doc), doc["signature"]):
        raise _refuse("policy_signature_invalid", (
            "The signature of %s does not verify with policy signer %s (%s) in token %r: the document was altered "
            "after it was signed, or the signature is not this signer's. Use the document exactly as policy_sign "
            "wrote it, or have the Security Officer sign the changed policy."
            % (described, signer.name, signer.fingerprint, token)))
    not_after = parse_not_after(doc["not_after"])
    if not_after < now:
        raise _refuse("policy_expired", (
            "%s, signed by %s, expired at %s (it is now %s). Have the Security Officer sign the policy again with "
            "a later not_after." % (described, signer.name, doc["not_after"], format_time(now))))
    records, signed_serials, rejected = policy_records(objects, present, token) if objects is not None else (
        {}, set(), [])
    floor = list(signed_serials) + ([pin["policy_serial"]] if _is_int(pin.get("policy_serial")) else [])
    accepted = max(floor) if floor else None
    if _is_int(accepted) and doc["serial"] < accepted:
        raise _refuse("policy_rolled_back", (
            "%s is older than the policy token %r already accepted (serial %d): an earlier policy was brought "
            "back. Use the current signed policy, or have the Security Officer sign a new one with a serial of at "
            "least %d." % (described, token, accepted, accepted)))
    in_force_environment = records[max(records)]["document"]["environment"] if records else None
    if in_force_environment is not None and doc["environment"] != in_force_environment:
        raise _refuse("policy_environment_changed", (
            "%s is the policy of environment %r, but the policy in force on token %r (serial %d) is environment "
            "%r's: a token belongs to one environment, and a policy (or the approvals of a change) signed for "
            "another one does not apply to it. Use this environment's signed policy (its inventory's "
            "key_policy_signed)." % (described, doc["environment"], token, max(records), in_force_environment)))
    given = policy_overrides(params)
    differences = policy_differences(given, doc["policy"])
    if differences:
        raise _refuse("policy_mismatch", (
            "The policy option differs from %s, signed by %s, in: %s. Run the task with the signed policy's "
            "settings (policy: \"{{ key_policy_signed.policy }}\"); a change of policy must be signed by the "
            "Security Officer (secops.keylifecycle.policy_sign)."
            % (described, signer.name, ", ".join(differences))), option="policy")
    digest = policy_digest(doc)
    acceptance = None
    if objects is not None:
        acceptance = _check_change(doc, digest, records, token, context, objects, now, check_mode)
    in_force = {"signed": True, "sha256": digest, "serial": doc["serial"], "signer": signer.fingerprint,
                "signer_name": signer.name, "environment": doc["environment"], "not_after": doc["not_after"]}
    if rejected:
        in_force["rejected_records"] = rejected
    if acceptance is not None and acceptance.approval is not None:
        in_force["approvals"] = acceptance.approval.as_dict()
    if journal_pin is not None:
        journal_pin.policy_in_force = in_force
        journal_pin.policy_acceptance = acceptance
    return in_force, acceptance
