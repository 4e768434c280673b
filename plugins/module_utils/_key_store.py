# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The token as the key store: enumerate once, read evidence, generate versions.

PRIVATE: not part of the public interface.

``TokenKeyStore.load()`` runs one search per object class (metadata, secret keys,
private keys, public keys) and indexes every object by label, so a batch of N keys
costs O(N) token calls rather than one search per key (a search is linear in the
number of objects on the token, which made per-key look-ups O(N^2)).

Key generation happens inside the token (C_GenerateKey / C_GenerateKeyPair), with
CKA_SENSITIVE true and CKA_EXTRACTABLE only for distributable keys. No key value is
ever read: the key check value is computed by the token and the public key
fingerprint is taken from the public key object.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field, replace

from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyNotFound, TokenOperationFailed
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import pkcs11_errors
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import (
    METADATA_APPLICATION,
    KeyVersion,
    Transition,
    parse_label,
    version_label,
)

try:
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11.util.ec import encode_named_curve_parameters
except ImportError:  # guarded by _dependencies.require_dependencies in main()
    Attribute = KeyType = Mechanism = ObjectClass = encode_named_curve_parameters = None

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
except ImportError:  # guarded by _dependencies.require_dependencies in main()
    serialization = ec = rsa = None

# The token's own evidence about how a key came to be, read from the key object.
EVIDENCE_ATTRIBUTES = {
    "local": "LOCAL",
    "sensitive": "SENSITIVE",
    "always_sensitive": "ALWAYS_SENSITIVE",
    "never_extractable": "NEVER_EXTRACTABLE",
    "extractable": "EXTRACTABLE",
}

