# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Replica tokens: copy every version of the backup keys to tokens the Security Officer approved (key_replicate),
and store those copies on the replica (replica_install).

PRIVATE: not part of the public interface. docs/replication.md explains the model.

A *replica* is another token (another HSM partition) whose transport key pair was generated in it
(recipient_enroll) and approved as kind ``replica`` by the Security Officer of the source token
(``_trusted_keys``: a trusted RSA transport key and the replica's key-encryption key, KEK). A key generated with
``backup`` is CKA_EXTRACTABLE and CKA_WRAP_WITH_TRUSTED, so the source token wraps it only under those keys:

* an AES version: C_WrapKey(CKM_RSA_PKCS_OAEP) under the replica's trusted transport key;
* an RSA or EC private key: C_WrapKey(CKM_AES_KEY_WRAP_PAD, RFC 5649) under the replica's KEK, and the KEK, once per
  task, C_WrapKey(CKM_RSA_PKCS_OAEP) under the transport key. The replica unwraps the KEK as a session object
  (gone when the session closes) and the private keys with it; the public key travels as PEM.

Every package carries the version's metadata exactly as the source token holds it (its newest revision), and is
signed by the source token's package-signing key (``_package_signing``), which the replica pinned at enrollment.
The replica checks the signature, unwraps each key as a session object, checks it against the signed metadata
(the AES key check value computed in its token; for a key pair, a signature made with the unwrapped private key
that verifies under the signed public key, whose fingerprint is the one in the metadata), and only then copies it
onto its token: sensitive, extractable only under trusted keys (so that it can be restored to a primary its own
Security Officer approved), with the usages of its state. Its metadata object is the source's, byte for byte.

What a replica must hold: every version of a backup key that is not destroyed, in its newest revision
(``install`` with the wrapped key, ``update`` with metadata only); a version destroyed on the source is
``withdrawn`` at the replica (key objects destroyed, the token searched again, the tombstone revision written).
A version the source cannot wrap (generated before backup was set: not extractable) is ``blocked``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event, key_section
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import (
    DEFAULT,
    Attribute,
    KeyType,
    Mechanism,
    ObjectClass,
    p11_exc,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._drift import allowed_usages
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    InvalidOption,
    KeyConflict,
    KeyLifecycleError,
    KeyNotFound,
    MechanismUnsupported,
    PackageRejected,
    PolicyViolation,
    TokenOperationFailed,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import pkcs11_errors
from ansible_collections.secops.keylifecycle.plugins.module_utils._lifecycle_module import changed_before_refusal
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import (
    MetadataCorrupt,
    KeyVersion,
    validate_name,
    version_label,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._managed_signing import (
    CHECKPOINT_KEY_NAME,
    PACKAGE_KEY_NAME,
    RESTORE_KEY_NAME,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import (
    ensure_package_signer,
    signer_record,
    verify_package,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._signatures import (
    load_public_key,
    sign_in_token,
    signature_valid,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_probe import offered_mechanisms
from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import checkpoint_payload
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    APPROVAL_NONCE,
    AUDIT_JOURNAL_PIN,
    AUDIT_KEY_HISTORY,
    EC_NO_USAGES,
    REPLICA_DOCUMENT,
    SIGNED_POLICY_RECORD,
    SIGNER_CERTIFICATE,
    canonical_json,
    check_value,
    destroy_quietly,
    public_key_attributes,
    replica_document_label,
    spki_fingerprint,
    usage_template,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._trusted_keys import find_replica_kek
from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import (
    FINGERPRINT_RE,
    OAEP_HASHES,
    load_transport_public_key,
    mechanism_name,
    oaep_parameters,
    shown_value,
)

REPLICA_PACKAGE_FORMAT = 1
KEK_MECHANISM = "CKM_AES_KEY_WRAP_PAD:rfc5649"
#: copies a replica keeps unable to sign (CKA_SIGN false, CKA_MODIFIABLE false), so that whoever holds the replica's
#: user PIN cannot speak for the primary: the audit-checkpoint key anchors the primary's journal (nothing on a
#: replica anchors it), and the package-signing key signs what the primary's recipients install (a replica signs
#: the packages of a restore with its own restore-signing key, which the replacement's Security Officer pins). A
#: restore unwraps each anew with the usages of its state.
LOCKED_ON_REPLICA = (CHECKPOINT_KEY_NAME, PACKAGE_KEY_NAME)
NOT_EXTRACTABLE_WHY = "not extractable: generated before backup was set; rotate the key to back up its next version"
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}\Z")
_HEX_ID = re.compile(r"^[0-9a-f]{2,64}\Z")
ACTIONS = ("install", "update", "withdraw", "tombstone")


def replicated_kinds():
    """The token's own documents a replica keeps, in the order a restore writes them back: the records that guard
    against replay and rollback first, the pin of the audit journal last (a restore cut short leaves keys without a
    pin, which the next lifecycle task refuses)."""
    return (SIGNED_POLICY_RECORD, APPROVAL_NONCE, SIGNER_CERTIFICATE, AUDIT_KEY_HISTORY, AUDIT_JOURNAL_PIN)


def _kind_order():
    return {kind.name: index for index, kind in enumerate(replicated_kinds())}


#: the fields of the journal pin that every anchored task moves; a restore takes the head from the journal's last
#: checkpoint, so a replica's pin is current when the rest is (otherwise every replication would resend it). The
#: remembered outcomes stay as the replica kept them: older tasks', which the journal holds as well
_PIN_HEAD_FIELDS = ("revision", "seq", "head_hash", "signed_at", "signature", "key_id", "key_version",
                    "public_key_fingerprint", "token_serial", "outcomes")


def document_digest(kind, document):
    """SHA-256 of a document's canonical JSON; for the journal pin, of what its head does not carry."""
    if kind == AUDIT_JOURNAL_PIN.name:
        document = {k: v for k, v in document.items() if k not in _PIN_HEAD_FIELDS}
    return hashlib.sha256(canonical_json(document)).hexdigest()


def require_replica(objects, token_label):
    """key_replicate ``restore: true`` runs on a replica, never on a primary: a token that names a journal (its pin)
    is refused, so that the restore mode (which anchors no checkpoint) cannot copy a primary's keys around its
    journal."""
    revisions = objects.newest(AUDIT_JOURNAL_PIN, AUDIT_JOURNAL_PIN.label)
    if revisions is not None:
        raise PolicyViolation(
            "Token %r names audit journal %s: it is a primary, not a replica. restore: true wraps a replica's copies "
            "back to a replacement primary; replicate a primary without it." % (token_label,
                                                                                revisions.newest["journal_id"]),
            option="restore")


def token_documents(objects, from_replica=False):
    """``[(kind name, label, document)]``: the token's own documents of ``replicated_kinds`` (``from_replica``: the
    documents of another token this replica keeps, ``REPLICA_DOCUMENT``), in restore order."""
    order = _kind_order()
    documents = []
    if from_replica:
        for label in objects.document_labels(REPLICA_DOCUMENT):
            kept = objects.newest(REPLICA_DOCUMENT, label).newest
            if kept["kind"] in order:
                documents.append((kept["kind"], kept["label"], kept["document"]))
    else:
        for kind in replicated_kinds():
            for label in [kind.label] if kind.label else objects.document_labels(kind):
                revisions = objects.newest(kind, label)
                if revisions is not None:
                    documents.append((kind.name, label, revisions.newest))
    return sorted(documents, key=lambda entry: (order[entry[0]], entry[1]))


def document_inventory(objects, from_replica=False):
    """What replica_install reports of the documents it holds: kind, label, sha256."""
    return [{"kind": kind, "label": label, "sha256": document_digest(kind, document)}
            for kind, label, document in token_documents(objects, from_replica)]


# ---- the source token (key_replicate) ------------------------------------------------------------

@dataclass
class Replica:
    """One entry of key_replicate's ``replicas``, checked."""

    name: str
    host: str
    public_key: object
    fingerprint: str
    held: dict  # (name, version) -> {"id", "revision", "state"}: what replica_install reported
    oaep_hashes: tuple | None = None
    documents: dict = field(default_factory=dict)  # (kind, label) -> sha256 of the documents it holds


@dataclass
class ReplicaPlan:
    replica: Replica
    packages: list = field(default_factory=list)   # (version, action)
    unchanged: list = field(default_factory=list)  # versions the replica holds in their newest revision
    blocked: list = field(default_factory=list)    # dicts: name, version, id, why
    trusted_key: object = None  # the replica's trusted transport key (_trusted_keys.TrustedTransportKey)
    kek: object = None          # its KEK, where a key pair is to be wrapped
    documents: list = field(default_factory=list)  # (kind, label, document) it does not hold as they are

    def installs(self):
        return [version for version, action in self.packages if action == "install"]


@dataclass
class ReplicationResult:
    replicas: list
    audit_events: list
    diff: dict
    changed: bool = False  # true only when the package-signing key was generated
    package_signer: dict | None = None


def _held_entry(raw, where):
    try:
        key = (validate_name(raw["name"], "%s.name" % where), int(raw["version"]))
        return key, {"id": str(raw["id"]), "revision": int(raw["revision"]), "state": str(raw["state"])}
    except (KeyError, TypeError, ValueError):
        raise InvalidOption("%s must be the held list that replica_install returned (name, version, id, revision, "
                            "state)." % where, option="replicas") from None


def parse_replicas(raw_replicas, policy):
    """Validate key_replicate's ``replicas``: names, hosts, transport public keys, pins, what each holds."""
    if not isinstance(raw_replicas, list) or not raw_replicas:
        raise InvalidOption("replicas must list at least one replica ({name, host, public_key_pem, fingerprint, "
                            "held}).", option="replicas")
    replicas, seen = [], set()
    for index, raw in enumerate(raw_replicas):
        where = "replicas[%d]" % index
        name = validate_name(raw.get("name"), "%s.name" % where)
        host = str(raw.get("host") or name)
        if (name, host) in seen:
            raise InvalidOption("replica %r on %s is listed twice in replicas; list it once." % (name, host),
                                option="replicas")
        seen.add((name, host))
        pin = raw.get("fingerprint") or None
        if pin is None and policy.require_transport_key_pin:
            raise PolicyViolation("replica %r on %s has no pinned transport key fingerprint, and "
                                  "policy.require_transport_key_pin is on. Pin the fingerprint recipient_enroll "
                                  "reported on the replica." % (name, host), option="replicas")
        if pin is not None and not (isinstance(pin, str) and FINGERPRINT_RE.match(pin.lower())):
            raise InvalidOption("%s.fingerprint %r must be sha256: followed by 64 hex digits." % (where, pin),
                                option="replicas")
        public_key, fingerprint = load_transport_public_key(raw.get("public_key_pem"), "replica %r on %s"
                                                            % (name, host), pin, policy.min_rsa_bits)
        held = dict(_held_entry(entry, "%s.held[%d]" % (where, i)) for i, entry in enumerate(raw.get("held") or ()))
        documents = {}
        for i, entry in enumerate(raw.get("documents") or ()):
            try:
                documents[(str(entry["kind"]), str(entry["label"]))] = str(entry["sha256"])
            except (KeyError, TypeError):
                raise InvalidOption("%s.documents[%d] must be as replica_install returned it (kind, label, sha256)."
                                    % (where, i), option="replicas") from None
        hashes = raw.get("oaep_hashes")
        if hashes is not None and not (isinstance(hashes, list) and all(h in OAEP_HASHES for h in hashes)):
            raise InvalidOption("%s.oaep_hashes must be the OAEP hashes the replica's token unwraps with "
                                "(recipient_enroll's transport_key.oaep_hashes)." % where, option="replicas")
        replicas.append(Replica(name=name, host=host, public_key=public_key, fingerprint=fingerprint, held=held,
                                oaep_hashes=tuple(hashes) if hashes is not None else None, documents=documents))
    return replicas


def backup_keys(store, names=None):
    """Names of the keys whose versions go to replicas: every key with a version generated for backup (or whose
    spec now says backup); ``names`` selects some (each must exist)."""
    selected = []
    for name in names if names is not None else store.names():
        if name == RESTORE_KEY_NAME:  # a replica's own signer: it signs only in the token it was made in
            if names is None:
                continue
            raise PolicyViolation("key %r is the replica's own signer of restore packages, which never leaves its "
                                  "token; leave it out of keys." % name, option="keys")
        versions = store.versions(name)
        if not versions:
            raise KeyNotFound("key %r does not exist on token %r." % (name, store.token_label), option="keys")
        if versions[-1].spec.backup or any(v.wrap_with_trusted and not v.spec.distributable for v in versions):
            selected.append(name)
        elif names is not None:
            raise PolicyViolation("key %r is not a backup key: generate it (or its next version) with backup: true "
                                  "to copy it to replicas." % name, option="keys")
    return selected


def _copyable(version):
    return version.wrap_with_trusted and version.evidence.get("extractable") is not False


def plan_replica(store, replica, names):
    """What one replica receives (install, update), keeps, loses (withdraw) or cannot get (blocked)."""
    plan = ReplicaPlan(replica)
    for name in names:
        for version in store.versions(name):
            have = replica.held.get((version.name, version.version))
            if have is not None and have["id"] != version.key_id:
                raise KeyConflict(
                    "replica %r holds %s with CKA_ID %s, but token %r has it with %s: the replica holds copies of "
                    "another token. Replicate to a token that holds nothing of this key."
                    % (replica.name, version.label, have["id"], store.token_label, version.key_id),
                    option="replicas")
            if version.state == "destroyed":
                if have is None:  # its history: version numbers, transitions, the destruction
                    plan.packages.append((version, "tombstone"))
                elif have["state"] != "destroyed":
                    plan.packages.append((version, "withdraw"))
                else:
                    plan.unchanged.append(version)
                continue
            if have is None:
                if _copyable(version):
                    plan.packages.append((version, "install"))
                else:
                    plan.blocked.append({"name": version.name, "version": version.version, "id": version.key_id,
                                         "why": NOT_EXTRACTABLE_WHY})
            elif have["revision"] < version.revision:
                plan.packages.append((version, "update"))
            else:
                plan.unchanged.append(version)
    return plan


def plan_replication(store, replicas, names, trusted_keys, documents=()):
    """Every replica's plan, each with its approved replica key; refuses (before any wrap) a replica the Security
    Officer did not approve, or one without its KEK where a key pair is to be copied. ``documents``: the
    ``token_documents`` to keep in step."""
    plans = [plan_replica(store, replica, names) for replica in replicas]
    for plan in plans:
        plan.documents = [(kind, label, document) for kind, label, document in documents
                          if plan.replica.documents.get((kind, label)) != document_digest(kind, document)]
        replica = plan.replica
        plan.trusted_key = next((key for key in trusted_keys if key.kind == "replica" and (
            key.fingerprint, key.recipient, key.host) == (replica.fingerprint, replica.name, replica.host)), None)
        if plan.trusted_key is None and plan.installs():
            raise PolicyViolation(
                "No replica key approved by the Security Officer for replica %r on %s (transport key %s); nothing "
                "was wrapped. Ask the Security Officer to approve it (secops.keylifecycle.recipient_approve with "
                "kind: replica)." % (replica.name, replica.host, replica.fingerprint), option="replicas")
        if any(version.spec.type != "aes" for version in plan.installs()):
            plan.kek = find_replica_kek(store.session, plan.trusted_key)
            if plan.kek is None:
                raise PolicyViolation(
                    "Replica %r on %s has no key-encryption key on token %r (replica-kek:...), so its RSA and EC keys "
                    "cannot be wrapped; nothing was wrapped. Ask the Security Officer to approve the replica again "
                    "(recipient_approve, kind: replica), which makes it."
                    % (replica.name, replica.host, store.token_label), option="replicas")
    return plans


def choose_oaep_hash(replicas, token_hashes, token_label):
    """The first of ``token_hashes`` (the source token's, strongest first) that every replica's token unwraps with;
    MechanismUnsupported (nothing wrapped) when there is none."""
    for name in token_hashes:
        if all(replica.oaep_hashes is None or name in replica.oaep_hashes for replica in replicas):
            return name
    raise MechanismUnsupported(
        "Token %r wraps with RSA-OAEP under %s, and not every replica's token unwraps with one of them (their "
        "transport_key.oaep_hashes: %s); nothing was wrapped. Give the replicas tokens that unwrap with one of "
        "them, or replicate to them in separate tasks." % (token_label, ", ".join(token_hashes), "; ".join(
            "%s: %s" % (r.name, ", ".join(r.oaep_hashes or ())) for r in replicas)), option="replicas")


def _b64(blob):
    return base64.b64encode(bytes(blob)).decode("ascii") if blob is not None else None


def _package(store, plan, version, action, oaep_hash, wrapped, kek_id=None):
    package = {
        "format": REPLICA_PACKAGE_FORMAT, "kind": "replica", "action": action,
        "source_token": store.token_label, "replica": plan.replica.name, "replica_host": plan.replica.host,
        "transport_key_fingerprint": plan.replica.fingerprint,
        "name": version.name, "version": version.version, "id": version.key_id, "type": version.spec.type,
        "revision": version.revision, "state": version.state,
        "metadata": version.encode().decode("utf-8"),
        "public_key_pem": None, "mechanism": None, "wrapped": _b64(wrapped),
    }
    if action == "install":
        if version.spec.type == "aes":
            package["mechanism"] = mechanism_name(oaep_hash)
        else:
            package["mechanism"] = KEK_MECHANISM
            package["public_key_pem"] = store.public_key_pem(version.name, version.version)
            package["kek_id"] = kek_id  # signed: the KEK package this one unwraps under
    return package


def _wrap_version(store, plan, version, params):
    label = version.label
    with pkcs11_errors("C_WrapKey for %s" % label, token_label=store.token_label):
        try:
            if version.spec.type == "aes":
                return store.wrap_secret(version, plan.trusted_key.obj, Mechanism.RSA_PKCS_OAEP, params)
            private = store.private_key(version.name, version.version)
            return bytes(plan.kek.wrap_key(private, mechanism=Mechanism.AES_KEY_WRAP_PAD))
        except p11_exc.KeyNotWrappable:
            raise PolicyViolation(
                "The token refused to wrap %s for replica %r (CKR_KEY_NOT_WRAPPABLE): it leaves only under keys "
                "the Security Officer made trusted. Ask the Security Officer to approve the replica "
                "(recipient_approve, kind: replica)." % (label, plan.replica.name), option="replicas") from None


@contextmanager
def kept_changes(events):
    """A KeyLifecycleError raised inside carries ``events`` (the changes made before it) and says so: the module's
    failure result then journals them and reports changed, instead of "nothing was changed"."""
    try:
        yield
    except KeyLifecycleError as exc:
        if events:
            exc.audit_events = list(events) + list(getattr(exc, "audit_events", None) or ())
            exc.changed = True
            exc.message = "%s %s" % (exc.message, changed_before_refusal(events))
        raise


def apply_replication(store, plans, oaep_hash, context, check_mode, package_format="list", restore=False):
    """Wrap every install, wrap each replica's KEK once where a key pair goes, sign every package (package-signing
    key, or for a ``restore`` the replica's restore-signing key, generated on first use). In check mode: the
    packages without wrapped keys and unsigned. A failure after the signing key was generated carries its event."""
    generated = []  # the one change on this token: its signing key generated on first use
    with kept_changes(generated):
        return _replicate(store, plans, oaep_hash, context, check_mode, package_format, restore, generated)


def _replicate(store, plans, oaep_hash, context, check_mode, package_format, restore, generated):
    out = []
    signer, created = None, False
    signer_name = RESTORE_KEY_NAME if restore else PACKAGE_KEY_NAME
    signs = any(plan.packages or plan.documents for plan in plans)
    if signs and not check_mode:
        signer, created = ensure_package_signer(store, context, generated, signer_name)
    elif signs:
        created = signer_record(store, signer_name) is None  # a real run generates it: the check says so
    events = list(generated)
    params = oaep_parameters(oaep_hash)
    for plan in plans:
        packages, kek_package = [], None
        kek_id = None
        if plan.kek is not None:
            with pkcs11_errors("C_GetAttributeValue of the replica KEK", token_label=store.token_label):
                kek_id = bytes(plan.kek[Attribute.ID]).hex()
        if plan.kek is not None and not check_mode:
            with pkcs11_errors("C_WrapKey of the replica KEK", token_label=store.token_label):
                blob = plan.trusted_key.obj.wrap_key(plan.kek, mechanism=Mechanism.RSA_PKCS_OAEP,
                                                     mechanism_param=params)
            kek_package = {"format": REPLICA_PACKAGE_FORMAT, "kind": "replica-kek", "source_token": store.token_label,
                           "replica": plan.replica.name, "replica_host": plan.replica.host,
                           "transport_key_fingerprint": plan.replica.fingerprint, "id": kek_id,
                           "mechanism": mechanism_name(oaep_hash), "wrapped": _b64(blob)}
        for version, action in plan.packages:
            wrapped = None
            if action == "install" and not check_mode:
                wrapped = _wrap_version(store, plan, version, params)
                events.append(_event(store, plan, version, oaep_hash, context, signer))
            packages.append(_package(store, plan, version, action, oaep_hash, wrapped, kek_id))
        if signer is not None:
            packages = [signer.sign(package) for package in packages]
            kek_package = signer.sign(kek_package) if kek_package is not None else None
        if package_format == "jsonl":
            packages = package_lines(packages)
        documents = [{"format": REPLICA_PACKAGE_FORMAT, "kind": "replica-document", "source_token": store.token_label,
                      "replica": plan.replica.name, "replica_host": plan.replica.host,
                      "transport_key_fingerprint": plan.replica.fingerprint, "document_kind": kind, "label": label,
                      "document": document, "sha256": document_digest(kind, document)}
                     for kind, label, document in plan.documents]
        if signer is not None:
            documents = [signer.sign(package) for package in documents]
        out.append({"name": plan.replica.name, "host": plan.replica.host,
                    "transport_key_fingerprint": plan.replica.fingerprint,
                    "trusted_key_label": plan.trusted_key.label if plan.trusted_key is not None else None,
                    "oaep_hash": oaep_hash, "kek": kek_package, "packages": packages, "documents": documents,
                    "unchanged": [{"name": v.name, "version": v.version, "id": v.key_id} for v in plan.unchanged],
                    "blocked": list(plan.blocked)})
    diff = _diff(plans)
    if created:
        diff["before"][signer_name], diff["after"][signer_name] = "none", "generated in this token"
    return ReplicationResult(replicas=out, audit_events=events, diff=diff, changed=created,
                             package_signer=signer.public_record() if signer is not None
                             else signer_record(store, signer_name))


def _event(store, plan, version, oaep_hash, context, signer):
    section = key_section(version, store.token_label)
    section.update(recipient=plan.replica.name, recipient_host=plan.replica.host,
                   mechanism=mechanism_name(oaep_hash) if version.spec.type == "aes" else KEK_MECHANISM,
                   transport_key_fingerprint=plan.replica.fingerprint, trusted_wrapping=True,
                   trusted_key_label=plan.trusted_key.label, trusted_kind="replica")
    if signer is not None and signer.version is not None:
        section["package_signer_fingerprint"] = signer.version.public_key_fingerprint
    return build_event("key-replicate", "success", context, key=section,
                       reason="wrapped for replica %s" % plan.replica.name)


def _diff(plans):
    diff = {"before": {}, "after": {}}
    for plan in plans:
        held = plan.replica.held
        diff["before"][plan.replica.name] = sorted("%s:v%d %s" % (name, number, have["state"])
                                                   for (name, number), have in held.items())
        after = {(v.name, v.version): v.state for v in plan.unchanged}
        after.update({(v.name, v.version): v.state for v, _action in plan.packages})
        for (name, number), have in held.items():
            after.setdefault((name, number), have["state"])
        diff["after"][plan.replica.name] = sorted("%s:v%d %s" % (name, number, state)
                                                  for (name, number), state in after.items())
    return diff


# ---- the replica's token (replica_install) -------------------------------------------------------

def held_versions(store):
    """What this token holds of copied keys, for key_replicate's ``replicas[].held``: every version with metadata."""
    held = []
    for name in store.names():
        if name == RESTORE_KEY_NAME:
            continue  # the replica's own signer, not a copy
        for version in store.versions(name):
            held.append({"name": version.name, "version": version.version, "id": version.key_id,
                         "revision": version.revision, "state": version.state})
    return held


def ensure_restore_signer(store, context, events, generate, check_mode=False):
    """The replica's own signer of restore packages (``restore-signing``): generated in its token (never backed up)
    when ``generate`` and it has none, so that its public record is known, and journaled, before a restore needs it.
    Returns ``(record or None, created)``; in check mode ``created`` says a real run would generate it."""
    if generate and not check_mode:
        signer, created = ensure_package_signer(store, context, events, RESTORE_KEY_NAME)
        return signer.public_record(), created
    record = signer_record(store, RESTORE_KEY_NAME)
    return record, generate and record is None


def _field(package, name, check, where, text):
    value = package.get(name)
    if not check(value):
        raise InvalidOption("%s: %s %s is not valid; %s. Pass the packages key_replicate returned for this replica, "
                            "unchanged." % (where, name, shown_value(name, value), text), option="packages")
    return value


def validate_replica_package(package, index, transport_fingerprint):
    """Check one replica package's fields and that it is addressed to this token's transport key; its metadata is
    decoded (``KeyVersion``) and must name the same key, version, id, revision and state."""
    where = "packages[%d]" % index
    if not isinstance(package, dict):
        raise InvalidOption("%s is not a package: pass the packages key_replicate returned." % where,
                            option="packages")
    _field(package, "format", lambda v: v == REPLICA_PACKAGE_FORMAT, where, "this version reads format %d"
           % REPLICA_PACKAGE_FORMAT)
    _field(package, "kind", lambda v: v == "replica", where, "a replica package")
    _field(package, "action", lambda v: v in ACTIONS, where, "one of %s" % ", ".join(ACTIONS))
    _field(package, "metadata", lambda v: isinstance(v, str), where, "the version's metadata")
    _field(package, "wrapped", lambda v: v is None or (isinstance(v, str) and bool(_BASE64.match(v))), where,
           "base64 of the wrapped key, or null")
    if package.get("transport_key_fingerprint") != transport_fingerprint:
        raise PackageRejected(
            "%s is addressed to transport key %s, not to this token's (%s). Nothing was installed. Pass each replica "
            "only the packages key_replicate made for it." % (where, package.get("transport_key_fingerprint"),
                                                              transport_fingerprint), option="packages")
    try:
        label = version_label(validate_name(package.get("name"), "%s.name" % where), int(package.get("version")))
        version = KeyVersion.decode(label, package["metadata"].encode("utf-8"))
    except (MetadataCorrupt, TypeError, ValueError) as exc:
        raise PackageRejected("%s: its metadata cannot be read (%s). Nothing was installed." % (where, exc),
                              option="packages") from None
    if (version.key_id, version.revision, version.state, version.spec.type) != (
            package.get("id"), package.get("revision"), package.get("state"), package.get("type")):
        raise PackageRejected("%s: its metadata does not match the package (id, revision, state or type). Nothing was "
                              "installed." % where, option="packages")
    if package["action"] == "install" and package["wrapped"] is None:
        raise InvalidOption("%s installs %s but carries no wrapped key (made in check mode?). Run key_replicate "
                            "again without --check." % (where, label), option="packages")
    if version.name == RESTORE_KEY_NAME:  # generated on the replica, never copied to it: it signs the restores
        raise PackageRejected("%s copies a key named %s, the name of the replica's own restore signer, which is "
                              "generated in the replica and never copied to it. Nothing was installed."
                              % (where, RESTORE_KEY_NAME), option="packages")
    if package["wrapped"] is not None:
        decode_blob(package["wrapped"], where)  # refused before any copy is stored, not part way
    return version


def package_lines(packages):
    """The packages as one JSON Lines text (``package_format: jsonl``): Ansible passes one string between tasks far
    more cheaply than thousands of small dicts (it copies, tags and scrubs a result node by node)."""
    return "".join(json.dumps(package, sort_keys=True, separators=(",", ":")) + "\n" for package in packages)


def read_packages(value):
    """replica_install's ``packages``: the list key_replicate returned, or its JSON Lines text; InvalidOption when it
    is neither."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        try:
            return [json.loads(line) for line in value.splitlines() if line.strip()]
        except ValueError:
            pass
    raise InvalidOption("packages must be the packages key_replicate returned for this replica: a list, or the JSON "
                        "Lines text of package_format: jsonl, unchanged.", option="packages")


def decode_blob(text, where):
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidOption("%s: wrapped is not valid base64." % where, option="packages") from None


@dataclass
class ReplicaInstallResult:
    changed: bool
    audit_events: list
    diff: dict
    installed: list
    held: list


class ReplicaInstaller:
    """Stores verified copies on this token (a TokenKeyStore) with the transport key and pinned package signer of
    its recipient store (``_recipient_store.RecipientTokenStore``)."""

    def __init__(self, store, transport, signer, policy, restore=False):
        self.store = store
        self.transport = transport
        self.signer = signer
        self.policy = policy
        self.restore = restore
        self._kek = None
        self._mechanisms = None

    def check(self, packages, kek_package, documents=(), checkpoint=None):
        """Every package verified and decoded before anything is stored. Returns ``(todo, document_todo, pin)``:
        ``[(package, version, current)]`` for the versions that change this token (older or equal revisions are
        already applied), ``[(kind, label, document)]`` for the documents, and with ``restore`` the pin to write
        last (the source's pin moved to ``checkpoint``, verified), or None."""
        if self.transport is None:
            raise KeyNotFound("Token %r has no transport key: run recipient_enroll on it first (name: the replica's "
                              "name)." % self.store.token_label, option="transport_key_label")
        if self.signer is None:
            raise PackageRejected("Token %r pins no package signer: run recipient_enroll with the source token's "
                                  "package_signer (key_info or key_replicate) first." % self.store.token_label,
                                  option="packages")
        if self.restore and not self.signer.trusted:
            raise PolicyViolation(
                "restore: the package signer %s pinned in token %r was pinned by an operator, not by the token's "
                "Security Officer (CKA_TRUSTED false). A restore brings back the records that govern the token, so it "
                "accepts packages only from a signer the Security Officer pinned: run package_signer_approve with the "
                "SO PIN and the replica's package signer, then this task again. Nothing was installed."
                % (self.signer.fingerprint, self.store.token_label), option="restore")
        if kek_package is not None:
            verify_package(kek_package, self.signer.public_key, where="the replica KEK package")
            if kek_package.get("transport_key_fingerprint") != self.transport.fingerprint:
                raise PackageRejected("The replica KEK package is addressed to another transport key. Nothing was "
                                      "installed.", option="kek")
        todo = [entry for entry in (self._check_package(index, package, kek_package)
                                    for index, package in enumerate(packages)) if entry is not None]
        self._check_ids(todo)
        document_todo, pin = self._check_documents(documents, checkpoint)
        return todo, document_todo, pin

    def _check_ids(self, todo):
        """A new copy's CKA_ID must be no other version's, on this token or in the batch: a key is found (and
        verified absent when withdrawn) by its CKA_ID, so a second key under it could never be withdrawn."""
        owners = {version.key_id: version.label for name in self.store.names()
                  for version in self.store.versions(name)}
        for package, version, current in todo:
            if current is not None:
                continue
            owner = owners.setdefault(version.key_id, version.label)
            if owner != version.label:
                raise KeyConflict("The package of %s has CKA_ID %s, which %s already has: two keys under one CKA_ID "
                                  "cannot be told apart. Nothing was installed." % (version.label, version.key_id,
                                                                                    owner), option="packages")

    def _check_package(self, index, package, kek_package):
        verify_package(package, self.signer.public_key, where="packages[%d]" % index)
        version = validate_replica_package(package, index, self.transport.fingerprint)
        current = self.store.version(version.name, version.version)
        if current is not None and current.key_id != version.key_id:
            raise KeyConflict("%s on token %r has CKA_ID %s, but the package's is %s: this token holds another "
                              "key under that label. Nothing was installed."
                              % (version.label, self.store.token_label, current.key_id, version.key_id),
                              option="packages")
        if current is not None and current.revision >= version.revision:
            return None  # applied already (or a replay of an older revision): nothing to do
        if current is None and package["action"] == "install":
            if package["type"] != "aes" and kek_package is None:
                raise InvalidOption("packages[%d] (%s) needs the replica KEK package (kek) that key_replicate "
                                    "returned with it." % (index, version.label), option="kek")
            if package["type"] != "aes" and package.get("kek_id") not in (None, kek_package.get("id")):
                raise PackageRejected("packages[%d] (%s) was wrapped under replica KEK %s, and kek is KEK %s: pass "
                                      "the kek key_replicate returned with these packages. Nothing was installed."
                                      % (index, version.label, package["kek_id"], kek_package.get("id")),
                                      option="kek")
        elif current is None and package["action"] != "tombstone":
            return None  # an update or withdrawal of a version this token never held
        return package, version, current

    def _check_documents(self, documents, checkpoint):
        order, objects = _kind_order(), self.store.objects
        kept = {(kind, label): document for kind, label, document in token_documents(objects, not self.restore)}
        held = {key: document_digest(key[0], document) for key, document in kept.items()}
        todo, pin = [], None
        for index, package in enumerate(documents or ()):
            where = "documents[%d]" % index
            verify_package(package, self.signer.public_key, where=where)
            kind, label, document = package.get("document_kind"), package.get("label"), package.get("document")
            if package.get("kind") != "replica-document" or kind not in order or not isinstance(label, str) \
                    or not isinstance(document, dict) or package.get("sha256") != document_digest(kind, document):
                raise PackageRejected("%s is not a document key_replicate made. Nothing was installed." % where,
                                      option="documents")
            if package.get("transport_key_fingerprint") != self.transport.fingerprint:
                raise PackageRejected("%s is addressed to another transport key. Nothing was installed." % where,
                                      option="documents")
            if held.get((kind, label)) == package["sha256"] or (
                    not self.restore and _older(kind, document, kept.get((kind, label)))):
                continue  # held already, or (on a replica) a replay of a revision at or below the one held
            if self.restore and kind == AUDIT_JOURNAL_PIN.name:
                pin = document  # written last, once the token is known not to name a journal (below)
                continue
            if self.restore and (kind, label) in held and kind in _immutable_kind_names():
                raise KeyConflict("Token %r already holds a different %s %r, which no session can change: it is not "
                                  "the token being restored. Nothing was installed."
                                  % (self.store.token_label, kind, label), option="documents")
            todo.append((kind, label, document))
        pin_key = (AUDIT_JOURNAL_PIN.name, AUDIT_JOURNAL_PIN.label)
        if self.restore and pin_key in kept and not any(
                package.get("document_kind") == AUDIT_JOURNAL_PIN.name and package.get("sha256") == held[pin_key]
                for package in documents or ()):
            # the token names a journal, whether or not (or another) replica's pin came with the packages; the same
            # pin again is a re-run of the same restore, which changes nothing
            raise PolicyViolation(
                "Token %r already names audit journal %s: a restore rebuilds a token that lost its records "
                "(re-initialised), and this one has them. Nothing was installed."
                % (self.store.token_label, kept[pin_key]["journal_id"]), option="restore")
        if pin is not None:
            pin = self._moved_pin(pin, checkpoint, todo)
        return todo, pin

    def _moved_pin(self, pin, checkpoint, todo):
        """The source's pin moved to the journal's last checkpoint of this token (``checkpoint``): signed by a key of
        the restored key history, of the same journal, not behind the pin. Without it the pin is written as the
        replica kept it."""
        if checkpoint is None:
            return pin
        if not isinstance(checkpoint, dict) or checkpoint.get("journal_id") != pin.get("journal_id") \
                or not isinstance(checkpoint.get("seq"), int) or checkpoint["seq"] < int(pin["seq"]) \
                or checkpoint.get("token_label") != pin.get("token_label"):
            raise PackageRejected(
                "checkpoint must be the journal's last audit-checkpoint of token %r in journal %s, at or after record "
                "%s (the replicated pin); this one is not. Nothing was installed."
                % (pin.get("token_label"), pin.get("journal_id"), pin.get("seq")), option="checkpoint")
        history = next((document for kind, _label, document in todo if kind == AUDIT_KEY_HISTORY.name), None)
        if history is None:
            revisions = self.store.objects.newest(AUDIT_KEY_HISTORY, AUDIT_KEY_HISTORY.label)
            history = revisions.newest if revisions is not None else {"keys": {}}
        entry = history.get("keys", {}).get(checkpoint.get("key_id"))
        public_key = load_public_key(entry["public_key_pem"]) if entry else None
        payload = checkpoint_payload(checkpoint["journal_id"], checkpoint["seq"], checkpoint.get("head_hash"),
                                     checkpoint.get("signed_at"))
        if public_key is None or not signature_valid(public_key, checkpoint.get("signature"), payload):
            raise PackageRejected("checkpoint is not signed by an audit-checkpoint key of the restored key history. "
                                  "Nothing was installed.", option="checkpoint")
        moved = dict(pin)
        moved.update({field: checkpoint[field] for field in ("seq", "head_hash", "signed_at", "signature", "key_id")})
        # what the signature does not cover comes from the key history entry that verified it
        moved.update(key_version=int(entry["version"]), public_key_fingerprint=entry["fingerprint"])
        return moved

    def apply(self, work, kek_package, context, check_mode):
        """Store the copies, then the documents, then (restore) the pin; one event each. A failure part way keeps
        the events of what was stored before it (``kept_changes``): the task fails, and they are journaled."""
        todo, document_todo, pin = work
        events = []
        if check_mode:
            return events
        with kept_changes(events):
            return self._store_all(todo, document_todo, pin, kek_package, context, events)

    def _store_all(self, todo, document_todo, pin, kek_package, context, events):
        if any(current is None and package["action"] == "install" and version.spec.type != "aes"
               for package, version, current in todo):
            self._kek_key(kek_package)  # a KEK that does not unwrap here is refused before any copy is stored
        for package, version, current in todo:
            if current is None and package["action"] == "tombstone":
                self.store.record_copy(version, [])
                action = "key-restore" if self.restore else "replica-install"
            elif current is None:
                self._install(package, version, kek_package)
                action = "key-restore" if self.restore else "replica-install"
            elif version.state == "destroyed":
                self._withdraw(current, version)
                action = "replica-withdraw"
            else:
                self._update(current, version)
                action = "key-restore" if self.restore else "replica-update"
            reason = "copy of revision %d from token %s" % (version.revision, package.get("source_token"))
            events.append(build_event(action, "success", context, key=key_section(version, self.store.token_label),
                                      reason=reason))
        for kind, label, document in document_todo:
            self._write_document(kind, label, document)
            events.append(self._document_event(kind, label, context))
        if pin is not None:
            self._write_document(AUDIT_JOURNAL_PIN.name, AUDIT_JOURNAL_PIN.label, pin)
            events.append(self._document_event(AUDIT_JOURNAL_PIN.name, AUDIT_JOURNAL_PIN.label, context,
                                               "journal %s pinned at record %d" % (pin["journal_id"], pin["seq"])))
        return events

    def _write_document(self, kind_name, label, document):
        objects = self.store.objects
        if not self.restore:
            revisions = objects.newest(REPLICA_DOCUMENT, replica_document_label(kind_name, label))
            revision = int(revisions.newest["revision"]) + 1 if revisions is not None else 1
            objects.write(REPLICA_DOCUMENT, replica_document_label(kind_name, label), {
                "schema": 1, "revision": revision, "kind": kind_name, "label": label,
                "sha256": document_digest(kind_name, document), "document": document},
                operation="C_CreateObject (replica document %s)" % label)
            return
        kind = next(kind for kind in replicated_kinds() if kind.name == kind_name)
        objects.write(kind, label, document, operation="C_CreateObject (restored %s %s)" % (kind_name, label))

    def _document_event(self, kind, label, context, reason=None):
        action = "key-restore" if self.restore else "replica-install"
        section = {"token": self.store.token_label}
        if len(label) <= 128:
            section["label"] = label
        return build_event(action, "success", context, key=section, reason=reason or "%s %s" % (kind, label))

    # ---- steps ------------------------------------------------------------------------------------

    def _locked(self, version):
        return not self.restore and version.name in LOCKED_ON_REPLICA

    def _usages(self, version):
        usages = allowed_usages(version, self.policy.compromise_disables_decrypt)
        return usages - {"sign"} if self._locked(version) else usages

    def _offered(self):
        if self._mechanisms is None:
            self._mechanisms = offered_mechanisms(self.store.session, self.store.token_label)
        return self._mechanisms

    def _kek_key(self, kek_package):
        if self._kek is None:
            blob = decode_blob(kek_package["wrapped"], "kek")
            oaep_hash = kek_package["mechanism"].split(":", 1)[1]
            try:
                self._kek = self.transport.private.unwrap_key(
                    ObjectClass.SECRET_KEY, KeyType.AES, blob, mechanism=Mechanism.RSA_PKCS_OAEP,
                    mechanism_param=oaep_parameters(oaep_hash), store=False,
                    template={Attribute.TOKEN: False, Attribute.UNWRAP: True, Attribute.WRAP: False,
                              Attribute.ENCRYPT: False, Attribute.DECRYPT: False, Attribute.SENSITIVE: True,
                              Attribute.EXTRACTABLE: False})
            except p11_exc.PKCS11Error as exc:
                raise PackageRejected("The replica KEK did not unwrap under this token's transport key (%s): it was "
                                      "made for another replica. Nothing was installed." % type(exc).__name__,
                                      option="kek") from None
        return self._kek

    def _install(self, package, version, kek_package):
        blob = decode_blob(package["wrapped"], version.label)
        if version.spec.type == "aes":
            objects = [self._install_secret(package, version, blob)]
        else:
            objects = self._install_pair(package, version, blob, self._kek_key(kek_package))
        self.store.record_copy(version, objects)

    def _common(self, version):
        return {Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: True, Attribute.WRAP_WITH_TRUSTED: True, Attribute.MODIFIABLE: True,
                Attribute.ID: bytes.fromhex(version.key_id), Attribute.LABEL: version.label}

    def _install_secret(self, package, version, blob):
        usages = self._usages(version)
        template = {**self._common(version), Attribute.ENCRYPT: True,
                    **usage_template(usages, skip=("encrypt",))}
        oaep_hash = package["mechanism"].split(":", 1)[1]
        try:
            key = self.transport.private.unwrap_key(
                ObjectClass.SECRET_KEY, KeyType.AES, blob, mechanism=Mechanism.RSA_PKCS_OAEP,
                mechanism_param=oaep_parameters(oaep_hash), store=False, template=template)
        except p11_exc.PKCS11Error as exc:
            raise PackageRejected("The package for %s did not unwrap under this token's transport key (%s). Nothing "
                                  "more was installed." % (version.label, type(exc).__name__),
                                  option="packages") from None
        with pkcs11_errors("key check value of %s" % version.label, token_label=self.store.token_label):
            kcv = check_value(key)
        if kcv != version.key_check_value:
            destroy_quietly(key)
            raise PackageRejected("The key unwrapped for %s has check value %s, but its signed metadata says %s. "
                                  "Nothing more was installed." % (version.label, kcv, version.key_check_value),
                                  option="packages")
        with pkcs11_errors("C_CopyObject for %s" % version.label, token_label=self.store.token_label):
            stored = key.copy({Attribute.TOKEN: True, Attribute.ENCRYPT: "encrypt" in usages})
            destroy_quietly(key)
        return stored

    def _install_pair(self, package, version, blob, kek):
        public_key = load_public_key(package.get("public_key_pem"))
        if public_key is None or spki_fingerprint(public_key) != version.public_key_fingerprint:
            raise PackageRejected("The public key in the package for %s is not the one its signed metadata names "
                                  "(%s). Nothing more was installed." % (version.label,
                                                                         version.public_key_fingerprint),
                                  option="packages")
        usages = self._usages(version)
        skip = EC_NO_USAGES if version.spec.type == "ec" else ()
        # python-pkcs11 adds every capability attribute to an unwrap template; a private key has only these
        template = {Attribute.ENCRYPT: DEFAULT, Attribute.VERIFY: DEFAULT, Attribute.WRAP: DEFAULT,
                    **self._common(version), **usage_template(usages, "private", skip), Attribute.SIGN: True}
        if version.spec.type == "ec":
            template[Attribute.DERIVE] = False
        key_type = KeyType.RSA if version.spec.type == "rsa" else KeyType.EC
        try:
            private = kek.unwrap_key(ObjectClass.PRIVATE_KEY, key_type, blob,
                                     mechanism=Mechanism.AES_KEY_WRAP_PAD, store=False, template=template)
        except p11_exc.PKCS11Error as exc:
            raise PackageRejected("The package for %s did not unwrap under the replica KEK (%s). Nothing more was "
                                  "installed." % (version.label, type(exc).__name__), option="packages") from None
        if not _pair_matches(private, public_key, version.spec.type, self._offered()):
            destroy_quietly(private)
            raise PackageRejected("The private key unwrapped for %s does not match its signed public key %s. Nothing "
                                  "more was installed." % (version.label, version.public_key_fingerprint),
                                  option="packages")
        with pkcs11_errors("C_CopyObject for %s" % version.label, token_label=self.store.token_label):
            stored = private.copy({Attribute.TOKEN: True, Attribute.SIGN: "sign" in usages,
                                   **({Attribute.MODIFIABLE: False} if self._locked(version) else {})})
            destroy_quietly(private)
            public = self.store.session.create_object({
                **public_key_attributes(public_key), Attribute.TOKEN: True, Attribute.PRIVATE: False,
                Attribute.MODIFIABLE: True, Attribute.ID: bytes.fromhex(version.key_id),
                Attribute.LABEL: version.label, **usage_template(usages, "public", skip)})
        return [stored, public]

    def _update(self, current, version):
        if not self._locked(version):  # a locked copy's private key has no usage left to switch off
            disabled = set(current.spec.usage) - self._usages(version)
            self.store.set_usage(version, sorted(disabled))
        self.store.record_revision(version)

    def _withdraw(self, current, version):
        self.store.destroy_key_objects(current)
        found = self.store.verify_absent(current)
        if found:
            raise TokenOperationFailed("After C_DestroyObject of the copy of %s, token %r still holds %s; the "
                                       "tombstone was not written. Inspect the token." % (
                                           version.label, self.store.token_label, "; ".join(found)))
        self.store.record_revision(version)


def _older(kind_name, document, held):
    """Whether ``document`` is a revision of its kind at or below ``held`` (the same label's document this token
    keeps): a replay of an earlier key_replicate's package."""
    if held is None:
        return False
    kind = next(kind for kind in replicated_kinds() if kind.name == kind_name)
    try:
        return kind.revision(document) <= kind.revision(held)
    except (KeyError, TypeError, ValueError):
        return False  # a document whose revision cannot be read is checked as any other


def _immutable_kind_names():
    return {kind.name for kind in replicated_kinds() if kind.immutable}


def _pair_matches(private, public_key, key_type, offered):
    """Sign a random challenge with the unwrapped private key (in the token) and verify it under the signed public
    key (in software, ``_signatures``): the pair is the one the metadata names."""
    challenge = os.urandom(32)
    try:
        return signature_valid(public_key, sign_in_token(private, key_type, offered, challenge), challenge)
    except p11_exc.PKCS11Error:
        return False


def _held_view(held):
    return sorted("%s:v%d %s (revision %d)" % (entry["name"], entry["version"], entry["state"], entry["revision"])
                  for entry in held)


def install_diff(store, before, after, held_documents, planned, restore_signer, signer_generated):
    """replica_install's diff: everything the task changes (or would). Each copy with its state and revision
    (``before``/``after``: held_versions entries), each document written (its digest before, from
    ``held_documents``, and after), the journal pin a restore writes, the restore signer generated (else the one
    the token has: ``restore_signer``)."""
    _todo, documents_todo, pin = planned
    diff = {"before": {"held": _held_view(before)}, "after": {"held": _held_view(after)}}
    if documents_todo:
        diff["before"]["documents"] = sorted("%s %s %s" % (kind, label, held_documents.get((kind, label), "absent"))
                                             for kind, label, _document in documents_todo)
        diff["after"]["documents"] = sorted("%s %s %s" % (kind, label, document_digest(kind, document))
                                            for kind, label, document in documents_todo)
    if pin is not None:
        current = store.objects.newest(AUDIT_JOURNAL_PIN, AUDIT_JOURNAL_PIN.label)
        current = current.newest if current is not None else None
        diff["before"]["journal_pin"] = "journal %s record %s" % (current["journal_id"], current["seq"]) \
            if current else "none"
        diff["after"]["journal_pin"] = "journal %s record %s" % (pin["journal_id"], pin["seq"])
    if signer_generated:
        diff["before"]["restore_signer"] = "none"
        diff["after"]["restore_signer"] = "restore-signing generated in this token"
    elif restore_signer is not None:
        diff["before"]["restore_signer"] = diff["after"]["restore_signer"] = restore_signer["fingerprint"]
    return diff


def describe_installed(todo):
    """What replica_install changed (or would), for its result and diff."""
    return [{"name": version.name, "version": version.version, "id": version.key_id, "revision": version.revision,
             "state": version.state, "action": _action(package, version, current)}
            for package, version, current in todo]


def _action(package, version, current):
    if current is None:
        return "tombstone" if package["action"] == "tombstone" else "install"
    return "withdraw" if version.state == "destroyed" else "update"
