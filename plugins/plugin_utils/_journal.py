# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The audit journal: an append-only, hash-chained JSON Lines file on the controller.

PRIVATE: not part of the public interface. The format is documented for auditors in
docs/audit.md; keep the two in step.

Records are written in format 2 (``module_utils._journal_chain``: fixed field order, the hash over the stored
bytes), one per line::

    {"prev_hash":P,"seq":N,"journal_id":J,"record_id":R,"recorded_at":T,"event":{...},"hash":H}

Journals written before format 2 hold format 1 records (canonical JSON, keys sorted, ``hash`` the SHA-256 of the
record without ``hash``); they are still read, and a format 2 record may follow one. One writer at a time:
appends hold an exclusive ``flock`` on ``<journal>.lock``, so forks and concurrent ansible-playbook processes are
safe. Every append is one write, fsync'ed before it returns: an action counts as done only after its record is
durable. A write that failed half-way (disk full, crash) leaves a torn last line: the next append cuts it off and
journals the repair (``audit-journal-repair``: offset, length and SHA-256 of the bytes removed) before its own
records.

Where a journal lives: the task's ``journal`` option, else the host's ``keylifecycle_audit_journal``, else one
journal per token under the state directory (``default_journal_path``).
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from ansible_collections.secops.keylifecycle.plugins.module_utils import _journal_chain as chain
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._files import write_atomically

GENESIS_HASH = chain.GENESIS_HASH
#: how much of the journal's end is read at a time when looking backwards
BLOCK_SIZE = 64 * 1024
_CHECKPOINT_MARK = b'"action":"audit-checkpoint"'
REPAIR_REASON = "a torn last line (a failed write) was cut off"
#: what a JournalError says to do when the journal cannot be opened, and why a failed write stops the task
OPEN_ADVICE = "fix the path or its permissions (keylifecycle_audit_journal)"
DURABLE = "refusing to go on without a durable audit record"


class JournalError(Exception):
    """The journal cannot be written or read. The message names the path and the fix."""


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
    #: 2 for records laid out by ``_journal_chain.encode_record``, 1 for the older sorted-key records
    format: int = 1

    @classmethod
    def parse(cls, line):
        """A record of either format (str or bytes, without newline); ValueError/KeyError when it is none."""
        if isinstance(line, bytes):
            line = line.decode("ascii")
        fields = json.loads(line)
        if not isinstance(fields, dict):
            raise ValueError("not a journal record")
        return cls(seq=fields["seq"], record_id=fields["record_id"], recorded_at=fields["recorded_at"],
                   journal_id=fields["journal_id"], prev_hash=fields["prev_hash"], hash=fields["hash"],
                   event=fields["event"], line=line, format=2 if chain.is_format2(line) else 1)

    def hash_holds(self):
        """Whether the record's own hash matches its content (it was not edited since it was written)."""
        if self.format == 2:
            try:
                prev_hash, content, stored = chain.split_record(self.line)
            except chain.ChainError:
                return False
            return stored == self.hash and prev_hash == self.prev_hash and stored == chain.link(
                prev_hash, hashlib.sha256(content.encode("ascii")).hexdigest())
        return chain.canonical_json(json.loads(self.line)) == self.line and \
            chain.legacy_record_hash(json.loads(self.line)) == self.hash


def _utc_now():
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _pread(fd, length, offset):
    """Every read of a journal's tail goes through here (tests count the bytes)."""
    return os.pread(fd, length, offset)


def _controller_context():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext

    return AuditContext(operator=getpass.getuser(), operator_source="controller_os_user", run_id=str(uuid.uuid4()))


def _as_context(context):
    if context is None:
        return _controller_context()
    if isinstance(context, dict):
        from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext

        known = ("operator", "operator_source", "run_id", "host", "intent_id", "resolved_operator",
                 "resolved_operator_source")
        return AuditContext(**{k: v for k, v in context.items() if k in known})
    return context


class _Tail:
    """Reads a journal's lines backwards from ``end``, one block at a time, as ``(offset, line)`` pairs.

    ``offset`` is where the line starts; lines come without their newline. The first pair is what follows the last
    newline: empty when the file ends with one, else a torn line. Only the blocks that hold the lines taken are
    read.
    """

    def __init__(self, fd, end):
        self.fd = fd
        self.end = end

    def lines(self):
        if self.end <= 0:
            return
        start, buffer = self.end, b""
        pos = 0  # the lines not yet given lie in buffer[:pos]
        while True:
            cut = buffer.rfind(b"\n", 0, pos)
            if cut < 0:
                if start > 0:
                    step = min(BLOCK_SIZE, start)
                    start -= step
                    block = _pread(self.fd, step, start)
                    if len(block) != step:
                        raise OSError(0, "the journal changed while it was read")
                    buffer = block + buffer[:pos]
                    pos = len(buffer)
                    continue
                yield 0, buffer[:pos]
                return
            yield start + cut + 1, buffer[cut + 1:pos]
            pos = cut


