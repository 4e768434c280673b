# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Key wrapping for distribution: the mechanism, transport keys and wrapped packages.

PRIVATE: not part of the public interface. docs/distribution.md explains the choice.

A distributed key travels as C_WrapKey(CKM_RSA_PKCS_OAEP) of the AES key under the
recipient's RSA transport public key (3072 bits or more). RSA-OAEP is standard
(PKCS #1 v2.2, RFC 8017), every PKCS#11 token implements it, and the result can be
checked outside any HSM with ``openssl pkeyutl`` or ``cryptography``. The OAEP hash
is configurable; MGF1 uses the same hash, and the label is empty.

A *package* is what crosses from the HSM host to the recipient: public metadata
(recipient, key name, version, id, check value, mechanism) and the wrapped blob in
base64. It holds nothing usable without the recipient's transport private key. The
HSM signs it (``signed_at``, ``signer_fingerprint``, ``signature``; ``_package_signing``)
and the recipient checks that signature before it unwraps anything.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime

from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import (
    MGF,
    Mechanism,
    ec,
    hashes,
    padding,
    rsa,
    serialization,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    InvalidOption,
    PackageRejected,
    PolicyViolation,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import NAME_RE, validate_name
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import USAGES
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import spki_fingerprint


WRAP_MECHANISM = "CKM_RSA_PKCS_OAEP"
OAEP_HASHES = ("sha1", "sha256", "sha384", "sha512")
#: the strongest OAEP hash the token actually wraps with, found by trying (_token_probe.probe_oaep_hashes)
AUTO_OAEP_HASH = "auto"
DEFAULT_OAEP_HASH = AUTO_OAEP_HASH
PACKAGE_FORMAT = 1
#: the weakest transport keys accepted, whatever the policy says
MIN_TRANSPORT_RSA_BITS = 3072
MIN_TRANSPORT_EC_BITS = 256
DEFAULT_TRANSPORT_KEY_LABEL = "keylifecycle-transport"
#: states a recipient holds: active (full usage) or deactivated (decrypt, unwrap, verify only)
RECIPIENT_STATES = ("active", "deactivated")
DEACTIVATED_USAGES = ("decrypt", "unwrap", "verify")

_HEX_ID = re.compile(r"^[0-9a-f]{2,64}\Z")
_KCV = re.compile(r"^[0-9a-f]{6}\Z")
FINGERPRINT_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}\Z")


#: each OAEP hash as python-pkcs11 names its mechanism and MGF1, and as cryptography names it
_OAEP_HASH_NAMES = {"sha1": ("SHA_1", "SHA1", "SHA1"), "sha256": ("SHA256", "SHA256", "SHA256"),
                    "sha384": ("SHA384", "SHA384", "SHA384"), "sha512": ("SHA512", "SHA512", "SHA512")}


def _oaep_hash_names(oaep_hash):
    if oaep_hash not in OAEP_HASHES:
        raise InvalidOption("oaep_hash %r is not supported; use one of %s." % (oaep_hash, ", ".join(OAEP_HASHES)),
                            option="oaep_hash")
    return _OAEP_HASH_NAMES[oaep_hash]


def oaep_parameters(oaep_hash):
    """python-pkcs11's CK_RSA_PKCS_OAEP_PARAMS for ``oaep_hash``: (hash, MGF1 with the same hash, no label)."""
    mechanism_hash, mgf, _software = _oaep_hash_names(oaep_hash)
    return (getattr(Mechanism, mechanism_hash), getattr(MGF, mgf), None)


def oaep_padding(oaep_hash):
    """``cryptography``'s OAEP padding with the parameters of ``oaep_parameters``: the same wrap done in software (the
    recipient's unwrap probe, and anyone checking a package outside an HSM)."""
    algorithm = getattr(hashes, _oaep_hash_names(oaep_hash)[2])()
    return padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)


