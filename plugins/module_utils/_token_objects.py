# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""How this collection keeps objects on a PKCS#11 token: the one place that knows the layout.

PRIVATE: not part of the public interface.

Two sorts of objects are ours, both found by their CKA_LABEL:

* **Key objects** (CKO_SECRET_KEY, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY). A managed key
  version is labelled ``<name>:v<version>`` (``_keys.version_label``); a recipient's
  transport key pair carries its own label (``keylifecycle-transport`` by default).
* **Data documents**: CKO_DATA objects whose CKA_APPLICATION names their *kind* and
  whose CKA_VALUE is a JSON document carrying a revision number. They are
  append-only: a change is one C_CreateObject of a new revision under the same
  label, never an edit (a CKO_DATA value cannot be changed on every token), and
  readers take the highest revision. Kinds, in ``DOCUMENT_KINDS`` (application: label, revision):

  - ``secops.keylifecycle``: ``<name>:v<version>``, a key version's metadata; ``revision``, all kept.
  - ``secops.keylifecycle.recipient``: ``<name>:v<version>``, a version installed on a recipient's token;
    ``revision``, all kept.
  - ``secops.keylifecycle.audit``: three kinds share this application, told apart by their label:

    - ``audit-journal-pin``: the token's pin of its journal (``AUDIT_JOURNAL_PIN``, ``_checkpoint``): the one journal
      the token names, its signed head, its key; ``revision``, only the latest is kept.
    - ``audit-checkpoint-keys``: the public key of every ``audit-checkpoint`` version ever generated
      (``AUDIT_KEY_HISTORY``), kept when a version is destroyed; ``revision``, only the latest (which holds all)
      is kept.
    - ``audit-checkpoint:<journal id>`` (legacy, ``AUDIT_CHECKPOINT``): the latest signed checkpoint of a journal,
      written before the pin existed; still read (adoption, ``audit_verify`` of old journals), never written again.
  - ``secops.keylifecycle.lease``: ``lease:lifecycle``, one lifecycle run's claim on the token (``_token_lease``);
    ``revision`` (renewals), kept: each contender writes and destroys only its own objects.
  - ``secops.keylifecycle.signer-certificate``: ``package-signer-certificate:<key id>`` and
    ``audit-checkpoint-certificate:<key id>``, the certificate of one ``package-signing`` or ``audit-checkpoint``
    version signed by the version before it (``_managed_signing.certify_successor``; ``name`` says which key);
    written once, kept.
  - ``secops.keylifecycle.approval-nonce`` and ``secops.keylifecycle.signed-policy``: the immutable records of
    signed approvals used and signed policies accepted (``_approvals``, ``_signed_policy``).
  - ``secops.keylifecycle.replica-document``: ``replica-document:<kind>|<label>``, a document of another token kept
    on its replica (``REPLICA_DOCUMENT``, ``_replication``); ``revision``, only the latest is kept.

  A new kind of document is one more ``DocumentKind`` registered here; a kind that shares its application with
  another is one fixed ``label`` (registered in ``LABELLED_KINDS``).

``TokenObjects.load()`` enumerates the token once (one C_FindObjects over every
object) and indexes data documents by (application, label) and key objects by
(class, label), so a batch of N keys costs O(N) token calls; finding one object by a
search is linear in the objects on the token, which made per-key look-ups O(N^2).
The stores (``_key_store``, ``_recipient_store``, ``_checkpoint``) read and write
through one such index per module call.