_CURVE_OIDS = {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1"}
_CRYPTOGRAPHY_CURVES = {"P-256": "SECP256R1", "P-384": "SECP384R1", "P-521": "SECP521R1"}

# Usage -> (attribute, object it belongs on): 'secret' for AES, 'public'/'private' for pairs.
_USAGE_ATTRIBUTES = {
    "encrypt": ("ENCRYPT", "public"),
    "decrypt": ("DECRYPT", "private"),
    "wrap": ("WRAP", "public"),
    "unwrap": ("UNWRAP", "private"),
    "sign": ("SIGN", "private"),
    "verify": ("VERIFY", "public"),
    "derive": ("DERIVE", "private"),
}


@dataclass
class VersionObjects:
    """The token objects that make up one version, by role."""

    metadata: list = field(default_factory=list)
    secret: list = field(default_factory=list)
    private: list = field(default_factory=list)
    public: list = field(default_factory=list)

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


def _attr(name):
    return getattr(Attribute, name)


class TokenKeyStore:
    """Our key versions on one logged-in session, indexed once per module call."""

    def __init__(self, session, token_label):
        self.session = session
        self.token_label = token_label
        self._objects = defaultdict(VersionObjects)
        self._decoded = {}
        self._kcv_index = None
        self.anomalies = []

    # ---- reading -------------------------------------------------------------------------------

    def load(self):
        """Enumerate the token once and index our objects by (name, version)."""
        self._objects.clear()
        self._decoded.clear()
        self.anomalies = []
        searches = (
            ("metadata", {Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: METADATA_APPLICATION}),
            ("secret", {Attribute.CLASS: ObjectClass.SECRET_KEY}),
            ("private", {Attribute.CLASS: ObjectClass.PRIVATE_KEY}),
            ("public", {Attribute.CLASS: ObjectClass.PUBLIC_KEY}),
        )
        with pkcs11_errors("C_FindObjects", token_label=self.token_label):
            for role, template in searches:
                for obj in self.session.get_objects(template):
                    parsed = parse_label(obj[Attribute.LABEL])
                    if parsed is not None:
                        getattr(self._objects[parsed], role).append(obj)
        for (name, version), objects in sorted(self._objects.items()):
            label = version_label(name, version)
            if not objects.metadata:
                self.anomalies.append(Anomaly(label, "key object(s) without a metadata object: generation was "
                                                     "interrupted or the metadata was removed"))
            if len(objects.secret) > 1 or len(objects.private) > 1 or len(objects.public) > 1:
                self.anomalies.append(Anomaly(label, "more than one key object carries this label: two "
                                                     "generations of the same version ran at once"))
        return self

    def names(self):
        return sorted({name for name, _version in self._objects})

    def next_version(self, name):
        """The next free version number: above every version on the token, recorded or half-made."""
        return max([version for key_name, version in self._objects if key_name == name], default=0) + 1

    def half_made(self, name):
        """Version numbers of ``name`` that have key objects but no metadata (an interrupted generation)."""
        return sorted(version for (key_name, version), objects in self._objects.items()
                      if key_name == name and not objects.metadata and objects.key_objects())

    def discard_half_made(self, name, version):
        """Destroy the key objects of a version that never got its metadata; return their CKA_ID (hex).

        Such a version was never active: nothing was encrypted under it and it was never
        distributed, so removing it loses nothing.
        """
        objects = self._objects[(name, version)]
        key_id = bytes(objects.key_objects()[0][Attribute.ID]).hex()
        with pkcs11_errors("C_DestroyObject for %s" % version_label(name, version), token_label=self.token_label):
            for obj in objects.key_objects():
                obj.destroy()
        del self._objects[(name, version)]
        return key_id

    def versions(self, name):
        """All recorded versions of a logical key, oldest first, with the token's evidence."""
        result = []
        for (key_name, version) in sorted(k for k in self._objects if k[0] == name):
            decoded = self._version(key_name, version)
            if decoded is not None:
                result.append(decoded)
        return result

    def _version(self, name, version):
        key = (name, version)
        if key in self._decoded:
            return self._decoded[key]
        objects = self._objects[key]
        decoded = None
        label = version_label(name, version)
        with pkcs11_errors("C_GetAttributeValue", token_label=self.token_label):
            candidates = [KeyVersion.decode(label, obj[Attribute.VALUE]) for obj in objects.metadata]
            if candidates:
                decoded = max(candidates, key=lambda v: v.revision)
                if [c.revision for c in candidates].count(decoded.revision) > 1:
                    self.anomalies.append(Anomaly(label, "two metadata objects carry revision %d: two updates "
                                                         "ran at once; one of them is used" % decoded.revision))
                primary = objects.primary()
                if primary is None and decoded.state != "destroyed":
                    self.anomalies.append(Anomaly(label, "metadata says %s but the key object is missing"
                                                         % decoded.state))
                evidence = self._evidence(primary) if primary is not None else {}
                decoded = replace(decoded, evidence=evidence)
        self._decoded[key] = decoded
        return decoded

    def private_key(self, name, version):
        """The private key object of a key pair version (for signing inside the token)."""
        objects = self._objects.get((name, version))
        if not objects or not objects.private:
            raise KeyNotFound("No private key object for %s on token %r."
                              % (version_label(name, version), self.token_label))
        return objects.private[0]

    def public_key_pem(self, name, version):
        """PEM SubjectPublicKeyInfo of a key pair version, read from its public key object."""
        objects = self._objects.get((name, version))
        decoded = self._version(name, version)
        if not objects or not objects.public or decoded is None:
            raise KeyNotFound("No public key object for %s on token %r."
                              % (version_label(name, version), self.token_label))
        with pkcs11_errors("C_GetAttributeValue", token_label=self.token_label):
            key = _public_key(decoded.spec, objects.public[0])
        return key.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")

    @staticmethod
    def _evidence(obj):
        values = obj.get_attributes([_attr(a) for a in EVIDENCE_ATTRIBUTES.values()])
        return {name: bool(values[_attr(a)]) for name, a in EVIDENCE_ATTRIBUTES.items()}

    # ---- wrapping (distribution) ---------------------------------------------------------------

    def import_wrapping_key(self, modulus, exponent):
        """A session object (gone when the session closes) for a recipient's RSA transport public key.

        It may only wrap: CKA_ENCRYPT and CKA_VERIFY are off.
        """
        with pkcs11_errors("C_CreateObject (recipient transport key)", token_label=self.token_label):
            return self.session.create_object({
                Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.RSA, Attribute.TOKEN: False,
                Attribute.PRIVATE: False, Attribute.MODULUS: modulus, Attribute.PUBLIC_EXPONENT: exponent,
                Attribute.WRAP: True, Attribute.ENCRYPT: False, Attribute.VERIFY: False,
            })

    def wrap_secret(self, version, wrapping_key, mechanism, mechanism_param):
        """C_WrapKey of a version's secret key under ``wrapping_key``; the token returns the wrapped bytes."""
        objects = self._objects.get((version.name, version.version))
        if not objects or not objects.secret:
            raise KeyNotFound("No secret key object for %s on token %r." % (version.label, self.token_label))
        return bytes(wrapping_key.wrap_key(objects.secret[0], mechanism=mechanism, mechanism_param=mechanism_param))

    # ---- writing -------------------------------------------------------------------------------

    def generate(self, spec, version, operator, now):
        """Generate one new version inside the token and record its metadata."""
        label = version_label(spec.name, version)
        key_id = os.urandom(16)
        objects = VersionObjects()
        try:
            with pkcs11_errors("key generation for %s" % label, token_label=self.token_label):
                if spec.type == "aes":
                    key = self._generate_secret(spec, label, key_id)
                    objects.secret.append(key)
                    kcv = self._aes_check_value(key, keep_encrypt="encrypt" in spec.usage)
                    fingerprint = None
                else:
                    public, key = self._generate_pair(spec, label, key_id)
                    objects.private.append(key)
                    objects.public.append(public)
                    kcv = None
                    fingerprint = self._public_key_fingerprint(spec, public)
                result = KeyVersion(
                    spec=spec, version=version, key_id=key_id.hex(), state="active", created=now,
                    transitions=(Transition(state="active", at=now, by=operator, reason="generated"),),
                    key_check_value=kcv, public_key_fingerprint=fingerprint, revision=1,
                )
                objects.metadata.append(self._write_metadata(result))
                result = replace(result, evidence=self._evidence(key))
        except Exception:
            self._discard(label, objects)
            raise
        self._objects[(spec.name, version)] = objects
        self._decoded[(spec.name, version)] = result
        return result

    def update_metadata(self, current, updated):
        """Record a version's new metadata as a new revision object; earlier revisions stay.

        A CKO_DATA object's value cannot be changed on every token, so metadata is never
        edited: each change adds one object (one C_CreateObject, atomic on the token),
        readers take the highest revision, and the earlier ones are the version's history
        on the token. Nothing is destroyed on this path, which keeps a batch linear on
        tokens where C_DestroyObject costs time in proportion to the objects stored.
        """
        key = (current.name, current.version)
        with pkcs11_errors("metadata update for %s" % current.label, token_label=self.token_label):
            new_object = self._write_metadata(updated)
        self._objects[key].metadata.append(new_object)
        updated = replace(updated, evidence=current.evidence)
        self._decoded[key] = updated
        return updated

    def set_usage(self, version, disabled):
        """Switch usages off on the version's key objects (the token then refuses those operations)."""
        objects = self._objects[(version.name, version.version)]
        with pkcs11_errors("C_SetAttributeValue for %s" % version.label, token_label=self.token_label):
            for usage in disabled:
                attribute, side = _USAGE_ATTRIBUTES[usage]
                targets = objects.secret or (objects.public if side == "public" else objects.private)
                for obj in targets:
                    obj[_attr(attribute)] = False

    def destroy_key_objects(self, version):
        """C_DestroyObject on every key object of a version (the metadata stays, to become a tombstone)."""
        objects = self._objects[(version.name, version.version)]
        with pkcs11_errors("C_DestroyObject for %s" % version.label, token_label=self.token_label):
            for obj in objects.key_objects():
                obj.destroy()
        objects.secret, objects.private, objects.public = [], [], []

    def verify_absent(self, version):
        """Search the token again for any trace of this version's key: by CKA_ID, by CKA_LABEL and, for AES,
        by key check value among the secret keys the token lets encrypt (a copy under another id or label).

        Returns the list of what was found (empty when the key is gone).
        """
        key_id = bytes.fromhex(version.key_id)
        found = []
        with pkcs11_errors("C_FindObjects (destruction check)", token_label=self.token_label):
            for object_class in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                searches = (("CKA_ID", {Attribute.ID: key_id}), ("CKA_LABEL", {Attribute.LABEL: version.label}))
                for name, template in searches:
                    if list(self.session.get_objects({**template, Attribute.CLASS: object_class})):
                        found.append("a %s object with the same %s" % (object_class.name, name))
            if version.key_check_value and version.key_check_value in self._check_values():
                found.append("a secret key with the same key check value (%s)"
                             % ", ".join(self._check_values()[version.key_check_value]))
        return found

    def _check_values(self):
        """KCV -> labels of every AES secret key on the token that may encrypt (computed once per call)."""
        if self._kcv_index is None:
            self._kcv_index = defaultdict(list)
            candidates = list(self.session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                                        Attribute.KEY_TYPE: KeyType.AES,
                                                        Attribute.ENCRYPT: True}))
            for obj in candidates:
                kcv = bytes(obj.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))[:3].hex()
                self._kcv_index[kcv].append(str(obj[Attribute.LABEL]))
        return self._kcv_index

    def _write_metadata(self, version):
        return self.session.create_object({
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.MODIFIABLE: True,
            Attribute.LABEL: version.label,
            Attribute.APPLICATION: METADATA_APPLICATION,
            Attribute.VALUE: version.encode(),
        })

    def _generate_secret(self, spec, label, key_id):
        template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.MODIFIABLE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: spec.distributable,
            # ENCRYPT is on at generation so the token can compute the key check value;
            # it is switched off right after when the spec does not ask for it.
            Attribute.ENCRYPT: True,
        }
        for usage in ("decrypt", "wrap", "unwrap", "sign", "verify", "derive"):
            template[_attr(_USAGE_ATTRIBUTES[usage][0])] = usage in spec.usage
        return self.session.generate_key(KeyType.AES, spec.size, id=key_id, label=label, store=True,
                                         template=template)

    @staticmethod
    def _aes_check_value(key, keep_encrypt):
        """KCV: first 3 bytes of AES-ECB of a zero block, computed by the token."""
        kcv = bytes(key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))[:3].hex()
        if not keep_encrypt:
            key[Attribute.ENCRYPT] = False
        return kcv

    def _generate_pair(self, spec, label, key_id):
        public_template = {Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.MODIFIABLE: True}
        private_template = {
            Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.MODIFIABLE: True,
            Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: spec.distributable,
        }
        for usage, (attribute, side) in _USAGE_ATTRIBUTES.items():
            if spec.type == "ec" and attribute in ("ENCRYPT", "DECRYPT", "WRAP", "UNWRAP"):
                continue
            target = public_template if side == "public" else private_template
            target[_attr(attribute)] = usage in spec.usage
        if spec.type == "rsa":
            public_template[Attribute.PUBLIC_EXPONENT] = b"\x01\x00\x01"
            return self.session.generate_keypair(KeyType.RSA, spec.size, id=key_id, label=label, store=True,
                                                 public_template=public_template, private_template=private_template)
        public_template[Attribute.EC_PARAMS] = encode_named_curve_parameters(_CURVE_OIDS[spec.curve])
        return self.session.generate_keypair(KeyType.EC, None, id=key_id, label=label, store=True,
                                             public_template=public_template, private_template=private_template)

    @staticmethod
    def _public_key_fingerprint(spec, public):
        """SHA-256 of the DER SubjectPublicKeyInfo, as ``openssl pkey -pubin -outform DER | sha256sum``."""
        der = _public_key(spec, public).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return "sha256:" + hashlib.sha256(der).hexdigest()

    def _discard(self, label, objects):
        """Best-effort removal of the objects a failed generation left behind."""
        for obj in objects.metadata + objects.key_objects():
            try:
                obj.destroy()
            except Exception:  # pylint: disable=broad-except
                self.anomalies.append(Anomaly(label, "an object was left on the token by a failed generation"))


def _public_key(spec, public):
    """A ``cryptography`` public key built from a token public key object of a key version."""
    if spec.type == "rsa":
        return rsa_public_key(public)
    return ec_public_key(public, getattr(ec, _CRYPTOGRAPHY_CURVES[spec.curve])())


def rsa_public_key(public):
    """A ``cryptography`` RSA public key from a token RSA public key object (CKA_MODULUS, CKA_PUBLIC_EXPONENT)."""
    numbers = rsa.RSAPublicNumbers(int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
                                   int.from_bytes(public[Attribute.MODULUS], "big"))
    return numbers.public_key()


def ec_public_key(public, curve):
    """A ``cryptography`` EC public key on ``curve`` from a token EC public key object (CKA_EC_POINT)."""
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, der_octet_string(bytes(public[Attribute.EC_POINT])))


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
