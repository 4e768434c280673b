# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""PKCS#11 core: load the library, find the token, log in, translate failures.

PRIVATE: not part of the public interface.

One call of a module opens one read/write session, logs in once and runs its
whole batch in it. Every python-pkcs11 failure is translated into a typed error
of ``_errors`` whose message an operator understands. Nothing here knows which
vendor's library is loaded: SoftHSM2, Luna, CloudHSM and YubiHSM all take the
same path.
"""

from __future__ import annotations

import os
import re
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass

from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    InvalidOption,
    LibraryUnavailable,
    LoginFailed,
    MechanismUnsupported,
    PinUnavailable,
    TokenOperationFailed,
    TokenUnavailable,
)

try:
    import pkcs11
    from pkcs11 import exceptions as p11_exc
except ImportError:  # guarded by _dependencies.require_dependencies in main()
    pkcs11 = None
    p11_exc = None


# CKR codes that python-pkcs11 0.10 does not map to an exception class; it raises
# ``PKCS11Error("Unmapped error code 0x68")`` for them.
_UNMAPPED_CKR = {
    0x1B: ("CKR_ACTION_PROHIBITED", "the token's policy forbids this action on the object"),
    0x68: ("CKR_KEY_FUNCTION_NOT_PERMITTED",
           "the key's usage attributes do not allow this operation (for example a deactivated "
           "key asked to encrypt)"),
    0x6A: ("CKR_KEY_NOT_WRAPPABLE", "the key cannot be wrapped (it is not extractable)"),
    0x1A0: ("CKR_PIN_EXPIRED", "the PIN has expired; the token owner must set a new one"),
}

_UNMAPPED_RE = re.compile(r"Unmapped error code (0x[0-9a-fA-F]+)")

# python-pkcs11 exception class names -> (typed error, message, option), first match wins. The message takes
# %(where)s (the operation, and the token if known) and %(exception)s (the python-pkcs11 class name). Names, not
# classes, so the table is readable without python-pkcs11 (resolved in translate_pkcs11_error).
_PKCS11_ERRORS = (
    (("PinIncorrect",), LoginFailed,
     "The token refused the user PIN (CKR_PIN_INCORRECT) during %(where)s. Check user_pin / user_pin_file; repeated "
     "failures lock the PIN.", "user_pin"),
    (("PinLocked",), LoginFailed,
     "The user PIN is locked (CKR_PIN_LOCKED) during %(where)s: the Security Officer must unlock or reset it before "
     "any key operation.", "user_pin"),
    (("PinInvalid", "PinLenRange"), LoginFailed,
     "The token rejected the user PIN's format or length during %(where)s. Check user_pin / user_pin_file.",
     "user_pin"),
    (("PinExpired",), LoginFailed, "The user PIN has expired (CKR_PIN_EXPIRED) during %(where)s.", "user_pin"),
    (("UserPinNotInitialized",), TokenUnavailable,
     "The token's user PIN is not initialised (CKR_USER_PIN_NOT_INITIALIZED): initialise the token before use.",
     "token_label"),
    (("TokenNotPresent", "TokenNotRecognised", "DeviceRemoved", "NoSuchToken"), TokenUnavailable,
     "The token is not present or not recognised during %(where)s.", "token_label"),
    (("SessionReadOnly", "TokenWriteProtected"), TokenOperationFailed,
     "The token refused to write during %(where)s (read-only session or write-protected token): the token must "
     "allow read/write sessions for key management.", None),
    (("MechanismInvalid", "MechanismParamInvalid", "FunctionNotSupported"), MechanismUnsupported,
     "The token does not support the mechanism or parameters used by %(where)s (%(exception)s). Check that the "
     "token supports the key type and size requested.", None),
    (("KeySizeRange",), MechanismUnsupported,
     "The token does not support this key size (CKR_KEY_SIZE_RANGE) during %(where)s.", None),
    (("KeyUnextractable",), TokenOperationFailed,
     "The key is not extractable (CKR_KEY_UNEXTRACTABLE) during %(where)s: only keys generated as distributable "
     "can be wrapped.", None),
    (("DeviceMemory", "HostMemory"), TokenOperationFailed,
     "The token or host ran out of memory during %(where)s.", None),
    (("AttributeReadOnly",), TokenOperationFailed,
     "The token refused to change a read-only attribute during %(where)s.", None),
    (("TemplateInconsistent", "TemplateIncomplete", "AttributeValueInvalid", "AttributeTypeInvalid"),
     TokenOperationFailed, "The token rejected the object template during %(where)s (%(exception)s).", None),
    (("UserNotLoggedIn",), LoginFailed, "The session is not logged in during %(where)s.", "user_pin"),
)


@dataclass(frozen=True)
class ConnectionSettings:
    """The shared connection options of every HSM module, already type-checked by Ansible."""

    pkcs11_module: str
    token_label: str
    user_pin: str | None = None
    user_pin_file: str | None = None

    @classmethod
    def from_params(cls, params):
        """The settings of a module's parameters; refuses missing ones before anything touches the token.

        The argspec (_argspec.CONNECTION_ARGSPEC) requires none of them, so that plays may set them once in
        module_defaults; this is where they are required.
        """
        for option, variable in (("pkcs11_module", "PKCS11_MODULE"), ("token_label", "PKCS11_TOKEN_LABEL")):
            if not params.get(option):
                raise InvalidOption(
                    "%s is required: set it on the task, in module_defaults for group/secops.keylifecycle.hsm, or "
                    "in the %s environment variable of the module's host." % (option, variable), option=option)
        settings = cls(
            pkcs11_module=params["pkcs11_module"],
            token_label=params["token_label"],
            # an empty value (an empty PKCS11_USER_PIN, a vault variable left blank) counts as unset
            user_pin=params.get("user_pin") or None,
            user_pin_file=params.get("user_pin_file") or None,
        )
        if not settings.user_pin and not settings.user_pin_file:
            raise _no_pin_given()
        return settings

    def __repr__(self):
        # Never show the PIN, even in a debugger or a traceback's locals.
        return "ConnectionSettings(pkcs11_module=%r, token_label=%r, user_pin=%s, user_pin_file=%r)" % (
            self.pkcs11_module, self.token_label, "<set>" if self.user_pin else None, self.user_pin_file)

    def read_pin(self):
        """Return the user PIN from ``user_pin`` or ``user_pin_file``."""
        if self.user_pin:
            return self.user_pin
        if not self.user_pin_file:
            raise _no_pin_given()
        return read_pin_file(self.user_pin_file)


def _no_pin_given():
    return PinUnavailable(
        "No user PIN given: user_pin or user_pin_file is required. Set user_pin (from Ansible Vault) or "
        "user_pin_file (a file readable only by its owner) on the task or in module_defaults for "
        "group/secops.keylifecycle.hsm, or set the PKCS11_USER_PIN environment variable of the module's host.",
        option="user_pin")


def read_pin_file(path, option="user_pin_file"):
    """Read a PIN from a file that only its owner can read; refuse anything looser."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise PinUnavailable(
            "%s %s does not exist: create it with the PIN and mode 0600%s."
            % (option, path, ", or set user_pin" if option == "user_pin_file" else ""), option=option) from None
    except OSError as exc:
        raise PinUnavailable("%s %s cannot be read (%s)." % (option, path, exc.strerror),
                             option=option) from None
    if not stat.S_ISREG(info.st_mode):
        raise PinUnavailable("%s %s is not a regular file." % (option, path), option=option)
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise PinUnavailable(
            "%s %s has mode %04o: a PIN file must be readable only by its owner. "
            "Fix it with: chmod 600 %s" % (option, path, mode, path), option=option)
    try:
        with open(path, "r", encoding="utf-8") as handle:
            pin = handle.read().rstrip("\r\n")
    except OSError as exc:
        raise PinUnavailable("%s %s cannot be read (%s)." % (option, path, exc.strerror),
                             option=option) from None
    if not pin:
        raise PinUnavailable("%s %s is empty: it must hold the PIN." % (option, path), option=option)
    return pin


