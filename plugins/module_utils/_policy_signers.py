# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The environment's policy signers, installed in the HSM token by the Security Officer.

PRIVATE: not part of the public interface. docs/access-control.md ("Signed policy") explains it.

A policy signer is an EC P-256 public key object with CKA_TRUSTED true (only a Security Officer session can set
it), CKA_VERIFY true and nothing else, CKA_MODIFIABLE false and CKA_DESTROYABLE false: once installed, neither a
user session nor the Security Officer can change or delete it, so "this token has a policy signer" cannot be
undone with the PIN. Its label is ``policy-signer:<name>``; its CKA_ID the first 16 bytes of its SPKI SHA-256.

The signature over a signed policy (``_signed_policy``) is ECDSA P-256 / SHA-256, verified inside the token with
that object (C_Verify, CKM_ECDSA over the digest): ECDSA P-256 is what every PKCS#11 token this collection targets
verifies natively (SoftHSM2, Luna, CloudHSM, YubiHSM), and what the audit checkpoints and packages already use;
Ed25519 (CKM_EDDSA) is missing from several of them.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import (
    Attribute,
    KeyType,
    Mechanism,
    ObjectClass,
    decode_dss_signature,
    ec,
    p11_exc,
    serialization,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption, PolicyViolation
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import translate_pkcs11_error
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    TOKEN_CURVES,
    curve_of,
    ec_public_key,
    find_objects,
    public_key_attributes,
    spki_fingerprint,
    trusted_key_id,
)


POLICY_SIGNER_PREFIX = "policy-signer:"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,62}\Z")
P256 = TOKEN_CURVES["P-256"]


@dataclass(frozen=True)
class PolicySigner:
    """A trusted policy signer found on the token."""

    name: str
    label: str
    fingerprint: str
    obj: object  # the token's public key object (verifies in the token)
    destroyable: bool  # False where the token honours CKA_DESTROYABLE

    def as_dict(self):
        return {"name": self.name, "label": self.label, "fingerprint": self.fingerprint,
                "destroyable": self.destroyable}


def find_policy_signers(session):
    """Every EC PUBLIC_KEY with CKA_TRUSTED and CKA_VERIFY true labelled ``policy-signer:<name>``, by fingerprint.

    One C_FindObjects; works in a user or a Security Officer session. A token that does not know CKA_TRUSTED holds
    no signer (an empty list).
    """
    template = {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.EC, Attribute.TRUSTED: True,
                Attribute.VERIFY: True}
    try:
        objects = find_objects(session, template)
    except p11_exc.AttributeTypeInvalid:
        return []
    except p11_exc.PKCS11Error as exc:
        raise translate_pkcs11_error(exc, "C_FindObjects(policy signers)") from None
    signers = []
    for obj in objects:
        try:
            label = obj[Attribute.LABEL] or ""
            if not label.startswith(POLICY_SIGNER_PREFIX) or curve_of(obj) is not P256:
                continue
            try:
                destroyable = bool(obj[Attribute.DESTROYABLE])
            except p11_exc.PKCS11Error:  # a token without CKA_DESTROYABLE: destroyable as any object
                destroyable = True
            fingerprint = spki_fingerprint(ec_public_key(obj, P256))
        except p11_exc.ObjectHandleInvalid:
            continue
        except p11_exc.PKCS11Error as exc:
            raise translate_pkcs11_error(exc, "C_GetAttributeValue of a policy signer") from None
        signers.append(PolicySigner(name=label[len(POLICY_SIGNER_PREFIX):], label=label, fingerprint=fingerprint,
                                    obj=obj, destroyable=destroyable))
    return sorted(signers, key=lambda signer: signer.fingerprint)


def load_signer_public_key(pem, option="public_key_pem"):
    """A ``cryptography`` EC P-256 public key from PEM; InvalidOption naming ``option`` otherwise."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii") if isinstance(pem, str) else pem)
    except (ValueError, TypeError, UnicodeError) as exc:
        raise InvalidOption("%s is not a PEM public key (%s)." % (option, exc), option=option) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InvalidOption("%s must be an EC P-256 public key: policy signatures are ECDSA P-256 / SHA-256."
                            % option, option=option)
    return key


def signer_template(name, public_key, destroyable=False):
    """The C_CreateObject template of a policy signer (Security Officer session)."""
    template = {
        **public_key_attributes(public_key),
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.TRUSTED: True,
        Attribute.VERIFY: True,
        Attribute.ENCRYPT: False,
        Attribute.WRAP: False,
        Attribute.DERIVE: False,
        Attribute.MODIFIABLE: False,
        Attribute.ID: trusted_key_id(public_key),
        Attribute.LABEL: POLICY_SIGNER_PREFIX + name,
    }
    if not destroyable:
        template[Attribute.DESTROYABLE] = False
    return template


def verify_in_token(signer, payload, signature_b64):
    """Whether ``signature_b64`` (base64 of a DER ECDSA signature) verifies over SHA-256(``payload``) with
    ``signer``'s object, inside the token (C_Verify, CKM_ECDSA)."""
    try:
        r, s = decode_dss_signature(base64.b64decode(signature_b64, validate=True))
    except (ValueError, TypeError):
        return False
    if r >= 1 << 256 or s >= 1 << 256:
        return False
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    try:
        return bool(signer.obj.verify(hashlib.sha256(payload).digest(), raw, mechanism=Mechanism.ECDSA))
    except (p11_exc.SignatureInvalid, p11_exc.SignatureLenRange):
        return False
    except p11_exc.PKCS11Error as exc:
        raise translate_pkcs11_error(exc, "C_Verify (policy signature)") from None


def check_signer_name(name, option="name"):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidOption("%s %r is not a valid signer name: letters, digits and . _ @ + - only, up to 63 "
                            "characters." % (option, name), option=option)
    return name


def refuse_user_session(exc, label):
    """A user session cannot create a CKA_TRUSTED object: say so in the procedure's words."""
    return PolicyViolation("The token refused to create the trusted policy signer %r (%s): only a Security Officer "
                           "session can install a policy signer (so_pin or so_pin_file)." % (label, exc),
                           option="so_pin")
