# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""A managed signing key the collection keeps for itself in the HSM token.

PRIVATE: not part of the public interface.

Two such keys exist: ``audit-checkpoint`` (``_checkpoint``) signs journal heads and
``package-signing`` (``_package_signing``) signs distribution packages. Each is an
ordinary managed key (EC P-256, sign/verify, CKA_SENSITIVE true, never extractable,
not distributable), generated in the token on first use. A signature is CKM_ECDSA
over the SHA-256 of the payload, encoded as DER (``openssl dgst -sha256 -verify``
and ``cryptography``'s ``ECDSA(SHA256())`` check it) and given in base64.
"""

from __future__ import annotations

import base64
import hashlib

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event, key_section
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import pkcs11_errors
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import build_key_spec, utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE

try:
    from pkcs11 import Mechanism
    from pkcs11.util.ec import encode_ecdsa_signature
except ImportError:  # guarded by _dependencies.require_dependencies in main()
    Mechanism = encode_ecdsa_signature = None


class ManagedSigningKey:
    """One named signing key on a loaded TokenKeyStore (user session)."""

    def __init__(self, store, name, purpose):
        self.store = store
        self.name = name
        #: what it signs, for error messages and audit reasons (``audit checkpoint``, ``package``)
        self.purpose = purpose

    def spec(self):
        return build_key_spec({"name": self.name, "type": "ec", "curve": "P-256", "usage": ["sign", "verify"]},
                              BASELINE)

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
        return self.store.generate(self.spec(), number, operator, now or utc_now()), True

    def sign(self, version, payload):
        """Base64 of the DER ECDSA signature of SHA-256(``payload``), made inside the token."""
        private = self.store.private_key(self.name, version.version)
        with pkcs11_errors("C_Sign (%s)" % self.purpose, token_label=self.store.token_label):
            raw = private.sign(hashlib.sha256(payload).digest(), mechanism=Mechanism.ECDSA)
        return base64.b64encode(encode_ecdsa_signature(raw)).decode("ascii")

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
