# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The audit journal: an append-only, hash-chained JSON Lines file on the controller.

PRIVATE: not part of the public interface. The format is documented for auditors in
docs/audit.md; keep the two in step.

Each line is one record, canonical JSON (keys sorted, no spaces, ASCII):

    {"event": {...}, "hash": H, "journal_id": J, "prev_hash": P, "record_id": R,
     "recorded_at": T, "seq": N}

``hash`` is the SHA-256 (hex) of the canonical JSON of the record without ``hash``;
``prev_hash`` is the previous record's ``hash`` (64 zeros for the first). One writer
at a time: appends hold an exclusive ``flock`` on ``<journal>.lock``, so forks and
concurrent ansible-playbook processes are safe. Every append is fsync'ed before it
returns: an action counts as done only after its record is durable.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from ansible_collections.secops.keylifecycle.plugins.plugin_utils._files import write_atomically

GENESIS_HASH = "0" * 64


class JournalError(Exception):
    """The journal cannot be written or read. The message names the path and the fix."""


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def record_hash(fields):
    """SHA-256 of the canonical JSON of a record without its ``hash`` field."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


@dataclass(frozen=True)
class JournalRecord:
    seq: int
    record_id: str
    recorded_at: str
    journal_id: str
    prev_hash: str
    hash: str
    event: dict
    line: str

    @classmethod
    def parse(cls, line):
        fields = json.loads(line)
        return cls(seq=fields["seq"], record_id=fields["record_id"], recorded_at=fields["recorded_at"],
                   journal_id=fields["journal_id"], prev_hash=fields["prev_hash"], hash=fields["hash"],
                   event=fields["event"], line=line)


def _utc_now():
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class Journal:
    """One journal file. ``append`` is the only writer; ``read`` and ``records_after`` read."""

    def __init__(self, path):
        self.path = os.path.abspath(os.path.expanduser(path))
        self.lock_path = self.path + ".lock"

    # ---- writing -------------------------------------------------------------------------------

    @contextmanager
    def _locked(self):
        directory = os.path.dirname(self.path)
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError("audit journal %s cannot be opened (%s): fix the path or its permissions "
                               "(keylifecycle_audit_journal)" % (self.path, exc.strerror)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def append(self, events):
        """Append events as chained records, fsync, and return the records written."""
        if not events:
            return []
        with self._locked():
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            except OSError as exc:
                raise JournalError("audit journal %s cannot be written (%s): refusing to go on without a "
                                   "durable audit record" % (self.path, exc.strerror)) from None
            try:
                created = os.fstat(fd).st_size == 0
                last = self._last_record(fd)
                seq, prev_hash = (last.seq, last.hash) if last else (0, GENESIS_HASH)
                journal_id = last.journal_id if last else str(uuid.uuid4())
                records, lines = [], []
                for event in events:
                    seq += 1
                    fields = {"seq": seq, "record_id": str(uuid.uuid4()), "recorded_at": _utc_now(),
                              "journal_id": journal_id, "prev_hash": prev_hash, "event": event}
                    fields["hash"] = record_hash(fields)
                    line = canonical_json(fields)
                    records.append(JournalRecord.parse(line))
                    lines.append(line)
                    prev_hash = fields["hash"]
                data = ("\n".join(lines) + "\n").encode("ascii")
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(0, "short write (%d of %d bytes)" % (written, len(data)))
                os.fsync(fd)
                if created:
                    self._fsync_directory()
            except OSError as exc:
                raise JournalError("audit journal %s cannot be written (%s): refusing to go on without a "
                                   "durable audit record" % (self.path, exc.strerror or exc)) from None
            finally:
                os.close(fd)
        return records

    def _fsync_directory(self):
        dir_fd = os.open(os.path.dirname(self.path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _last_record(self, fd):
        """The last complete record; a torn last line (a crash mid-write) is cut off first."""
        size = os.fstat(fd).st_size
        if size == 0:
            return None
        block = 4096
        offset = size
        tail = b""
        while offset > 0:
            step = min(block, offset)
            offset -= step
            tail = os.pread(fd, step, offset) + tail
            # need the newline before the last line (or the file start)
            stripped = tail.rstrip(b"\n")
            if b"\n" in stripped or offset == 0:
                break
        if not tail.endswith(b"\n"):
            # An append that never completed was never acknowledged: drop it.
            cut = tail.rfind(b"\n")
            keep = offset + cut + 1 if cut >= 0 else 0
            os.ftruncate(fd, keep)
            os.fsync(fd)
            return self._last_record(fd)
        last_line = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            return JournalRecord.parse(last_line.decode("ascii"))
        except (ValueError, KeyError, UnicodeDecodeError):
            raise JournalError("audit journal %s ends with a record that cannot be read: run "
                               "playbooks/audit_verify.yml and restore the journal from a store before "
                               "any further lifecycle action" % self.path) from None

    # ---- reading -------------------------------------------------------------------------------

    def exists(self):
        return os.path.exists(self.path)

    def read_lines(self):
        """Every line of the journal (without newlines); empty if it does not exist."""
        try:
            with open(self.path, "rb") as handle:
                return [line.decode("ascii", "replace") for line in handle.read().split(b"\n") if line]
        except FileNotFoundError:
            return []

    def records_after(self, seq):
        """Records with a sequence number above ``seq``, in order (for shipping)."""
        out = []
        for line in self.read_lines():
            try:
                record = JournalRecord.parse(line)
            except (ValueError, KeyError):
                continue
            if record.seq > seq:
                out.append(record)
        return out


# ---- the registry of journals, so the callback finds every journal the controller wrote to ---------

DEFAULT_STATE_DIR = "~/.ansible/secops_keylifecycle"


def state_dir(environ=None):
    environ = os.environ if environ is None else environ
    return os.path.abspath(os.path.expanduser(environ.get("KEYLIFECYCLE_AUDIT_STATE_DIR") or DEFAULT_STATE_DIR))


def default_journal_path(environ=None):
    return os.path.join(state_dir(environ), "audit-journal.jsonl")


#: the host variable naming the environment's journal
JOURNAL_VARIABLE = "keylifecycle_audit_journal"


def resolve_journal_path(args, task_vars, templar):
    """The journal a task uses: its ``journal`` option, else the host's ``keylifecycle_audit_journal``, else the
    default journal under the state directory."""
    return args.get("journal") or templar.template(task_vars.get(JOURNAL_VARIABLE)) or default_journal_path()


def register_journal(path, environ=None):
    """Record a journal's path in the registry (idempotent, atomic)."""
    registry = os.path.join(state_dir(environ), "journals")
    entry = os.path.join(registry, hashlib.sha256(path.encode("utf-8")).hexdigest()[:32] + ".path")
    if os.path.exists(entry):
        return
    os.makedirs(registry, mode=0o700, exist_ok=True)
    write_atomically(entry, path)


