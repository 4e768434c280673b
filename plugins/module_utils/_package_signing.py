# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Distribution packages signed by the HSM, verified by the recipient.

PRIVATE: not part of the public interface. docs/distribution.md explains the threat model.

The HSM signs each package's metadata with the managed key ``package-signing`` (EC
P-256, generated in the token on first use, never extractable; ``_managed_signing``).
The recipient pins that key's public half in its own token at enrollment
(``recipient_enroll`` option ``package_signer``) and ``key_install`` checks every
package against it before anything is unwrapped: a package relabelled, with its usage
widened, its state altered, or meant for another recipient no longer verifies.

The signed payload (``package_payload``) is the canonical JSON (sorted keys, no spaces)
of every field of the package except ``signature`` and ``wrapped``, plus
``wrapped_sha256``: the hex SHA-256 of the ``wrapped`` base64 text (null for a state
change that carries no key). A signed package gains ``signed_at`` (UTC, ISO 8601 with
microseconds), ``signer_fingerprint`` (``sha256:<hex>`` of the signer's
SubjectPublicKeyInfo) and ``signature`` (base64 of the DER ECDSA signature), so
``openssl dgst -sha256 -verify signer.pem -signature sig.der payload.json`` checks it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import timezone

from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyNotFound, PackageRejected
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._managed_signing import ManagedSigningKey
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    canonical_json,
    spki_fingerprint,
)

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError:  # guarded by _dependencies.require_dependencies in main()
    InvalidSignature = hashes = serialization = ec = None

SIGNER_KEY_NAME = "package-signing"
SIGNER_PURPOSE = "package"
#: fields a signed package carries beyond what key_distribute puts in it
SIGNATURE_FIELDS = ("signed_at", "signer_fingerprint", "signature")
#: fields left out of the signed payload (the wrapped blob is covered by its hash)
UNSIGNED_FIELDS = ("signature", "wrapped")


def signed_time(moment):
    """How ``signed_at`` is written: UTC, ISO 8601 with microseconds (packages of one run stay ordered)."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def package_payload(package):
    """The exact bytes that are signed: every field but the signature and the blob, plus the blob's hash."""
    payload = {k: v for k, v in package.items() if k not in UNSIGNED_FIELDS}
    wrapped = package.get("wrapped")
    payload["wrapped_sha256"] = hashlib.sha256(wrapped.encode("ascii")).hexdigest() if wrapped is not None else None
    return canonical_json(payload)


def _describe(package):
    if isinstance(package, dict):
        return "the package for %s:v%s" % (package.get("name"), package.get("version"))
    return "the package"


def load_signer_public_key(pem):
    """A ``cryptography`` EC public key from the signer's PEM; None when it is not a readable EC public key."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError, AttributeError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def verify_package(package, signer_public_key, where=None):
    """Refuse (PackageRejected) a package whose signature does not verify with ``signer_public_key``.

    ``signer_public_key``: a ``cryptography`` EC public key (the signer pinned at the recipient).
    """
    where = where or _describe(package)
    fingerprint = spki_fingerprint(signer_public_key)
    signature = package.get("signature")
    if not isinstance(signature, str) or not package.get("signed_at"):
        raise PackageRejected(
            "%s is not signed by the HSM (no signature or signed_at): it was made by an older key_distribute or "
            "altered. Nothing was installed. Run key_distribute again and pass its packages unchanged." % where,
            option="packages")
    if package.get("signer_fingerprint") != fingerprint:
        raise PackageRejected(
            "%s names package signer %s, but this recipient pinned the HSM's package signer %s: it was not made by "
            "the HSM this recipient was enrolled with. Nothing was installed. If the HSM's signing key really "
            "changed, confirm it with the Security Officer and pin it again (recipient_enroll, package_signer)."
            % (where, package.get("signer_fingerprint"), fingerprint), option="packages")
    try:
        signer_public_key.verify(base64.b64decode(signature, validate=True), package_payload(package),
                                 ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        raise PackageRejected(
            "%s does not verify with the HSM's package signer %s: its metadata (name, version, id, usage, state, "
            "recipient, transport key, check value, ...) or its wrapped key was changed after the HSM signed it. "
            "Nothing was installed. Run key_distribute again and pass its packages unchanged."
            % (where, fingerprint), option="packages") from None


class PackageSigner:
    """Signs packages with the HSM's ``package-signing`` key, through a loaded TokenKeyStore (user session)."""

    def __init__(self, store):
        self.store = store
        self.key = ManagedSigningKey(store, SIGNER_KEY_NAME, SIGNER_PURPOSE)
        self.version = None

    def prepare(self, operator, now=None):
        """The active signing version, generated in the token on first use. Returns ``(version, created)``."""
        self.version, created = self.key.prepare(operator, now)
        return self.version, created

    def _active(self):
        if self.version is None:
            self.version = self.key.active_version()
        if self.version is None:
            raise KeyNotFound("Token %r has no active %r key to sign packages with; key_distribute generates it "
                              "on first use." % (self.store.token_label, SIGNER_KEY_NAME))
        return self.version

    def sign(self, package):
        """A copy of ``package`` with ``signed_at``, ``signer_fingerprint`` and ``signature`` added."""
        version = self._active()
        signed = {k: v for k, v in package.items() if k not in SIGNATURE_FIELDS}
        signed.update(signed_at=signed_time(utc_now()), signer_fingerprint=version.public_key_fingerprint)
        signed["signature"] = self.key.sign(version, package_payload(signed))
        return signed

    def public_record(self):
        """``{"name", "key_id", "version", "fingerprint", "public_key_pem"}`` of the active signing version."""
        return self.key.public_record(self._active())


def ensure_package_signer(store, context, events):
    """Make sure the token has an active package-signing key; a new one adds its ``key-generate`` event.

    Returns ``(signer, created)``: a PackageSigner ready to sign with that version.
    """
    signer = PackageSigner(store)
    version, created = signer.prepare(context.operator)
    if created:
        events.append(signer.key.generated_event(version, context))
    return signer, created


def signer_record(store):
    """The public record of the token's active package-signing key, or None (read-only: never generates)."""
    key = ManagedSigningKey(store, SIGNER_KEY_NAME, SIGNER_PURPOSE)
    version = key.active_version()
    return key.public_record(version) if version is not None else None
