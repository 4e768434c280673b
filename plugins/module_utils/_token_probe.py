# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What a PKCS#11 token can do, found by trying it (token_info; issue "Proven on more than one PKCS#11 token").

PRIVATE: not part of the public interface. docs/hsm-vendors.md explains what each capability means for the
collection.

Tokens differ in what they implement, and their mechanism flags are not always true (SoftHSM2 2.6 lists
CKM_RSA_PKCS_OAEP for every hash but wraps only with SHA-1). So each capability that matters is tried, in the
logged-in user session, on session objects (CKA_TOKEN false: nothing is written to the token, and the session's end
removes them):

* the key types and sizes the token generates (CKM_AES_KEY_GEN, CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_EC_KEY_PAIR_GEN with
  P-256 and P-384), by generating them (RSA: the smallest size the policy allows, 3072);
* the OAEP hashes that actually work for C_WrapKey of an AES key under an RSA public key (and, on a recipient's
  token, for C_UnwrapKey under its transport key: ``probe_unwrap_oaep``);
* AES key wrap (CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD);
* CKA_WRAP_WITH_TRUSTED on a generated key, and CKA_TRUSTED (a user session must be refused it);
* whether CKA_DESTROYABLE false and CKA_MODIFIABLE false are honoured (the token's immutable records, the policy
  signer);
* the token's identity (label, serial, manufacturer, model, hardware and firmware versions) and its mechanism list
  as C_GetMechanismList gives it.

``probe`` returns a ``Capabilities``; ``Capabilities.refusal(capability)`` words what a token lacks for a spec or a
policy ("token ockdev cannot generate EC keys (CKM_EC_KEY_PAIR_GEN not offered)").
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field

