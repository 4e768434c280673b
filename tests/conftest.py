"""Shared fixtures: the built collection, real PKCS#11 tokens, an independent token reader, ansible-playbook.

Every test talks to a real token: SoftHSM2 (the default, one token folder per test), and for the lifecycle smoke
set also openCryptoki's soft token (``ock_token``, ``lifecycle_token``). The collection under test is the tarball
that ``ansible-galaxy collection build`` makes from this checkout, installed into a temporary collections path, so
a file left out of the build fails the tests.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PKCS11_MODULE = os.environ.get("KL_TEST_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")  # SoftHSM2
READER = REPO / "tests" / "helpers" / "read_token.py"
GCM = REPO / "tests" / "helpers" / "gcm.py"

# openCryptoki (Debian package opencryptoki): one library for every slot pkcsslotd serves; the test slots are
# 10, 11, ... (scripts/opencryptoki-slots.sh), each made afresh per test by tests/helpers/ock_token.py
OCK_MODULE = "/usr/lib/x86_64-linux-gnu/opencryptoki/libopencryptoki.so.0"
OCK_SLOTS = REPO / "scripts" / "opencryptoki-slots.sh"
OCK_TOKEN = REPO / "tests" / "helpers" / "ock_token.py"
OCK_FIRST_SLOT, OCK_SLOT_COUNT = 10, 4
OCK_STATE = Path("/var/lib/secops-keylifecycle-tests/opencryptoki")


# The test files that take longest (per-file sums of a whole run on 2 cores: pytest --junitxml), started first. The
# two xdist workers take whole files (--dist loadfile) in collection order as they become free, so starting the
# longest ones first (longest-processing-time-first) lets both finish together instead of one worker running the
# last long file alone; the rest keep their order, in-process tests (unit, hsm) last, as short fillers. scripts/test.sh
# turns off xdist's own reordering (by number of tests per file, which put these files of few but long tests last).
# The order changes only how long the run takes, never what a test checks.
LONGEST_FILES_FIRST = (
    "integration/test_key_distribute.py", "integration/test_journal_pin.py", "integration/test_key_destroy.py",
    "integration/test_audit_verify.py", "integration/test_token_matrix.py", "integration/test_package_signing.py",
    "integration/test_compromise.py", "integration/test_signed_policy.py", "integration/test_molecule.py",
    "integration/test_key_rotate.py", "integration/test_key_generate.py", "integration/test_report.py",
    "integration/test_signer_rollover.py", "integration/test_access_control.py",
)


def _run_order(item):
    path = Path(str(item.fspath)).resolve()
    if not path.is_relative_to(REPO / "tests"):
        return (2, 0)
    path = path.relative_to(REPO / "tests").as_posix()
    if path in LONGEST_FILES_FIRST:
        return (0, LONGEST_FILES_FIRST.index(path))
    return (1 if path.startswith("integration/") else 2, 0)


def pytest_collection_modifyitems(session, config, items):  # pylint: disable=unused-argument
    """Longest files first (LONGEST_FILES_FIRST); a stable sort, so tests keep their order within a file."""
    items.sort(key=_run_order)


# libfaketime (Debian package libfaketime), preloaded into the processes a test runs on a shifted clock
FAKETIME_LIBRARY = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)


class ShiftedClock:
    """The wall clock of what a test runs (ansible-playbook, the modules it starts, helper scripts).

    Retention and rotation periods are days, as in production. Instead of sleeping until they pass, a test
    advances this clock, and every later process it starts through ``env()`` sees the wall clock moved
    forward by ``offset`` (libfaketime, LD_PRELOAD: ``FAKETIME=+Ns``). Nothing in the collection knows about
    it: production code reads the real clock, and no option, variable or file of the collection can move it.
    The offset only grows, so a test's processes never see time run backwards. File times are left alone
    (NO_FAKE_STAT). The monotonic clock moves by the same offset: libfaketime 0.9.10 breaks Python's
    time.sleep() (clock_nanosleep, EINVAL) when it shifts the wall clock alone.
    """

    def __init__(self):
        self.offset = timedelta(0)

    def advance(self, **delta):
        """Move the clock forward, e.g. ``advance(days=31)``."""
        step = timedelta(**delta)
        assert step > timedelta(0), "the test clock only moves forward"
        self.offset += step

    def now(self):
        """What the processes started now read as the current time (UTC)."""
        return datetime.now(timezone.utc) + self.offset

    def env(self):
        """Environment for a process that must run on this clock (empty while the clock is not shifted)."""
        if not self.offset:
            return {}
        assert FAKETIME_LIBRARY, "libfaketime is missing: run ./scripts/bootstrap.sh"
        return {"LD_PRELOAD": FAKETIME_LIBRARY, "FAKETIME": "+%ds" % int(self.offset.total_seconds()),
                "NO_FAKE_STAT": "1"}


@pytest.fixture
def clock():
    """This test's clock (see ShiftedClock); starts at the real time."""
    return ShiftedClock()


def _run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n%s" % (cmd[:3], result.returncode, result.stdout, result.stderr))
    return result


