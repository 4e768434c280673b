"""Test-only set-up: give an openCryptoki test slot a fresh, empty token with a new label, SO PIN and user PIN.

usage: ock_token.py SLOT LABEL < PINS      (as root: it resets the token's files)
PINS on stdin, one a line: the new Security Officer PIN, then the new user PIN (4 to 8 characters each on the
openCryptoki soft token; the SO PIN must not be the factory one). Nothing secret is taken from argv, printed or
stored: the caller keeps the PINs.

Only the test slots scripts/opencryptoki-slots.sh configures (tokname kltest<N>) are touched. What works, on
openCryptoki 3.8.1 (Debian 12):
- C_InitToken on an initialised token with its current SO PIN does empty it, but leaves the token's SO master key
  (MK_SO) encrypted under the factory SO PIN while the SO PIN hash becomes the given one (init_token_data() in
  usr/lib/pkcs11/common/utility.c, called by SC_InitToken): every later SO login fails with CKR_FUNCTION_FAILED
  and C_SetPIN refuses the factory PIN (CKR_PIN_INVALID), so such a token cannot be repaired through PKCS#11.
  Re-initialising through C_InitToken is therefore only safe from the factory state.
- So the token is first put back to the factory state: with the library's own per-token lock held
  (/var/lock/opencryptoki/<tokname>/LCK..<tokname>, which C_Initialize takes to load a token), its files
  (NVTOK.DAT, MK_SO, MK_USER, TOK_OBJ/*) and its shared memory segment (/dev/shm/var.lib.opencryptoki.<tokname>)
  are removed; the next C_Initialize makes them afresh, uninitialised, with the factory SO PIN 87654321.
  pkcsslotd keeps no token state (it holds only the slot list), so it need not be restarted, and the previous
  SO PIN is never needed: no PIN is kept anywhere for a later run.
- Then, through the library (ctypes: python-pkcs11 0.10 has no C_InitToken): C_InitToken with the factory SO PIN
  and the label, an SO login, C_SetPIN to the new SO PIN, C_InitPIN with the user PIN.
scripts/opencryptoki-slots.sh takes the same set-up lock, so the daemon is never restarted in the middle of this.
Prints {"slot", "tokname", "label"} as JSON.
"""

from __future__ import annotations

import ctypes
import fcntl
import grp
import json
import os
import re
import sys
from contextlib import contextmanager

LIBRARY = "/usr/lib/x86_64-linux-gnu/opencryptoki/libopencryptoki.so.0"
CONF = "/etc/opencryptoki/opencryptoki.conf"
DATA = "/var/lib/opencryptoki"
LOCKS = "/var/lock/opencryptoki"
SETUP_LOCK = "/var/lib/secops-keylifecycle-tests/opencryptoki/setup.lock"
FACTORY_SO_PIN = b"87654321"

CKF_RW_SESSION, CKF_SERIAL_SESSION = 0x2, 0x4
CKF_TOKEN_INITIALIZED = 0x400
CKU_SO = 0

ulong = ctypes.c_ulong


class Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


class TokenInfo(ctypes.Structure):
    _fields_ = [("label", ctypes.c_char * 32), ("manufacturer", ctypes.c_char * 32), ("model", ctypes.c_char * 16),
                ("serial", ctypes.c_char * 16), ("flags", ulong), ("max_sessions", ulong), ("sessions", ulong),
                ("max_rw_sessions", ulong), ("rw_sessions", ulong), ("max_pin_len", ulong), ("min_pin_len", ulong),
                ("total_public", ulong), ("free_public", ulong), ("total_private", ulong), ("free_private", ulong),
                ("hardware", Version), ("firmware", Version), ("utc_time", ctypes.c_char * 16)]


class Failed(Exception):
    pass


