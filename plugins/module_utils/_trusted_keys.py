# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Trusted transport keys: recipients' transport public keys the Security Officer approved in the HSM token.

PRIVATE: not part of the public interface. docs/distribution.md explains the model.

A distributable key is generated with CKA_WRAP_WITH_TRUSTED, so the token wraps it only under a key whose
CKA_TRUSTED is true, and only a Security Officer session (the SO PIN) can create such a key. A *trusted transport
key* is an RSA public key object:

* CKO_PUBLIC_KEY, CKA_TOKEN true, CKA_PRIVATE false (an SO session sees only public objects);
* CKA_TRUSTED true, CKA_WRAP true; CKA_ENCRYPT, CKA_VERIFY, CKA_VERIFY_RECOVER false;
* CKA_MODIFIABLE false where the token allows it (tried again without it only if the token refuses it);
  CKA_DESTROYABLE is left true: false would stop the officer's revocation too;
* CKA_ID: the first 16 bytes of the sha256 of its DER SubjectPublicKeyInfo;
* CKA_LABEL ``trusted-transport:<recipient>@<host>:<fingerprint>``, or
  ``trusted-replica:<replica>@<host>:<fingerprint>``
  for a replica token's transport key (kind ``replica``, docs/replication.md).

A replica also gets a *replica key-encryption key* (KEK): the Security Officer generates it in the same session, an
AES-256 secret key with CKA_TRUSTED, CKA_WRAP true and every other usage false (CKA_UNWRAP false: nothing can be
unwrapped under it in this token), CKA_EXTRACTABLE and CKA_WRAP_WITH_TRUSTED true (it leaves the token only under a
trusted key: the replica's transport key), CKA_SENSITIVE true, CKA_MODIFIABLE false, public (an SO session creates
public objects only), with the transport key's CKA_ID and the label ``replica-kek:<replica>@<host>:<fingerprint>``.
RSA and EC private keys of backup keys are wrapped under it (CKM_AES_KEY_WRAP_PAD, RFC 5649), the KEK itself under
the replica's transport key (CKM_RSA_PKCS_OAEP): a user session can make neither a trusted key nor a KEK of its own,
so the token lets a backup key out only to tokens the officer approved.

The fingerprint that counts is always computed from the key (modulus, exponent), never read from the label; a
label that does not name the key's own fingerprint ties the key to no recipient.