def registered_journals(environ=None):
    registry = os.path.join(state_dir(environ), "journals")
    try:
        names = sorted(os.listdir(registry))
    except FileNotFoundError:
        return []
    paths = []
    for name in names:
        if name.endswith(".path"):
            with open(os.path.join(registry, name), encoding="utf-8") as handle:
                paths.append(handle.read().strip())
    return paths


# ---- verification ---------------------------------------------------------------------------------

@dataclass
class ChainReport:
    """The result of re-checking a journal's hash chain."""

    records: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    journal_id: str | None = None
    first_bad: dict | None = None
    hashes: dict = None  # seq -> hash of every record before the first bad one
    parsed: list = None  # the records before the first bad one

    @property
    def ok(self):
        return self.first_bad is None


def verify_chain(lines):
    """Re-check every record: canonical form, own hash, sequence and link to the previous record.

    Stops at the first bad record and says what is wrong with it: modified (hash or form),
    deleted (a gap in the sequence), reordered (a sequence number out of order) or
    mis-linked (prev_hash differs).
    """
    report = ChainReport(hashes={}, parsed=[])
    expected_seq, prev_hash = 1, GENESIS_HASH
    for number, line in enumerate(lines, 1):
        problem = None
        try:
            fields = json.loads(line)
            seq = fields["seq"]
        except (ValueError, KeyError, TypeError):
            fields, seq = None, None
            problem = "not a journal record (unreadable JSON): modified or corrupted"
        if problem is None and canonical_json(fields) != line:
            problem = "not in canonical form: the record was edited"
        elif problem is None and fields.get("hash") != record_hash(fields):
            problem = "hash does not match the record's content: the record was modified"
        elif problem is None and seq != expected_seq:
            problem = ("sequence number %s where %d was expected: %s" % (
                seq, expected_seq,
                "record(s) deleted" if isinstance(seq, int) and seq > expected_seq else "records reordered"))
        elif problem is None and fields["prev_hash"] != prev_hash:
            problem = "prev_hash does not match the previous record: records were deleted, replaced or reordered"
        elif problem is None and report.journal_id and fields.get("journal_id") != report.journal_id:
            problem = "journal_id changes inside the journal: records from another journal were spliced in"
        if problem:
            report.first_bad = {"line": number, "seq": seq, "expected_seq": expected_seq, "problem": problem}
            return report
        report.journal_id = fields["journal_id"]
        report.records += 1
        report.head_seq, report.head_hash = seq, fields["hash"]
        report.hashes[seq] = fields["hash"]
        report.parsed.append(fields)
        expected_seq, prev_hash = seq + 1, fields["hash"]
    return report