from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import (
    Attribute,
    KeyType,
    Mechanism,
    ObjectClass,
    p11_exc,
    rsa,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import CapabilityMissing
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import pkcs11_errors
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    TOKEN_CURVES,
    public_key_attributes,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import (
    OAEP_HASHES,
    oaep_padding,
    oaep_parameters,
)


#: the OAEP hashes distribution knows (_wrap), strongest first
OAEP_HASHES_STRONGEST_FIRST = tuple(reversed(OAEP_HASHES))
PROBED_CURVES = ("P-256", "P-384")
PROBE_RSA_BITS = 3072
#: what a capability is called in refusals, and the mechanism or attribute it needs
CAPABILITY_WORDS = {
    "aes": ("generate AES keys", "CKM_AES_KEY_GEN"),
    "rsa": ("generate RSA keys", "CKM_RSA_PKCS_KEY_PAIR_GEN"),
    "ec": ("generate EC keys", "CKM_EC_KEY_PAIR_GEN"),
    "oaep": ("wrap a key under an RSA transport key", "CKM_RSA_PKCS_OAEP with C_WrapKey"),
    "trusted_wrapping": ("restrict wrapping to trusted keys", "CKA_WRAP_WITH_TRUSTED / CKA_TRUSTED"),
    "aes_key_wrap": ("wrap a key under an AES key", "CKM_AES_KEY_WRAP_PAD"),
}


def _outcome(attempt):
    """``attempt()`` -> True when it worked, else the name of the PKCS#11 error that refused it."""
    try:
        attempt()
    except p11_exc.PKCS11Error as exc:
        return type(exc).__name__
    return True


@dataclass
class Capabilities:
    """What one token did when it was tried (``probe``)."""

    token: dict
    mechanisms: list
    generates: dict = field(default_factory=dict)  # aes: [bits], rsa: {min_bits, max_bits, generated}, ec: [curves]
    oaep_hashes: list = field(default_factory=list)  # the hashes C_WrapKey worked with, strongest first
    aes_key_wrap: dict = field(default_factory=dict)  # CKM name -> bool
    wrap_with_trusted: bool = False
    trusted_refused_to_user: bool = False
    destroyable: str = "unsupported"  # honoured | ignored | unsupported
    modifiable: str = "unsupported"
    attempts: dict = field(default_factory=dict)  # capability -> True or the PKCS#11 error name

    @property
    def label(self):
        return self.token.get("label")

    def best_oaep_hash(self):
        """The strongest OAEP hash the token wraps with, or None."""
        return self.oaep_hashes[0] if self.oaep_hashes else None

    def has(self, capability, curve=None):
        if capability == "aes":
            return bool(self.generates.get("aes"))
        if capability == "rsa":
            return bool(self.generates.get("rsa", {}).get("generated"))
        if capability == "ec":
            return curve in self.generates.get("ec", ()) if curve else bool(self.generates.get("ec"))
        if capability == "oaep":
            return bool(self.oaep_hashes)
        if capability == "trusted_wrapping":
            return self.wrap_with_trusted and self.trusted_refused_to_user
        if capability == "aes_key_wrap":
            return bool(self.aes_key_wrap.get("CKM_AES_KEY_WRAP_PAD"))
        raise ValueError("unknown capability %r" % capability)

    def refusal(self, capability, curve=None, option=None):
        """A CapabilityMissing naming the token and what it lacks."""
        what, needs = CAPABILITY_WORDS[capability]
        if curve:
            what = "%s on curve %s" % (what, curve)
        tried = self.attempts.get(capability)
        mechanism = needs.split(" ")[0]
        if mechanism.startswith("CKM_") and mechanism not in self.mechanisms:
            why = "%s not offered" % mechanism
        else:
            why = "%s: %s" % (needs, tried if isinstance(tried, str) else "not supported")
        return CapabilityMissing("token %s cannot %s (%s)." % (self.label, what, why), option=option)

    def as_dict(self):
        return {"token": dict(self.token), "mechanisms": list(self.mechanisms), "generates": dict(self.generates),
                "oaep_hashes": list(self.oaep_hashes), "best_oaep_hash": self.best_oaep_hash(),
                "aes_key_wrap": dict(self.aes_key_wrap), "wrap_with_trusted": self.wrap_with_trusted,
                "trusted_refused_to_user": self.trusted_refused_to_user, "destroyable": self.destroyable,
                "modifiable": self.modifiable, "attempts": dict(self.attempts)}


def _mechanism_name(mechanism):
    name = getattr(mechanism, "name", None)
    return "CKM_" + name if name else "0x%08x" % int(mechanism)


def _version(value):
    if isinstance(value, (tuple, list)):
        return ".".join(str(part) for part in value)
    return str(value) if value is not None else None


def _token_identity(token):
    return {"label": str(token.label).strip(), "serial": _text(token.serial), "manufacturer": _text(
        token.manufacturer_id), "model": _text(token.model), "hardware_version": _version(token.hardware_version),
        "firmware_version": _version(token.firmware_version)}


def _text(value):
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip() if value is not None else None


def _key_lengths(slot, mechanism):
    try:
        info = slot.get_mechanism_info(mechanism)
    except p11_exc.PKCS11Error:
        return None
    return {"min_bits": int(info.min_key_length), "max_bits": int(info.max_key_length)}


def _probe_generation(session, slot, offered, caps):
    aes = []
    for bits in (128, 192, 256):
        if "CKM_AES_KEY_GEN" in offered and _outcome(lambda b=bits: session.generate_key(
                KeyType.AES, b, store=False)) is True:
            aes.append(bits)
    caps.generates["aes"] = aes
    caps.attempts["aes"] = True if aes else "not generated"
    rsa_info = dict(_key_lengths(slot, Mechanism.RSA_PKCS_KEY_PAIR_GEN) or {})
    rsa_info["generated"] = False
    if "CKM_RSA_PKCS_KEY_PAIR_GEN" in offered:
        attempt = _outcome(lambda: session.generate_keypair(KeyType.RSA, PROBE_RSA_BITS, store=False))
        rsa_info["generated"] = attempt is True
        caps.attempts["rsa"] = attempt
    else:
        caps.attempts["rsa"] = "not offered"
    caps.generates["rsa"] = rsa_info
    curves = []
    if "CKM_EC_KEY_PAIR_GEN" in offered:
        for name in PROBED_CURVES:
            params = TOKEN_CURVES[name].ec_params()
            attempt = _outcome(lambda p=params: session.generate_keypair(
                KeyType.EC, store=False, public_template={Attribute.EC_PARAMS: p}))
            caps.attempts["ec" if name == PROBED_CURVES[0] else "ec_" + name] = attempt
            if attempt is True:
                curves.append(name)
    else:
        caps.attempts["ec"] = "not offered"
    caps.generates["ec"] = curves


def _import_rsa_public(session):
    """A session RSA public key (wrap only) from a key made in software: a probe needs no token key generation."""
    public_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return session.create_object({**public_key_attributes(public_key), Attribute.TOKEN: False, Attribute.WRAP: True,
                                  Attribute.ENCRYPT: False, Attribute.VERIFY: False})


def _probe_wrapping(session, offered, caps):
    target = session.generate_key(KeyType.AES, 256, store=False, template={
        Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True})
    if "CKM_RSA_PKCS_OAEP" in offered:
        public = _import_rsa_public(session)
        for name in OAEP_HASHES_STRONGEST_FIRST:
            if _outcome(lambda p=oaep_parameters(name): public.wrap_key(target, mechanism=Mechanism.RSA_PKCS_OAEP,
                                                                        mechanism_param=p)) is True:
                caps.oaep_hashes.append(name)
    caps.attempts["oaep"] = True if caps.oaep_hashes else ("not offered" if "CKM_RSA_PKCS_OAEP" not in offered
                                                           else "no hash worked")
    wrapping = session.generate_key(KeyType.AES, 256, store=False, template={Attribute.WRAP: True})
    for mechanism in ("AES_KEY_WRAP", "AES_KEY_WRAP_PAD"):
        worked = "CKM_" + mechanism in offered and _outcome(
            lambda m=mechanism: wrapping.wrap_key(target, mechanism=getattr(Mechanism, m))) is True
        caps.aes_key_wrap["CKM_" + mechanism] = worked
    caps.attempts["aes_key_wrap"] = True if caps.aes_key_wrap.get("CKM_AES_KEY_WRAP_PAD") else "not supported"


def _probe_attributes(session, caps):
    attempt = _outcome(lambda: session.generate_key(KeyType.AES, 256, store=False, template={
        Attribute.EXTRACTABLE: True, Attribute.WRAP_WITH_TRUSTED: True}))
    caps.wrap_with_trusted = attempt is True
    public = _import_rsa_public(session)  # a user session must not be able to make a key trusted
    trusted = _outcome(lambda: public.__setitem__(Attribute.TRUSTED, True))
    if trusted is True:
        trusted = "a user session may set CKA_TRUSTED"
    # AttributeTypeInvalid: the token does not know CKA_TRUSTED; any other refusal is the one PKCS#11 asks for
    caps.trusted_refused_to_user = trusted not in ("AttributeTypeInvalid", "a user session may set CKA_TRUSTED")
    if caps.wrap_with_trusted and caps.trusted_refused_to_user:
        caps.attempts["trusted_wrapping"] = True
    else:
        caps.attempts["trusted_wrapping"] = attempt if attempt is not True else "CKA_TRUSTED: %s" % trusted
    caps.destroyable = _honoured(session, Attribute.DESTROYABLE, lambda obj: obj.destroy())
    caps.modifiable = _honoured(session, Attribute.MODIFIABLE, lambda obj: obj.__setitem__(Attribute.VALUE, b"x"))


def _honoured(session, attribute, change):
    """Whether a session data object created with ``attribute`` false refuses ``change``."""
    try:
        obj = session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: False,
                                     Attribute.LABEL: "secops-keylifecycle-probe", Attribute.VALUE: b"probe",
                                     attribute: False})
    except p11_exc.PKCS11Error:  # AttributeTypeInvalid, TemplateInconsistent: the token does not take the attribute
        return "unsupported"
    return "ignored" if _outcome(lambda: change(obj)) is True else "honoured"


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


