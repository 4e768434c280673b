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

from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import p11_exc, pkcs11
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    InvalidOption,
    LibraryUnavailable,
    LoginFailed,
    MechanismUnsupported,
    PinUnavailable,
    TokenOperationFailed,
    TokenUnavailable,
)


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
    (("KeyNotWrappable",), TokenOperationFailed,
     "The token refused to wrap the key (CKR_KEY_NOT_WRAPPABLE) during %(where)s: a key generated with "
     "CKA_WRAP_WITH_TRUSTED is wrapped only under a transport key the Security Officer approved "
     "(secops.keylifecycle.recipient_approve).", None),
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


def _require_connection(params):
    """Refuse a missing pkcs11_module or token_label, naming the option and where it may come from."""
    for option, variable in (("pkcs11_module", "PKCS11_MODULE"), ("token_label", "PKCS11_TOKEN_LABEL")):
        if not params.get(option):
            raise InvalidOption(
                "%s is required: set it on the task, in module_defaults for group/secops.keylifecycle.hsm, or "
                "in the %s environment variable of the module's host." % (option, variable), option=option)


@dataclass(frozen=True, repr=False)
class _RoleLogin:
    """A token and the PIN of one PKCS#11 role, from a module's parameters (ConnectionSettings, OfficerSettings).

    The PIN is the option ``PIN_OPTION``, or the 0600 file of ``PIN_OPTION + "_file"``; ``no_pin_given`` is the
    error when neither is given.
    """

    pkcs11_module: str
    token_label: str

    PIN_OPTION = ""

    @classmethod
    def from_params(cls, params):
        """The settings of a module's parameters; refuses missing ones before anything touches the token.

        The argspec requires none of the connection options, so that plays may set them once in module_defaults;
        this is where they are required. An empty value (an empty PKCS11_USER_PIN, a vault variable left blank)
        counts as unset.
        """
        _require_connection(params)
        settings = cls(params["pkcs11_module"], params["token_label"], params.get(cls.PIN_OPTION) or None,
                       params.get(cls.PIN_OPTION + "_file") or None)
        if not any(settings.pin_sources()):
            raise cls.no_pin_given()
        return settings

    def pin_sources(self):
        return getattr(self, self.PIN_OPTION), getattr(self, self.PIN_OPTION + "_file")

    def __repr__(self):
        # Never show the PIN, even in a debugger or a traceback's locals.
        pin, pin_file = self.pin_sources()
        return "%s(pkcs11_module=%r, token_label=%r, %s=%s, %s_file=%r)" % (
            type(self).__name__, self.pkcs11_module, self.token_label, self.PIN_OPTION, "<set>" if pin else None,
            self.PIN_OPTION, pin_file)

    def read_pin(self):
        """Return the PIN from the option, else from the PIN file (readable only by its owner)."""
        pin, pin_file = self.pin_sources()
        if pin:
            return pin
        if not pin_file:
            raise self.no_pin_given()
        return read_pin_file(pin_file, option=self.PIN_OPTION + "_file")

    NO_PIN_MESSAGE = ""

    @classmethod
    def no_pin_given(cls):
        return PinUnavailable(cls.NO_PIN_MESSAGE, option=cls.PIN_OPTION)


@dataclass(frozen=True, repr=False)
class ConnectionSettings(_RoleLogin):
    """The shared connection options of every HSM module (the user's PIN), already type-checked by Ansible."""

    user_pin: str | None = None
    user_pin_file: str | None = None

    PIN_OPTION = "user_pin"
    NO_PIN_MESSAGE = (
        "No user PIN given: user_pin or user_pin_file is required. Set user_pin (from Ansible Vault) or user_pin_file "
        "(a file readable only by its owner) on the task or in module_defaults for group/secops.keylifecycle.hsm, or "
        "set the PKCS11_USER_PIN environment variable of the module's host.")


@dataclass(frozen=True, repr=False)
class OfficerSettings(_RoleLogin):
    """The Security Officer's connection: the token of the shared options, the SO PIN (``so_pin``/``so_pin_file``).

    Only recipient_approve opens a Security Officer session; the user PIN is not used there.
    """

    so_pin: str | None = None
    so_pin_file: str | None = None

    PIN_OPTION = "so_pin"
    NO_PIN_MESSAGE = (
        "No Security Officer PIN given: so_pin or so_pin_file is required. Set so_pin_file (a file readable only by "
        "the officer, mode 0600) or so_pin (from Ansible Vault) on the task, or the PKCS11_SO_PIN environment "
        "variable of the module's host. The SO PIN is never taken from module_defaults.")


