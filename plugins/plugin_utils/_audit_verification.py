# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Verification of a journal against the token's pin and signed checkpoints (controller side of audit_verify).

PRIVATE: not part of the public interface.

The journal is streamed from the file, line by line, in binary: memory stays flat in the journal's size. Only
the hashes that a later check needs are kept (open intents, the records the token's pin and checkpoints name, the
range start, a small window of recent records); a checkpoint record naming an older record is resolved by a
second, cheap pass that reads stored hashes only (the chain was verified by then).

A format 2 record (``_journal_chain``) is checked on its stored bytes: layout, SHA-256 of the content, the link to
its predecessor, sequence number and journal id from the fixed head; JSON is decoded only for the few records a
bytes search marks as an intent, an outcome, a checkpoint or a rollover genesis. A format 1 record (written before
the pin existed) is decoded and re-hashed as its canonical JSON (``legacy_record_hash``).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os

from ansible_collections.secops.keylifecycle.plugins.module_utils import _journal_chain as chain
from ansible_collections.secops.keylifecycle.plugins.module_utils import _signatures
from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import checkpoint_payload
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import CRYPTOGRAPHY_IMPORT_ERROR

#: how many journals back a rollover chain is followed
MAX_PREVIOUS_JOURNALS = 8
#: recent records whose hashes are kept for checkpoint records that anchor a record just before them
_WINDOW = 256

_PREFIX2 = b'{"prev_hash":"'
_HASH_FIELD = b',"hash":"'
_END = b'"}\n'
_START = chain.CONTENT_START
_SUFFIX = chain.SUFFIX_LENGTH
_HEAD = chain._HEAD_BYTES  # pylint: disable=protected-access  # the one definition of a record's head
_SECTION = b'"keylifecycle":{'
_PHASE = b'"phase":"'
_CHECKPOINT = b'"checkpoint":{'
_EVENT = b',"event":{'
_sha256 = hashlib.sha256
_hexlify = binascii.hexlify
_unhex = binascii.unhexlify


def signature_valid(checkpoint, public_keys, key_id=None, signature=None):
    """Whether a checkpoint's signature (or the co-signature named by ``key_id``/``signature``) verifies."""
    if CRYPTOGRAPHY_IMPORT_ERROR is not None:
        raise RuntimeError("audit_verify needs the Python library cryptography on the controller (pip install "
                           "cryptography): %s" % CRYPTOGRAPHY_IMPORT_ERROR.strip().splitlines()[-1])
    key_id = checkpoint.get("key_id") if key_id is None else key_id
    signature = checkpoint.get("signature") if signature is None else signature
    pem = public_keys.get(key_id)
    if not pem or not isinstance(signature, str):
        return False
    key = _signatures.load_public_key(pem)
    try:
        payload = checkpoint_payload(checkpoint["journal_id"], checkpoint["seq"], checkpoint["head_hash"],
                                     checkpoint["signed_at"])
    except KeyError:
        return False
    return key is not None and _signatures.signature_valid(key, signature, payload)


def _event_of(content):
    """The event of a record's content (bytes), or False when it is not JSON (a record the slow path reports)."""
    try:
        return json.loads(content[content.find(_EVENT) + 9:])
    except ValueError:
        return False


class TokenView:
    """What the module half of audit_verify read from the token (or nothing: ``read`` false)."""

    def __init__(self, result=None):
        self.read = result is not None
        result = result or {}
        self.pin = result.get("token_pin") or None
        self.checkpoints = result.get("token_checkpoints") or {}
        self.public_keys = result.get("checkpoint_public_keys") or {}
        self.certificates = result.get("checkpoint_certificates") or []
        self.label = result.get("token_label")
        self.serial = result.get("token_serial")

    def owns(self, checkpoint):
        """Whether a checkpoint was signed on this token: its key is one of the token's, its label/serial match."""
        key_id = checkpoint.get("key_id")
        if not isinstance(key_id, str) or key_id not in self.public_keys:
            return False
        for field, mine in (("token_label", self.label), ("token_serial", self.serial)):
            if checkpoint.get(field) is not None and mine is not None and checkpoint.get(field) != mine:
                return False
        return True

    def for_previous_journal(self):
        """The same token's keys for an older journal of a rollover chain (the pin names the newest journal)."""
        view = TokenView()
        view.read, view.public_keys, view.checkpoints = self.read, self.public_keys, self.checkpoints
        view.label, view.serial, view.certificates = self.label, self.serial, self.certificates
        return view