class _TokenInfo(ctypes.Structure):
    """CK_TOKEN_INFO (PKCS#11 2.40, section 3.2)."""
    _fields_ = [("label", ctypes.c_char * 32), ("manufacturer_id", ctypes.c_char * 32), ("model", ctypes.c_char * 16),
                ("serial_number", ctypes.c_char * 16), ("flags", ctypes.c_ulong),
                ("max_session_count", ctypes.c_ulong), ("session_count", ctypes.c_ulong),
                ("max_rw_session_count", ctypes.c_ulong), ("rw_session_count", ctypes.c_ulong),
                ("max_pin_len", ctypes.c_ulong), ("min_pin_len", ctypes.c_ulong),
                ("total_public_memory", ctypes.c_ulong), ("free_public_memory", ctypes.c_ulong),
                ("total_private_memory", ctypes.c_ulong), ("free_private_memory", ctypes.c_ulong),
                ("hardware_version", _Version), ("firmware_version", _Version), ("utc_time", ctypes.c_char * 16)]


_GET_TOKEN_INFO = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.POINTER(_TokenInfo))


class _FunctionList(ctypes.Structure):
    """The head of CK_FUNCTION_LIST, up to C_GetTokenInfo (the order the standard fixes)."""
    _fields_ = [("version", _Version)] + [(name, ctypes.c_void_p) for name in (
        "C_Initialize", "C_Finalize", "C_GetInfo", "C_GetFunctionList", "C_GetSlotList", "C_GetSlotInfo")] + [
        ("C_GetTokenInfo", _GET_TOKEN_INFO)]