@pytest.fixture(scope="session")
def source_collection(tmp_path_factory):
    """Import the collection from this checkout (ansible_collections/secops/keylifecycle -> the repo): no build.

    For the in-process tests (tests/unit, tests/hsm). The integration tests use the built tarball, so a file
    the build leaves out still fails there.
    """
    root = tmp_path_factory.mktemp("source-collection")
    namespace = root / "ansible_collections" / "secops"
    namespace.mkdir(parents=True)
    (namespace / "keylifecycle").symlink_to(REPO, target_is_directory=True)
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


@pytest.fixture(scope="session")
def collections_path(tmp_path_factory):
    """Build the collection from this checkout and install it into an empty collections path."""
    build = tmp_path_factory.mktemp("build")
    _run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(build), str(REPO)])
    tarball = next(build.glob("secops-keylifecycle-*.tar.gz"))
    path = tmp_path_factory.mktemp("collections")
    _run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--force", "-p", str(path), str(tarball)])
    return path


@dataclass
class Token:
    """One token with its PINs in 0600 files: a SoftHSM2 token in its own folder (its own SOFTHSM2_CONF), or an
    openCryptoki soft token in a test slot (``kind`` "opencryptoki"; ``root`` then only holds the PIN files)."""

    root: Path
    label: str
    user_pin: str
    so_pin: str
    module: str = PKCS11_MODULE  # the PKCS#11 library
    kind: str = "softhsm2"  # or "opencryptoki"
    slot: int | None = None  # openCryptoki: the slot the token is in

    @property
    def conf(self):
        return self.root / "softhsm2.conf"

    @property
    def pin_file(self):
        return self.root / ("%s.user.pin" % self.label)

    @property
    def so_pin_file(self):
        """The Security Officer's PIN (0600), read only by the officer's tasks (recipient_approve)."""
        return self.root / ("%s.so.pin" % self.label)

    @property
    def env(self):
        """What a process needs in its environment to see this token (openCryptoki: nothing)."""
        return {"SOFTHSM2_CONF": str(self.conf)} if self.kind == "softhsm2" else {}

    def connection(self):
        return {"pkcs11_module": self.module, "token_label": self.label, "user_pin_file": str(self.pin_file)}

    def objects(self):
        """Every object on the token, read by tests/helpers/read_token.py (python-pkcs11 only)."""
        out = _run([sys.executable, str(READER), self.module, self.label, str(self.pin_file)],
                   env={**os.environ, **self.env})
        return json.loads(out.stdout)

    def metadata(self):
        """label -> the newest revision of each version's metadata (earlier revisions are history)."""
        newest = {}
        for obj in self.objects():
            if obj.get("application") == "secops.keylifecycle":
                current = newest.get(obj["label"])
                if current is None or obj["value"]["revision"] > current["revision"]:
                    newest[obj["label"]] = obj["value"]
        return newest

    def key_objects(self):
        """Objects of the managed keys: not the collection's own signing keys (audit checkpoints, packages), nor the
        recipients' transport keys the Security Officer approved (trusted-transport:...)."""
        return [o for o in self.objects()
                if not o["label"].startswith(("audit-checkpoint:", "package-signing:", "trusted-transport:"))
                and o.get("application") != "secops.keylifecycle.audit"]

    def gcm(self, operation, key_label, nonce, data):
        """AES-GCM with a key on this token, through tests/helpers/gcm.py; returns (ok, hex result or error)."""
        proc = subprocess.run([sys.executable, str(GCM), self.module, self.label, str(self.pin_file), operation,
                               key_label, nonce.hex(), data.hex()], capture_output=True, text=True, check=False,
                              env={**os.environ, **self.env})
        if proc.returncode not in (0, 3):
            raise AssertionError(proc.stdout + proc.stderr)
        return proc.returncode == 0, proc.stdout.strip()

    def pkcs11_tool_key_objects(self):
        """(kind, label, id) of every key object that ``pkcs11-tool --list-objects`` reports."""
        found, current = [], None
        for line in self.pkcs11_tool_objects().splitlines():
            if line.endswith("Object") or " Key Object" in line:
                current = {"kind": line.split(";")[0].strip(), "label": None, "id": None}
                found.append(current)
            elif line.startswith(("Data object", "Certificate Object")):
                current = None
            elif current is not None and line.strip().startswith(("label:", "ID:")):
                field, value = line.strip().split(":", 1)
                current["label" if field == "label" else "id"] = value.strip()
        return found

    def pkcs11_tool_objects(self):
        """``pkcs11-tool --list-objects`` output (OpenSC), a second independent reader."""
        out = _run(["pkcs11-tool", "--module", self.module, "--token-label", self.label, "--login",
                    "--pin", self.user_pin, "--list-objects"], env={**os.environ, **self.env})
        return out.stdout


