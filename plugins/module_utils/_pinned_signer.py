# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The HSM's package signer as a recipient's token pins it.

PRIVATE: not part of the public interface.

``recipient_enroll`` (option ``package_signer``) creates a CKO_PUBLIC_KEY labelled
``keylifecycle-package-signer`` in the recipient's own token: the HSM's ``package-signing``
public key (EC P-256, or RSA-3072 on an HSM without EC), which may only verify and can never
be changed (CKA_MODIFIABLE false). ``key_install`` checks every package against it before
anything is unwrapped (``_package_signing.verify_package``). When the HSM's signer rolls over,
the new signer's object is created and the old one destroyed (``pin_signer``): one pinned
signer at a time. The token is read through the store's ``_token_objects.TokenObjects``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import Attribute, ObjectClass, p11_exc
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    InvalidOption,
    KeyConflict,
    PolicyViolation,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import pkcs11_errors
from ansible_collections.secops.keylifecycle.plugins.module_utils._signatures import load_public_key
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    destroy_quietly,
    public_key_attributes,
    spki_fingerprint,
    token_can_hold,
    token_public_key,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import FINGERPRINT_RE


#: CKA_LABEL of the HSM's package-signing public key pinned in the recipient's token
PACKAGE_SIGNER_LABEL = "keylifecycle-package-signer"


@dataclass(frozen=True)
class PinnedSigner:
    """The HSM's package-signing public key as pinned in the recipient's token."""

    label: str
    key_id: str
    #: ``ec`` or ``rsa`` (the HSM's signing key follows its token: EC P-256, else RSA-3072)
    type: str
    #: the curve of an EC signer (``P-256``), None for RSA
    curve: str | None
    public_key: object
    fingerprint: str
    #: the token lets it be changed (pinned by something other than recipient_enroll)
    modifiable: bool
    obj: object = None
    #: CKA_TRUSTED: pinned by this token's Security Officer (package_signer_approve), which only an SO session can do
    trusted: bool = False

    def record(self):
        return {"label": self.label, "id": self.key_id, "type": self.type, "curve": self.curve,
                "fingerprint": self.fingerprint, "trusted": self.trusted}


def load_signer_key(public_key_pem, fingerprint, option, fingerprint_option=None):
    """The HSM's package-signing public key given as ``public_key_pem`` (EC P-256, P-384 or P-521, or RSA of 3072 bits
    or more), checked against ``fingerprint`` when one is given; returns (public key, its fingerprint).

    InvalidOption naming ``option`` for an unreadable key or a malformed fingerprint, PolicyViolation naming
    ``fingerprint_option`` (default ``option``) when the key is not the one the fingerprint names.
    """
    public_key = load_public_key(public_key_pem) if isinstance(public_key_pem, str) else None
    if public_key is None:
        raise InvalidOption("%s is not a readable EC (P-256 or stronger) or RSA (3072 bits or more) public key in "
                            "PEM; pass the package_signer.public_key_pem that key_info returns on the source HSM host "
                            "unchanged." % option, option=option)
    if not token_can_hold(public_key):
        raise InvalidOption("%s is an EC key on curve %s; the HSM's package signer is EC P-256, P-384 or P-521, or "
                            "RSA. Pass package_signer from key_info on the source HSM host unchanged. Nothing was "
                            "pinned." % (option, public_key.curve.name), option=option)
    computed = spki_fingerprint(public_key)
    fingerprint_option = fingerprint_option or option
    if fingerprint is not None and not (isinstance(fingerprint, str) and FINGERPRINT_RE.match(fingerprint.lower())):
        raise InvalidOption("%s must be sha256:<64 hex digits>." % fingerprint_option, option=fingerprint_option)
    if fingerprint and fingerprint.lower() != computed:
        raise PolicyViolation(
            "%s: the public key's fingerprint %s does not match the pinned fingerprint %s. Confirm the HSM's package "
            "signer with the Security Officer before pinning it. Nothing was pinned."
            % (fingerprint_option, computed, fingerprint), option=fingerprint_option)
    return public_key, computed


def find_pinned_signer(objects):
    """The ``PinnedSigner`` among a recipient token's enumerated ``objects``, or None when nothing is pinned.

    Raises ``KeyConflict`` when the label holds anything but one RSA or EC public key on a known curve.
    """
    found = objects.key_objects(ObjectClass.PUBLIC_KEY, PACKAGE_SIGNER_LABEL)
    others = (objects.key_objects(ObjectClass.PRIVATE_KEY, PACKAGE_SIGNER_LABEL)
              + objects.key_objects(ObjectClass.SECRET_KEY, PACKAGE_SIGNER_LABEL))
    if not found and not others:
        return None
    if len(found) != 1 or others:
        raise KeyConflict(
            "Token %r holds %d object(s) labelled %r, not one public key: the pinned package signer is "
            "ambiguous. Remove them (pkcs11-tool --delete-object) and run recipient_enroll with package_signer."
            % (objects.token_label, len(found) + len(others), PACKAGE_SIGNER_LABEL), option="package_signer")
    obj = found[0]
    with pkcs11_errors("C_GetAttributeValue (package signer)", token_label=objects.token_label):
        public = token_public_key(obj)
        if public is None:
            raise KeyConflict("The pinned package signer %r on token %r is neither an RSA key nor an EC key on a "
                              "known curve; remove it and run recipient_enroll with package_signer."
                              % (PACKAGE_SIGNER_LABEL, objects.token_label), option="package_signer")
        return PinnedSigner(label=PACKAGE_SIGNER_LABEL, key_id=bytes(obj[Attribute.ID]).hex(), type=public.type,
                            curve=public.curve.name if public.curve else None, public_key=public.public_key,
                            fingerprint=spki_fingerprint(public.public_key),
                            modifiable=bool(obj[Attribute.MODIFIABLE]), obj=obj, trusted=_trusted(obj))


def _trusted(obj):
    """CKA_TRUSTED of the pinned object; False on a token that does not know the attribute."""
    try:
        return bool(obj[Attribute.TRUSTED])
    except p11_exc.AttributeTypeInvalid:
        return False


def pin_signer(objects, previous, public_key, key_id, trusted=False):
    """Create the pinned signer object (a token public key that may only verify, never be changed); return it.

    ``previous``: the ``PinnedSigner`` pinned before (a rollover) or None; it is destroyed once the new object
    exists, and if that fails the new object is destroyed again and the old pin stays. ``trusted``: CKA_TRUSTED true,
    which the token accepts from a Security Officer session only (package_signer_approve).
    """
    template = {**public_key_attributes(public_key), Attribute.TOKEN: True, Attribute.PRIVATE: False,
                Attribute.MODIFIABLE: False, Attribute.LABEL: PACKAGE_SIGNER_LABEL, Attribute.ID: key_id,
                Attribute.VERIFY: True, Attribute.VERIFY_RECOVER: False, Attribute.ENCRYPT: False,
                Attribute.WRAP: False, Attribute.DERIVE: False}
    if trusted:
        template[Attribute.TRUSTED] = True
    with pkcs11_errors("C_CreateObject (package signer)", token_label=objects.token_label):
        obj = objects.session.create_object(template)
        try:
            objects.destroy_key_objects(PACKAGE_SIGNER_LABEL, [previous.obj] if previous else [],
                                        "C_DestroyObject (previous signer)")
        except Exception:
            destroy_quietly(obj)
            raise
        objects.add_key_objects(PACKAGE_SIGNER_LABEL, [obj])
    return find_pinned_signer(objects)