def pin_length_range(library_path, slot_id):
    """``{"min": n, "max": m}``, the PIN lengths the token accepts (CK_TOKEN_INFO ulMinPinLen / ulMaxPinLen), or None
    when the library does not say. python-pkcs11 does not return them, so C_GetTokenInfo is called through the
    library's own function list (C_GetFunctionList), in the process that already initialised it."""
    try:
        library = ctypes.CDLL(library_path)
        functions = ctypes.POINTER(_FunctionList)()
        if library.C_GetFunctionList(ctypes.byref(functions)) != 0 or not functions:
            return None
        info = _TokenInfo()
        if functions.contents.C_GetTokenInfo(slot_id, ctypes.byref(info)) != 0:
            return None
    except (OSError, AttributeError, ValueError):
        return None
    return {"min": int(info.min_pin_len), "max": int(info.max_pin_len)}


def offered_mechanisms(session, token_label):
    """The names (CKM_...) of the mechanisms the token of ``session`` lists (C_GetMechanismList)."""
    with pkcs11_errors("C_GetMechanismList", token_label=token_label):
        return sorted({_mechanism_name(mechanism) for mechanism in session.token.slot.get_mechanisms()})


def probe(session, token_label, library_path=None):
    """Try what the token of ``session`` (logged in as the user) can do; nothing is written to the token.
    ``library_path`` (the PKCS#11 module) adds the PIN length range to the token's identity."""
    token = session.token
    slot = token.slot
    offered = offered_mechanisms(session, token_label)
    caps = Capabilities(token=_token_identity(token), mechanisms=offered)
    if library_path:
        caps.token["pin_length"] = pin_length_range(library_path, slot.slot_id)
    with pkcs11_errors("probing the token's capabilities", token_label=token_label):
        _probe_generation(session, slot, offered, caps)
        _probe_wrapping(session, offered, caps)
        _probe_attributes(session, caps)
    return caps


def probe_oaep_hashes(session, token_label, option="oaep_hash"):
    """The OAEP hashes the token wraps an AES key with, strongest first (C_WrapKey tried on session objects, under an
    RSA public key made in software); CapabilityMissing naming the token when none works."""
    offered = offered_mechanisms(session, token_label)
    caps = Capabilities(token={"label": token_label}, mechanisms=offered)
    with pkcs11_errors("probing OAEP wrapping", token_label=token_label):
        _probe_wrapping(session, offered, caps)
    require(caps, "oaep", option=option)
    return list(caps.oaep_hashes)


def probe_unwrap_oaep(private_key, public_key, token_label):
    """The OAEP hashes a recipient's transport key unwraps with, strongest first; [] when none works.

    ``private_key``: the transport private key on the token (python-pkcs11, CKA_UNWRAP); ``public_key``: its public
    half (``cryptography``). For each hash, a random AES-128 key wrapped in software under the public half is unwrapped
    by the token into a session object (no usage), which is destroyed at once: nothing is written to the token, and
    the unwrapped bytes are random, never a managed key. The unwrap side is what matters at a recipient (SoftHSM2 2.6
    unwraps with SHA-1 only, whatever hash the HSM that wraps for it prefers).
    """
    template = {Attribute.TOKEN: False, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: False, Attribute.DECRYPT: False, Attribute.WRAP: False, Attribute.UNWRAP: False,
                Attribute.SIGN: False, Attribute.VERIFY: False, Attribute.DERIVE: False}
    worked = []
    with pkcs11_errors("probing OAEP unwrapping under the transport key", token_label=token_label):
        for name in OAEP_HASHES_STRONGEST_FIRST:
            blob = public_key.encrypt(os.urandom(16), oaep_padding(name))
            try:
                key = private_key.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, blob,
                                             mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=oaep_parameters(name),
                                             store=False, template=template)
            except p11_exc.PKCS11Error:
                continue
            key.destroy()
            worked.append(name)
    return worked


