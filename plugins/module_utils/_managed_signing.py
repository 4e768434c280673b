# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""A managed signing key the collection keeps for itself in the HSM token.

PRIVATE: not part of the public interface.

Three such keys exist: ``audit-checkpoint`` (``_checkpoint``) signs journal heads,
``package-signing`` (``_package_signing``) signs distribution packages, and on a replica token
``restore-signing`` signs the packages of a restore (``_replication``). Each is an
ordinary managed key (sign/verify, CKA_SENSITIVE true, never extractable, not
distributable), generated in the token on first use. Its type follows the token
(``_signatures``): EC P-256 (CKM_ECDSA over the SHA-256 of the payload, DER) where the
token generates EC keys, else RSA-3072 (RSASSA-PSS, or PKCS#1 v1.5 where the token has
no PSS); a signature is given in base64, and ``openssl dgst -sha256 -verify`` and
``_signatures.signature_valid`` check it. A token that can make neither is refused
(``CapabilityMissing``) before the task changes anything.

Rollover: when either key rotates (``_key_rotation``, not for a compromise), the old version,
still active, signs a certificate of the new one (``certify_successor``): the canonical JSON of
``name``, ``previous_version``, ``previous_fingerprint``, ``version``, ``fingerprint``,
``public_key_pem`` and ``certified_at``, plus ``signature`` (base64, by the old key).
It is kept on the token (``_token_objects.SIGNER_CERTIFICATE``, labelled by ``CERTIFICATE_PREFIXES``).

The public key of every ``audit-checkpoint`` version is also kept in one document
(``_token_objects.AUDIT_KEY_HISTORY``), written when the version is generated and never shrunk,
so checkpoints signed by a version destroyed since still verify (``remember_public_keys``).
"""

from __future__ import annotations

from datetime import timezone

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event, key_section
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import CapabilityMissing, KeyNotFound
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import pkcs11_errors
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import (
    MANAGED_KEY_NAMES,
    build_key_spec,
    format_time,
    utc_now,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE
from ansible_collections.secops.keylifecycle.plugins.module_utils._signatures import (
    MIN_RSA_BITS,
    managed_key_type,
    sign_in_token,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    AUDIT_KEY_HISTORY,
    AUDIT_KEY_HISTORY_LABEL,
    AUDIT_SCHEMA,
    SIGNER_CERTIFICATE,
    canonical_json,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_probe import offered_mechanisms

#: RESTORE_KEY_NAME: a replica's own signer of restore packages, never backed up, so it signs only on the replica
#: it was made in
CHECKPOINT_KEY_NAME, PACKAGE_KEY_NAME, RESTORE_KEY_NAME = MANAGED_KEY_NAMES
#: what every managed signing key is made as (``ManagedSigningKey.spec``): a key pair of one of these types, for
#: these usages (sorted), not distributable
MANAGED_KEY_TYPES = ("ec", "rsa")
MANAGED_KEY_USAGE = ("sign", "verify")
#: the managed signing keys whose versions certify their successors, and the label prefix of the certificates
CERTIFICATE_PREFIXES = {PACKAGE_KEY_NAME: "package-signer-certificate",
                        CHECKPOINT_KEY_NAME: "audit-checkpoint-certificate"}
#: the managed signing keys whose public keys are kept for good (document kind, its label)
PUBLIC_KEY_HISTORY = {CHECKPOINT_KEY_NAME: (AUDIT_KEY_HISTORY, AUDIT_KEY_HISTORY_LABEL)}


def signed_time(moment):
    """How ``signed_at`` and ``certified_at`` are written: UTC, ISO 8601 with microseconds."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


class ManagedSigningKey:
    """One named signing key on a loaded TokenKeyStore (user session)."""

    def __init__(self, store, name, purpose, backup=None):
        self.store = store
        self.name = name
        #: what it signs, for error messages and audit reasons (``audit checkpoint``, ``package``)
        self.purpose = purpose
        #: whether a new version is generated for backup (copied to replicas); None: as the policy says
        #: (``store.backup_managed_keys``)
        self.backup = backup
        self._offered = None

    def offered(self):
        """The token's mechanism names (one C_GetMechanismList per instance)."""
        if self._offered is None:
            self._offered = offered_mechanisms(self.store.session, self.store.token_label)
        return self._offered

    def spec(self):
        """EC P-256 where the token generates EC keys and signs with ECDSA, else RSA-3072; CapabilityMissing (naming
        the token and the mechanisms) when it can make neither."""
        key_type, _scheme = managed_key_type(self.offered())
        if key_type == "ec":
            raw = {"name": self.name, "type": "ec", "curve": "P-256", "usage": list(MANAGED_KEY_USAGE)}
        elif key_type == "rsa":
            raw = {"name": self.name, "type": "rsa", "size": MIN_RSA_BITS, "usage": list(MANAGED_KEY_USAGE)}
        else:
            raise CapabilityMissing(
                "token %s cannot make the %s signing key %r: it offers neither EC P-256 signing (CKM_EC_KEY_PAIR_GEN "
                "and CKM_ECDSA) nor RSA signing (CKM_RSA_PKCS_KEY_PAIR_GEN with CKM_SHA256_RSA_PKCS_PSS, "
                "CKM_RSA_PKCS_PSS, CKM_SHA256_RSA_PKCS or CKM_RSA_PKCS). Every lifecycle task signs with it: use a "
                "token that offers one of them." % (self.store.token_label, self.purpose, self.name))
        # kept with the token's keys on its replicas, unless the key is the token's own (a replica's restore signer)
        raw["backup"] = self.store.backup_managed_keys if self.backup is None else self.backup
        return build_key_spec(raw, BASELINE)

    def active_version(self):
        """The newest active version on the token, or None (never generates)."""
        versions = [v for v in self.store.versions(self.name) if v.state == "active"]
        return versions[-1] if versions else None

    def prepare(self, operator, now=None):
        """The active version; generated in the token on first use. Returns ``(version, created)``."""
        version = self.active_version()
        if version is not None:
            return version, False
        existing = self.store.versions(self.name)
        number = existing[-1].version + 1 if existing else 1
        version = self.store.generate(self.spec(), number, operator, now or utc_now())
        remember_public_keys(self.store, self.name, [version])
        return version, True

    def sign(self, version, payload):
        """Base64 of the signature of ``payload`` (``_signatures``: ECDSA or RSA by the version's type), made inside
        the token."""
        private = self.store.private_key(self.name, version.version)
        with pkcs11_errors("C_Sign (%s)" % self.purpose, token_label=self.store.token_label):
            return sign_in_token(private, version.spec.type, self.offered(), payload)

    def public_record(self, version):
        """What a verifier needs: name, key id, version, fingerprint and the PEM public key."""
        return {"name": self.name, "key_id": version.key_id, "version": version.version,
                "fingerprint": version.public_key_fingerprint,
                "public_key_pem": self.store.public_key_pem(self.name, version.version)}

    def public_keys(self):
        """PEM public keys of every version that is not destroyed, by key id."""
        return {version.key_id: self.store.public_key_pem(self.name, version.version)
                for version in self.store.versions(self.name)
                if version.state != "destroyed"}

    def generated_event(self, version, context):
        """The ``key-generate`` event of a version generated on first use."""
        return build_event("key-generate", "success", context, key=key_section(version, self.store.token_label),
                           reason="%s signing key" % self.purpose)