def read_so_pin(so_pin=None, so_pin_file=None):
    """The SO PIN from ``so_pin``, else from ``so_pin_file`` (same file rules as the user PIN's)."""
    return OfficerSettings("", "", so_pin, so_pin_file).read_pin()


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
    The log-in is the role of ``settings``: the user's PIN for ConnectionSettings, the Security Officer's for
    OfficerSettings (open_so_session).
    """
    pin = settings.read_pin()
    try:
        session = _open_logged_in(settings, rw, **{settings.PIN_OPTION: pin})
    finally:
        del pin
    try:
        yield session
    finally:
        _close(session)


def open_so_session(officer):
    """One read/write session logged in as the Security Officer (CKU_SO), as a context manager.

    ``officer``: ``OfficerSettings``. Opened, retried and translated as ``open_session`` does, except that a
    refused login names the SO PIN (so_pin / so_pin_file). An SO session sees only public objects and cannot use
    private keys: it writes no lease and signs no checkpoint. PKCS#11 lets the SO log in only to a read/write
    session, so check mode opens one too (and writes nothing).
    """
    return open_session(officer, rw=True)


def _close(session):
    try:
        session.close()
    except p11_exc.PKCS11Error:
        pass


def _open_logged_in(settings, rw, **login):
    """C_OpenSession + C_Login (``user_pin=`` or ``so_pin=``), tried again while the token is briefly unavailable."""
    try:
        for attempt in range(OPEN_ATTEMPTS):
            lib = load_library(settings.pkcs11_module)
            try:
                return find_token(lib, settings.token_label).open(rw=rw, **login)
            except (TokenUnavailable, TokenOperationFailed, p11_exc.GeneralError):
                if attempt == OPEN_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * 2 ** attempt)
                with pkcs11_errors("C_Finalize/C_Initialize", token_label=settings.token_label):
                    lib.reinitialize()
    except p11_exc.PKCS11Error as exc:
        if "so_pin" in login:
            raise translate_so_login_error(exc, "C_OpenSession/C_Login(CKU_SO)", settings.token_label) from None
        raise translate_pkcs11_error(exc, "C_OpenSession/C_Login", token_label=settings.token_label) from None
    raise AssertionError("unreachable")  # pragma: no cover


# A Security Officer login refused: the same python-pkcs11 classes as the user PIN's, messages naming the SO PIN.
_SO_LOGIN_ERRORS = (
    (("PinIncorrect",), "The token refused the Security Officer PIN (CKR_PIN_INCORRECT) during %(where)s. Check "
     "so_pin / so_pin_file (the SO PIN, not the user PIN); repeated failures may lock it."),
    (("PinLocked",), "The Security Officer PIN is locked (CKR_PIN_LOCKED) during %(where)s: the token must be "
     "recovered as its vendor documents before any officer action."),
    (("PinInvalid", "PinLenRange"), "The token rejected the Security Officer PIN's format or length during "
     "%(where)s. Check so_pin / so_pin_file."),
    (("PinExpired",), "The Security Officer PIN has expired (CKR_PIN_EXPIRED) during %(where)s."),
    (("UserAlreadyLoggedIn", "UserAnotherAlreadyLoggedIn", "UserTooManyTypes"),
     "The token refused the Security Officer login during %(where)s because another session of this process is "
     "logged in (%(exception)s): run the officer's task on its own."),
)


def translate_so_login_error(exc, operation, token_label=None):
    """Map a refused Security Officer login to a LoginFailed naming so_pin; anything else as translate_pkcs11_error."""
    where = "%s on token %r" % (operation, token_label) if token_label else operation
    for names, message in _SO_LOGIN_ERRORS:
        if isinstance(exc, tuple(getattr(p11_exc, name) for name in names if hasattr(p11_exc, name))):
            return LoginFailed(message % {"where": where, "exception": type(exc).__name__}, option="so_pin")
    return translate_pkcs11_error(exc, operation, token_label=token_label)


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