class _Stop(Exception):
    """The first bad record: the chain is not followed further."""


class _Verifier:
    """One pass over one journal's lines (bytes, newline included or not)."""

    def __init__(self, token, expected_journal_id=None, since_seq=None, outcomes=None, named_head=None):
        self.token = token
        self.expected_journal_id = expected_journal_id
        self.since_seq = since_seq
        self.records = 0
        self.head_seq, self.head_hash = 0, chain.GENESIS_HASH
        self.journal_id = None
        self.first_bad = None
        self.problems = []
        self.verified = 0
        self.other_token = 0
        self.last_anchor = None  # highest record seq anchored by a verified checkpoint of this token
        self.open_intents = {}  # record_id -> (seq, hash) of intents without an outcome yet
        self.interrupted = []
        self.last_intent = None
        self.watch = {}  # seq -> hash (None until seen) of records named up front
        self.window = [None] * _WINDOW
        self.pending = []  # checkpoint records naming a record outside the window: resolved by a second pass
        self.since_anchored = False  # a verified checkpoint record of this token anchors record since_seq
        self.genesis = None
        self.torn_tail = None
        #: the outcomes of finished tasks the token remembers (``_journal_pin.task_outcome``), by intent seq; where
        #: their events were found (intent seq -> (first seq, last seq, digest or None until the second pass))
        self.outcomes = {o["intent_seq"]: o for o in outcomes or () if chain.is_task_outcome(o)}
        self.outcome_ranges = {}
        self.outcome_ends = {}  # intent seq -> the hash of the last of its events' records, as the first pass saw it
        pin = token.pin if token.read else None
        for seq in (since_seq, pin and pin.get("seq"), named_head):
            if isinstance(seq, int) and seq > 0:
                self.watch[seq] = None
        for checkpoint in token.checkpoints.values():
            if isinstance(checkpoint.get("seq"), int):
                self.watch[checkpoint["seq"]] = None

    # ---- the pass -------------------------------------------------------------------------------------

    def run(self, lines):
        """Follow the chain; stop at the first bad record. ``lines`` yields bytes with their newline."""
        expected_seq, prev_hex, prev_raw = 1, chain.GENESIS_HASH.encode("ascii"), bytes(32)
        number, records, jid = 0, 0, None
        window, watch = self.window, self.watch
        lines = iter(lines)
        if self.since_seq and self.since_seq > 1:
            for raw in lines:  # records before the range: not read beyond their line end
                if raw.rstrip(b"\n"):  # a line as the second passes count it (they find records by line number)
                    number += 1
                    if number == self.since_seq - 1:
                        break
            expected_seq, prev_hex = self.since_seq, None  # the range's first record is taken as it is
        try:
            for raw in lines:
                number += 1
                # ---- the fast path: a well-formed format 2 record that extends the chain --------------------
                if raw[:14] == _PREFIX2 and raw[-3:] == _END and raw[14:78] == prev_hex \
                        and raw[-_SUFFIX - 1:-67] == _HASH_FIELD and raw[_START - 1] == 34:
                    content = raw[_START:-_SUFFIX - 1]
                    head = _HEAD.match(content)
                    if head is not None and head.group(2) == jid and int(head.group(1)) == expected_seq:
                        digest = _sha256(prev_raw + _sha256(content).digest()).digest()
                        stated = raw[-67:-3]
                        event = _event_of(content) if _candidate(content) else None
                        if _hexlify(digest) == stated and event is not False:  # False: not JSON, the slow path says so
                            if isinstance(event, dict):
                                self._event(expected_seq, head.group(3).decode("ascii"), stated.decode("ascii"),
                                            event)
                            records += 1
                            window[expected_seq % _WINDOW] = (expected_seq, stated, content)
                            if expected_seq in watch:
                                watch[expected_seq] = stated.decode("ascii")
                            expected_seq, prev_hex, prev_raw = expected_seq + 1, stated, digest
                            continue
                # ---- everything else: format 1, the first record, or a record with something wrong ----------
                if not raw.endswith(b"\n"):
                    if raw:
                        # only a file's last line lacks its newline: a write that never completed (disk full,
                        # crash), never acknowledged, cut off by the next append (audit-journal-repair)
                        self.torn_tail = {"line": number, "length": len(raw)}
                    break
                line = raw[:-1]
                if not line:
                    number -= 1
                    continue
                if line[:14] == _PREFIX2:
                    seq, stated, jid = self._format2(line, number, expected_seq, prev_hex, jid)
                    prev_raw = _unhex(stated)
                else:
                    seq, stated, jid = self._format1(line, number, expected_seq, prev_hex, jid)
                    prev_raw = _unhex(stated)
                    before = window[(seq - 1) % _WINDOW]
                    if before is not None and before[0] == seq - 1 and before[2] is not None:
                        self._bad(number, seq, expected_seq, "a format 1 record after a format 2 record: format 1 "
                                                             "records were written only before the pin existed")
                records += 1
                window[seq % _WINDOW] = (seq, stated, line[_START:-_SUFFIX] if line[:14] == _PREFIX2 else None)
                if seq in watch:
                    watch[seq] = stated.decode("ascii")
                expected_seq, prev_hex = seq + 1, stated
        except _Stop:
            pass
        self.records = records
        if records:
            self.head_seq, self.head_hash = expected_seq - 1, prev_hex.decode("ascii")

    def _format2(self, line, number, expected_seq, prev_hex, jid):
        """A format 2 record off the fast path: what is wrong with it, in the order of format 1's checks."""
        try:
            stated_prev, content, stated = chain.split_record(line)
        except (chain.ChainError, UnicodeDecodeError):
            self._bad(number, None, expected_seq, "not laid out as a journal record: modified or corrupted")
        head = _HEAD.match(content.encode("ascii"))
        seq = int(head.group(1)) if head else None
        if chain.link(stated_prev, hashlib.sha256(content.encode("ascii")).hexdigest()) != stated:
            self._bad(number, seq, expected_seq, "hash does not match the record's content: the record was modified")
        if head is None:
            self._bad(number, seq, expected_seq, "the record's fields are not in the journal's order: the record was "
                                                 "edited")
        if seq != expected_seq:
            self._bad(number, seq, expected_seq, _seq_problem(seq, expected_seq))
        if prev_hex is not None and stated_prev.encode("ascii") != prev_hex:
            self._bad(number, seq, expected_seq, "prev_hash does not match the previous record: records were deleted, "
                                                 "replaced or reordered")
        jid = self._journal_id(head.group(2), jid, number, seq, expected_seq)
        content_b = content.encode("ascii")
        if seq == 1 or _candidate(content_b):
            try:
                event = json.loads(content_b[content_b.find(_EVENT) + 9:])
            except ValueError:
                self._bad(number, seq, expected_seq, "the record's event is not JSON: modified or corrupted")
            if isinstance(event, dict):
                self._event(seq, head.group(3).decode("ascii"), stated, event)
        return seq, stated.encode("ascii"), jid

    def _journal_id(self, found, jid, number, seq, expected_seq):
        if jid is None:
            self.journal_id = found.decode("ascii")
            return found
        if found != jid:
            self._bad(number, seq, expected_seq, "journal_id changes inside the journal: records from another "
                                                 "journal were spliced in")
        return jid

    def _bad(self, number, seq, expected_seq, problem):
        self.first_bad = {"line": number, "seq": seq, "expected_seq": expected_seq, "problem": problem}
        raise _Stop()

    def _format1(self, line, number, expected_seq, prev_hex, jid):
        """A format 1 record (canonical JSON, hashed as such): decoded and re-encoded."""
        try:
            text = line.decode("ascii")
            fields = json.loads(text)
            seq = fields["seq"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            self._bad(number, None, expected_seq, "not a journal record (unreadable JSON): modified or corrupted")
        if not isinstance(fields.get("hash"), str) or not isinstance(fields.get("prev_hash"), str) \
                or not chain._HEX64.match(fields["hash"]):  # pylint: disable=protected-access
            self._bad(number, seq, expected_seq, "not a journal record (unreadable JSON): modified or corrupted")
        if chain.canonical_json(fields) != text:
            self._bad(number, seq, expected_seq, "not in canonical form: the record was edited")
        if fields["hash"] != chain.legacy_record_hash(fields):
            self._bad(number, seq, expected_seq, "hash does not match the record's content: the record was modified")
        if seq != expected_seq:
            self._bad(number, seq, expected_seq, _seq_problem(seq, expected_seq))
        if prev_hex is not None and fields["prev_hash"].encode("ascii") != prev_hex:
            self._bad(number, seq, expected_seq, "prev_hash does not match the previous record: records were deleted, "
                                                 "replaced or reordered")
        jid = self._journal_id(str(fields.get("journal_id")).encode("ascii", "backslashreplace"), jid, number, seq,
                               expected_seq)
        if isinstance(fields.get("event"), dict):
            self._event(seq, fields.get("record_id"), fields["hash"], fields["event"])
        return seq, fields["hash"].encode("ascii"), jid

    # ---- the few records whose event matters ----------------------------------------------------------

    def _event(self, seq, record_id, record_hash, event):
        keylifecycle = event.get("keylifecycle") if isinstance(event.get("keylifecycle"), dict) else {}
        action = (event.get("event") or {}).get("action") if isinstance(event.get("event"), dict) else None
        phase = keylifecycle.get("phase")
        if seq == 1 and action == "audit-journal-rollover":
            genesis = keylifecycle.get("previous_journal")
            self.genesis = genesis if isinstance(genesis, dict) else {}  # malformed: names no journal that is kept
        if phase == "intent" and isinstance(record_id, str):
            self.open_intents[record_id] = (seq, record_hash)
            self.last_intent = seq
        elif phase == "outcome" and isinstance(keylifecycle.get("intent_id"), str):
            self.open_intents.pop(keylifecycle["intent_id"], None)
        checkpoint = keylifecycle.get("checkpoint")
        if action == "audit-checkpoint" and isinstance(checkpoint, dict):
            self._checkpoint_record(seq, checkpoint)

    def _lookup(self, seq):
        """The hash of an earlier record, if kept: ``(found, hash)``."""
        slot = self.window[seq % _WINDOW] if isinstance(seq, int) else None
        if slot is not None and slot[0] == seq:
            return True, slot[1].decode("ascii")
        for intent_seq, intent_hash in self.open_intents.values():
            if intent_seq == seq:
                return True, intent_hash
        if self.watch.get(seq) is not None:
            return True, self.watch[seq]
        return False, None

    def _checkpoint_record(self, seq, checkpoint):
        token = self.token
        if token.read:
            if not token.owns(checkpoint):
                self.other_token += 1
                return
            if not signature_valid(checkpoint, token.public_keys):
                self.problems.append("checkpoint record seq %d: the signature does not verify with the token's "
                                     "audit-checkpoint key %s" % (seq, checkpoint.get("key_id")))
                return
            if checkpoint.get("previous_key_id") is not None or checkpoint.get("previous_signature") is not None:
                if not signature_valid(checkpoint, token.public_keys, checkpoint.get("previous_key_id"),
                                       checkpoint.get("previous_signature")):
                    self.problems.append(
                        "checkpoint record seq %d: the co-signature of the previous audit-checkpoint key %s does not "
                        "verify: the signing key was replaced without its predecessor's consent"
                        % (seq, checkpoint.get("previous_key_id")))
                    return
        target = checkpoint.get("seq")
        if self.journal_id is not None and checkpoint.get("journal_id") != self.journal_id:
            self.problems.append("checkpoint record seq %d signed a record of journal %s, not of this journal %s"
                                 % (seq, checkpoint.get("journal_id"), self.journal_id))
            return
        if not isinstance(target, int) or target < 1 or target >= seq or (
                self.since_seq is not None and target < self.since_seq):
            if isinstance(target, int) and self.since_seq is not None and 1 <= target < self.since_seq:
                return  # before the verified range: neither counted nor a problem
            self.problems.append("checkpoint record seq %d signed record %s with a hash the journal does not have"
                                 % (seq, target))
            return
        self._outcome_named(target, seq, checkpoint.get("outcome"))
        found, known = self._lookup(target)
        if not found:
            self.pending.append((seq, checkpoint))
            return
        self._settle(seq, checkpoint, known)

    def _outcome_named(self, intent_seq, seq, outcome):
        """A checkpoint record (``seq``) of a task whose outcome the token remembers: its events are the records just
        before it. Their digest is taken from the window, or by the second pass for a larger task."""
        remembered = self.outcomes.get(intent_seq)
        if remembered is None or not isinstance(outcome, dict) or intent_seq in self.outcome_ranges \
                or (outcome.get("events"), outcome.get("sha256")) != (remembered["events"], remembered["sha256"]):
            return
        first = seq - remembered["events"]
        if first <= intent_seq:  # a task's events come after its intent
            return
        slots = [(n, self.window[n % _WINDOW]) for n in range(first, seq)]
        last = slots[-1][1]
        if last is None or last[0] != seq - 1:  # the record before this one is always in the window
            return
        digest = None  # the records left the window: the second pass reads them, and checks they end at ``last``
        if all(slot is not None and slot[0] == n and slot[2] is not None for n, slot in slots):
            digest = chain.outcome_digest(chain.event_text(slot[2]) for _n, slot in slots)
        self.outcome_ranges[intent_seq] = (first, seq - 1, digest)
        self.outcome_ends[intent_seq] = last[1].decode("ascii")

    def _settle(self, seq, checkpoint, known):
        if known != checkpoint.get("head_hash"):
            self.problems.append("checkpoint record seq %d signed record %d with a hash the journal does not have"
                                 % (seq, checkpoint["seq"]))
            return
        self.verified += 1
        if self.token.read:
            self.since_anchored = self.since_anchored or checkpoint["seq"] == self.since_seq
            self.last_anchor = max(self.last_anchor or 0, checkpoint["seq"])

    def resolve_pending(self, lines):
        """Second pass: the stored hashes of the records pending checkpoint records name (the chain holds)."""
        if not self.pending:
            return
        wanted = {checkpoint["seq"] for _seq, checkpoint in self.pending}
        found, number = {}, 0
        for raw in lines:
            line = raw.rstrip(b"\n")
            if not line:
                continue
            number += 1
            if number in wanted:
                if line[:14] == _PREFIX2:
                    found[number] = line[-66:-2].decode("ascii")
                else:
                    found[number] = json.loads(line)["hash"]
                if len(found) == len(wanted) or number >= max(wanted):
                    break
        for seq, checkpoint in self.pending:
            self._settle(seq, checkpoint, found.get(checkpoint["seq"]))
        self.pending = []

    def resolve_outcomes(self, lines):
        """Second pass: the events of the remembered tasks that the window no longer held."""
        wanted = {intent: (first, last) for intent, (first, last, digest) in self.outcome_ranges.items()
                  if digest is None}
        if not wanted:
            return
        found, number = {intent: [] for intent in wanted}, 0
        start, end = min(first for first, _last in wanted.values()), max(last for _first, last in wanted.values())
        for raw in lines:
            line = raw.rstrip(b"\n")
            if not line:
                continue
            number += 1
            if number < start:
                continue
            for intent, (first, last) in wanted.items():
                if first <= number <= last:
                    found[intent].append(line)
            if number >= end:
                break
        for intent, (first, last) in wanted.items():
            self.outcome_ranges[intent] = (first, last, _range_digest(found[intent], self.outcome_ends[intent]))

    def missing_outcomes(self):
        """The intent seqs of the remembered outcomes whose events the journal does not hold as remembered."""
        return [intent for intent, remembered in sorted(self.outcomes.items())
                if (self.since_seq is None or intent >= self.since_seq)
                and (self.outcome_ranges.get(intent) or (0, 0, None))[2] != remembered["sha256"]]

    def outcome_problems(self, missing, acknowledged=()):
        """A problem for each remembered outcome whose events the journal does not hold as the token remembers
        them (``missing``: ``missing_outcomes()``), but those a rollover declared lost (``acknowledged``)."""
        problems = []
        for intent in missing:
            if intent in acknowledged:
                continue
            remembered, found = self.outcomes[intent], self.outcome_ranges.get(intent)
            if found is None:
                problems.append(
                    "the %d audit event(s) of the task whose intent is record %d are not in the journal: the token "
                    "remembers them, but no checkpoint record of this token after that intent names them (records "
                    "were deleted, or the task's outcome was never journaled); restore the journal from the log "
                    "store" % (remembered["events"], intent))
            else:
                problems.append(
                    "records %d to %d are not the audit events the token remembers of the task whose intent is record "
                    "%d: they were altered or replaced; restore the journal from the log store"
                    % (found[0], found[1], intent))
        return problems

    # ---- after the pass -------------------------------------------------------------------------------

    @property
    def ok_chain(self):
        return self.first_bad is None

    def finish(self):
        """The checks that need the whole journal: interrupted tasks and the interrupted last task."""
        self.interrupted = sorted(s for s, _h in self.open_intents.values())
        if self.ok_chain and self.interrupted and self.interrupted[-1] == self.last_intent:
            self.problems.append("the journal ends inside a task: intent record %d has no outcome (the run was "
                                 "interrupted, or the journal was truncated)" % self.interrupted[-1])


def _range_digest(lines, last_hash):
    """The outcome digest of the events of ``lines`` (format 2 records, bytes) if they form a chain that ends at the
    record whose hash the first pass saw (``last_hash``), else None (they are not the records the chain holds)."""
    texts, previous, stated = [], None, None
    for line in lines:
        try:
            prev_hash, content, stated = chain.split_record(line)
            texts.append(chain.event_text(content))
        except (chain.ChainError, UnicodeDecodeError):
            return None
        if (previous is not None and prev_hash != previous) \
                or chain.link(prev_hash, hashlib.sha256(content.encode("ascii")).hexdigest()) != stated:
            return None
        previous = stated
    return chain.outcome_digest(texts) if stated == last_hash else None


def _candidate(content):
    """Whether a format 2 record's event may be an intent, an outcome or carry a checkpoint (then JSON decides).

    The event is canonical JSON (keys sorted), so its ``keylifecycle`` section is the last top-level object key
    but ``labels`` and ``user``, and inside it ``checkpoint`` sorts before ``phase``: two short searches from the
    section's start instead of three over the whole record.
    """
    section = content.rfind(_SECTION)
    if section < 0:
        return False
    phase = content.find(_PHASE, section)
    if phase < 0:
        return content.find(_CHECKPOINT, section) >= 0
    tag = content[phase + 9:phase + 12]
    return tag in (b"int", b"out") or content.find(_CHECKPOINT, section, phase) >= 0


def _seq_problem(seq, expected_seq):
    return "sequence number %s where %d was expected: %s" % (
        seq, expected_seq, "record(s) deleted" if isinstance(seq, int) and seq > expected_seq else "records reordered")


def _check_anchor(verifier, anchor, what):
    """The token's pin or legacy checkpoint of this journal: valid, not past the journal's end, same record.

    Returns (problems, anchored seq or None)."""
    token = verifier.token
    if not signature_valid(anchor, token.public_keys):
        return ["the token's %s does not verify with its signing key" % what], None
    if anchor.get("previous_key_id") is not None and not signature_valid(
            anchor, token.public_keys, anchor.get("previous_key_id"), anchor.get("previous_signature")):
        return ["the token's %s carries a co-signature of key %s that does not verify" % (
            what, anchor.get("previous_key_id"))], None
    seq = anchor.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return ["the token's %s names no record (seq %r)" % (what, seq)], None
    if verifier.ok_chain and seq > verifier.head_seq:
        return ["the journal ends at record %d but the token's signed checkpoint anchors record %d: the journal was "
                "truncated" % (verifier.head_seq, seq)], None
    known = verifier.watch.get(seq)
    if known is not None and known != anchor.get("head_hash"):
        return ["record %d differs from the record the token's checkpoint signed: the journal was rewritten"
                % seq], None
    return [], seq if known is not None else None


def _stream(path):
    """The journal's lines as bytes (newline kept); nothing when the file does not exist."""
    try:
        handle = open(path, "rb")  # pylint: disable=consider-using-with
    except FileNotFoundError:
        return iter(())

    def lines():
        with handle:
            yield from handle
    return lines()


def _as_bytes(lines):
    for line in lines:
        if isinstance(line, str):
            line = line.encode("ascii", "replace")
        yield line if line.endswith(b"\n") else line + b"\n"


def verify_source(open_lines, token=None, expected_journal_id=None, since_seq=None, path=None, _depth=0,
                  outcomes=None, lost_outcomes=(), named_head=None):
    """Verify one journal whose lines ``open_lines()`` yields (a fresh iterator each call) against ``token``.

    ``token`` is a TokenView (``TokenView()`` when the token was not read). ``outcomes``: the finished tasks'
    outcomes the journal must hold (default: those the token's pin remembers of its journal; for an older journal
    of a rollover chain, those its successor's genesis names, but the ones it declared lost: ``lost_outcomes``,
    their intent seqs). Returns the report dict.
    """
    token = token if token is not None else TokenView()
    pin = token.pin if token.read else None
    if outcomes is None and pin:
        outcomes = pin.get("outcomes")
    verifier = _Verifier(token, expected_journal_id, since_seq, outcomes,
                         named_head if isinstance(named_head, int) and not isinstance(named_head, bool) else None)
    verifier.run(open_lines())
    if verifier.pending:
        verifier.resolve_pending(open_lines())
    verifier.resolve_outcomes(open_lines())
    verifier.finish()
    problems = []
    if not verifier.ok_chain:
        bad = verifier.first_bad
        problems.append("record on line %d (seq %s): %s" % (bad["line"], bad["seq"], bad["problem"]))
    problems += verifier.problems
    journal_id = verifier.journal_id or expected_journal_id
    missing = []
    if verifier.ok_chain and verifier.records and (pin is None or pin.get("journal_id") == journal_id):
        missing = verifier.missing_outcomes()
        problems += verifier.outcome_problems(missing, lost_outcomes)
    token_checkpoint, anchored = None, []
    if since_seq is not None and verifier.records == 0 and verifier.first_bad is None:
        problems.append("the journal has no record %d (since_seq): it ends before it" % since_seq)
    elif token.read:
        if verifier.records == 0 and since_seq is None:
            problems += _orphaned(token, expected_journal_id)
        elif pin and pin.get("journal_id") != journal_id:
            problems.append("the token names journal %s (pinned head record %s) and this file is journal %s: the "
                            "token's journal was deleted, replaced or diverted; restore journal %s from the log store, "
                            "or start a new journal with playbooks/audit_rollover.yml"
                            % (pin.get("journal_id"), pin.get("seq"), journal_id, pin.get("journal_id")))
        elif pin:
            token_checkpoint = pin
            found, seq = _check_anchor(verifier, pin, "pin of this journal")
            problems += found
            anchored.append(seq)
        legacy = token.checkpoints.get(journal_id) if journal_id else None
        if legacy is not None and verifier.records:
            if token_checkpoint is None or legacy.get("seq") != token_checkpoint.get("seq") \
                    or legacy.get("signature") != token_checkpoint.get("signature"):
                found, seq = _check_anchor(verifier, legacy, "checkpoint for this journal")
                problems += found
                anchored.append(seq)
            token_checkpoint = token_checkpoint or legacy
    anchors = [s for s in anchored if s is not None] + ([verifier.last_anchor] if verifier.last_anchor else [])
    last_anchor = max(anchors) if anchors else None
    if since_seq is not None and verifier.records:
        problems += _check_since(verifier, since_seq, since_seq in anchored or verifier.since_anchored)
    report = {
        "ok": False,
        "records": verifier.records,
        "head": {"seq": verifier.head_seq, "hash": verifier.head_hash},
        "journal_id": journal_id,
        "first_bad": verifier.first_bad,
        "problems": problems,
        "checkpoints_verified": verifier.verified,
        "outcomes_verified": sum(1 for intent, (_f, _l, digest) in verifier.outcome_ranges.items()
                                 if digest == verifier.outcomes[intent]["sha256"]),
        "outcomes_missing": missing,
        "other_token_checkpoints": verifier.other_token,
        "token_checkpoint": token_checkpoint,
        "token_pin": pin,
        "interrupted_intents": verifier.interrupted,
        "unanchored_records": (verifier.head_seq - last_anchor if last_anchor is not None
                               else verifier.records) if token.read else None,
        "last_anchored_seq": last_anchor,
        "since_seq": since_seq,
        "torn_tail": verifier.torn_tail,
        "previous_journal": verifier.genesis,
        "journals": [{"journal_id": journal_id, "path": path, "records": verifier.records,
                      "ok": not problems}],
        "named_head_hash": verifier.watch.get(named_head) if named_head is not None else None,
    }
    if verifier.genesis is not None:
        _follow_rollover(report, verifier.genesis, token, _depth)
    report["ok"] = not report["problems"]
    return report


def _orphaned(token, expected_journal_id):
    """A missing or empty journal while the token holds a signed checkpoint of it: deleted or replaced."""
    anchors = dict(token.checkpoints)
    if token.pin and token.pin.get("journal_id"):
        anchors[token.pin["journal_id"]] = token.pin
    orphaned = [anchors[j] for j in sorted(anchors) if expected_journal_id is None or j == expected_journal_id]
    if not orphaned:
        return []
    if token.pin and (expected_journal_id is None or token.pin.get("journal_id") == expected_journal_id):
        orphaned = [token.pin]
    return ["the journal is missing or empty, but the token holds a signed checkpoint of record %d of journal %s: "
            "the journal was deleted or replaced" % (orphaned[0]["seq"], orphaned[0]["journal_id"])]


def _check_since(verifier, since_seq, anchored):
    """A range is verified only from a record the token vouches for."""
    if not verifier.token.read:
        return ["since_seq %d cannot be checked without the token: a range is verified only from a record a "
                "signed checkpoint of the token anchors" % since_seq]
    if anchored:
        return []
    return ["record %d (since_seq) is not anchored by a signed checkpoint of this token in the journal or by the "
            "token's pin: verify from a checkpointed record, or the whole journal" % since_seq]


def _follow_rollover(report, previous, token, depth):
    """A rollover genesis: verify the journal it continues when its file is at hand, and that its head matches."""
    path, journal_id = previous.get("path"), previous.get("journal_id")
    entry = {"journal_id": journal_id, "path": path, "records": None, "ok": None}
    if not isinstance(path, str) or not path or not os.path.exists(path):
        entry["present"] = False
        report["journals"].append(entry)
        if previous.get("lost") is True:
            entry["lost"] = True  # declared lost at the rollover, which the token checked against its pin
        else:
            report["problems"].append(
                "previous journal %s is not at %s, where the rollover's genesis record says it was kept: the "
                "history before the rollover cannot be verified (it was deleted or moved after the rollover). Put "
                "the kept journal back there (from the log store or a backup) and verify again"
                % (journal_id, path))
        return
    if depth >= MAX_PREVIOUS_JOURNALS:
        entry["present"] = True
        entry["not_followed"] = "more than %d journals back" % MAX_PREVIOUS_JOURNALS
        report["journals"].append(entry)
        return
    lost_outcomes = previous.get("lost_outcomes") or []
    older = verify_source(lambda: _stream(path), token.for_previous_journal(), journal_id, path=path,
                          _depth=depth + 1, outcomes=previous.get("outcomes") or [], lost_outcomes=lost_outcomes,
                          named_head=previous.get("head_seq"))
    label = "previous journal %s (%s): " % (journal_id, path)
    problems = [label + p for p in older["problems"] if not p.startswith("previous journal ")] + [
        p for p in older["problems"] if p.startswith("previous journal ")]
    if older["journal_id"] != journal_id:
        problems.append(label + "the file holds journal %s" % older["journal_id"])
    elif older["first_bad"] is None and (older["head"]["seq"], older["head"]["hash"]) != (
            previous.get("head_seq"), previous.get("head_hash")):
        if previous.get("in_place") is True and isinstance(previous.get("head_seq"), int) \
                and older["head"]["seq"] > previous["head_seq"] and older["named_head_hash"] == previous.get("head_hash"):
            # continued where it is (a journal other tokens still write): it holds the named head, and more after it
            entry["continued"] = older["head"]["seq"] - previous["head_seq"]
        else:
            problems.append(label + "it ends at record %d (hash %s) but the rollover's genesis record names head "
                            "record %s (hash %s): the journal was changed after the rollover" % (
                                older["head"]["seq"], older["head"]["hash"], previous.get("head_seq"),
                                previous.get("head_hash")))
    entry.update(records=older["records"], ok=not problems, present=True)
    if lost_outcomes:  # declared lost at the rollover: the token's pin remembered them, the journal did not hold them
        entry["lost_outcomes"] = lost_outcomes
    report["problems"] += problems
    report["journals"].append(entry)
    report["journals"] += older["journals"][1:]


def missing_outcomes(path, outcomes):
    """The intent seqs of ``outcomes`` (finished tasks a token's pin remembers) whose audit events the journal at
    ``path`` does not hold as remembered (audit_rollover declares them lost)."""
    verifier = _Verifier(TokenView(), outcomes=outcomes)
    verifier.run(_stream(path))
    verifier.resolve_outcomes(_stream(path))
    return verifier.missing_outcomes()


def verify_journal_file(path, token_result=None, expected_journal_id=None, since_seq=None):
    """Verify the journal at ``path``; ``token_result`` is the module half's result (None: token not read)."""
    return verify_source(lambda: _stream(path), TokenView(token_result), expected_journal_id, since_seq, path=path)


def verify_journal(lines, token_checkpoints=None, public_keys=None, expected_journal_id=None, since_seq=None,
                   **token_fields):
    """Verify a journal given as a list of lines (str or bytes); the token's legacy checkpoints by journal id.

    ``token_checkpoints`` None (and no ``token_fields``) means the token was not read: signatures are not checked.
    ``token_fields`` are more of the module half's result: ``token_pin``, ``token_label``, ``token_serial``.
    """
    token = TokenView()
    if token_checkpoints is not None or token_fields:
        token = TokenView(dict(token_fields, token_checkpoints=token_checkpoints or {},
                               checkpoint_public_keys=public_keys or {}))
    return verify_source(lambda: _as_bytes(lines), token, expected_journal_id, since_seq)
