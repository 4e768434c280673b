# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""A recipient's own PKCS#11 token: its transport key pair and the key versions installed on it.

PRIVATE: not part of the public interface.

The transport key pair is generated inside the recipient's token; its private key
is sensitive, never extractable and may only unwrap. Each installed version is an
AES key object labelled ``<name>:v<version>`` with the same CKA_ID as on the HSM,
sensitive and not extractable, plus a metadata document (``_token_objects.RECIPIENT_METADATA``)
that records what was installed, from which package, and its state. Metadata is
append-only (a new revision per change), as on the HSM side. A withdrawn version
keeps a tombstone so the same version is never installed again. The token is read
through one ``_token_objects.TokenObjects`` enumeration per call.

The HSM's package-signing public key pinned in this token (``recipient_enroll`` option
``package_signer``) is read and written by ``_pinned_signer``; the metadata of each version keeps the
``package_signed_at`` of the last package applied, so an older package is not replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import (
    Attribute,
    KeyType,
    Mechanism,
    ObjectClass,
    p11_exc,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    KeyConflict,
    KeyNotFound,
    PackageRejected,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import pkcs11_errors
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import (
    format_time,
    parse_label,
    version_label,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._pinned_signer import find_pinned_signer, pin_signer
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    RECIPIENT_METADATA,
    RECIPIENT_SCHEMA,
    TokenObjects,
    check_value,
    destroy_quietly,
    evidence,
    never_left_the_token,
    spki_fingerprint,
    token_public_key,
    usage_attribute,
    usage_template,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import (
    oaep_parameters,
    usage_for_state,
)


RECIPIENT_APPLICATION = RECIPIENT_METADATA.application


@dataclass
class InstalledVersion:
    """One key version as this recipient's metadata records it."""

    doc: dict
    metadata_objects: list = field(default_factory=list)
    key_objects: list = field(default_factory=list)

    @property
    def state(self):
        return self.doc["state"]

    @property
    def present(self):
        return self.state != "destroyed"

    def record(self):
        fields = ("name", "version", "id", "key_check_value", "state", "recipient", "installed_at", "mechanism",
                  "transport_key_fingerprint")
        return {k: self.doc.get(k) for k in fields}


@dataclass(frozen=True)
class TransportKey:
    label: str
    key_id: str
    type: str
    size: int
    public_key: object
    fingerprint: str
    private: object = None
    #: the private half could leave the token (not generated there as sensitive and never extractable)
    exportable: bool = False

    def record(self, public_key_pem):
        return {"label": self.label, "id": self.key_id, "type": self.type, "size": self.size,
                "fingerprint": self.fingerprint, "public_key_pem": public_key_pem, "exportable": self.exportable}


class RecipientTokenStore:
    """The recipient's token, enumerated once per module call."""

    def __init__(self, session, token_label, transport_label):
        self.session = session
        self.token_label = token_label
        self.transport_label = transport_label
        self.objects = TokenObjects(session, token_label)
        self.versions = {}
        self._transport = None
        self._signer = None
        self._orphans = {}

    def load(self):
        self.objects.load()
        self.versions.clear()
        self._orphans.clear()
        for label in filter(parse_label, self.objects.labels()):
            keys = self.objects.key_objects(ObjectClass.SECRET_KEY, label)
            revisions = self.objects.newest(RECIPIENT_METADATA, label)
            if revisions is not None:
                self.versions[label] = InstalledVersion(
                    dict(revisions.newest), self.objects.document_objects(RECIPIENT_METADATA, label), keys)
            elif keys:
                self._orphans[label] = keys
        with pkcs11_errors("C_FindObjects", token_label=self.token_label):
            self._transport = self._find_transport()
            self._signer = find_pinned_signer(self.objects)
        return self

    # ---- transport key -------------------------------------------------------------------------

    def _find_transport(self):
        private = self.objects.key_objects(ObjectClass.PRIVATE_KEY, self.transport_label)
        public = self.objects.key_objects(ObjectClass.PUBLIC_KEY, self.transport_label)
        if not private and not public:
            return None
        if len(private) != 1 or len(public) != 1 or bytes(private[0][Attribute.ID]) != bytes(public[0][Attribute.ID]):
            raise KeyConflict(
                "Token %r holds %d private and %d public key object(s) labelled %r, not one pair with one CKA_ID: "
                "the transport key is ambiguous. Inspect the token (pkcs11-tool --list-objects) and keep one pair."
                % (self.token_label, len(private), len(public), self.transport_label), option="transport_key_label")
        return self._describe_transport(public[0], private[0])

    def _describe_transport(self, public, private):
        read = token_public_key(public)
        if read is None and public[Attribute.KEY_TYPE] == KeyType.EC:
            raise KeyNotFound("The transport key's curve is not one this collection knows.",
                              option="transport_key_label")
        if read is None:
            raise KeyNotFound("The transport key %r on token %r is neither RSA nor EC; remove it and enroll again."
                              % (self.transport_label, self.token_label), option="transport_key_label")
        return TransportKey(label=self.transport_label, key_id=bytes(public[Attribute.ID]).hex(), type=read.type,
                            size=read.size, public_key=read.public_key, fingerprint=spki_fingerprint(read.public_key),
                            private=private, exportable=not never_left_the_token(evidence(private)))

    @property
    def transport(self):
        return self._transport

    def generate_transport(self, size, key_id):
        """Generate the RSA transport pair inside the token: the private half may only unwrap, never leave."""
        public_template = {Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.MODIFIABLE: False,
                           Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01", **usage_template(["wrap"], "public")}
        private_template = {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.MODIFIABLE: False,
                            Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                            **usage_template(["unwrap"], "private")}
        with pkcs11_errors("transport key generation", token_label=self.token_label):
            public, private = self.session.generate_keypair(
                KeyType.RSA, size, id=key_id, label=self.transport_label, store=True,
                public_template=public_template, private_template=private_template)
            self.objects.add_key_objects(self.transport_label, [public, private])
            self._transport = self._describe_transport(public, private)
        return self._transport

    # ---- the HSM's package signer ---------------------------------------------------------------

    @property
    def package_signer(self):
        """The pinned ``_pinned_signer.PinnedSigner``, or None."""
        return self._signer

    def pin_signer(self, public_key, key_id):
        """Pin ``public_key`` as the HSM's package signer, replacing the one pinned before (``_pinned_signer``)."""
        self._signer = pin_signer(self.objects, self._signer, public_key, key_id)
        return self._signer

    # ---- installed versions --------------------------------------------------------------------

    def installed(self):
        """Versions present on this token (not withdrawn), oldest first."""
        return [v for _label, v in sorted(self.versions.items()) if v.present]

    def inventory(self):
        """What key_distribute needs to know: versions held (with their key object) and tombstones."""
        return [v.record() for _label, v in sorted(self.versions.items()) if not v.present or v.key_objects]

    def get(self, name, version):
        return self.versions.get(version_label(name, version))

    def orphan_labels(self):
        """Labels of our-looking key objects with no recipient metadata (an interrupted install)."""
        return sorted(self._orphans)

    def unwrap_checked(self, package, blob):
        """Unwrap one package into a session object and check its key check value; return the session object.

        The session object disappears with the session; nothing is stored until ``store``.
        """
        transport = self._transport
        label = version_label(package["name"], package["version"])
        # only from the verified metadata: the usages of its state; CKA_ENCRYPT on the session object only, for the
        # check value (``store`` gives the stored copy the state's CKA_ENCRYPT)
        template = {Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False, Attribute.ENCRYPT: True,
                    **usage_template(usage_for_state(package["usage"], package["state"]), skip=("encrypt",))}
        try:
            key = transport.private.unwrap_key(
                ObjectClass.SECRET_KEY, KeyType.AES, blob, id=bytes.fromhex(package["id"]), label=label,
                mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=oaep_parameters(package["oaep_hash"]),
                store=False, template=template)
        except p11_exc.PKCS11Error as exc:
            raise PackageRejected(
                "The package for %s did not unwrap under this host's transport key %s (%s): it was made for "
                "another recipient's key, or altered on the way. Nothing was installed. Run key_distribute again "
                "for this recipient." % (label, transport.fingerprint, type(exc).__name__ or exc),
                option="packages") from None
        with pkcs11_errors("key check value of %s" % label, token_label=self.token_label):
            kcv = check_value(key)
            length = int(key[Attribute.VALUE_LEN])
        if length and length * 8 != package["size"]:  # some tokens (SoftHSM2 2.6) report 0 for an unwrapped key
            destroy_quietly(key)
            raise PackageRejected("The key unwrapped from the package for %s is %d bits, but the package says %d. "
                                  "Nothing was installed." % (label, length * 8, package["size"]), option="packages")
        if kcv != package["key_check_value"]:
            destroy_quietly(key)
            raise PackageRejected(
                "The key unwrapped from the package for %s has check value %s, but the package says %s: the package "
                "was altered. Nothing was installed." % (label, kcv, package["key_check_value"]), option="packages")
        return key

    def store(self, package, session_key, now, current=None):
        """Copy a checked session key onto the token with its final usages, then record its metadata.

        ``current``: the version's metadata when its key object went missing (a repair). Key objects left under
        the label by an install that stopped before its metadata are removed first.
        """
        label = version_label(package["name"], package["version"])
        usage = usage_for_state(package["usage"], package["state"])
        with pkcs11_errors("C_CopyObject for %s" % label, token_label=self.token_label):
            self.objects.destroy_key_objects(label, self._orphans.pop(label, []), "C_CopyObject for %s" % label)
            stored = session_key.copy({Attribute.TOKEN: True, Attribute.ENCRYPT: "encrypt" in usage})
            destroy_quietly(session_key)
        self.objects.add_key_objects(label, [stored])
        doc = {
            "schema": RECIPIENT_SCHEMA, "revision": 1, "recipient": package["recipient"],
            "name": package["name"], "version": package["version"], "id": package["id"],
            "type": package["type"], "size": package["size"], "usage": list(package["usage"]),
            "key_check_value": package["key_check_value"], "state": package["state"],
            "mechanism": package["mechanism"], "transport_key_fingerprint": package["transport_key_fingerprint"],
            "installed_at": format_time(now), "updated_at": format_time(now),
            "package_signed_at": package.get("signed_at"),
        }
        installed = InstalledVersion(dict(current.doc) if current else doc,
                                     list(current.metadata_objects) if current else [], [stored])
        self._write_metadata(installed, doc)
        self.versions[label] = installed
        return installed

    def set_state(self, installed, state, now, signed_at=None):
        """Move an installed version to ``state`` (active/deactivated): usage attributes, then metadata.

        ``signed_at``: when the HSM signed the package that asks for it (kept as ``package_signed_at``).
        """
        usage = usage_for_state(installed.doc["usage"], state)
        label = version_label(installed.doc["name"], installed.doc["version"])
        with pkcs11_errors("C_SetAttributeValue for %s" % label, token_label=self.token_label):
            for obj in installed.key_objects:
                for name in installed.doc["usage"]:
                    obj[usage_attribute(name)] = name in usage
        changes = {"state": state, "updated_at": format_time(now)}
        if signed_at:
            changes["package_signed_at"] = signed_at
        self._write_metadata(installed, dict(installed.doc, **changes))

    def withdraw(self, installed, now):
        """Destroy the key objects of a version, check none is left, and leave a tombstone; return what was found."""
        name, version = installed.doc["name"], installed.doc["version"]
        label = version_label(name, version)
        with pkcs11_errors("C_DestroyObject for %s" % label, token_label=self.token_label):
            self.objects.destroy_key_objects(label, installed.key_objects + self._orphans.pop(label, []),
                                             "C_DestroyObject for %s" % label)
            installed.key_objects = []
            found = ["a secret key with the same %s" % what for _class, what
                     in self.objects.traces(bytes.fromhex(installed.doc["id"]), label, [ObjectClass.SECRET_KEY])]
        if not found:
            self._write_metadata(installed, dict(installed.doc, state="destroyed", updated_at=format_time(now),
                                                 withdrawn_at=format_time(now)))
        return found

    def _write_metadata(self, installed, doc):
        doc = dict(doc, revision=int(installed.doc.get("revision", 0)) + (1 if installed.metadata_objects else 0))
        label = version_label(doc["name"], doc["version"])
        obj = self.objects.write(RECIPIENT_METADATA, label, doc, operation="metadata update for %s" % label)
        installed.metadata_objects.append(obj)
        installed.doc = doc