class _Head:
    """What a backwards scan needs of one line: format, seq, journal id, hash and (format 2) content digest."""

    __slots__ = ("format", "seq", "journal_id", "hash", "digest")

    def __init__(self, line):
        if chain.is_format2(line):
            _prev, content, self.hash = chain.split_record(line)
            self.seq, self.journal_id = chain.parse_head(content)[:2]
            self.digest = hashlib.sha256(content.encode("ascii")).hexdigest()
            self.format = 2
        else:
            fields = json.loads(line)
            self.seq, self.journal_id, self.hash = int(fields["seq"]), fields["journal_id"], fields["hash"]
            self.digest, self.format = None, 1


def _anchored_seq(line, token_label, journal_id):
    """The seq a journal line's ``audit-checkpoint`` event anchors, when it is one of ``token_label``'s, else None.

    ``token_label`` None takes a checkpoint of any token.
    """
    try:
        event = json.loads(line)["event"]
        if event["event"]["action"] != "audit-checkpoint":
            return None
        checkpoint = event["keylifecycle"]["checkpoint"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(checkpoint, dict) or checkpoint.get("journal_id", journal_id) != journal_id:
        return None
    if token_label is not None and checkpoint.get("token_label") != token_label:
        return None
    seq = checkpoint.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


class Journal:
    """One journal file. ``append`` is the only writer; ``tail``, ``proof_since``, ``read_lines`` and
    ``records_after`` read."""

    def __init__(self, path):
        self.path = os.path.abspath(os.path.expanduser(str(path)))
        self.lock_path = self.path + ".lock"
        #: the ``audit-journal-repair`` record the last ``append`` wrote before its own records, if any
        self.last_repair = None

    # ---- writing -------------------------------------------------------------------------------

    def _deleted(self):
        return JournalError(
            "audit journal %s was deleted while the task ran: the task's outcome could not be journaled (no new "
            "journal is started in its place). Restore the journal from the log store before any further lifecycle "
            "action, or start a new one with playbooks/audit_rollover.yml." % self.path)

    def _replaced(self, found, expected):
        return JournalError(
            "audit journal %s was replaced while the task ran (%s, not journal %s): the task's outcome could not be "
            "journaled. Restore journal %s from the log store before any further lifecycle action."
            % (self.path, "it holds no record now" if found is None else "it is journal %s now" % found, expected,
               expected))

    def _unusable(self, verb, exc, advice):
        reason = "its folder is missing" if isinstance(exc, FileNotFoundError) else exc.strerror or exc
        return JournalError("audit journal %s cannot be %s (%s): %s" % (self.path, verb, reason, advice))

    def _open(self, path, flags, create, verb, advice):
        """os.open of the journal or its lock for a change; a journal that must exist (not ``create``) and is gone
        was deleted while the task ran."""
        try:
            return os.open(path, flags, 0o600)
        except FileNotFoundError as exc:
            if not create:
                raise self._deleted() from None
            raise self._unusable(verb, exc, advice) from None
        except OSError as exc:
            raise self._unusable(verb, exc, advice) from None

    @contextmanager
    def _locked(self, create=True):
        directory = os.path.dirname(self.path)
        try:
            if create and not os.path.isdir(directory):
                os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise self._unusable("opened", exc, OPEN_ADVICE) from None
        fd = self._open(self.lock_path, os.O_RDWR | os.O_CREAT, create, "opened", OPEN_ADVICE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def _reading(self):
        """The journal open for reading under a shared lock (None when it does not exist)."""
        lock_fd = None
        try:
            lock_fd = os.open(self.lock_path, os.O_RDONLY)
            fcntl.flock(lock_fd, fcntl.LOCK_SH)
        except FileNotFoundError:
            pass  # never written through this module yet: nothing to wait for
        except OSError as exc:
            if lock_fd is not None:
                os.close(lock_fd)
            raise JournalError("audit journal %s cannot be read (%s)" % (self.path, exc.strerror)) from None
        try:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                yield None
                return
            except OSError as exc:
                raise JournalError("audit journal %s cannot be read (%s)" % (self.path, exc.strerror)) from None
            try:
                yield fd
            finally:
                os.close(fd)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)

    def append(self, events, context=None, expect_journal_id=None, create=True):
        """Append events as chained format 2 records in one write, fsync, and return the records of ``events``.

        - ``create=False``: the journal must exist (it is never created); a missing or emptied journal is a
          JournalError saying it was deleted (or replaced) while the task ran.
        - ``expect_journal_id``: the journal's last record must belong to that journal, else JournalError
          (replaced while the task ran).
        - A torn last line (no newline, or not a record) is cut off and an ``audit-journal-repair`` record is
          written before the events (``self.last_repair``), built with ``context`` (an AuditContext or its dict),
          or the controller's OS user when none is given.
        """
        self.last_repair = None
        if not events:
            return []
        with self._locked(create):
            flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
            fd = self._open(self.path, flags, create, "written", DURABLE)
            try:
                return self._append_locked(fd, events, context, expect_journal_id, create)
            except OSError as exc:
                raise self._unusable("written", exc, DURABLE) from None
            finally:
                os.close(fd)

    def _append_locked(self, fd, events, context, expect_journal_id, create):
        size = os.fstat(fd).st_size
        last, torn = self._last_state(fd, size)
        if not create and last is None:
            raise self._replaced(None, expect_journal_id) if expect_journal_id else self._deleted()
        if expect_journal_id is not None and (last is None or last.journal_id != expect_journal_id):
            raise self._replaced(last.journal_id if last else None, expect_journal_id)
        seq, prev_hash = (last.seq, last.hash) if last else (0, GENESIS_HASH)
        journal_id = last.journal_id if last else str(uuid.uuid4())
        to_write = list(events)
        if torn is not None:
            to_write.insert(0, self._repair_event(torn, context))
        records, lines = [], []
        for event in to_write:
            seq += 1
            record_id, recorded_at, previous = str(uuid.uuid4()), _utc_now(), prev_hash
            line, prev_hash, _digest = chain.encode_record(previous, seq, journal_id, record_id, recorded_at, event)
            records.append(JournalRecord(seq=seq, record_id=record_id, recorded_at=recorded_at, journal_id=journal_id,
                                         prev_hash=previous, hash=prev_hash, event=event, line=line, format=2))
            lines.append(line)
        data = ("\n".join(lines) + "\n").encode("ascii")
        if torn is not None:
            # cut the torn bytes (an append that never completed was never acknowledged), then write the repair
            # record and the events in one write
            os.ftruncate(fd, torn[0])
            os.fsync(fd)
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(0, "short write (%d of %d bytes)" % (written, len(data)))
        os.fsync(fd)
        if size == 0:
            self._fsync_directory()
        if torn is not None:
            self.last_repair = records.pop(0)
        return records

    def _repair_event(self, torn, context):
        from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event

        offset, removed = torn
        try:
            return build_event("audit-journal-repair", "success", _as_context(context), phase="change",
                               reason=REPAIR_REASON,
                               extra={"repair": {"offset": offset, "length": len(removed),
                                                 "sha256": hashlib.sha256(removed).hexdigest()}})
        except (ValueError, TypeError) as exc:
            raise JournalError("audit journal %s ends with a torn line that cannot be repaired (the repair record "
                               "cannot be built: %s)" % (self.path, exc)) from None

    def _fsync_directory(self):
        dir_fd = os.open(os.path.dirname(self.path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _last_state(self, fd, size):
        """``(last record or None, torn or None)``; ``torn`` = ``(offset, bytes)`` of a torn last line.

        A last line without newline, or a last line that is not a record, is torn (a write that failed half-way).
        The line before it must be a record whose own hash holds, else the journal was edited: JournalError.
        """
        lines = _Tail(fd, size).lines()
        torn = None
        for offset, fragment in lines:  # what follows the last newline
            if fragment:
                torn = (offset, fragment)
            break
        for offset, line in lines:
            record = self._record_or_none(line)
            if record is None and torn is None:  # a complete but unreadable last line
                torn = (offset, line + b"\n")
                continue
            if record is None:
                raise JournalError(
                    "audit journal %s ends with a record that cannot be read (seen before a torn last line): run "
                    "playbooks/audit_verify.yml and restore the journal from a store before any further lifecycle "
                    "action" % self.path)
            if not record.hash_holds():
                raise JournalError(
                    "audit journal %s ends with a record whose hash does not match its content (seq %s): the "
                    "journal was edited. Run playbooks/audit_verify.yml and restore the journal from a store "
                    "before any further lifecycle action" % (self.path, record.seq))
            return record, torn
        return None, torn

    @staticmethod
    def _record_or_none(line):
        try:
            record = JournalRecord.parse(line)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None
        if not isinstance(record.seq, int) or not isinstance(record.event, dict):
            return None
        return record

    # ---- reading -------------------------------------------------------------------------------

    def exists(self):
        return os.path.exists(self.path)

    def tail(self):
        """``(journal_id, seq, hash)`` of the last record, or None (no journal, or no record in it).

        A torn last line is passed over (the next append cuts it off); an edited last record is a JournalError.
        """
        with self._reading() as fd:
            if fd is None:
                return None
            try:
                last, _torn = self._last_state(fd, os.fstat(fd).st_size)
            except OSError as exc:
                raise JournalError("audit journal %s cannot be read (%s)" % (self.path, exc.strerror or exc)) \
                    from None
        return (last.journal_id, last.seq, last.hash) if last else None

    def proof_since(self, token_label, intent_seq, cover_seq=None):
        """The ``journal_proof`` that record ``intent_seq`` extends the journal's last checkpoint of a token.

        Looks backwards from the end for the last ``audit-checkpoint`` record (before ``intent_seq``) whose
        checkpoint names ``token_label`` (None: any token) and returns ``{"start_seq", "start_hash", "digests"}``:
        the seq the checkpoint anchored, that record's hash, and the content digests of the records after it up to
        ``intent_seq``. Reads only that stretch. With no such checkpoint, or a format 1 record (no digest) or a
        break in the sequence in the stretch, the proof starts at the intent itself: ``{"start_seq": intent_seq,
        "start_hash": <its hash>, "digests": []}`` (the controller knows no anchor).

        With ``cover_seq``, the proof runs to record ``intent_seq`` (then the journal's end) from a checkpoint
        that anchored record ``cover_seq`` or one before it, so it covers that record too (a task whose intent
        another controller's later intent overtook at the token).
        """
        with self._reading() as fd:
            if fd is None:
                raise self._deleted()
            try:
                return self._proof(fd, token_label, intent_seq, cover_seq)
            except OSError as exc:
                raise JournalError("audit journal %s cannot be read (%s)" % (self.path, exc.strerror or exc)) \
                    from None

    def _proof(self, fd, token_label, intent_seq, cover_seq=None):
        digests = []  # newest first
        intent_hash, journal_id, anchor, expected = None, None, None, None

        def no_anchor():
            return {"start_seq": intent_seq, "start_hash": intent_hash, "digests": []}

        for _offset, line in _Tail(fd, os.fstat(fd).st_size).lines():
            try:
                text = line.decode("ascii")
                head = _Head(text)
            except (chain.ChainError, ValueError, KeyError, TypeError, UnicodeDecodeError):
                if intent_hash is None:
                    continue  # a torn line after the intent (cut by the next append)
                return no_anchor()
            if intent_hash is None:
                if head.seq > intent_seq:
                    continue  # written after the intent (another task on the same journal)
                if head.seq != intent_seq:
                    break
                intent_hash, journal_id = head.hash, head.journal_id
            elif head.seq != expected or head.journal_id != journal_id:
                return no_anchor()
            expected = head.seq - 1
            if head.seq == anchor:
                digests.reverse()
                return {"start_seq": anchor, "start_hash": head.hash, "digests": digests}
            if head.format != 2:
                return no_anchor()
            digests.append(head.digest)
            if anchor is None and _CHECKPOINT_MARK in line:
                anchored = _anchored_seq(text, token_label, journal_id)
                if anchored is not None and cover_seq is not None and anchored > cover_seq:
                    anchored = None  # anchors a record after the one the proof must cover: look further back
                if anchored is not None:
                    if not 0 < anchored < head.seq:
                        return no_anchor()
                    anchor = anchored
        if intent_hash is None:
            raise JournalError("audit journal %s holds no record %d (the task's intent): it was replaced or "
                               "truncated while the task ran" % (self.path, intent_seq))
        return no_anchor()

    def last_checkpoint(self, token_label):
        """The checkpoint of the journal's last ``audit-checkpoint`` record of ``token_label`` (a dict), or None.

        Reads backwards from the end; a restore moves the restored pin to it (replica_install)."""
        with self._reading() as fd:
            if fd is None:
                raise self._deleted()
            for _offset, line in _Tail(fd, os.fstat(fd).st_size).lines():
                if _CHECKPOINT_MARK not in line:
                    continue
                try:
                    checkpoint = json.loads(line.decode("ascii"))["event"]["keylifecycle"]["checkpoint"]
                except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                    continue
                if isinstance(checkpoint, dict) and checkpoint.get("token_label") == token_label:
                    return checkpoint
        return None

    def read_lines(self):
        """Every line of the journal (without newlines); empty if it does not exist."""
        return list(self.iter_lines())

    def iter_lines(self, complete_only=False):
        """The journal's lines one at a time (memory flat in the journal's size); none if it does not exist.

        ``complete_only``: not a last line without its newline (a torn write, which the next append cuts off and
        journals as an ``audit-journal-repair`` record: it is no record of the journal)."""
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                if complete_only and not line.endswith(b"\n"):
                    return
                line = line.rstrip(b"\n")
                if line:
                    yield line.decode("ascii", "replace")

    def records_after(self, seq):
        """Records (either format) with a sequence number above ``seq``, in order (for shipping): complete lines
        only, so a torn last line is never shipped."""
        out = []
        for line in self.iter_lines(complete_only=True):
            try:
                record = JournalRecord.parse(line)
            except (ValueError, KeyError, TypeError):
                continue
            if record.seq > seq:
                out.append(record)
        return out


# ---- where journals live, and the registry of journals, so the callback finds every journal written to -------

#: the fallback when neither KEYLIFECYCLE_AUDIT_STATE_DIR nor ANSIBLE_HOME says otherwise
DEFAULT_STATE_DIR = "~/.ansible/secops_keylifecycle"
STATE_DIR_VARIABLE = "KEYLIFECYCLE_AUDIT_STATE_DIR"
#: the single journal every token shared before journals were kept per token (read, never chosen by default now)
LEGACY_JOURNAL_NAME = "audit-journal.jsonl"
_SLUG_RE = re.compile(r"[^A-Za-z0-9._-]+")


def ansible_home(environ=None):
    """``ANSIBLE_HOME`` from the environment, else as ansible is configured (ansible.cfg), else ~/.ansible."""
    environ = os.environ if environ is None else environ
    home = environ.get("ANSIBLE_HOME")
    if not home:
        try:
            from ansible import constants as ansible_constants

            home = getattr(ansible_constants, "ANSIBLE_HOME", None)
        except Exception:  # pylint: disable=broad-except
            home = None
    return os.path.abspath(os.path.expanduser(str(home or "~/.ansible")))


def state_dir(environ=None):
    """The controller's audit state folder: KEYLIFECYCLE_AUDIT_STATE_DIR, else ``$ANSIBLE_HOME/secops_keylifecycle``."""
    environ = os.environ if environ is None else environ
    given = environ.get(STATE_DIR_VARIABLE)
    if given:
        return os.path.abspath(os.path.expanduser(given))
    return os.path.join(ansible_home(environ), "secops_keylifecycle")


def default_journal_path(pkcs11_module, token_label, environ=None):
    """A token's own journal: ``<state_dir>/journals/<label>-<sha256(module NUL label)[:16]>.jsonl``."""
    module, label = str(pkcs11_module or ""), str(token_label or "")
    digest = hashlib.sha256(("%s\0%s" % (module, label)).encode("utf-8")).hexdigest()[:16]
    slug = _SLUG_RE.sub("-", label).strip("-.")[:32] or "token"
    return os.path.join(state_dir(environ), "journals", "%s-%s.jsonl" % (slug, digest))


def legacy_journal_path(environ=None):
    """The journal every token shared before journals were kept per token."""
    return os.path.join(state_dir(environ), LEGACY_JOURNAL_NAME)


#: the host variable naming the environment's journal
JOURNAL_VARIABLE = "keylifecycle_audit_journal"


def task_token(args):
    """``(pkcs11_module, token_label)`` as a task's arguments name its token: the key of its default journal (and
    of the controller-side lock). An option the host's environment supplies (PKCS11_MODULE) is not seen here."""
    return args.get("pkcs11_module"), args.get("token_label")


def resolve_journal_path(args, task_vars, templar, token=None, environ=None):
    """The journal a task uses: its ``journal`` option, else the host's ``keylifecycle_audit_journal``, else the
    token's default journal (``token`` = ``(pkcs11_module, token_label)``); without a token, the legacy shared
    journal under the state directory."""
    given = args.get("journal") or templar.template(task_vars.get(JOURNAL_VARIABLE))
    if given:
        return str(given)
    if token is None:
        return legacy_journal_path(environ)
    return default_journal_path(token[0], token[1], environ)


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