def mechanism_name(oaep_hash):
    """How the mechanism is named in packages and audit events, e.g. ``CKM_RSA_PKCS_OAEP:sha256``."""
    return "%s:%s" % (WRAP_MECHANISM, oaep_hash)


def check_transport_strength(public_key, where, min_rsa_bits=MIN_TRANSPORT_RSA_BITS):
    """Refuse a transport key that is weak or of a kind this version cannot wrap under.

    Returns ``(type, size)``.
    """
    minimum = max(MIN_TRANSPORT_RSA_BITS, int(min_rsa_bits or 0))
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < minimum:
            raise PolicyViolation(
                "%s: the transport key is RSA %d, which is weak: transport keys must be RSA %d bits or more. Remove "
                "the transport key pair from the recipient's token and run recipient_enroll again (key_size: %d); "
                "then pin the new fingerprint." % (where, public_key.key_size, minimum, minimum),
                option="transport_key")
        return "rsa", public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.key_size < MIN_TRANSPORT_EC_BITS:
            raise PolicyViolation(
                "%s: the transport key is on curve %s, below P-256, which is weak. Remove it from the recipient's "
                "token and run recipient_enroll again, which generates an RSA transport key of %d bits or more."
                % (where, public_key.curve.name, minimum), option="transport_key")
        raise InvalidOption(
            "%s: the transport key is an EC key (%s); this collection wraps with RSA-OAEP, so the recipient needs "
            "an RSA transport key of %d bits or more: remove the EC pair from the recipient's token and run "
            "recipient_enroll again." % (where, public_key.curve.name, minimum),
            option="transport_key")
    raise InvalidOption("%s: the transport key is neither RSA nor EC; enroll an RSA transport key of %d bits or "
                        "more." % (where, minimum), option="transport_key")


def load_transport_public_key(pem, where, pinned_fingerprint=None, min_rsa_bits=MIN_TRANSPORT_RSA_BITS):
    """Parse and check a recipient's enrolled transport public key (PEM SubjectPublicKeyInfo).

    Returns ``(public_key, fingerprint)``.
    """
    if not isinstance(pem, str) or "BEGIN PUBLIC KEY" not in pem:
        raise InvalidOption("%s: public_key_pem must be the PEM public key that recipient_enroll returned "
                            "(transport_key.public_key_pem)." % where, option="recipients")
    try:
        public_key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise InvalidOption("%s: public_key_pem is not a readable PEM public key; pass transport_key.public_key_pem "
                            "from recipient_enroll unchanged." % where, option="recipients") from None
    check_transport_strength(public_key, where, min_rsa_bits)
    fingerprint = spki_fingerprint(public_key)
    if pinned_fingerprint and pinned_fingerprint.lower() != fingerprint:
        raise PolicyViolation(
            "%s: the transport key's fingerprint %s does not match the pinned fingerprint %s. The recipient's "
            "transport key changed; confirm the new key with the recipient's owner before pinning it."
            % (where, fingerprint, pinned_fingerprint), option="recipients")
    return public_key, fingerprint


def usage_for_state(usage, state):
    """The usages a recipient's copy keeps in ``state``: all of them when active, decrypt-side when deactivated."""
    if state == "active":
        return tuple(usage)
    return tuple(u for u in usage if u in DEACTIVATED_USAGES)


def _is_utc_time(value):
    try:
        return isinstance(value, str) and datetime.fromisoformat(value).utcoffset() is not None
    except ValueError:
        return False


#: package fields whose value is never echoed in an error, not even a malformed one
BLOB_FIELDS = ("wrapped", "signature", "metadata")


def shown_value(name, value):
    """How an error names a package field's value: its length for a blob (BLOB_FIELDS), else its repr."""
    if name in BLOB_FIELDS and isinstance(value, str):
        return "(%d characters, not shown)" % len(value)
    return repr(value)