# ---- history: the public key of every version, kept when the version is destroyed -----------------------


def key_history(store, name=CHECKPOINT_KEY_NAME):
    """The kept public keys of ``name``'s versions, by key id (``{}`` when none are kept, or not for this key)."""
    if name not in PUBLIC_KEY_HISTORY:
        return {}
    kind, label = PUBLIC_KEY_HISTORY[name]
    revisions = store.objects.newest(kind, label)
    return dict(revisions.newest["keys"]) if revisions is not None else {}


def remember_public_keys(store, name, versions):
    """Add the public key of each of ``versions`` (not destroyed) to ``name``'s history; a no-op for other keys and
    for versions already kept. Returns whether a new revision was written (one C_CreateObject)."""
    if name not in PUBLIC_KEY_HISTORY:
        return False
    kind, label = PUBLIC_KEY_HISTORY[name]
    revisions = store.objects.newest(kind, label)
    doc = revisions.newest if revisions is not None else {"schema": AUDIT_SCHEMA, "revision": 0, "keys": {}}
    added = {}
    for version in versions:
        if version.key_id in doc["keys"] or version.state == "destroyed":
            continue
        try:
            pem = store.public_key_pem(name, version.version)
        except KeyNotFound:  # its public key object is gone (an anomaly key_info reports): nothing to keep
            continue
        added[version.key_id] = {"version": version.version, "fingerprint": version.public_key_fingerprint,
                                 "public_key_pem": pem, "created_at": format_time(version.created)}
    if not added:
        return False
    store.objects.write(kind, label, {"schema": AUDIT_SCHEMA, "revision": int(doc["revision"]) + 1,
                                      "keys": dict(doc["keys"], **added)},
                        operation="C_CreateObject (%s public key history)" % name)
    return True


# ---- rollover: each new version certified by the one before it ------------------------------------------


def certificate_label(version):
    """CKA_LABEL of the certificate of a managed signing ``version`` (``<prefix>:<key id>``)."""
    return "%s:%s" % (CERTIFICATE_PREFIXES[version.name], version.key_id)


def certificate_payload(certificate):
    """The exact bytes the previous version signs: canonical JSON of every field but ``signature``."""
    return canonical_json({k: v for k, v in certificate.items() if k != "signature"})


def certify_successor(store, old, new, now):
    """While ``old`` is still active, it signs a certificate of ``new`` (same key), kept on the token (written once).

    Returns ``(label, created)``; a certificate already on the token (an interrupted rotation) is kept.
    """
    label = certificate_label(new)
    if store.objects.newest(SIGNER_CERTIFICATE, label) is not None:
        return label, False
    certificate = {"name": new.name, "previous_version": old.version,
                   "previous_fingerprint": old.public_key_fingerprint, "version": new.version,
                   "fingerprint": new.public_key_fingerprint,
                   "public_key_pem": store.public_key_pem(new.name, new.version),
                   "certified_at": signed_time(now)}
    certificate["signature"] = ManagedSigningKey(store, new.name, "%s certificate" % new.name).sign(
        old, certificate_payload(certificate))
    store.objects.write(SIGNER_CERTIFICATE, label, certificate)
    return label, True


def certificates(store, name):
    """Every certificate of ``name``'s versions on the token, oldest first (by the version certified)."""
    docs = [store.objects.newest(SIGNER_CERTIFICATE, label).newest
            for label in store.objects.document_labels(SIGNER_CERTIFICATE)
            if label.startswith(CERTIFICATE_PREFIXES[name] + ":")]
    return sorted((doc for doc in docs if doc.get("name") == name),
                  key=lambda doc: (int(doc["version"]), doc["certified_at"]))