def require_generation(session, token_label, specs, require_trusted_wrapping, option="keys"):
    """Refuse (CapabilityMissing, before anything is written) key specs the token cannot generate, with an error that
    names the token, the capability and the keys that need it.

    Cheap enough for every task that generates (one C_GetMechanismList, then at most one session object per distinct
    AES size, EC curve, and one for trusted wrapping): AES sizes and EC curves are tried on session objects; RSA
    sizes are read from the token's CKM_RSA_PKCS_KEY_PAIR_GEN limits (generating RSA would cost seconds);
    CKA_WRAP_WITH_TRUSTED is tried when a distributable key needs it (``require_trusted_wrapping``)."""
    specs = list(specs)
    if not specs:
        return
    offered = offered_mechanisms(session, token_label)
    caps = Capabilities(token={"label": token_label}, mechanisms=offered)
    missing = {}  # (capability, curve) -> key names
    with pkcs11_errors("checking what the token generates", token_label=token_label):
        for spec in specs:
            gap = _generation_gap(session, caps, spec)
            if gap is None and spec.distributable and require_trusted_wrapping:
                gap = _trusted_wrapping_gap(session, caps)
            if gap is not None:
                missing.setdefault(gap, []).append(spec.name)
    if missing:
        reasons = []
        for (capability, curve), names in missing.items():
            what = str(caps.refusal(capability, curve)).rstrip(".")
            reasons.append("%s, which key%s %s need%s" % (what, "s" if len(names) > 1 else "",
                                                          ", ".join(repr(name) for name in names),
                                                          "" if len(names) > 1 else "s"))
        raise CapabilityMissing(
            "Refusing the whole batch, nothing was changed: %s. Choose a key type, size or curve the token offers "
            "(secops.keylifecycle.token_info lists them), or use a token that offers it." % "; ".join(reasons),
            option=option)


def _generation_gap(session, caps, spec):
    """``(capability, curve)`` the token lacks for ``spec``, or None; results kept in ``caps.attempts``."""
    offered = caps.mechanisms
    if spec.type == "aes":
        key = "aes_%d" % spec.size
        if key not in caps.attempts:
            caps.attempts[key] = "not offered" if "CKM_AES_KEY_GEN" not in offered else _outcome(
                lambda: session.generate_key(KeyType.AES, spec.size, store=False))
        caps.attempts["aes"] = caps.attempts[key] if caps.attempts[key] is True else "%d bits: %s" % (
            spec.size, caps.attempts[key])
        return None if caps.attempts[key] is True else ("aes", None)
    if spec.type == "rsa":
        if "CKM_RSA_PKCS_KEY_PAIR_GEN" not in offered:
            caps.attempts["rsa"] = "not offered"
            return "rsa", None
        lengths = _key_lengths(session.token.slot, Mechanism.RSA_PKCS_KEY_PAIR_GEN)
        if lengths and not lengths["min_bits"] <= spec.size <= lengths["max_bits"]:
            caps.attempts["rsa"] = "%d bits is outside the token's %d-%d" % (spec.size, lengths["min_bits"],
                                                                             lengths["max_bits"])
            return "rsa", None
        return None
    key = "ec_" + spec.curve
    if key not in caps.attempts:
        if "CKM_EC_KEY_PAIR_GEN" not in offered:
            caps.attempts[key] = "not offered"
        else:
            params = TOKEN_CURVES[spec.curve].ec_params()
            caps.attempts[key] = _outcome(lambda: session.generate_keypair(
                KeyType.EC, store=False, public_template={Attribute.EC_PARAMS: params}))
    caps.attempts["ec"] = caps.attempts[key]
    if caps.attempts[key] is True:
        return None
    return "ec", spec.curve if "CKM_EC_KEY_PAIR_GEN" in offered else None


def _trusted_wrapping_gap(session, caps):
    if "trusted_wrapping" not in caps.attempts:
        attempt = _outcome(lambda: session.generate_key(KeyType.AES, 256, store=False, template={
            Attribute.EXTRACTABLE: True, Attribute.WRAP_WITH_TRUSTED: True}))
        caps.attempts["trusted_wrapping"] = attempt
    return None if caps.attempts["trusted_wrapping"] is True else ("trusted_wrapping", None)


def require(caps, capability, curve=None, option=None):
    """Raise CapabilityMissing unless the probed token has ``capability``."""
    if not caps.has(capability, curve):
        raise caps.refusal(capability, curve, option)