``approve_recipients`` is the work of recipient_approve (in one Security Officer session; no lease, no checkpoint:
the SO cannot sign, the next user task anchors the journal head that chains these records).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ansible_collections.secops.keylifecycle.plugins.module_utils._approval import validate_approval_options
from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import (
    Attribute,
    KeyType,
    ObjectClass,
    p11_exc,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    CapabilityMissing,
    InvalidOption,
    KeyLifecycleError,
    PolicyViolation,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import translate_pkcs11_error
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import NAME_RE
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    find_objects,
    public_key_attributes,
    rsa_public_key,
    spki_fingerprint,
    trusted_key_id,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import (
    FINGERPRINT_RE,
    MIN_TRANSPORT_RSA_BITS,
    check_transport_strength,
    load_transport_public_key,
)


TRUSTED_TRANSPORT_PREFIX = "trusted-transport"
#: the label prefix of each kind of trusted transport key
TRUSTED_PREFIXES = {"recipient": TRUSTED_TRANSPORT_PREFIX, "replica": "trusted-replica"}
KINDS = tuple(TRUSTED_PREFIXES)
REPLICA_KEK_PREFIX = "replica-kek"
#: the longest label written (audit field key.trusted_key_label allows 256 characters)
MAX_LABEL_LENGTH = 256
#: a recipient host as recorded (audit field key.recipient_host): printable, no spaces
_HOST_RE = re.compile(r"^[\x21-\x7e]{1,128}\Z")
_LABEL_RE = re.compile(r"^(?P<prefix>%s):(?P<recipient>[A-Za-z0-9][A-Za-z0-9._-]{0,62})@(?P<host>[\x21-\x7e]{1,128})"
                       r":(?P<fingerprint>sha256:[0-9a-f]{64})\Z" % "|".join(TRUSTED_PREFIXES.values()))
_KIND_OF_PREFIX = {prefix: kind for kind, prefix in TRUSTED_PREFIXES.items()}
#: longest key.label an audit event carries (the label also goes to key.trusted_key_label, up to 256)
_EVENT_LABEL_MAX = 128


def trusted_transport_label(recipient, host, fingerprint, kind="recipient"):
    """``trusted-transport:<recipient>@<host>:<fingerprint>`` (``trusted-replica:`` for a replica); refuses a name,
    host or fingerprint it cannot hold."""
    if not isinstance(recipient, str) or not NAME_RE.match(recipient):
        raise InvalidOption("recipient name %r must be 1-63 letters, digits, '.', '_' or '-', starting with a letter "
                            "or digit." % (recipient,), option="recipients")
    if not isinstance(host, str) or not _HOST_RE.match(host):
        raise InvalidOption("recipient host %r must be 1-128 printable characters without spaces." % (host,),
                            option="recipients")
    if not isinstance(fingerprint, str) or not FINGERPRINT_RE.match(fingerprint):
        raise InvalidOption("fingerprint %r must be sha256: followed by 64 lower-case hex digits." % (fingerprint,),
                            option="recipients")
    return "%s:%s@%s:%s" % (TRUSTED_PREFIXES[kind], recipient, host, fingerprint)


def replica_kek_label(trusted_label):
    """The replica KEK's label for the replica's trusted transport key label."""
    return REPLICA_KEK_PREFIX + trusted_label[len(TRUSTED_PREFIXES["replica"]):]


def _parse_label(label, fingerprint):
    """(recipient, host, kind) named by one of our labels whose fingerprint is the key's own, else Nones."""
    match = _LABEL_RE.match(label or "")
    if match is None or match.group("fingerprint") != fingerprint:
        return None, None, None
    return match.group("recipient"), match.group("host"), _KIND_OF_PREFIX[match.group("prefix")]


@dataclass(frozen=True)
class TrustedTransportKey:
    """One trusted wrapping key on the token (CKA_TRUSTED and CKA_WRAP true)."""

    label: str
    recipient: str | None
    host: str | None
    fingerprint: str
    key_id: str
    obj: object
    modifiable: bool
    #: ``recipient`` or ``replica`` (from the label); None when the label names no recipient
    kind: str | None = "recipient"

    @property
    def name(self):
        """``recipient@host`` or None when the label names no recipient."""
        return "%s@%s" % (self.recipient, self.host) if self.recipient else None

    def record(self):
        """What recipient_approve returns about it (no key material)."""
        return {"recipient": self.recipient, "host": self.host, "fingerprint": self.fingerprint,
                "label": self.label, "kind": self.kind}


class TrustedKeysUnsupported(list):
    """The (empty) trusted keys of a token that does not implement CKA_TRUSTED (CKR_ATTRIBUTE_TYPE_INVALID).

    A list, so readers (key_info, the report) see no key; ``key_distribute`` tells it apart to name the missing
    capability when the policy requires trusted wrapping.
    """


def find_trusted_transport_keys(session):
    """Every RSA PUBLIC_KEY with CKA_TRUSTED and CKA_WRAP true on the token, as ``TrustedTransportKey``.

    One C_FindObjects; works in a user or a Security Officer session (the keys are public objects). The fingerprint
    is computed from the key; recipient and host come from our label when it names that fingerprint, else None.
    A token that does not know CKA_TRUSTED (CKR_ATTRIBUTE_TYPE_INVALID) holds no trusted key: the list is empty, a
    ``TrustedKeysUnsupported``.
    """
    template = {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.RSA, Attribute.TRUSTED: True,
                Attribute.WRAP: True}
    try:
        objects = find_objects(session, template)
    except p11_exc.AttributeTypeInvalid:  # a token without CKA_TRUSTED may refuse the search template itself
        return TrustedKeysUnsupported()
    except p11_exc.PKCS11Error as exc:
        raise translate_pkcs11_error(exc, "C_FindObjects(CKA_TRUSTED)") from None
    keys = []
    for obj in objects:
        try:
            values = obj.get_attributes([Attribute.LABEL, Attribute.ID, Attribute.MODIFIABLE])
            public_key = rsa_public_key(obj)
        except p11_exc.ObjectHandleInvalid:  # destroyed by another session since the search
            continue
        except p11_exc.PKCS11Error as exc:
            raise translate_pkcs11_error(exc, "C_GetAttributeValue of a trusted key") from None
        modifiable = bool(values[Attribute.MODIFIABLE])
        fingerprint = spki_fingerprint(public_key)
        label = values[Attribute.LABEL] or ""
        recipient, host, kind = _parse_label(label, fingerprint)
        keys.append(TrustedTransportKey(label=label, recipient=recipient, host=host, fingerprint=fingerprint,
                                        key_id=bytes(values[Attribute.ID] or b"").hex(), obj=obj,
                                        modifiable=modifiable, kind=kind))
    return keys


def find_replica_kek(session, trusted_key):
    """The replica KEK that goes with a replica's trusted transport key (same CKA_ID, our label, CKA_TRUSTED and
    CKA_WRAP true, CKA_UNWRAP false), or None."""
    template = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES, Attribute.TRUSTED: True,
                Attribute.WRAP: True, Attribute.UNWRAP: False, Attribute.ID: bytes.fromhex(trusted_key.key_id),
                Attribute.LABEL: replica_kek_label(trusted_key.label)}
    try:
        found = find_objects(session, template)
    except p11_exc.AttributeTypeInvalid:
        return None
    except p11_exc.PKCS11Error as exc:
        raise translate_pkcs11_error(exc, "C_FindObjects(replica KEK)") from None
    return found[0] if found else None