Public keys are read from the token here too, with one curve table (``TOKEN_CURVES``)
and one usage map (``USAGE_ATTRIBUTES``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter, itemgetter

from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import (
    Attribute,
    KeyType,
    Mechanism,
    ObjectClass,
    ec,
    encode_named_curve_parameters,
    p11_exc,
    rsa,
    serialization,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import MetadataCorrupt, TokenOperationFailed
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import pkcs11_errors
from ansible_collections.secops.keylifecycle.plugins.module_utils._journal_chain import is_task_outcome
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import (
    METADATA_APPLICATION,
    KeyVersion,
    version_label,
)


# ---- data documents ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentKind:
    """One kind of application-tagged JSON document (CKO_DATA) and how it is written and read."""

    name: str
    application: str
    #: document -> CKA_VALUE bytes
    encode: object
    #: (label, CKA_VALUE bytes) -> document; raises MetadataCorrupt
    decode: object
    #: document -> its revision number (readers take the highest)
    revision: object
    #: False: a new revision replaces the older objects (C_DestroyObject after the C_CreateObject)
    keep_history: bool = True
    #: the one label of a single-document kind that shares its application with another kind; None otherwise
    label: str = None
    #: a record no session may change or delete once written: a public object (read by user and Security Officer
    #: sessions alike) with CKA_MODIFIABLE and CKA_DESTROYABLE false, one per label (keep_history)
    immutable: bool = False


DOCUMENT_KINDS = {}
#: (application, label) -> kind, for the single-document kinds that share an application with another kind
LABELLED_KINDS = {}


def register_kind(kind):
    """Add a document kind to the registry (one application tag per kind, or one fixed label under it)."""
    registry, key = (DOCUMENT_KINDS, kind.application) if kind.label is None else \
        (LABELLED_KINDS, (kind.application, kind.label))
    if key in registry:
        raise ValueError("document kind %r is registered twice" % (key,))
    registry[key] = kind
    return kind


def canonical_json(doc):
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


RECIPIENT_SCHEMA = 1


def json_decoder(what, check, encoding="utf-8"):
    """A document kind's decoder: the object's value as JSON, checked by ``check(label, doc)`` (which raises
    ValueError, KeyError or TypeError on anything wrong); an unreadable document is MetadataCorrupt naming ``what``
    and the label."""
    def decode(label, blob):
        try:
            doc = json.loads(bytes(blob).decode(encoding))
            check(label, doc)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise MetadataCorrupt("The %s %r cannot be read (%s)." % (what, label, exc)) from None
        return doc
    return decode


def _check_recipient(label, doc):
    if doc.get("schema") != RECIPIENT_SCHEMA or version_label(doc["name"], doc["version"]) != label:
        raise ValueError("unexpected schema or label")
    int(doc["revision"])


def _check_checkpoint(_label, doc):
    int(doc["seq"])
    doc["journal_id"]  # pylint: disable=pointless-statement


#: metadata of a managed key version on the HSM (``_keys.KeyVersion``)
KEY_METADATA = register_kind(DocumentKind(
    name="key metadata", application=METADATA_APPLICATION, encode=KeyVersion.encode, decode=KeyVersion.decode,
    revision=attrgetter("revision")))
#: what a recipient's token holds of one distributed key version (a dict)
RECIPIENT_METADATA = register_kind(DocumentKind(
    name="recipient metadata", application="secops.keylifecycle.recipient", encode=canonical_json,
    decode=json_decoder("recipient metadata object", _check_recipient), revision=itemgetter("revision")))
#: the latest signed checkpoint of one audit journal (a dict)
AUDIT_CHECKPOINT = register_kind(DocumentKind(
    name="audit checkpoint", application="secops.keylifecycle.audit",
    encode=lambda doc: json.dumps(doc, sort_keys=True).encode("ascii"),
    decode=json_decoder("audit checkpoint object", _check_checkpoint, encoding="ascii"),
    revision=itemgetter("seq"), keep_history=False))

AUDIT_SCHEMA = 1
AUDIT_JOURNAL_PIN_LABEL = "audit-journal-pin"
AUDIT_KEY_HISTORY_LABEL = "audit-checkpoint-keys"
#: fields of the pin (``_journal_pin.JournalPin``); ``previous_journal`` is null or a dict, the rest below
_PIN_STRINGS = ("journal_id", "head_hash", "signed_at", "signature", "key_id", "public_key_fingerprint",
                "token_label", "pinned_since")
_PIN_INTS = ("revision", "seq", "key_version")


def _check_pin(_label, doc):
    if doc.get("schema") != AUDIT_SCHEMA:
        raise ValueError("unknown schema %r" % doc.get("schema"))
    for field in _PIN_STRINGS:
        if not isinstance(doc[field], str):
            raise ValueError("%s is not a string" % field)
    for field in _PIN_INTS:
        if not isinstance(doc[field], int) or isinstance(doc[field], bool):
            raise ValueError("%s is not a number" % field)
    previous = doc.get("previous_journal")
    if previous is not None and not (isinstance(previous, dict) and isinstance(previous.get("journal_id"), str)):
        raise ValueError("previous_journal is not a journal")
    serial = doc.get("policy_serial")  # the highest signed policy serial accepted (_signed_policy), optional
    if serial is not None and (not isinstance(serial, int) or isinstance(serial, bool) or serial < 1):
        raise ValueError("policy_serial is not a serial")
    signers = doc.get("policy_signers")  # every policy signer fingerprint the token held, optional
    if signers is not None and not (isinstance(signers, list) and all(isinstance(item, str) for item in signers)):
        raise ValueError("policy_signers is not a list of fingerprints")
    policy = doc.get("policy")  # the policy of the last anchored task (sha256, signed, serial), optional
    if policy is not None and not (isinstance(policy, dict) and isinstance(policy.get("sha256"), str)):
        raise ValueError("policy is not a policy record")
    outcomes = doc.get("outcomes")  # the outcomes of the journal's last tasks (_journal_pin.task_outcome), optional
    if outcomes is not None and not (isinstance(outcomes, list) and all(is_task_outcome(o) for o in outcomes)):
        raise ValueError("outcomes is not a list of task outcomes")
    losses = doc.get("declared_losses")  # what rollovers declared lost (_journal_pin), optional
    if losses is not None and not (isinstance(losses, list) and all(
            isinstance(loss, dict) and isinstance(loss.get("journal_id"), str) for loss in losses)):
        raise ValueError("declared_losses is not a list of declared losses")


def _check_key_history(_label, doc):
    if doc.get("schema") != AUDIT_SCHEMA:
        raise ValueError("unknown schema %r" % doc.get("schema"))
    int(doc["revision"])
    for key_id, entry in doc["keys"].items():
        if not isinstance(key_id, str) or not isinstance(entry["public_key_pem"], str) \
                or not isinstance(entry["fingerprint"], str):
            raise ValueError("key %r is not a public key record" % key_id)
        int(entry["version"])


#: the one journal the token names, with its signed head (a dict; label ``audit-journal-pin``)
AUDIT_JOURNAL_PIN = register_kind(DocumentKind(
    name="audit journal pin", application=AUDIT_CHECKPOINT.application, encode=canonical_json,
    decode=json_decoder("journal pin object", _check_pin), revision=itemgetter("revision"), keep_history=False,
    label=AUDIT_JOURNAL_PIN_LABEL))
#: the public key of every audit-checkpoint version ever generated (a dict; label ``audit-checkpoint-keys``)
AUDIT_KEY_HISTORY = register_kind(DocumentKind(
    name="audit checkpoint key history", application=AUDIT_CHECKPOINT.application, encode=canonical_json,
    decode=json_decoder("checkpoint key history object", _check_key_history), revision=itemgetter("revision"),
    keep_history=False, label=AUDIT_KEY_HISTORY_LABEL))


def is_legacy_checkpoint_label(label):
    """Whether a label of the audit application is a legacy per-journal checkpoint (``audit-checkpoint:<id>``)."""
    return label.startswith("audit-checkpoint:")


LEASE_SCHEMA = 1


def _check_lease(_label, doc):
    if doc.get("schema") != LEASE_SCHEMA:
        raise ValueError("unknown lease schema %r" % doc.get("schema"))
    for field in ("holder", "operator", "host", "purpose", "acquired_at", "expires_at"):
        if not isinstance(doc[field], str):
            raise ValueError("%s is not a string" % field)
    int(doc["pid"])
    int(doc["revision"])
    datetime.fromisoformat(doc["acquired_at"])
    datetime.fromisoformat(doc["expires_at"])


#: one lifecycle run's lease on the token (a dict: holder, operator, host, pid, acquired_at, expires_at, purpose)
TOKEN_LEASE = register_kind(DocumentKind(
    name="token lease", application="secops.keylifecycle.lease", encode=canonical_json,
    decode=json_decoder("lease object", _check_lease), revision=itemgetter("revision")))


#: string fields of a signer certificate (``_managed_signing.certify_successor``); versions are ints
SIGNER_CERTIFICATE_FIELDS = ("name", "previous_fingerprint", "fingerprint", "public_key_pem", "certified_at",
                             "signature")


def _check_signer_certificate(_label, doc):
    for field in SIGNER_CERTIFICATE_FIELDS:
        if not isinstance(doc[field], str):
            raise ValueError("%s is not a string" % field)
    int(doc["version"])
    int(doc["previous_version"])


#: a package-signing or audit-checkpoint version's certificate, signed by the previous version while it was still
#: active (a dict)
SIGNER_CERTIFICATE = register_kind(DocumentKind(
    name="package signer certificate", application="secops.keylifecycle.signer-certificate", encode=canonical_json,
    decode=json_decoder("signer certificate", _check_signer_certificate), revision=lambda _doc: 1))


APPROVAL_SCHEMA = 1
APPROVAL_NONCE_PREFIX = "approval-nonce:"
SIGNED_POLICY_PREFIX = "signed-policy:"


def _check_approval_nonce(label, doc):
    if doc.get("schema") != APPROVAL_SCHEMA or label != APPROVAL_NONCE_PREFIX + doc["nonce"]:
        raise ValueError("not an approval nonce record")
    for field in ("action", "approver", "not_after", "used_at"):
        if not isinstance(doc[field], str):
            raise ValueError("%s is not a string" % field)


#: one used nonce of a signed approval (``_approvals``): label ``approval-nonce:<nonce>``, a dict {schema, nonce,
#: action, approver (fingerprint), not_after, used_at}; immutable, so an approval is good for one task for as long as
#: the token lives, whoever holds a PIN
APPROVAL_NONCE = register_kind(DocumentKind(
    name="approval nonce", application="secops.keylifecycle.approval-nonce", encode=canonical_json,
    decode=json_decoder("approval nonce object", _check_approval_nonce), revision=lambda _doc: 1, immutable=True))


def _check_signed_policy_record(label, doc):
    if doc.get("schema") != APPROVAL_SCHEMA or label != "%s%d" % (SIGNED_POLICY_PREFIX, int(doc["serial"])):
        raise ValueError("not a signed policy record")
    if not isinstance(doc["document"], dict) or not isinstance(doc["sha256"], str):
        raise ValueError("document is not a signed policy")


#: each signed policy the token accepted (``_signed_policy``): label ``signed-policy:<serial>``, a dict {schema,
#: serial, sha256, accepted_at, document}; immutable: the highest serial is the floor no policy may go below, and its
#: document the policy in force, whose approvers decide the next change of policy
SIGNED_POLICY_RECORD = register_kind(DocumentKind(
    name="signed policy record", application="secops.keylifecycle.signed-policy", encode=canonical_json,
    decode=json_decoder("signed policy record", _check_signed_policy_record), revision=itemgetter("serial"),
    immutable=True))


REPLICA_DOCUMENT_PREFIX = "replica-document:"


def replica_document_label(kind_name, label):
    """The label a replica keeps another token's document under: ``replica-document:<kind>|<label>``."""
    return "%s%s|%s" % (REPLICA_DOCUMENT_PREFIX, kind_name, label)


def _check_replica_document(label, doc):
    if doc.get("schema") != 1 or label != replica_document_label(doc["kind"], doc["label"]):
        raise ValueError("not a replica document")
    int(doc["revision"])
    if not isinstance(doc["document"], dict) or not isinstance(doc["sha256"], str):
        raise ValueError("no document")


#: a document of the source token kept on a replica (``_replication``): a dict {schema, revision, kind (the source
#: kind's name), label, sha256, document}. Opaque to the replica's own logic (its pin is not the replica's pin), and
#: written back as its own kind when a primary is restored from the replica
REPLICA_DOCUMENT = register_kind(DocumentKind(
    name="replica document", application="secops.keylifecycle.replica-document", encode=canonical_json,
    decode=json_decoder("replica document", _check_replica_document), revision=itemgetter("revision"),
    keep_history=False))


@dataclass(frozen=True)
class Revisions:
    """The newest revision of a document and whether another object carries the same revision."""

    newest: object
    duplicated: bool = False


# ---- the index -----------------------------------------------------------------------------------

#: how often a search is run again when objects vanish while it runs
FIND_ATTEMPTS = 20


def destroy_quietly(obj):
    """C_DestroyObject where a failure changes nothing the caller can act on (a session object, an undo)."""
    try:
        obj.destroy()
    except p11_exc.PKCS11Error:
        pass


def find_objects(session, template):
    """C_FindObjects with ``template``, as a list, tolerating objects that another process destroys meanwhile.

    python-pkcs11 reads each found object's class as it goes; an object destroyed between C_FindObjects and
    that read (a lease contender giving up, say) raises CKR_OBJECT_HANDLE_INVALID in the middle of the
    search. The search is then run again: what it returns is the token as it is after the change.
    """
    for attempt in range(FIND_ATTEMPTS):
        try:
            return list(session.get_objects(template))
        except p11_exc.ObjectHandleInvalid:
            if attempt == FIND_ATTEMPTS - 1:
                raise
    return []


def create_undeletable(session, template):
    """C_CreateObject with CKA_DESTROYABLE false; a token that does not know the attribute (PKCS#11 before 2.40)
    gets the object without it."""
    try:
        return session.create_object({**template, Attribute.DESTROYABLE: False})
    except p11_exc.AttributeTypeInvalid:
        return session.create_object(template)


def key_classes():
    return (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY)


class TokenObjects:
    """Our objects on one logged-in session, enumerated once and indexed by label.

    The index maps a label to its objects by *tag*: the CKA_APPLICATION of a data
    document (a str) or the CKA_CLASS of a key object. Writes through this class keep
    the index current, so a store never searches the token again within a call.
    """

    def __init__(self, session, token_label):
        self.session = session
        self.token_label = token_label
        self._index = {}
        self._newest = {}

    def load(self):
        """One C_FindObjects over every object on the token; index what can be ours."""
        self._index.clear()
        self._newest.clear()
        with pkcs11_errors("C_FindObjects", token_label=self.token_label):
            for obj in find_objects(self.session, {}):
                try:
                    tag, label = self._classify(obj)
                except p11_exc.ObjectHandleInvalid:  # destroyed by another process since the search
                    continue
                if tag is not None:
                    self._add(label, tag, obj)
        return self

    @staticmethod
    def _classify(obj):
        if obj.object_class is not None:  # python-pkcs11 knows the class of keys and certificates
            return (obj.object_class, obj[Attribute.LABEL]) if obj.object_class in key_classes() else (None, None)
        try:
            values = obj.get_attributes([Attribute.CLASS, Attribute.LABEL, Attribute.APPLICATION])
        except p11_exc.AttributeTypeInvalid:  # not a data object: no CKA_APPLICATION
            return None, None
        if values[Attribute.CLASS] != ObjectClass.DATA:
            return None, None
        return values[Attribute.APPLICATION], values[Attribute.LABEL]

    def _add(self, label, tag, obj):
        self._index.setdefault(label, {}).setdefault(tag, []).append(obj)

    def _objects(self, label, tag):
        return list(self._index.get(label, {}).get(tag, ()))

    def labels(self):
        """Every label that carries at least one of our objects."""
        return [label for label, tags in self._index.items() if any(tags.values())]

    # ---- key objects ---------------------------------------------------------------------------

    def key_objects(self, object_class, label):
        return self._objects(label, object_class)

    def add_key_objects(self, label, objects):
        """Index key objects created in this call (generated, unwrapped and copied, ...)."""
        for obj in objects:
            self._add(label, obj.object_class, obj)

    def destroy_key_objects(self, label, objects=None, operation=None):
        """C_DestroyObject on ``objects`` (default: every key object labelled ``label``), dropped from the index."""
        tags = self._index.get(label, {})
        if objects is None:
            objects = [obj for object_class in key_classes() for obj in tags.get(object_class, ())]
        with pkcs11_errors(operation or "C_DestroyObject for %s" % label, token_label=self.token_label):
            for obj in objects:
                obj.destroy()
        self.forget(label, objects)

    def forget(self, label, objects):
        """Drop objects from the index (they were destroyed)."""
        handles = {obj.handle for obj in objects}
        for tag, indexed in self._index.get(label, {}).items():
            kept = [obj for obj in indexed if obj.handle not in handles]
            if len(kept) != len(indexed):
                indexed[:] = kept
                self._newest.pop((tag, label), None)

    def traces(self, key_id, label, object_classes=None):
        """Search the token again (not the index) for objects with this CKA_ID or CKA_LABEL.

        Returns ``(object class, "CKA_ID" or "CKA_LABEL")`` for each kind of trace found: after a
        destruction, the proof that nothing of the key is left.
        """
        found = []
        for object_class in object_classes or key_classes():
            for what, template in (("CKA_ID", {Attribute.ID: key_id}), ("CKA_LABEL", {Attribute.LABEL: label})):
                if find_objects(self.session, {**template, Attribute.CLASS: object_class}):
                    found.append((object_class, what))
        return found

    # ---- data documents ------------------------------------------------------------------------

    def document_labels(self, kind):
        return sorted(label for label, tags in self._index.items() if tags.get(kind.application))

    def document_objects(self, kind, label):
        return self._objects(label, kind.application)

    def newest(self, kind, label):
        """The newest revision of the document ``label`` of ``kind`` (``Revisions``), or None if there is none."""
        key = (kind.application, label)
        if key not in self._newest:
            objects = self._objects(label, kind.application)
            if not objects:
                return None
            with pkcs11_errors("C_GetAttributeValue", token_label=self.token_label):
                docs = [kind.decode(label, obj[Attribute.VALUE]) for obj in objects]
            newest = max(docs, key=kind.revision)
            revisions = [kind.revision(doc) for doc in docs]
            self._newest[key] = Revisions(newest, revisions.count(kind.revision(newest)) > 1)
        return self._newest[key]

    def write(self, kind, label, doc, operation=None):
        """Store ``doc`` as a new revision (one C_CreateObject); earlier ones stay unless the kind keeps none."""
        older = self._objects(label, kind.application)
        template = {
            Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.PRIVATE: not kind.immutable,
            Attribute.MODIFIABLE: not kind.immutable, Attribute.LABEL: label, Attribute.APPLICATION: kind.application,
            Attribute.VALUE: kind.encode(doc),
        }
        with pkcs11_errors(operation or "C_CreateObject (%s %s)" % (kind.name, label), token_label=self.token_label):
            if kind.immutable:
                obj = create_undeletable(self.session, template)
            else:
                obj = self.session.create_object(template)
            if not kind.keep_history:
                for old in older:
                    old.destroy()
        if not kind.keep_history:
            self.forget(label, older)
        self._add(label, kind.application, obj)
        self._newest[(kind.application, label)] = Revisions(doc)
        return obj


# ---- key attributes ------------------------------------------------------------------------------


def check_value(key):
    """KCV of an AES key: the first 3 bytes of AES-ECB of a zero block, computed by the token (hex)."""
    return bytes(key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))[:3].hex()


#: usage -> (CKA attribute, the object of a key pair that carries it); a secret key carries every usage itself
USAGE_ATTRIBUTES = {
    "encrypt": ("ENCRYPT", "public"),
    "decrypt": ("DECRYPT", "private"),
    "wrap": ("WRAP", "public"),
    "unwrap": ("UNWRAP", "private"),
    "sign": ("SIGN", "private"),
    "verify": ("VERIFY", "public"),
    "derive": ("DERIVE", "private"),
}
#: usages an EC key pair has no attribute for on the token
EC_NO_USAGES = ("encrypt", "decrypt", "wrap", "unwrap")


def usage_attribute(usage):
    return getattr(Attribute, USAGE_ATTRIBUTES[usage][0])


def usage_side(usage):
    """'public' or 'private': which object of a key pair carries ``usage``."""
    return USAGE_ATTRIBUTES[usage][1]


def usage_template(wanted, side=None, skip=()):
    """CKA_<usage> true for each usage in ``wanted``, false for the others.

    ``side``: 'public' or 'private' for one object of a pair (only the usages it carries);
    None for a secret key. Usages in ``skip`` are left out.
    """
    return {usage_attribute(usage): usage in wanted for usage, (_attribute, carrier) in USAGE_ATTRIBUTES.items()
            if usage not in skip and side in (None, carrier)}


#: the token's own evidence about how a key came to be, read from the key object
EVIDENCE_ATTRIBUTES = {
    "local": "LOCAL",
    "sensitive": "SENSITIVE",
    "always_sensitive": "ALWAYS_SENSITIVE",
    "never_extractable": "NEVER_EXTRACTABLE",
    "extractable": "EXTRACTABLE",
}


def evidence(obj):
    """The evidence attributes of a key object, as booleans (one C_GetAttributeValue)."""
    values = obj.get_attributes([getattr(Attribute, a) for a in EVIDENCE_ATTRIBUTES.values()])
    return {name: bool(values[getattr(Attribute, a)]) for name, a in EVIDENCE_ATTRIBUTES.items()}


def never_left_the_token(flags):
    """Sensitive and not extractable since generation (``flags`` from ``evidence``)."""
    return bool(flags["sensitive"] and not flags["extractable"] and flags["always_sensitive"]
                and flags["never_extractable"])


# ---- curves and public keys ----------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One named curve as the policy, python-pkcs11, the token (CKA_EC_PARAMS) and ``cryptography`` name it."""

    name: str
    oid_name: str
    der_oid: bytes
    cryptography_name: str

    def ec_params(self):
        """CKA_EC_PARAMS for generation: python-pkcs11's encoding of the named curve (equal to ``der_oid``)."""
        return encode_named_curve_parameters(self.oid_name)

    def cryptography_curve(self):
        return getattr(ec, self.cryptography_name)()


#: canonical name -> curve; the policy (``_policy.CURVES``) decides which may be generated
TOKEN_CURVES = {curve.name: curve for curve in (
    Curve("P-256", "secp256r1", bytes.fromhex("06082a8648ce3d030107"), "SECP256R1"),
    Curve("P-384", "secp384r1", bytes.fromhex("06052b81040022"), "SECP384R1"),
    Curve("P-521", "secp521r1", bytes.fromhex("06052b81040023"), "SECP521R1"),
    # Recognised when read (a recipient's transport key), so a weak key is refused by its name.
    Curve("P-192", "secp192r1", bytes.fromhex("06082a8648ce3d030101"), "SECP192R1"),
    Curve("P-224", "secp224r1", bytes.fromhex("06052b81040021"), "SECP224R1"),
)}


def curve_of(public):
    """The ``Curve`` of a token EC public key object (from CKA_EC_PARAMS), or None for a curve not in the table."""
    params = bytes(public[Attribute.EC_PARAMS])
    return next((curve for curve in TOKEN_CURVES.values() if curve.der_oid == params), None)


def rsa_public_key(public):
    """A ``cryptography`` RSA public key from a token RSA public key object (CKA_MODULUS, CKA_PUBLIC_EXPONENT)."""
    numbers = rsa.RSAPublicNumbers(int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
                                   int.from_bytes(public[Attribute.MODULUS], "big"))
    return numbers.public_key()


def ec_public_key(public, curve):
    """A ``cryptography`` EC public key from a token EC public key object (CKA_EC_POINT).

    ``curve``: a canonical name (``P-256``) or a ``Curve``.
    """
    curve = TOKEN_CURVES[curve] if isinstance(curve, str) else curve
    point = der_octet_string(bytes(public[Attribute.EC_POINT]))
    return ec.EllipticCurvePublicKey.from_encoded_point(curve.cryptography_curve(), point)


def key_version_public_key(spec, public):
    """A ``cryptography`` public key from the public key object of a managed key version."""
    return rsa_public_key(public) if spec.type == "rsa" else ec_public_key(public, spec.curve)


@dataclass(frozen=True)
class TokenPublicKey:
    """A token public key object read into ``cryptography``: ``type`` ``rsa`` or ``ec``, ``curve`` (a ``Curve``) for
    EC, ``size`` in bits (the modulus or the curve's order)."""

    type: str
    curve: object
    public_key: object

    @property
    def size(self):
        return self.public_key.key_size if self.type == "rsa" else self.public_key.curve.key_size


def token_public_key(public):
    """The ``TokenPublicKey`` of a token public key object, or None when it is neither RSA nor EC on a curve of
    ``TOKEN_CURVES`` (the caller says what that means for its object)."""
    key_type = public[Attribute.KEY_TYPE]
    if key_type == KeyType.RSA:
        return TokenPublicKey("rsa", None, rsa_public_key(public))
    curve = curve_of(public) if key_type == KeyType.EC else None
    return TokenPublicKey("ec", curve, ec_public_key(public, curve)) if curve is not None else None


def _token_curve(public_key):
    return next((c for c in TOKEN_CURVES.values() if c.oid_name == public_key.curve.name), None)


def token_can_hold(public_key):
    """Whether ``public_key_attributes`` can write this ``cryptography`` public key: RSA, or EC on a curve of
    ``TOKEN_CURVES``."""
    return isinstance(public_key, rsa.RSAPublicKey) or (
        isinstance(public_key, ec.EllipticCurvePublicKey) and _token_curve(public_key) is not None)


def public_key_attributes(public_key):
    """The attributes that carry a ``cryptography`` RSA or EC public key in a C_CreateObject template of a
    CKO_PUBLIC_KEY: CKA_KEY_TYPE with CKA_MODULUS and CKA_PUBLIC_EXPONENT (big-endian), or with CKA_EC_PARAMS (the
    named curve) and CKA_EC_POINT (the uncompressed point as a DER OCTET STRING)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.RSA,
                Attribute.MODULUS: numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"),
                Attribute.PUBLIC_EXPONENT: numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")}
    curve = _token_curve(public_key)
    if curve is None:
        raise TokenOperationFailed("The EC public key is on curve %s, which this collection does not keep on a token."
                                   % public_key.curve.name)
    point = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.EC,
            Attribute.EC_PARAMS: curve.ec_params(), Attribute.EC_POINT: encode_der_octet_string(point)}


def encode_der_octet_string(blob):
    """``blob`` as a DER OCTET STRING (CKA_EC_POINT)."""
    length = len(blob)
    if length < 0x80:
        return b"\x04" + bytes([length]) + blob
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return b"\x04" + bytes([0x80 | len(body)]) + body + blob


def der_octet_string(blob):
    """Unwrap a DER OCTET STRING (CKA_EC_POINT); accept a raw point as some tokens return it."""
    if not blob or blob[0] != 0x04 or len(blob) < 2:
        raise TokenOperationFailed("The token returned a malformed CKA_EC_POINT.")
    length = blob[1]
    offset = 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(blob[2:2 + count], "big")
        offset = 2 + count
    if offset + length == len(blob):
        return blob[offset:]
    return blob


def spki_fingerprint(public_key):
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo (``openssl pkey -pubin -outform DER | sha256sum``)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def trusted_key_id(public_key):
    """CKA_ID of a public key the Security Officer makes trusted (a recipient's transport key, a policy signer): the
    first 16 bytes of its SPKI SHA-256 (the fingerprint's digest)."""
    return bytes.fromhex(spki_fingerprint(public_key).split(":", 1)[1])[:16]


def public_key_pem(public_key):
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")