def load_library(path):
    """Load a PKCS#11 library, with a clear error when it is absent or broken."""
    if not os.path.isabs(path):
        raise LibraryUnavailable(
            "pkcs11_module must be an absolute path to the vendor's PKCS#11 library, got %r." % path,
            option="pkcs11_module")
    if not os.path.exists(path):
        raise LibraryUnavailable(
            "pkcs11_module %s does not exist: install the HSM vendor's PKCS#11 library or point "
            "pkcs11_module (or PKCS11_MODULE) at it." % path, option="pkcs11_module")
    try:
        return pkcs11.lib(path)
    except p11_exc.PKCS11Error as exc:
        raise LibraryUnavailable(
            "pkcs11_module %s could not be loaded as a PKCS#11 library (%s)." % (path, exc),
            option="pkcs11_module") from None


def find_token(lib, label):
    """Return the one token with this label."""
    with pkcs11_errors("C_GetSlotList/C_GetTokenInfo"):
        tokens = list(lib.get_tokens())
    matches = [token for token in tokens if token.label == label]
    if not matches:
        present = sorted(token.label for token in tokens if token.label)
        raise TokenUnavailable(
            "No token labelled %r is present (tokens present: %s). Check token_label (or "
            "PKCS11_TOKEN_LABEL), and that the token is initialised and connected."
            % (label, ", ".join(repr(p) for p in present) or "none"), option="token_label")
    if len(matches) > 1:
        raise TokenUnavailable(
            "%d tokens are labelled %r: token labels must be unique for this collection to pick "
            "the right one." % (len(matches), label), option="token_label")
    return matches[0]