def validate_package(package, index, recipient=None):
    """Check one package's fields (types and patterns), before anything touches the token.

    Returns the package as a plain dict. Refuses (PackageRejected) a package addressed to another recipient or
    one that carries no HSM signature; the signature itself is checked by ``_package_signing.verify_package``.
    """
    where = "packages[%d]" % index
    if not isinstance(package, dict):
        raise InvalidOption("%s is not a package: pass the packages that key_distribute returned for this recipient."
                            % where, option="packages")

    def field(name, check, text):
        value = package.get(name)
        if not check(value):
            raise InvalidOption("%s: %s %s is not valid; %s. Pass the packages that key_distribute returned, "
                                "unchanged." % (where, name, shown_value(name, value), text), option="packages")
        return value

    def is_str(pattern):
        return lambda v: isinstance(v, str) and bool(pattern.match(v))

    field("format", lambda v: v == PACKAGE_FORMAT, "this version reads package format %d" % PACKAGE_FORMAT)
    field("recipient", is_str(NAME_RE), "it names the recipient service")
    field("name", is_str(NAME_RE), "it is the key's name")
    field("version", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive number")
    field("id", is_str(_HEX_ID), "it is the key's CKA_ID in hex")
    field("type", lambda v: v == "aes", "only AES keys are distributed")
    field("size", lambda v: v in (128, 192, 256), "an AES key size")
    field("usage", lambda v: isinstance(v, list) and all(u in USAGES for u in v), "a list of usages")
    field("state", lambda v: v in RECIPIENT_STATES, "active or deactivated")
    field("key_check_value", is_str(_KCV), "six hex digits")
    field("transport_key_fingerprint", is_str(FINGERPRINT_RE), "sha256:<64 hex digits>")
    field("oaep_hash", lambda v: v in OAEP_HASHES, "one of %s" % ", ".join(OAEP_HASHES))
    field("mechanism", lambda v: v == mechanism_name(package.get("oaep_hash")), "it names the wrapping mechanism")
    field("wrapped", lambda v: v is None or (isinstance(v, str) and bool(_BASE64.match(v))),
          "base64 of the wrapped key, or null for a state change")
    unsigned = [name for name in ("signed_at", "signer_fingerprint", "signature") if package.get(name) is None]
    if unsigned:
        raise PackageRejected(
            "%s (%s:v%d) carries no %s: it is not signed by the HSM (made by an older key_distribute, in check "
            "mode, or altered). Nothing was installed. Run key_distribute again and pass its packages unchanged."
            % (where, package["name"], package["version"], ", ".join(unsigned)), option="packages")
    field("signed_at", _is_utc_time, "the time the HSM signed the package (ISO 8601 with a UTC offset)")
    field("signer_fingerprint", is_str(FINGERPRINT_RE), "sha256:<64 hex digits> of the HSM's package signer")
    field("signature", is_str(_BASE64), "base64 of the HSM's DER ECDSA signature")
    if recipient is not None and package["recipient"] != recipient:
        raise PackageRejected(
            "%s is addressed to recipient %r, not to %r (this host's recipient). Nothing was installed. Pass each "
            "host only the packages key_distribute made for it: distribution.recipients[<host>].packages."
            % (where, package["recipient"], recipient),
            option="packages")
    return dict(package)


def decode_wrapped(package, where):
    try:
        return base64.b64decode(package["wrapped"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidOption("%s: wrapped is not valid base64." % where, option="packages") from None


def validate_version_ref(ref, index):
    """A version to remove at a recipient: name, version and (optionally) id."""
    where = "versions[%d]" % index
    if not isinstance(ref, dict):
        raise InvalidOption("%s must be a dict with name and version." % where, option="versions")
    validate_name(ref.get("name"), "%s.name" % where)
    version = ref.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidOption("%s.version must be a positive number." % where, option="versions")
    if ref.get("id") is not None and not (isinstance(ref["id"], str) and _HEX_ID.match(ref["id"])):
        raise InvalidOption("%s.id must be the key's CKA_ID in hex." % where, option="versions")
    return {"name": ref["name"], "version": version, "id": ref.get("id")}
