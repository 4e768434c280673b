# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Distribution packages signed by the HSM, verified by the recipient.

PRIVATE: not part of the public interface. docs/distribution.md explains the threat model.

The HSM signs each package's metadata with the managed key ``package-signing`` (EC
P-256, or RSA-3072 on a token without EC, generated in the token on first use, never
extractable; ``_managed_signing``, ``_signatures``).
The recipient pins that key's public half in its own token at enrollment
(``recipient_enroll`` option ``package_signer``) and ``key_install`` checks every
package against it before anything is unwrapped: a package relabelled, with its usage
widened, its state altered, or meant for another recipient no longer verifies.

The signed payload (``package_payload``) is the canonical JSON (sorted keys, no spaces)
of every field of the package except ``signature`` and ``wrapped``, plus
``wrapped_sha256``: the hex SHA-256 of the ``wrapped`` base64 text (null for a state
change that carries no key). A signed package gains ``signed_at`` (UTC, ISO 8601 with
microseconds), ``signer_fingerprint`` (``sha256:<hex>`` of the signer's
SubjectPublicKeyInfo) and ``signature`` (base64 of the DER ECDSA signature, or of the RSA
signature block), so ``openssl dgst -sha256 -verify signer.pem -signature sig.der payload.json``
checks it (docs/audit.md gives the options for RSA-PSS).

Rollover: a rotation of ``package-signing`` (``_key_rotation``) makes the old version, while
it is still active, sign a certificate of the new one (``_managed_signing.certify_successor``): the canonical
JSON of ``name``, ``previous_version``, ``previous_fingerprint``, ``version``,
``fingerprint``, ``public_key_pem`` and ``certified_at``, plus ``signature`` (base64, by the
old key over that JSON). It is kept on the token
(``_token_objects.SIGNER_CERTIFICATE``) and the signer's public record lists every
certificate, oldest first (``certificates``). A recipient that pinned an older signer follows
that chain from its pin (``follow_certificates``): each link verified with the key trusted
before it, to the signer its packages name. A compromise rotation certifies nothing.
"""

from __future__ import annotations

import hashlib

from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyNotFound, PackageRejected
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._managed_signing import (
    CERTIFICATE_PREFIXES,
    PACKAGE_KEY_NAME,
    RESTORE_KEY_NAME,
    ManagedSigningKey,
    certificate_payload,
    certificates as certificates_of,
    signed_time,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._signatures import (
    load_public_key,
    signature_valid,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import canonical_json, spki_fingerprint

SIGNER_KEY_NAME = PACKAGE_KEY_NAME
SIGNER_PURPOSE = "package"
#: what each signing key signs; ``restore-signing`` is a replica's own (``_replication``), never backed up
SIGNER_PURPOSES = {PACKAGE_KEY_NAME: (SIGNER_PURPOSE, None), RESTORE_KEY_NAME: ("restore package", False)}
#: fields a signed package carries beyond what key_distribute puts in it
SIGNATURE_FIELDS = ("signed_at", "signer_fingerprint", "signature")
#: fields left out of the signed payload (the wrapped blob is covered by its hash)
UNSIGNED_FIELDS = ("signature", "wrapped")
#: label prefix of a signer certificate on the HSM's token (``package-signer-certificate:<key id of the new version>``)
CERTIFICATE_PREFIX = CERTIFICATE_PREFIXES[SIGNER_KEY_NAME]


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


def verify_package(package, signer_public_key, where=None):
    """Refuse (PackageRejected) a package whose signature does not verify with ``signer_public_key``.

    ``signer_public_key``: a ``cryptography`` public key (the signer pinned at the recipient).
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
    if not signature_valid(signer_public_key, signature, package_payload(package)):
        raise PackageRejected(
            "%s does not verify with the HSM's package signer %s: its metadata (name, version, id, usage, state, "
            "recipient, transport key, check value, ...) or its wrapped key was changed after the HSM signed it. "
            "Nothing was installed. Run key_distribute again and pass its packages unchanged."
            % (where, fingerprint), option="packages")


class PackageSigner:
    """Signs packages with the HSM's ``package-signing`` key (or, ``name``, a replica's ``restore-signing`` key),
    through a loaded TokenKeyStore (user session)."""

    def __init__(self, store, name=SIGNER_KEY_NAME):
        self.store = store
        purpose, backup = SIGNER_PURPOSES[name]
        self.key = ManagedSigningKey(store, name, purpose, backup=backup)
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
                              "on first use." % (self.store.token_label, self.key.name))
        return self.version

    def sign(self, package):
        """A copy of ``package`` with ``signed_at``, ``signer_fingerprint`` and ``signature`` added."""
        version = self._active()
        signed = {k: v for k, v in package.items() if k not in SIGNATURE_FIELDS}
        signed.update(signed_at=signed_time(utc_now()), signer_fingerprint=version.public_key_fingerprint)
        signed["signature"] = self.key.sign(version, package_payload(signed))
        return signed

    def public_record(self):
        """``{"name", "key_id", "version", "fingerprint", "public_key_pem", "certificates"}`` of the active version."""
        certified = signer_certificates(self.store) if self.key.name in CERTIFICATE_PREFIXES else []
        return dict(self.key.public_record(self._active()), certificates=certified)