def _kek_template():
    """The replica KEK: trusted, wrap-only, sensitive, extractable only under trusted keys, not modifiable."""
    return {Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.TRUSTED: True, Attribute.WRAP: True,
            Attribute.UNWRAP: False, Attribute.ENCRYPT: False, Attribute.DECRYPT: False, Attribute.SIGN: False,
            Attribute.VERIFY: False, Attribute.DERIVE: False, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True,
            Attribute.WRAP_WITH_TRUSTED: True, Attribute.MODIFIABLE: False}


def ensure_replica_kek(so_session, trusted_key):
    """Generate the replica KEK of a replica's trusted transport key in the SO session, unless it exists."""
    kek = find_replica_kek(so_session, trusted_key)
    if kek is not None:
        return kek, False
    try:
        kek = so_session.generate_key(KeyType.AES, 256, id=bytes.fromhex(trusted_key.key_id),
                                      label=replica_kek_label(trusted_key.label), store=True,
                                      template=_kek_template())
    except (p11_exc.AttributeReadOnly, p11_exc.AttributeTypeInvalid, p11_exc.TemplateInconsistent,
            p11_exc.AttributeValueInvalid) as exc:
        raise CapabilityMissing(
            "The token refused the replica key-encryption key %r (%s): a Security Officer session must be able to "
            "generate a public, trusted, wrap-only AES key that is extractable only under trusted keys. Without it "
            "RSA and EC keys cannot be copied to replica %s; use a token that allows it."
            % (replica_kek_label(trusted_key.label), type(exc).__name__, trusted_key.name),
            option="recipients") from None
    except p11_exc.PKCS11Error as exc:
        raise translate_pkcs11_error(exc, "C_GenerateKey of the replica KEK") from None
    return kek, True


def _trusted_template(public_key, label, modifiable):
    template = {
        **public_key_attributes(public_key),
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.TRUSTED: True,
        Attribute.WRAP: True,
        Attribute.ENCRYPT: False,
        Attribute.VERIFY: False,
        Attribute.VERIFY_RECOVER: False,
        Attribute.ID: trusted_key_id(public_key),
        Attribute.LABEL: label,
    }
    if not modifiable:
        template[Attribute.MODIFIABLE] = False
    return template