def make_token(root, label):
    root.mkdir(parents=True, exist_ok=True)
    (root / "tokens").mkdir(exist_ok=True)
    (root / "softhsm2.conf").write_text(
        "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n" % (root / "tokens"))
    token = Token(root=root, label=label, user_pin=secrets.token_hex(8), so_pin=secrets.token_hex(8))
    token.pin_file.write_text(token.user_pin + "\n")
    token.pin_file.chmod(0o600)
    token.so_pin_file.write_text(token.so_pin + "\n")
    token.so_pin_file.chmod(0o600)
    _run(["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", token.so_pin,
          "--pin", token.user_pin], env={**os.environ, **token.env})
    return token


@pytest.fixture
def token(tmp_path):
    """A fresh, empty token for one test."""
    return make_token(tmp_path / "hsm", "kl-test")


def _as_root(cmd):
    """``cmd`` run as root: directly when the tests run as root (CI), else through sudo, never prompting."""
    return cmd if os.geteuid() == 0 else ["sudo", "-n", *cmd]


@pytest.fixture(scope="session")
def ock_slots():
    """openCryptoki's test slots, configured and served by pkcsslotd (scripts/opencryptoki-slots.sh: idempotent, it
    restarts the daemon only when the configuration changes or the daemon is not running)."""
    _run(_as_root([str(OCK_SLOTS), str(OCK_SLOT_COUNT)]))
    return [OCK_FIRST_SLOT + n for n in range(OCK_SLOT_COUNT)]


def _lock(path, blocking):
    """An open file holding an exclusive flock on ``path`` (group-writable, for sessions of other pkcs11 users), or
    None when another process holds it and ``blocking`` is false."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
    if os.fstat(fd).st_uid == os.geteuid():
        os.fchmod(fd, 0o660)
    handle = os.fdopen(fd, "r+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        handle.close()
        return None
    return handle


@pytest.fixture(scope="session")
def ock_slot(ock_slots):
    """The openCryptoki slot this pytest process has to itself for the session: the xdist worker's own (gw0 -> 10,
    gw1 -> 11, ...; without xdist 10), or the next free one when another test session on this machine holds that one
    (an flock per slot, released when the process ends); all taken: wait for the worker's own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) % len(ock_slots) if worker[2:].isdigit() else 0
    order = ock_slots[index:] + ock_slots[:index]
    held = None
    for slot in order:
        held = _lock(OCK_STATE / ("slot-%d.lock" % slot), blocking=False)
        if held:
            break
    else:
        slot = order[0]
        held = _lock(OCK_STATE / ("slot-%d.lock" % slot), blocking=True)
    with held:
        yield slot


def make_ock_token(root, slot):
    """A fresh, empty openCryptoki soft token in ``slot`` with random 8-character PINs (the token takes 4 to 8) in
    0600 files under ``root``. Labels are unique per slot (ock-test-<slot>): the collection finds a token by label."""
    root.mkdir(parents=True, exist_ok=True)
    so_pin = secrets.token_hex(4)
    while so_pin == "87654321":  # the factory SO PIN, which the token refuses as a new PIN
        so_pin = secrets.token_hex(4)
    token = Token(root=root, label="ock-test-%d" % slot, user_pin=secrets.token_hex(4), so_pin=so_pin,
                  module=OCK_MODULE, kind="opencryptoki", slot=slot)
    for path, pin in ((token.pin_file, token.user_pin), (token.so_pin_file, token.so_pin)):
        path.write_text(pin + "\n")
        path.chmod(0o600)
    # the PINs go on stdin, never in argv
    _run(_as_root([sys.executable, str(OCK_TOKEN), str(slot), token.label]),
         input="%s\n%s\n" % (token.so_pin, token.user_pin))
    return token


@pytest.fixture
def ock_token(tmp_path, ock_slot):
    """A fresh, empty openCryptoki soft token for one test, in this worker's slot (label ock-test-<slot>)."""
    return make_ock_token(tmp_path / "ock", ock_slot)


@pytest.fixture(params=["softhsm2", "opencryptoki"])
def lifecycle_token(request, tmp_path):
    """A fresh, empty token of each kind in turn (test ids [softhsm2] and [opencryptoki]; ``-k opencryptoki``
    selects one): a SoftHSM2 token as ``token`` gives, or ``ock_token``."""
    if request.param == "softhsm2":
        return make_token(tmp_path / "hsm", "kl-test")
    return request.getfixturevalue("ock_token")


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    """A throwaway CA and a server certificate for localhost / 127.0.0.1."""
    from tests.servers import make_ca

    return make_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def rsyslog(tmp_path_factory, tls):
    """rsyslog with a TLS listener on loopback (RFC 5425), for the whole test session."""
    from tests.servers import RsyslogTls

    with RsyslogTls(tmp_path_factory.mktemp("rsyslog"), tls) as server:
        yield server


@pytest.fixture(scope="session")
def postgres(tls):
    """PostgreSQL 15 with TLS on loopback, for the whole test session."""
    from tests.servers import PostgresTls

    with PostgresTls(tls) as server:
        yield server


@pytest.fixture(scope="session")
def ssh_recipients(tmp_path_factory):
    """Two recipient hosts (users kl<run>_r1 and kl<run>_r2), each with its own sshd on loopback, for the session."""
    from tests.recipients import SshRecipients

    with SshRecipients(tmp_path_factory.mktemp("recipients")) as recipients:
        yield recipients
