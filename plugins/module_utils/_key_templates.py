# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What a new key version is in the token: the attributes its key objects are generated with.

PRIVATE: not part of the public interface. ``TokenKeyStore.generate`` calls it; docs/architecture.md ("Key model
on the token") describes the result.

Every key is generated inside the token (C_GenerateKey / C_GenerateKeyPair) as a token object, private, with
CKA_SENSITIVE true and the usages of its spec. CKA_EXTRACTABLE is true only for a distributable key or one with
``backup`` (for replica tokens), which also gets CKA_WRAP_WITH_TRUSTED true, so that the token wraps it only under a
CKA_TRUSTED key (one the Security Officer approved, ``_trusted_keys``). A token that does not know
CKA_WRAP_WITH_TRUSTED answers CKR_ATTRIBUTE_TYPE_INVALID: a backup key is then refused, a distributable one while
``policy.require_trusted_wrapping`` is on, else it is generated without it.
"""

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import Attribute, KeyType, p11_exc
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import CapabilityMissing
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    EC_NO_USAGES,
    TOKEN_CURVES,
    check_value,
    usage_template,
)


def generate_key_objects(session, spec, label, key_id, require_trusted_wrapping, token_label):
    """Generate the key object(s) of one version: ``([secret], wrap_with_trusted)`` for AES, else
    ``([private, public], wrap_with_trusted)``.

    Raises CapabilityMissing (nothing generated) for a distributable key on a token without
    CKA_WRAP_WITH_TRUSTED while ``require_trusted_wrapping`` is on.
    """
    make = _generate_secret if spec.type == "aes" else _generate_pair
    if not extractable(spec):
        return make(session, spec, label, key_id, False), False
    try:
        return make(session, spec, label, key_id, True), True
    except p11_exc.AttributeTypeInvalid:
        if spec.backup:
            raise CapabilityMissing(
                "Token %r does not support CKA_WRAP_WITH_TRUSTED (CKR_ATTRIBUTE_TYPE_INVALID), so it cannot keep the "
                "copies of backup key %s for replica tokens under keys the Security Officer approved; nothing was "
                "generated. Use a token that supports trusted wrapping (CKA_TRUSTED, CKA_WRAP_WITH_TRUSTED), or "
                "generate the key without backup." % (token_label, label), option="backup") from None
        if require_trusted_wrapping:
            raise CapabilityMissing(
                "Token %r does not support CKA_WRAP_WITH_TRUSTED (CKR_ATTRIBUTE_TYPE_INVALID), so it cannot "
                "restrict the wrapping of distributable key %s to transport keys the Security Officer approved; "
                "policy.require_trusted_wrapping is on, nothing was generated. Use a token that supports trusted "
                "wrapping (CKA_TRUSTED, CKA_WRAP_WITH_TRUSTED), or, on a development token only, set "
                "policy.require_trusted_wrapping to false." % (token_label, label),
                option="policy.require_trusted_wrapping") from None
    return make(session, spec, label, key_id, False), False


def extractable(spec):
    """Whether a new version of ``spec`` may leave the token, wrapped: distributable, or backed up to replicas."""
    return bool(spec.distributable or spec.backup)


def aes_check_value(key, keep_encrypt):
    """KCV: first 3 bytes of AES-ECB of a zero block, computed by the token; then CKA_ENCRYPT as the spec says."""
    kcv = check_value(key)
    if not keep_encrypt:
        key[Attribute.ENCRYPT] = False
    return kcv


def _generate_secret(session, spec, label, key_id, wrap_with_trusted):
    template = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.MODIFIABLE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: extractable(spec),
        # ENCRYPT is on at generation so the token can compute the key check value;
        # it is switched off right after when the spec does not ask for it (aes_check_value).
        Attribute.ENCRYPT: True,
    }
    if wrap_with_trusted:
        template[Attribute.WRAP_WITH_TRUSTED] = True
    template.update(usage_template(spec.usage, skip=("encrypt",)))
    return [session.generate_key(KeyType.AES, spec.size, id=key_id, label=label, store=True, template=template)]


def _generate_pair(session, spec, label, key_id, wrap_with_trusted):
    skip = EC_NO_USAGES if spec.type == "ec" else ()
    public_template = {Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.MODIFIABLE: True,
                       **usage_template(spec.usage, "public", skip)}
    private_template = {
        Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.MODIFIABLE: True,
        Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: extractable(spec),
        **usage_template(spec.usage, "private", skip),
    }
    if wrap_with_trusted:
        private_template[Attribute.WRAP_WITH_TRUSTED] = True
    if spec.type == "rsa":
        public_template[Attribute.PUBLIC_EXPONENT] = b"\x01\x00\x01"
        public, private = session.generate_keypair(KeyType.RSA, spec.size, id=key_id, label=label, store=True,
                                                   public_template=public_template,
                                                   private_template=private_template)
    else:
        public_template[Attribute.EC_PARAMS] = TOKEN_CURVES[spec.curve].ec_params()
        public, private = session.generate_keypair(KeyType.EC, None, id=key_id, label=label, store=True,
                                                   public_template=public_template,
                                                   private_template=private_template)
    return [private, public]
