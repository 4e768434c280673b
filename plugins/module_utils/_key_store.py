# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The token as the key store: enumerate once, read evidence, generate versions.

PRIVATE: not part of the public interface.

``TokenKeyStore.load()`` reads the token through one ``_token_objects.TokenObjects``
enumeration and groups our objects by key version (``<name>:v<version>``): the
metadata documents and the secret, private and public key objects. A batch of N keys
costs O(N) token calls; no key is looked up by a search of its own.

Key generation happens inside the token, with the attributes ``_key_templates`` gives
(CKA_SENSITIVE true; CKA_EXTRACTABLE and CKA_WRAP_WITH_TRUSTED only for distributable keys).
No key value is ever read: the key check value is computed by the token and the public
key fingerprint is taken from the public key object.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, replace

from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import Attribute, KeyType, ObjectClass
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyNotFound
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import pkcs11_errors
from ansible_collections.secops.keylifecycle.plugins.module_utils._key_templates import (
    aes_check_value,
    generate_key_objects,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import (
    KeyVersion,
    Transition,
    parse_label,
    version_label,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    KEY_METADATA,
    TokenObjects,
    check_value,
    evidence,
    find_objects,
    key_version_public_key,
    public_key_attributes,
    public_key_pem,
    spki_fingerprint,
    usage_attribute,
    usage_side,
)


@dataclass
class VersionObjects:
    """The token objects that make up one version, by role (read from the index)."""

    metadata: list
    secret: list
    private: list
    public: list

    def key_objects(self):
        return self.secret + self.private + self.public

    def primary(self):
        """The object that holds the secret: the AES key or the private key."""
        objects = self.secret or self.private
        return objects[0] if objects else None


@dataclass(frozen=True)
class Anomaly:
    label: str
    problem: str

    def as_dict(self):
        return {"label": self.label, "problem": self.problem}


class RecordedVersions:
    """The ``(name, version)`` pairs on the token, indexed by name: a plain set made every per-key question (its
    versions, its next number) scan the whole token, quadratic in a batch of a thousand keys."""

    def __init__(self, pairs=()):
        self._by_name = {}
        for pair in pairs:
            self.add(pair)

    def add(self, pair):
        self._by_name.setdefault(pair[0], set()).add(pair[1])

    def discard(self, pair):
        numbers = self._by_name.get(pair[0])
        if numbers is not None:
            numbers.discard(pair[1])
            if not numbers:
                del self._by_name[pair[0]]

    def __iter__(self):
        return ((name, number) for name, numbers in self._by_name.items() for number in numbers)

    def __contains__(self, pair):
        return pair[1] in self._by_name.get(pair[0], ())

    def names(self):
        return sorted(self._by_name)

    def of(self, name):
        """The version numbers of ``name``, ascending."""
        return sorted(self._by_name.get(name, ()))


class TokenKeyStore:
    """Our key versions on one logged-in session, indexed once per module call."""

    def __init__(self, session, token_label):
        self.session = session
        self.token_label = token_label
        self.objects = TokenObjects(session, token_label)
        self._versions = RecordedVersions()
        self._decoded = {}
        self._kcv_index = None
        self.anomalies = []
        #: the token's lease (``_token_lease.TokenLease``) while a lifecycle run holds it: checked before each change
        self.lease = None
        #: policy.require_backup of the run: the collection's own signing keys are generated with backup too
        self.backup_managed_keys = False

    # ---- reading -------------------------------------------------------------------------------

    def load(self):
        """Enumerate the token once and index our objects by (name, version)."""
        self.objects.load()
        self._decoded.clear()
        self.anomalies = []
        parsed = filter(None, map(parse_label, self.objects.labels()))
        self._versions = RecordedVersions(key for key in parsed
                                          if self._objects(*key).metadata or self._objects(*key).key_objects())
        for name, version in sorted(self._versions):
            label = version_label(name, version)
            objects = self._objects(name, version)
            if not objects.metadata:
                self.anomalies.append(Anomaly(label, "key object(s) without a metadata object: generation was "
                                                     "interrupted or the metadata was removed"))
            if len(objects.secret) > 1 or len(objects.private) > 1 or len(objects.public) > 1:
                self.anomalies.append(Anomaly(label, "more than one key object carries this label: two "
                                                     "generations of the same version ran at once"))
        return self

    def _objects(self, name, version):
        label = version_label(name, version)
        keys = self.objects.key_objects
        return VersionObjects(self.objects.document_objects(KEY_METADATA, label), keys(ObjectClass.SECRET_KEY, label),
                              keys(ObjectClass.PRIVATE_KEY, label), keys(ObjectClass.PUBLIC_KEY, label))

    def names(self):
        return self._versions.names()

    def next_version(self, name):
        """The next free version number: above every version on the token, recorded or half-made."""
        return max(self._versions.of(name), default=0) + 1

    def half_made(self, name):
        """Version numbers of ``name`` that have key objects but no metadata (an interrupted generation)."""
        return [version for version in self._versions.of(name)
                if not self._objects(name, version).metadata and self._objects(name, version).key_objects()]

    def discard_half_made(self, name, version):
        """Destroy the key objects of a version that never got its metadata; return their CKA_ID (hex).

        Such a version was never active: nothing was encrypted under it and it was never
        distributed, so removing it loses nothing.
        """
        label = version_label(name, version)
        key_id = bytes(self._objects(name, version).key_objects()[0][Attribute.ID]).hex()
        self.objects.destroy_key_objects(label, operation="C_DestroyObject for %s" % label)
        self._versions.discard((name, version))
        return key_id

    # ---- duplicates (two generations of one version ran at once, before the token lease) ---------

    def duplicated(self):
        """``(name, version)`` of recorded versions whose label carries key objects of more than one CKA_ID, or
        whose newest metadata revision is carried by two objects."""
        found = []
        for name, version in sorted(self._versions):
            objects = self._objects(name, version)
            if not objects.metadata:
                continue  # half-made: removed by remove_half_made
            revisions = self.objects.newest(KEY_METADATA, version_label(name, version))
            # one key object (an AES key) carries one CKA_ID: no attribute to read
            if (len(objects.key_objects()) > 1 and len(self.key_groups(name, version)) > 1) or revisions.duplicated:
                found.append((name, version))
        return found

    def key_groups(self, name, version):
        """CKA_ID (hex) -> the key objects of a version that carry it (a key pair: two objects, one id)."""
        groups = {}
        with pkcs11_errors("C_GetAttributeValue", token_label=self.token_label):
            for obj in self._objects(name, version).key_objects():
                groups.setdefault(bytes(obj[Attribute.ID]).hex(), []).append(obj)
        return groups

    def metadata_documents(self, name, version):
        """Every metadata object of a version with its decoded revision: ``[(object, KeyVersion)]``."""
        label = version_label(name, version)
        with pkcs11_errors("C_GetAttributeValue", token_label=self.token_label):
            return [(obj, KEY_METADATA.decode(label, obj[Attribute.VALUE]))
                    for obj in self._objects(name, version).metadata]

    def version(self, name, version):
        """The recorded version (newest metadata revision, with evidence), or None."""
        return self._version(name, version)

    def renumber(self, moved, objects, old_version, old_documents, disabled):
        """Move key objects found under another version's label to ``moved`` (a new version number).

        The new version's metadata is written first: if this is cut short, the key objects stay
        where they were and the next run finds the recorded number again (its metadata carries
        their CKA_ID), so no key is ever left without metadata for the half-made repair to remove.
        Then the usages in ``disabled`` are switched off, the objects relabelled, and the
        moved key's metadata objects under the old label destroyed.
        """
        self._keep_lease()
        old_label, new_label = version_label(moved.name, old_version), moved.label
        if not self.objects.document_objects(KEY_METADATA, new_label):
            self._write_metadata(moved, "repair of %s (metadata of %s)" % (old_label, new_label))
        self._versions.add((moved.name, moved.version))
        with pkcs11_errors("C_SetAttributeValue (relabel %s as %s)" % (old_label, new_label),
                           token_label=self.token_label):
            for obj in objects:
                for usage in disabled:
                    if obj.object_class == ObjectClass.SECRET_KEY or \
                            usage_side(usage) == ("public" if obj.object_class == ObjectClass.PUBLIC_KEY
                                                  else "private"):
                        obj[usage_attribute(usage)] = False
                obj[Attribute.LABEL] = new_label
        self.objects.forget(old_label, objects)
        self.objects.add_key_objects(new_label, objects)
        if old_documents:
            self.objects.destroy_key_objects(old_label, objects=old_documents,
                                             operation="C_DestroyObject (metadata of %s moved to %s)"
                                             % (old_label, new_label))
        self._decoded.pop((moved.name, old_version), None)
        self._decoded.pop((moved.name, moved.version), None)
        return self._version(moved.name, moved.version)

    def versions(self, name):
        """All recorded versions of a logical key, oldest first, with the token's evidence."""
        result = []
        for version in self._versions.of(name):
            decoded = self._version(name, version)
            if decoded is not None:
                result.append(decoded)
        return result

    def _version(self, name, version):
        key = (name, version)
        if key in self._decoded:
            return self._decoded[key]
        label = version_label(name, version)
        revisions = self.objects.newest(KEY_METADATA, label)
        decoded = None
        if revisions is not None:
            decoded = revisions.newest
            if revisions.duplicated:
                self.anomalies.append(Anomaly(label, "two metadata objects carry revision %d: two updates "
                                                     "ran at once; one of them is used" % decoded.revision))
            primary = self._objects(name, version).primary()
            if primary is None and decoded.state != "destroyed":
                self.anomalies.append(Anomaly(label, "metadata says %s but the key object is missing"
                                                     % decoded.state))
            with pkcs11_errors("C_GetAttributeValue", token_label=self.token_label):
                decoded = replace(decoded, evidence=evidence(primary) if primary is not None else {})
        self._decoded[key] = decoded
        return decoded

    def private_key(self, name, version):
        """The private key object of a key pair version (for signing inside the token)."""
        objects = self._objects(name, version)
        if not objects.private:
            raise KeyNotFound("No private key object for %s on token %r."
                              % (version_label(name, version), self.token_label))
        return objects.private[0]

    def public_key_pem(self, name, version):
        """PEM SubjectPublicKeyInfo of a key pair version, read from its public key object."""
        objects = self._objects(name, version)
        decoded = self._version(name, version)
        if not objects.public or decoded is None:
            raise KeyNotFound("No public key object for %s on token %r."
                              % (version_label(name, version), self.token_label))
        with pkcs11_errors("C_GetAttributeValue", token_label=self.token_label):
            return public_key_pem(key_version_public_key(decoded.spec, objects.public[0]))

    # ---- wrapping (distribution) ---------------------------------------------------------------

    def import_wrapping_key(self, public_key):
        """A session object (gone when the session closes) for a recipient's RSA transport public key
        (``cryptography``). It may only wrap: CKA_ENCRYPT and CKA_VERIFY are off."""
        with pkcs11_errors("C_CreateObject (recipient transport key)", token_label=self.token_label):
            return self.session.create_object({
                **public_key_attributes(public_key), Attribute.TOKEN: False, Attribute.PRIVATE: False,
                Attribute.WRAP: True, Attribute.ENCRYPT: False, Attribute.VERIFY: False,
            })

    def wrap_secret(self, version, wrapping_key, mechanism, mechanism_param):
        """C_WrapKey of a version's secret key under ``wrapping_key``; the token returns the wrapped bytes."""
        secret = self.objects.key_objects(ObjectClass.SECRET_KEY, version.label)
        if not secret:
            raise KeyNotFound("No secret key object for %s on token %r." % (version.label, self.token_label))
        return bytes(wrapping_key.wrap_key(secret[0], mechanism=mechanism, mechanism_param=mechanism_param))

    # ---- writing -------------------------------------------------------------------------------

    def generate(self, spec, version, operator, now, require_trusted_wrapping=True):
        """Generate one new version inside the token and record its metadata.

        A distributable key is generated with CKA_WRAP_WITH_TRUSTED true as well (the token then wraps it only
        under a CKA_TRUSTED key). A token without that attribute is refused when ``require_trusted_wrapping``
        (policy.require_trusted_wrapping), else the key is generated without it and the metadata says so.
        """
        self._keep_lease()
        label = version_label(spec.name, version)
        key_id = os.urandom(16)
        created = []
        try:
            with pkcs11_errors("key generation for %s" % label, token_label=self.token_label):
                objects, trusted = generate_key_objects(self.session, spec, label, key_id, require_trusted_wrapping,
                                                        self.token_label)
                created += objects
                key = objects[0]
                if spec.type == "aes":
                    kcv, fingerprint = aes_check_value(key, keep_encrypt="encrypt" in spec.usage), None
                else:
                    kcv, fingerprint = None, spki_fingerprint(key_version_public_key(spec, objects[1]))
                result = KeyVersion(
                    spec=spec, version=version, key_id=key_id.hex(), state="active", created=now,
                    transitions=(Transition(state="active", at=now, by=operator, reason="generated"),),
                    key_check_value=kcv, public_key_fingerprint=fingerprint, revision=1, wrap_with_trusted=trusted,
                )
                self.objects.add_key_objects(label, created)
                created.append(self._write_metadata(result, "key generation for %s" % label))
                result = replace(result, evidence=evidence(key))
        except Exception:
            self._discard(label, created)
            raise
        self._versions.add((spec.name, version))
        self._decoded[(spec.name, version)] = result
        return result

    def update_metadata(self, current, updated, evidence_flags=None):
        """Record a version's new metadata as a new revision object; earlier revisions stay.

        A CKO_DATA object's value cannot be changed on every token, so metadata is never
        edited: each change adds one object (one C_CreateObject, atomic on the token),
        readers take the highest revision, and the earlier ones are the version's history
        on the token. Nothing is destroyed on this path, which keeps a batch linear on
        tokens where C_DestroyObject costs time in proportion to the objects stored.
        """
        self._keep_lease()
        self._write_metadata(updated, "metadata update for %s" % current.label)
        # evidence_flags: the key's attributes read again after this change made them differ (make_unextractable)
        updated = replace(updated, evidence=current.evidence if evidence_flags is None else evidence_flags)
        self._decoded[(current.name, current.version)] = updated
        return updated

    def record_copy(self, version, objects):
        """Record a version copied onto this token from another (a replica, or a primary restored from one): its key
        objects, already stored, and its metadata exactly as the source token holds it (same revision)."""
        self._keep_lease()
        self.objects.add_key_objects(version.label, objects)
        self._write_metadata(version, "metadata of the copy of %s" % version.label)
        self._versions.add((version.name, version.version))
        self._decoded[(version.name, version.version)] = version

    def record_revision(self, version):
        """Write a newer revision of a copied version's metadata as the source token holds it."""
        self._keep_lease()
        self._write_metadata(version, "metadata update of the copy of %s" % version.label)
        self._decoded[(version.name, version.version)] = version

    def set_usage(self, version, disabled):
        """Switch usages off on the version's key objects (the token then refuses those operations)."""
        self._keep_lease()
        objects = self._objects(version.name, version.version)
        with pkcs11_errors("C_SetAttributeValue for %s" % version.label, token_label=self.token_label):
            for usage in disabled:
                targets = objects.secret or (objects.public if usage_side(usage) == "public" else objects.private)
                for obj in targets:
                    obj[usage_attribute(usage)] = False

    def make_unextractable(self, version):
        """CKA_EXTRACTABLE false on a version's key (the token refuses the way back); returns its evidence flags."""
        self._keep_lease()
        primary = self._objects(version.name, version.version).primary()
        if primary is None:
            raise KeyNotFound("No key object for %s on token %r." % (version.label, self.token_label))
        with pkcs11_errors("C_SetAttributeValue (CKA_EXTRACTABLE false) for %s" % version.label,
                           token_label=self.token_label):
            primary[Attribute.EXTRACTABLE] = False
            return evidence(primary)

    def seal(self, version, now):
        """Make a version's key non-extractable (``make_unextractable``), then record ``sealed_at`` in its metadata.
        Recipients keep what they hold; nothing new can be wrapped from it."""
        flags = self.make_unextractable(version)
        return self.update_metadata(version, replace(version, sealed_at=now, revision=version.revision + 1), flags)

    def destroy_key_objects(self, version):
        """C_DestroyObject on every key object of a version (the metadata stays, to become a tombstone)."""
        self._keep_lease()
        self.objects.destroy_key_objects(version.label, operation="C_DestroyObject for %s" % version.label)

    def verify_absent(self, version):
        """Search the token again for any trace of this version's key: by CKA_ID, by CKA_LABEL and, for AES,
        by key check value among the secret keys the token lets encrypt (a copy under another id or label).

        Returns the list of what was found (empty when the key is gone).
        """
        with pkcs11_errors("C_FindObjects (destruction check)", token_label=self.token_label):
            found = ["a %s object with the same %s" % (object_class.name, what) for object_class, what
                     in self.objects.traces(bytes.fromhex(version.key_id), version.label)]
            if version.key_check_value and version.key_check_value in self._check_values():
                found.append("a secret key with the same key check value (%s)"
                             % ", ".join(self._check_values()[version.key_check_value]))
        return found

    def _check_values(self):
        """KCV -> labels of every AES secret key on the token that may encrypt (computed once per call)."""
        if self._kcv_index is None:
            self._kcv_index = defaultdict(list)
            candidates = find_objects(self.session, {Attribute.CLASS: ObjectClass.SECRET_KEY,
                                                     Attribute.KEY_TYPE: KeyType.AES, Attribute.ENCRYPT: True})
            for obj in candidates:
                self._kcv_index[check_value(obj)].append(str(obj[Attribute.LABEL]))
        return self._kcv_index

    def _keep_lease(self):
        """Before a change: renew the token lease if due; refuse if it was lost (``_token_lease``)."""
        if self.lease is not None:
            self.lease.check()

    def _write_metadata(self, version, operation):
        return self.objects.write(KEY_METADATA, version.label, version, operation=operation)

    def _discard(self, label, objects):
        """Best-effort removal of the objects a failed generation left behind."""
        for obj in objects:
            try:
                obj.destroy()
            except Exception:  # pylint: disable=broad-except
                self.anomalies.append(Anomaly(label, "an object was left on the token by a failed generation"))
        self.objects.forget(label, objects)