def approve_transport_key(so_session, recipient, host, public_key, min_rsa_bits=MIN_TRANSPORT_RSA_BITS,
                          existing=None, kind="recipient"):
    """Create the trusted transport key of ``recipient`` on ``host`` (a ``cryptography`` RSA public key); for a
    replica (``kind``) its KEK too (``ensure_replica_kek``).

    Must run in a Security Officer session: a user session is refused by the token (CKR_ATTRIBUTE_READ_ONLY on
    CKA_TRUSTED), reported here as a PolicyViolation. Weak keys (below RSA 3072 or ``min_rsa_bits``) and EC keys
    are refused before the token is touched. Idempotent: the key already approved for this recipient and host is
    returned as it is. ``existing``: the trusted keys already found in this session (saves a C_FindObjects).
    """
    where = "recipient %r on %s" % (recipient, host)
    check_transport_strength(public_key, where, min_rsa_bits)
    fingerprint = spki_fingerprint(public_key)
    label = trusted_transport_label(recipient, host, fingerprint, kind)
    for key in find_trusted_transport_keys(so_session) if existing is None else existing:
        if key.fingerprint == fingerprint and key.label == label:
            if kind == "replica":
                ensure_replica_kek(so_session, key)
            return key
    obj = None
    for modifiable in (False, True):  # CKA_MODIFIABLE false first; without it only if the token refuses it
        try:
            obj = so_session.create_object(_trusted_template(public_key, label, modifiable))
            break
        except (p11_exc.AttributeReadOnly, p11_exc.AttributeValueInvalid, p11_exc.TemplateInconsistent,
                p11_exc.AttributeTypeInvalid) as exc:
            if modifiable:
                raise _approval_refused(exc, label) from None
        except p11_exc.PKCS11Error as exc:
            raise translate_pkcs11_error(exc, "C_CreateObject of trusted key %r" % label) from None
    try:
        is_modifiable = bool(obj[Attribute.MODIFIABLE])
    except p11_exc.PKCS11Error:
        is_modifiable = True
    key = TrustedTransportKey(label=label, recipient=recipient, host=host, fingerprint=fingerprint,
                              key_id=trusted_key_id(public_key).hex(), obj=obj, modifiable=is_modifiable, kind=kind)
    if kind == "replica":
        ensure_replica_kek(so_session, key)
    return key


def _approval_refused(exc, label):
    if isinstance(exc, p11_exc.AttributeReadOnly):
        return PolicyViolation(
            "The token refused to create the trusted transport key %r (CKR_ATTRIBUTE_READ_ONLY on CKA_TRUSTED): "
            "only a Security Officer session can approve a transport key. Run recipient_approve with the SO PIN "
            "(so_pin_file or so_pin)." % label, option="so_pin")
    if isinstance(exc, p11_exc.AttributeTypeInvalid):
        return CapabilityMissing(
            "The token does not support CKA_TRUSTED (CKR_ATTRIBUTE_TYPE_INVALID) while creating %r: it cannot "
            "restrict wrapping to approved keys (trusted wrapping). Use a token that implements CKA_TRUSTED and "
            "CKA_WRAP_WITH_TRUSTED (see policy.require_trusted_wrapping)." % label, option="recipients")
    return translate_pkcs11_error(exc, "C_CreateObject of trusted key %r" % label)


def revoke_transport_key(so_session, trusted_key):
    """Destroy one trusted transport key (C_DestroyObject), and a replica's KEK first; one already gone counts as
    revoked."""
    kek = find_replica_kek(so_session, trusted_key) if trusted_key.kind == "replica" else None
    try:
        if kek is not None:
            kek.destroy()
        trusted_key.obj.destroy()
    except p11_exc.ObjectHandleInvalid:
        return
    except p11_exc.PKCS11Error as exc:
        raise translate_pkcs11_error(exc, "C_DestroyObject of trusted key %r" % trusted_key.label) from None


# ---- recipient_approve ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Approval:
    """One entry of recipient_approve's ``recipients``, checked."""

    recipient: str
    host: str
    public_key: object = None
    fingerprint: str | None = None
    kind: str = "recipient"

    @property
    def name(self):
        return "%s@%s" % (self.recipient, self.host)


@dataclass
class ApprovalResult:
    changed: bool
    audit_events: list
    diff: dict
    approved: list
    approval: object = None  # the _approvals.ApprovalOutcome of the signed approvals, where the policy requires them