#: tries to open a session when the token is briefly absent or answers CKR_GENERAL_ERROR (see open_session)
OPEN_ATTEMPTS = 6


@contextmanager
def open_session(settings, rw=True):
    """Yield one logged-in session on the configured token; close it afterwards.

    Opening is tried again a few times, with the library started afresh in between, when the token is not
    found or answers CKR_GENERAL_ERROR at C_OpenSession/C_Login: SoftHSM2 does both for a moment while
    another process rewrites the token's files (seen with several controllers on one token). A wrong or
    locked PIN has codes of its own and is never tried again, so retrying cannot use up the PIN's tries.
    The modules never hold two sessions at once, so starting the library afresh here closes nothing.
    """
    pin = settings.read_pin()
    try:
        for attempt in range(OPEN_ATTEMPTS):
            lib = load_library(settings.pkcs11_module)
            try:
                session = find_token(lib, settings.token_label).open(rw=rw, user_pin=pin)
                break
            except (TokenUnavailable, TokenOperationFailed, p11_exc.GeneralError):
                if attempt == OPEN_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * 2 ** attempt)
                with pkcs11_errors("C_Finalize/C_Initialize", token_label=settings.token_label):
                    lib.reinitialize()
    except p11_exc.PKCS11Error as exc:
        raise translate_pkcs11_error(exc, "C_OpenSession/C_Login", token_label=settings.token_label) from None
    finally:
        del pin
    try:
        yield session
    finally:
        try:
            session.close()
        except p11_exc.PKCS11Error:
            pass


@contextmanager
def pkcs11_errors(operation, **context):
    """Translate python-pkcs11 exceptions raised inside the block."""
    try:
        yield
    except p11_exc.PKCS11Error as exc:
        raise translate_pkcs11_error(exc, operation, **context) from None


def ckr_code(exc):
    """Return the CKR code of an unmapped python-pkcs11 error, or None."""
    match = _UNMAPPED_RE.search(str(exc))
    return int(match.group(1), 16) if match else None


def translate_pkcs11_error(exc, operation, token_label=None):
    """Map a python-pkcs11 exception to a typed error with an operator-readable message (_PKCS11_ERRORS)."""
    where = "%s on token %r" % (operation, token_label) if token_label else operation
    for names, error, message, option in _PKCS11_ERRORS:
        if isinstance(exc, tuple(getattr(p11_exc, name) for name in names)):
            return error(message % {"where": where, "exception": type(exc).__name__}, option=option)
    code = ckr_code(exc)
    if code is not None and code in _UNMAPPED_CKR:
        name, meaning = _UNMAPPED_CKR[code]
        return TokenOperationFailed("The token refused %s with %s (0x%X): %s." % (where, name, code, meaning))
    if code is not None:
        return TokenOperationFailed("The token failed %s with CKR code 0x%X." % (where, code))
    detail = str(exc) or type(exc).__name__
    return TokenOperationFailed("The token failed %s (%s)." % (where, detail))