def ensure_package_signer(store, context, events, name=SIGNER_KEY_NAME):
    """Make sure the token has an active ``name`` signing key; a new one adds its ``key-generate`` event.

    Returns ``(signer, created)``: a PackageSigner ready to sign with that version.
    """
    signer = PackageSigner(store, name)
    version, created = signer.prepare(context.operator)
    if created:
        events.append(signer.key.generated_event(version, context))
    return signer, created


def signer_record(store, name=SIGNER_KEY_NAME):
    """The public record of the token's active ``name`` signing key, or None (read-only: never generates)."""
    signer = PackageSigner(store, name)
    signer.version = signer.key.active_version()
    return signer.public_record() if signer.version is not None else None


# ---- rollover: each new signer certified by the one before it (``_managed_signing.certify_successor``) -----


def signer_certificates(store):
    """Every package signer certificate on the HSM's token, oldest first (by the version certified)."""
    return certificates_of(store, SIGNER_KEY_NAME)


def _chain_error(message, option):
    return PackageRejected("%s Nothing was changed on this token. Pass the package_signer (with its certificates) "
                           "that key_distribute or key_info returns on the HSM host, unchanged; if the HSM's signer "
                           "really changed without a certificate, confirm it with the Security Officer and pin it "
                           "again by hand." % message, option=option)


def _certified_key(certificate, trusted_key, trusted_fingerprint, where, option, name=SIGNER_KEY_NAME):
    """The public key ``certificate`` certifies, once its link to the trusted key is checked; else PackageRejected."""
    if not isinstance(certificate, dict) or certificate.get("name") != name:
        raise _chain_error("%s is not a certificate of the HSM's %r key." % (where, name), option)
    if certificate.get("previous_fingerprint") != trusted_fingerprint:
        raise _chain_error("%s certifies a successor of %s, but the signer trusted at that point of the chain is %s: "
                           "the chain is broken." % (where, certificate.get("previous_fingerprint"),
                                                     trusted_fingerprint), option)
    signature = certificate.get("signature")
    if not isinstance(signature, str) or not signature_valid(trusted_key, signature, certificate_payload(certificate)):
        raise _chain_error("%s does not verify with the signer it names as previous (%s): it was forged or altered."
                           % (where, trusted_fingerprint), option)
    public_key = load_public_key(certificate.get("public_key_pem"))
    if public_key is None or spki_fingerprint(public_key) != certificate.get("fingerprint"):
        raise _chain_error("%s: its public_key_pem is not the EC key of fingerprint %s."
                           % (where, certificate.get("fingerprint")), option)
    return public_key


def follow_certificates(pinned_key, certificates, target_fingerprint, option="package_signer",
                        name=SIGNER_KEY_NAME):
    """Walk the certificates from the pinned signer to ``target_fingerprint``; return the target's public key.

    The walk starts at the first certificate whose previous signer is the pinned one (earlier links are older
    than the pin and are not needed); from there every certificate must follow the one before it and verify
    with the key trusted so far. Raises PackageRejected when the chain does not start at the pin, is broken,
    forged, or ends before the target. ``name``: the managed signing key the certificates are of.
    """
    trusted_key, trusted = pinned_key, spki_fingerprint(pinned_key)
    certificates = list(certificates or [])
    start = next((i for i, c in enumerate(certificates) if isinstance(c, dict)
                  and c.get("previous_fingerprint") == trusted), None)
    if start is None:
        raise _chain_error("The HSM's package signer is now %s, but no certificate in package_signer.certificates "
                           "starts at the signer this token pinned (%s)." % (target_fingerprint, trusted), option)
    for index in range(start, len(certificates)):
        where = "package_signer.certificates[%d]" % index
        trusted_key = _certified_key(certificates[index], trusted_key, trusted, where, option, name)
        trusted = spki_fingerprint(trusted_key)
        if trusted == target_fingerprint:
            return trusted_key
    raise _chain_error("package_signer.certificates lead from the pinned signer to %s, not to %s, the signer the "
                       "HSM uses now." % (trusted, target_fingerprint), option)
