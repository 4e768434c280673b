# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The work of approval_sign, on the controller: an approver signs one approval request.

PRIVATE: not part of the public interface. docs/access-control.md ("Signed approvals") explains the model; the
approval's format and its signed bytes have one home, ``module_utils/_approvals.py`` (``make_request``,
``approval_payload``, ``parse_approval``, ``verify_signature``).

The approver's private key is a passphrase-protected PEM or an EC P-256 key object in the approver's own PKCS#11
token: the two key backends of policy_sign (``_policy_signing.PemSigner`` / ``TokenSigner``), given
``approval_payload`` as the signed bytes. The signature is checked with the approver's public key before the
approval is returned or written, so the ``approver`` fingerprint in the document is the key that signed it.
Nothing here touches the HSM token the request is about, and nothing is journaled: the approval takes effect, and
is journaled, when a lifecycle task brings it to that token (``_approvals.ApprovalGate``).

What a request approves depends on its action (``_approvals.canonical_keys``): key versions, recipients' transport
keys, nothing (a journal rollover), or one new signed policy (``policy_change``: the SHA-256 of its payload, on
every token of the environment by default). For a policy change the approver gives the new document
(``new_policy``) and the policy in force (``signed_policy``, whose approvers decide); the words before signing say
what the new policy changes (``read_new_policy``, ``request_text``).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime

from ansible_collections.secops.keylifecycle.plugins.module_utils._approvals import (
    ANY_TOKEN,
    APPROVER_NAME_RE,
    FORMAT,
    NONCE_RE,
    TOKEN_RE,
    approval_payload,
    canonical_keys,
    describe_request,
    describe_subject,
    make_request,
    parse_approval,
    verify_signature,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    InvalidOption,
    KeyLifecycleError,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import format_time, utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import (
    APPROVAL_ACTIONS,
    BASELINE,
    CHANGE_REF_RE,
    format_duration,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import (
    parse_signed_policy,
    policy_differences,
    policy_digest,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import spki_fingerprint
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._policy_signing import (
    read_signed_policy,
    require_crypto,
    resolve_not_after,
)

#: how long an approval is valid when the approver does not say (the policy allows at most 7d, or less)
DEFAULT_VALIDITY = "24h"
#: the random nonce approval_sign draws when none is given: 16 bytes, 32 hex digits
NONCE_BYTES = 16


# ---- the request ---------------------------------------------------------------------------------------------

def check_approver_name(name):
    if not isinstance(name, str) or not APPROVER_NAME_RE.match(name):
        raise InvalidOption("approver_name %r is not a person's name (1 to 128 letters, digits and . _ @ + -): give "
                            "your name as the signed policy lists it under policy.approvers." % (name,),
                            option="approver_name")


def resolve_nonce(nonce):
    """``nonce`` as given (32 to 64 lowercase hex digits), or a new random one."""
    if nonce is None or nonce == "":
        return secrets.token_hex(NONCE_BYTES)
    if not isinstance(nonce, str) or not NONCE_RE.match(nonce):
        raise InvalidOption("nonce must be 32 to 64 lowercase hex digits (a random number used once; leave it out "
                            "and approval_sign draws one).", option="nonce")
    return nonce


def resolve_validity(value, now, max_validity):
    """``not_after`` (an ISO time or a duration from now; default 24h) as ISO 8601 UTC, in the future and at most
    ``max_validity`` seconds from ``now`` (the HSM host refuses an approval valid for longer)."""
    if value is None or value == "":
        value = DEFAULT_VALIDITY
    text = str(value).strip()
    if text[:1].isdigit() and ("-" in text or "T" in text):  # an ISO time: refuse one in the past in our words
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            moment = None  # resolve_not_after says what is wrong with it
        if moment is not None and moment.tzinfo is not None and moment <= now:
            raise InvalidOption("not_after %s is not in the future (it is now %s): an approval that has expired is "
                                "refused by every task. Give a later time, or a duration such as 24h."
                                % (format_time(moment), format_time(now)), option="not_after")
    not_after = resolve_not_after(value, now)
    moment = datetime.fromisoformat(not_after)
    if (moment - now).total_seconds() > max_validity:
        raise InvalidOption(
            "not_after %s lies further ahead than policy.approval_max_validity (%s) from now (%s): the HSM host "
            "would refuse the approval. Give a nearer not_after (the default is %s)."
            % (not_after, format_duration(max_validity), format_time(now), DEFAULT_VALIDITY), option="not_after")
    return not_after


#: what ``keys`` lists for each action, in the words of the error that asks for it
_KEYS_WANTED = {
    "destroy": "each key version the task acts on ({name, version})",
    "compromise_rotate": "each key version the task acts on ({name, version})",
    "retire": "each key version the task acts on ({name, version})",
    "recipient_approve": "each recipient's transport key ({recipient, fingerprint: sha256:<hex of its SPKI>})",
    "recipient_revoke": "each recipient's transport key ({recipient, fingerprint: sha256:<hex of its SPKI>})",
    "policy_change": "the new policy: give new_policy (the signed document), or keys [{policy: <its sha256>}]",
}


def _given_keys(keys):
    """``keys`` as the task gives them, without the suboptions left unset (AnsibleModule fills them with None)."""
    if keys is None:
        return []
    if not isinstance(keys, (list, tuple)):
        return keys  # canonical_keys says what is wrong with it
    return [{name: value for name, value in entry.items() if value is not None} if isinstance(entry, dict)
            else entry for entry in keys]


@dataclass
class NewPolicy:
    """The new signed policy a policy_change approval puts in force (option ``new_policy``)."""

    sha256: str  # _signed_policy.policy_digest: what the request's keys name
    environment: str
    serial: int
    signer_name: str
    changes: list  # settings that differ from the policy in force; None when that policy is not given
    #: what the new policy itself says about approvals, in its own values: the changes above are computed against
    #: the signed_policy option as given, whose signature only the HSM host checks
    approvals_required: dict = None
    approvers: list = None

    def as_dict(self):
        return {"sha256": self.sha256, "environment": self.environment, "serial": self.serial,
                "signer_name": self.signer_name, "changes": self.changes,
                "approvals_required": self.approvals_required, "approvers": self.approvers}

    def words(self):
        if self.changes is None:
            changes = "changes not compared: no signed_policy in force given"
        else:
            changes = "changes from the signed_policy given (its signature is checked on the HSM host, not here): " \
                "%s" % (", ".join(self.changes) or "none")
        signer = self.signer_name or "an unnamed signer"
        counts = sorted((self.approvals_required or {}).items())
        required = ", ".join("%s %d" % (action, count) for action, count in counts)
        if required:
            approvals = "it requires signed approvals for %s, from %s" % (required,
                                                                          ", ".join(self.approvers or ()) or "nobody")
        else:
            approvals = "it requires no signed approval for any action"
        return "environment %s, serial %d, signed by %s; %s; %s" % (self.environment, self.serial, signer,
                                                                    approvals, changes)


def read_new_policy(new_policy, action, in_force=None):
    """The new policy of a policy_change (option ``new_policy``, as policy_sign wrote it), or None when not given.

    ``in_force``: the signed policy in force (option ``signed_policy``), when given: the new policy must be for
    the same environment and not have a lower serial (a token refuses a rolled-back policy), and the settings that
    differ are named. The new policy's signature is not checked here (the HSM host checks it against its signer).
    """
    if new_policy is None:
        return None
    if action != "policy_change":
        raise InvalidOption("new_policy is only for action policy_change (the approval of a new signed policy), "
                            "not %s." % action, option="new_policy")
    doc, policy = read_signed_policy(new_policy, "new_policy")
    changes = None
    if in_force is not None:
        current = parse_signed_policy(in_force, option="signed_policy")
        if current["environment"] != doc["environment"]:
            raise InvalidOption("new_policy is the policy of environment %s, but signed_policy (the policy in "
                                "force, whose approvers approve the change) is that of environment %s."
                                % (doc["environment"], current["environment"]), option="new_policy")
        if doc["serial"] < current["serial"]:
            raise InvalidOption("new_policy has serial %d, lower than the policy in force (serial %d): every token "
                                "refuses a rolled-back policy. Ask the policy signer for a policy with a higher "
                                "serial." % (doc["serial"], current["serial"]), option="new_policy")
        changes = policy_differences(doc["policy"], current["policy"])
    return NewPolicy(sha256=policy_digest(doc), environment=doc["environment"], serial=doc["serial"],
                     signer_name=doc.get("signer_name") or "", changes=changes,
                     approvals_required={str(k): int(v) for k, v in (policy.approvals_required or {}).items()},
                     approvers=sorted(policy.approvers or {}))


def build_request(action, token, keys, change_ref, not_after, nonce, now=None, max_validity=None, new_policy=None):
    """The canonical approval request (``_approvals.make_request``) from approval_sign's options; InvalidOption
    naming the option on bad input. ``max_validity``: the policy's approval_max_validity (default the baseline).
    ``new_policy``: the NewPolicy of a policy_change (``read_new_policy``); it names what ``keys`` approves.
    ``token`` may be None for policy_change: every token of the environment (``_approvals.ANY_TOKEN``)."""
    now = now or utc_now()
    if action not in APPROVAL_ACTIONS:
        raise InvalidOption("action %r is not an action that takes approvals; the actions are %s."
                            % (action, ", ".join(APPROVAL_ACTIONS)), option="action")
    if token is None and action == "policy_change":
        token = ANY_TOKEN
    if token is None:
        raise InvalidOption("token is required for %s: give the label of the HSM token the action runs on."
                            % action, option="token")
    if token == ANY_TOKEN and action != "policy_change":
        raise InvalidOption("token %r (every token of the environment) is only for policy_change: give the label of "
                            "the HSM token the %s runs on." % (ANY_TOKEN, action.replace("_", " ")), option="token")
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        every = ", or %r for every token of the environment" % ANY_TOKEN if action == "policy_change" else ""
        raise InvalidOption("token %r is not a token label (1 to 32 printable characters): give the label of the "
                            "HSM token the action runs on%s." % (token, every), option="token")
    if not isinstance(change_ref, str) or not CHANGE_REF_RE.match(change_ref):
        raise InvalidOption("change_ref %r is not a change or ticket reference (letters, digits and . _ : / # -, up "
                            "to 64 characters)." % (change_ref,), option="change_ref")
    given = _given_keys(keys)
    if new_policy is not None:
        wanted = [{"policy": new_policy.sha256}]
        if given and canonical_keys(given, "keys", action) != wanted:
            raise InvalidOption("keys %s do not name new_policy, whose SHA-256 is %s: leave keys out (new_policy "
                                "names the policy approved) or give keys [{policy: %s}]."
                                % (given, new_policy.sha256, new_policy.sha256), option="keys")
        given = wanted
    if not given and action != "journal_rollover":
        raise InvalidOption("keys is required for %s: list %s." % (action, _KEYS_WANTED[action]), option="keys")
    keys = canonical_keys(given, "keys", action)
    if max_validity is None:
        max_validity = BASELINE.approval_max_validity
    not_after = resolve_validity(not_after, now, max_validity)
    nonce = resolve_nonce(nonce)
    return make_request(action, token, keys, change_ref, not_after, nonce, option="request")


def request_text(approver_name, request, new_policy=None):
    """The request in words, as the approver is about to sign it; for a policy change with ``new_policy`` (a
    NewPolicy) also the new policy's environment, serial, signer and the settings it changes."""
    text = describe_request(request)
    if new_policy is not None:
        subject = describe_subject({"policy": new_policy.sha256})
        text = text.replace(subject, "%s (%s)" % (subject, new_policy.words()), 1)
    return "%s approves: %s" % (approver_name, text)


# ---- the signed policy's view of the approver ----------------------------------------------------------------

@dataclass
class PolicyApprover:
    """What the signed policy (option ``signed_policy``) says about the approver."""

    fingerprint: str  # sha256:<hex> of policy.approvers[approver_name]
    public_key: object
    max_validity: int  # policy.approval_max_validity, seconds
    environment: str
    serial: int


def approver_in_policy(signed_policy, approver_name):
    """The approver's key as the signed policy lists it; InvalidOption when the policy does not list them.

    The policy's signature is not checked here (the approver has no trusted copy of the signer's key); the HSM
    host checks it. This catches a wrong key or name before the approval travels.
    """
    from cryptography.hazmat.primitives import serialization

    doc, policy = read_signed_policy(signed_policy, "signed_policy")
    approvers = policy.approvers or {}
    where = "the signed policy of environment %s, serial %d" % (doc["environment"], doc["serial"])
    if approver_name not in approvers:
        raise InvalidOption("approver_name %s is not an approver in %s (policy.approvers lists %s): an approval "
                            "by %s would be refused. Check the name, or ask the Security Officer to list you."
                            % (approver_name, where, ", ".join(sorted(approvers)) or "nobody", approver_name),
                            option="approver_name")
    public_key = serialization.load_pem_public_key(approvers[approver_name].encode("ascii"))
    return PolicyApprover(fingerprint=spki_fingerprint(public_key), public_key=public_key,
                          max_validity=policy.approval_max_validity, environment=doc["environment"],
                          serial=doc["serial"])


# ---- the document and its file -------------------------------------------------------------------------------

def unsigned_approval(request, fingerprint, approver_name):
    """The approval before its signature, in plain JSON types (task arguments may be str subclasses)."""
    return json.loads(json.dumps({"format": FORMAT, "request": request, "approver": fingerprint,
                                  "approver_name": approver_name}))


def render(doc):
    """The JSON file approval_sign writes (what an operator reads with lookup('file') | from_json)."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def read_existing(dest):
    """The approval ``dest`` holds, or None (absent, unreadable or not an approval)."""
    try:
        with open(dest, "r", encoding="utf-8") as handle:
            text = handle.read()
        return parse_approval(text, option="dest")
    except (OSError, UnicodeError, KeyLifecycleError):
        return None


def same_request(existing, request, approver_name):
    """Whether ``existing`` (parsed, or None) approves exactly ``request`` (nonce included) as ``approver_name``."""
    return existing is not None and existing["request"] == request and existing["approver_name"] == approver_name


def planned_text(request, approver_name, fingerprint=None):
    """The file's content as check mode shows it: the approval as it would be, without a signature."""
    doc = unsigned_approval(request, fingerprint or "sha256:<the signing key's fingerprint>", approver_name)
    doc["signature"] = "<made when run without check mode>"
    return render(doc)


# ---- the whole step ------------------------------------------------------------------------------------------

@dataclass
class SignedApproval:
    approval: dict
    text: str
    unchanged: bool


def _key_option(signer):
    return "key_label" if hasattr(signer, "key_label") else "private_key_path"


def sign_approval(request, approver_name, signer, expected=None, existing=None):
    """Sign ``request`` as ``approver_name`` with ``signer`` (a ``_policy_signing`` PemSigner or TokenSigner), check
    the signature; returns a SignedApproval (nothing written here).

    ``expected``: the PolicyApprover from ``approver_in_policy``; the signing key must be that approver's key (it
    is refused before it signs). ``existing``: the approval already at ``dest`` (``read_existing``); when it is
    for the very same request, by the same name and key, and verifies, it is kept (``unchanged``): ECDSA
    signatures differ at each signing, so a re-run would otherwise always rewrite the file.
    """
    require_crypto()
    check_approver_name(approver_name)

    def make_document(fingerprint):
        if expected is not None and fingerprint != expected.fingerprint:
            raise InvalidOption(
                "The key of %s (%s) is not %s's approver key in the signed policy of environment %s, serial %d "
                "(%s): an approval signed with it would be refused on the HSM host. Sign with the key the policy "
                "lists for %s." % (_key_option(signer), fingerprint, approver_name, expected.environment,
                                   expected.serial, expected.fingerprint, approver_name), option=_key_option(signer))
        return unsigned_approval(request, fingerprint, approver_name)

    doc, public_key = signer.sign(make_document, payload=approval_payload)
    if not verify_signature(public_key, doc):
        raise InvalidOption("The signature the key made does not verify with its public key: the private and public "
                            "key objects of key_label %r do not belong together." % getattr(signer, "key_label", ""),
                            option="key_label")
    parse_approval(doc, option="approval")  # the document is what the HSM host reads
    if same_request(existing, request, approver_name) and existing["approver"] == doc["approver"] \
            and verify_signature(public_key, existing):
        return SignedApproval(approval=existing, text=render(existing), unchanged=True)
    return SignedApproval(approval=doc, text=render(doc), unchanged=False)