def parse_approvals(raw_recipients, state, policy):
    """Check recipient_approve's ``recipients`` before the token is opened.

    ``present``: each entry needs ``public_key_pem`` (RSA 3072 or more, and at least ``policy.min_rsa_bits``);
    a given ``fingerprint`` must match it, and with ``policy.require_transport_key_pin`` it is required.
    ``absent``: ``public_key_pem`` or ``fingerprint`` selects one key; neither revokes every key of that
    recipient and host. Each recipient and host is listed once.
    """
    if not isinstance(raw_recipients, list) or not raw_recipients:
        raise InvalidOption("recipients must list at least one recipient ({name, host, public_key_pem, "
                            "fingerprint}).", option="recipients")
    approvals, seen = [], set()
    for index, raw in enumerate(raw_recipients):
        if not isinstance(raw, dict):
            raise InvalidOption("recipients[%d] must be a dict with name, host, public_key_pem and fingerprint."
                                % index, option="recipients")
        name = raw.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InvalidOption("recipients[%d].name %r must be 1-63 letters, digits, '.', '_' or '-', starting "
                                "with a letter or digit." % (index, name), option="recipients")
        host = str(raw.get("host") or name)
        if not _HOST_RE.match(host):
            raise InvalidOption("recipients[%d].host %r must be 1-128 printable characters without spaces."
                                % (index, host), option="recipients")
        if (name, host) in seen:
            raise InvalidOption("recipient %r on %s is listed twice in recipients; list it once." % (name, host),
                                option="recipients")
        seen.add((name, host))
        where = "recipient %r on %s" % (name, host)
        kind = raw.get("kind") or "recipient"
        if kind not in KINDS:
            raise InvalidOption("%s: kind %r must be one of %s." % (where, kind, ", ".join(KINDS)),
                                option="recipients")
        pin = raw.get("fingerprint") or None
        if pin is not None and not (isinstance(pin, str) and FINGERPRINT_RE.match(pin.lower())):
            raise InvalidOption("%s: fingerprint %r must be sha256: followed by 64 hex digits, as recipient_enroll "
                                "reports it (transport_key.fingerprint)." % (where, pin), option="recipients")
        pin = pin.lower() if pin else None
        pem = raw.get("public_key_pem") or None
        if state == "present":
            if pem is None:
                raise InvalidOption("%s: public_key_pem is required to approve (transport_key.public_key_pem from "
                                    "recipient_enroll)." % where, option="recipients")
            if pin is None and policy.require_transport_key_pin:
                raise PolicyViolation(
                    "%s has no fingerprint, and policy.require_transport_key_pin is on. Confirm the fingerprint "
                    "recipient_enroll reported with the recipient's owner and give it as recipients[].fingerprint."
                    % where, option="recipients")
        public_key = None
        if pem is not None:
            try:
                public_key, fingerprint = load_transport_public_key(pem, where, pin, policy.min_rsa_bits)
            except KeyLifecycleError as exc:  # a weak key: the option of this module is recipients
                exc.option = "recipients"
                raise
            pin = fingerprint
        approvals.append(Approval(recipient=name, host=host, public_key=public_key, fingerprint=pin, kind=kind))
    return approvals


def _diff_view(keys):
    return {"approved": sorted("%s %s" % (key.name or key.label, key.fingerprint) for key in keys)}


def _event(action, key, token_label, context, approved_by, change_ref, approval=None, reason=None):
    section = {"recipient": key.recipient, "recipient_host": key.host, "transport_key_fingerprint": key.fingerprint,
               "trusted_key_label": key.label, "id": key.key_id, "type": "rsa", "token": token_label,
               "trusted_kind": key.kind or "recipient"}
    if len(key.label) <= _EVENT_LABEL_MAX:
        section["label"] = key.label
    extra = {"approved_by": approved_by}
    if change_ref:
        extra["change_ref"] = change_ref
    if approval is not None and approval.accepted:  # the signed approvals of the other people (approved_by: officer)
        extra["approvals"] = [dict(entry) for entry in approval.accepted]
    return build_event(action, "success", context, key=section, extra=extra, reason=reason)