class Library:
    """The few PKCS#11 calls set-up needs, each checked."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)

    def __call__(self, name, *args):
        rv = getattr(self.lib, name)(*args)
        if rv != 0:
            raise Failed("%s returned 0x%x" % (name, rv))


def tokname_of(slot):
    """The tokname of ``slot`` in openCryptoki's configuration; only the test slots are accepted."""
    try:
        with open(CONF, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise Failed("%s is missing: run scripts/opencryptoki-slots.sh" % CONF) from None
    match = re.search(r"^slot\s+%d\s*\{([^}]*)\}" % slot, text, re.MULTILINE)
    name = re.search(r"^\s*tokname\s*=\s*(kltest\d+)\s*$", match.group(1), re.MULTILINE) if match else None
    if not name:
        raise Failed("slot %d is not one of the test slots that scripts/opencryptoki-slots.sh writes into %s"
                     % (slot, CONF))
    return name.group(1)


def read_pins():
    lines = sys.stdin.read().splitlines()
    if len(lines) < 2:
        raise Failed("expected two lines on stdin: the new SO PIN, then the new user PIN")
    so_pin, user_pin = lines[0].strip().encode(), lines[1].strip().encode()
    if not (4 <= len(so_pin) <= 8 and 4 <= len(user_pin) <= 8):
        raise Failed("openCryptoki's soft token takes PINs of 4 to 8 characters")
    if so_pin == FACTORY_SO_PIN:
        raise Failed("the new SO PIN must differ from the factory SO PIN")
    return so_pin, user_pin


@contextmanager
def locked(path, create_mode=None):
    """An exclusive flock on ``path`` (made with ``create_mode``, group pkcs11, when missing)."""
    flags = os.O_RDONLY | (os.O_CREAT if create_mode is not None else 0)
    fd = os.open(path, flags, create_mode or 0)
    try:
        if create_mode is not None and os.fstat(fd).st_gid != grp.getgrnam("pkcs11").gr_gid:
            os.fchown(fd, -1, grp.getgrnam("pkcs11").gr_gid)
            os.fchmod(fd, create_mode)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def factory_reset(tokname):
    """Remove the token's files and shared memory segment, holding the lock the library loads the token under."""
    lock_dir = os.path.join(LOCKS, tokname)
    os.makedirs(lock_dir, mode=0o770, exist_ok=True)
    with locked(os.path.join(lock_dir, "LCK..%s" % tokname), create_mode=0o440):
        store = os.path.join(DATA, tokname)
        objects = os.path.join(store, "TOK_OBJ")
        for name in os.listdir(objects):
            os.unlink(os.path.join(objects, name))
        for name in ("NVTOK.DAT", "MK_SO", "MK_USER"):
            try:
                os.unlink(os.path.join(store, name))
            except FileNotFoundError:
                pass
        try:
            os.unlink("/dev/shm/var.lib.opencryptoki.%s" % tokname)
        except FileNotFoundError:
            pass


def initialise(lib, slot, label, so_pin, user_pin):
    info = TokenInfo()
    lib("C_GetTokenInfo", ulong(slot), ctypes.byref(info))
    if info.flags & CKF_TOKEN_INITIALIZED:
        raise Failed("slot %d is still initialised after the reset: another process has it open" % slot)
    lib("C_InitToken", ulong(slot), ctypes.c_char_p(FACTORY_SO_PIN), ulong(len(FACTORY_SO_PIN)),
        ctypes.c_char_p(label.encode().ljust(32)))
    session = ulong()
    lib("C_OpenSession", ulong(slot), ulong(CKF_SERIAL_SESSION | CKF_RW_SESSION), None, None, ctypes.byref(session))
    try:
        lib("C_Login", session, ulong(CKU_SO), ctypes.c_char_p(FACTORY_SO_PIN), ulong(len(FACTORY_SO_PIN)))
        lib("C_SetPIN", session, ctypes.c_char_p(FACTORY_SO_PIN), ulong(len(FACTORY_SO_PIN)), ctypes.c_char_p(so_pin),
            ulong(len(so_pin)))
        lib("C_InitPIN", session, ctypes.c_char_p(user_pin), ulong(len(user_pin)))
        lib("C_Logout", session)
    finally:
        lib.lib.C_CloseSession(session)


def main():
    if len(sys.argv) != 3:
        print("usage: ock_token.py SLOT LABEL < PINS (see the module's docstring)", file=sys.stderr)
        sys.exit(2)
    slot, label = int(sys.argv[1]), sys.argv[2]
    try:
        if not label or len(label.encode()) > 32:
            raise Failed("a token label has 1 to 32 bytes")
        so_pin, user_pin = read_pins()
        tokname = tokname_of(slot)
        os.makedirs(os.path.dirname(SETUP_LOCK), mode=0o770, exist_ok=True)
        with locked(SETUP_LOCK, create_mode=0o660):
            factory_reset(tokname)
            lib = Library(LIBRARY)
            lib("C_Initialize", None)
            try:
                initialise(lib, slot, label, so_pin, user_pin)
            finally:
                lib.lib.C_Finalize(None)
    except Failed as exc:
        print("ock_token: %s" % exc, file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        print("ock_token: %s" % exc, file=sys.stderr)
        sys.exit(1)
    json.dump({"slot": slot, "tokname": tokname, "label": label}, sys.stdout)


if __name__ == "__main__":
    main()
