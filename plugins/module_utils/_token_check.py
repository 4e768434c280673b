# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Checks of a token's access protection (the work of token_check, used by the hsm_token role).

PRIVATE: not part of the public interface.

Generic PKCS#11 only: the token info flags (C_GetTokenInfo), a login with the user PIN,
a comparison of PINs held in memory, and the file modes of paths the inventory names.
The SO PIN, when given, is only compared; this collection never logs in as the SO.
"""

from __future__ import annotations

import hmac
import os
import pwd
import stat
from dataclasses import dataclass

from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import (
    find_token,
    load_library,
    pkcs11_errors,
    read_so_pin,
)

# CK_TOKEN_INFO flags (PKCS#11 v2.40 section 5.3)
CKF_WRITE_PROTECTED = 0x00000002
CKF_LOGIN_REQUIRED = 0x00000004
CKF_USER_PIN_INITIALIZED = 0x00000008
CKF_TOKEN_INITIALIZED = 0x00000400
CKF_USER_PIN_COUNT_LOW = 0x00010000
CKF_USER_PIN_FINAL_TRY = 0x00020000
CKF_USER_PIN_LOCKED = 0x00040000
CKF_USER_PIN_TO_BE_CHANGED = 0x00080000
CKF_SO_PIN_LOCKED = 0x00400000
CKF_SO_PIN_TO_BE_CHANGED = 0x00800000

#: PINs shipped as defaults by tokens, HSMs and their documentation, or too obvious to keep
WELL_KNOWN_PINS = frozenset([
    "0000", "1111", "1234", "12345", "123456", "1234567", "12345678", "123456789", "1234567890", "00000000",
    "11111111", "87654321", "password", "Password", "PASSWORD", "userpin", "sopin", "user", "admin", "changeme",
    "changeit", "secret", "softhsm", "default", "pin", "648219", "010203040506070801020304050607080102030405060708",
])
MIN_PIN_LENGTH = 8


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    severity: str = "error"  # error | warning

    def as_dict(self):
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "severity": self.severity}


def check_pins(user_pin, so_pin, extra_defaults=(), min_length=MIN_PIN_LENGTH):
    checks = []
    defaults = WELL_KNOWN_PINS | set(extra_defaults or ())
    checks.append(Check("user_pin_not_default", user_pin not in defaults,
                        "the user PIN is not a well-known default" if user_pin not in defaults else
                        "the user PIN is a well-known default PIN: change it (C_SetPIN) and update the vault/file"))
    long_enough = len(user_pin) >= min_length
    checks.append(Check("user_pin_length", long_enough,
                        "the user PIN has at least %d characters" % min_length if long_enough else
                        "the user PIN is shorter than %d characters: set a longer one" % min_length))
    if so_pin is None:
        checks.append(Check("so_pin_differs", True, "not compared: no so_pin_file given", severity="warning"))
    else:
        same = hmac.compare_digest(user_pin.encode("utf-8"), so_pin.encode("utf-8"))
        checks.append(Check("so_pin_differs", not same,
                            "the SO PIN differs from the user PIN" if not same else
                            "the SO PIN equals the user PIN: whoever runs key operations could administer the token; "
                            "set a different SO PIN"))
        checks.append(Check("so_pin_not_default", so_pin not in defaults,
                            "the SO PIN is not a well-known default" if so_pin not in defaults else
                            "the SO PIN is a well-known default PIN: change it"))
    return checks


def check_token_flags(flags):
    def has(bit):
        return bool(flags & bit)

    return [
        Check("token_initialized", has(CKF_TOKEN_INITIALIZED), "CKF_TOKEN_INITIALIZED is %s" % has(
            CKF_TOKEN_INITIALIZED)),
        Check("user_pin_initialized", has(CKF_USER_PIN_INITIALIZED),
              "CKF_USER_PIN_INITIALIZED is %s" % has(CKF_USER_PIN_INITIALIZED)),
        Check("login_required", has(CKF_LOGIN_REQUIRED),
              "CKF_LOGIN_REQUIRED is %s: %s" % (has(CKF_LOGIN_REQUIRED), "objects need a login" if has(
                  CKF_LOGIN_REQUIRED) else "the token lets anyone use it without a PIN")),
        Check("user_pin_not_to_be_changed", not has(CKF_USER_PIN_TO_BE_CHANGED),
              "CKF_USER_PIN_TO_BE_CHANGED is %s%s" % (
                  has(CKF_USER_PIN_TO_BE_CHANGED),
                  ": the user PIN is still the initial one and must be changed" if has(CKF_USER_PIN_TO_BE_CHANGED)
                  else "")),
        Check("so_pin_not_to_be_changed", not has(CKF_SO_PIN_TO_BE_CHANGED),
              "CKF_SO_PIN_TO_BE_CHANGED is %s" % has(CKF_SO_PIN_TO_BE_CHANGED)),
        Check("user_pin_not_locked", not has(CKF_USER_PIN_LOCKED), "CKF_USER_PIN_LOCKED is %s" % has(
            CKF_USER_PIN_LOCKED)),
        Check("so_pin_not_locked", not has(CKF_SO_PIN_LOCKED), "CKF_SO_PIN_LOCKED is %s" % has(CKF_SO_PIN_LOCKED)),
        Check("user_pin_tries_left", not has(CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY),
              "CKF_USER_PIN_COUNT_LOW/FINAL_TRY set: wrong PINs were tried recently; find out who tried" if has(
                  CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY) else "no failed user logins reported",
              severity="warning"),
        Check("writable", not has(CKF_WRITE_PROTECTED), "CKF_WRITE_PROTECTED is %s" % has(CKF_WRITE_PROTECTED)),
    ]


def check_storage(paths):
    """Each path (and everything under a directory) is owned by this user and closed to group and others."""
    checks = []
    me = os.geteuid()
    for path in paths:
        problems, seen = [], 0
        if not os.path.exists(path):
            checks.append(Check("storage:%s" % path, False, "%s does not exist" % path))
            continue
        for entry in _entries(path, problems):
            try:
                info = os.stat(entry)  # a link is judged by what it points at
            except OSError as exc:
                problems.append("%s cannot be read (%s)" % (entry, exc.strerror))
                continue
            seen += 1
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                problems.append("%s has mode %04o (fix: chmod go-rwx %s)" % (entry, mode, entry))
            if info.st_uid != me:
                problems.append("%s is owned by %s, not by %s" % (entry, _user(info.st_uid), _user(me)))
        checks.append(Check("storage:%s" % path, not problems,
                            "; ".join(problems[:5]) + (" (and %d more)" % (len(problems) - 5) if len(problems) > 5
                                                       else "") if problems else
                            "%d path(s) owned by %s, closed to group and others" % (seen, _user(me))))
    return checks


def _entries(path, problems):
    """The path and, for a folder, everything below it; a part that cannot be read is a problem, not a pass."""
    entries = [path]
    if os.path.isdir(path):
        def unreadable(error):
            problems.append("%s cannot be read (%s)" % (error.filename, error.strerror))

        for root, dirs, files in os.walk(path, onerror=unreadable):
            entries.extend(os.path.join(root, name) for name in dirs + files)
    return entries


def _user(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def run_checks(settings, so_pin_file, storage_paths, extra_defaults, min_pin_length):
    """Every check; the user PIN is used to log in once (a read-only session), the SO PIN only compared."""
    user_pin = settings.read_pin()
    so_pin = read_so_pin(so_pin_file=so_pin_file) if so_pin_file else None
    checks = check_pins(user_pin, so_pin, extra_defaults, min_pin_length)
    lib = load_library(settings.pkcs11_module)
    token = find_token(lib, settings.token_label)
    with pkcs11_errors("C_GetTokenInfo", token_label=settings.token_label):
        flags = int(token.flags)
    checks.extend(check_token_flags(flags))
    if flags & (CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED):
        # one more wrong PIN would lock the token (or it is locked): the check does not try
        checks.append(Check("user_login", False, "not attempted: the token reports the user PIN %s"
                            % ("locked" if flags & CKF_USER_PIN_LOCKED else "at its final try")))
    else:
        try:
            with pkcs11_errors("C_Login (user)", token_label=settings.token_label):
                session = token.open(user_pin=user_pin)
                session.close()
            checks.append(Check("user_login", True, "C_Login as the user succeeded (read-only session)"))
        except KeyLifecycleError as exc:
            checks.append(Check("user_login", False, exc.message))
    checks.extend(check_storage(storage_paths))
    del user_pin, so_pin
    return checks