#: the reason of the ``recipient-approve`` event of a replica KEK generated again for an approved replica
KEK_RECREATED = "replica KEK was missing: generated again"


def approve_recipients(so_session, token_label, approvals, state, context, approved_by=None, change_ref=None,
                       check_mode=False, gate=None):
    """Approve (``present``) or revoke (``absent``) the transport keys of ``approvals`` in one SO session.

    Returns ``ApprovalResult``: one ``recipient-approve`` / ``recipient-revoke`` event per key created or
    destroyed (officer in keylifecycle.approved_by), the diff of approved keys, and the keys approved afterwards.
    """
    validate_approval_options(approved_by, change_ref)
    officer = approved_by or context.operator
    before = find_trusted_transport_keys(so_session)
    after = list(before)
    events, keks = [], []
    outcome = None
    if gate is not None:  # (ApprovalGate, TokenObjects): signed approvals cover every key approved or revoked here
        approval_gate, objects = gate
        planned = list(before)
        _apply(so_session, token_label, approvals, state, context, officer, change_ref, True, planned, [], [])
        changed_keys = [key for key in planned if key not in before] + [key for key in before if key not in planned]
        outcome = approval_gate.check(objects, [{"recipient": key.recipient, "fingerprint": key.fingerprint}
                                                for key in changed_keys], check_mode)
    try:
        _apply(so_session, token_label, approvals, state, context, officer, change_ref, check_mode, after, events,
               keks, outcome)
    except KeyLifecycleError as exc:  # the keys approved or revoked before the failure are journaled all the same
        if events:
            exc.audit_events = events + list(getattr(exc, "audit_events", ()))
            exc.changed = True
        raise
    changed = _diff_view(before) != _diff_view(after) or len(before) != len(after) or bool(keks)
    approved = sorted((key.record() for key in after), key=lambda r: (r["label"], r["fingerprint"]))
    diff = {"before": _diff_view(before), "after": _diff_view(after)}
    if keks:  # an approved replica whose KEK went missing: generated again
        diff["before"]["replica_keks"] = ["%s missing" % replica_kek_label(key.label) for key in keks]
        diff["after"]["replica_keks"] = ["%s generated" % replica_kek_label(key.label) for key in keks]
    return ApprovalResult(changed=changed, audit_events=events, diff=diff, approved=approved, approval=outcome)


def _apply(so_session, token_label, approvals, state, context, officer, change_ref, check_mode, after, events,
           keks, outcome=None):
    for approval in approvals:
        if state == "present":
            label = trusted_transport_label(approval.recipient, approval.host, approval.fingerprint, approval.kind)
            present = [key for key in after if key.label == label and key.fingerprint == approval.fingerprint]
            if present:
                if approval.kind == "replica":  # its KEK too, if it went missing: a change, journaled
                    if check_mode:
                        missing = find_replica_kek(so_session, present[0]) is None
                    else:
                        missing = ensure_replica_kek(so_session, present[0])[1]
                        if missing:
                            events.append(_event("recipient-approve", present[0], token_label, context, officer,
                                                 change_ref, outcome, reason=KEK_RECREATED))
                    if missing:
                        keks.append(present[0])
                continue
            if check_mode:
                key = TrustedTransportKey(label=label, recipient=approval.recipient, host=approval.host,
                                          fingerprint=approval.fingerprint,
                                          key_id=trusted_key_id(approval.public_key).hex(), obj=None, modifiable=False,
                                          kind=approval.kind)
            else:
                key = approve_transport_key(so_session, approval.recipient, approval.host, approval.public_key,
                                            existing=after, kind=approval.kind)
                events.append(_event("recipient-approve", key, token_label, context, officer, change_ref, outcome))
            after.append(key)
        else:
            matching = [key for key in after if key.recipient == approval.recipient and key.host == approval.host
                        and approval.fingerprint in (None, key.fingerprint) and key.kind == approval.kind]
            for key in matching:
                if not check_mode:
                    revoke_transport_key(so_session, key)
                    events.append(_event("recipient-revoke", key, token_label, context, officer, change_ref,
                                         outcome))
                after.remove(key)
