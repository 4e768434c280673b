# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The audit journal's hash chain: the one place that knows how a record is linked to the one before it.

PRIVATE: not part of the public interface. docs/audit.md documents the format for auditors; keep the two in step.

Shared by the controller (``plugin_utils._journal`` writes records, ``plugin_utils._audit_verification``
re-checks them) and the HSM host (``_checkpoint`` checks that the intent it anchors extends the head the token
pinned), so it imports nothing but the standard library.

A record (format 2) is one line of ASCII JSON with a fixed field order; ``event`` is canonical JSON (keys sorted,
no spaces)::

    {"prev_hash":"<P>","seq":N,"journal_id":"J","record_id":"R","recorded_at":"T","event":{...},"hash":"<H>"}

- ``content`` is the bytes between the ``prev_hash`` field and the ``hash`` field: ``line[79:-75]``, which starts
  with ``,"seq":`` and ends with the event's closing brace;
- ``digest = SHA-256(content)``;
- ``H = SHA-256(bytes.fromhex(P) + bytes.fromhex(digest))``, and ``P`` is the previous record's ``H`` (64 zeros
  for a journal's first record).

Verifying a journal hashes the stored bytes: no JSON is decoded or re-encoded per record. And because ``H``
depends on the content only through its digest, that a later head extends an earlier one is proven by the
digests of the records in between, 32 bytes each (``extends``): that is what the controller sends the HSM host
with every intent, and what the token's pin is checked against.

Format 1 records (written before the pin existed) are canonical JSON with sorted keys, ``hash`` being the
SHA-256 of the canonical JSON of the record without ``hash``; they are still verified (``legacy_record_hash``),
and a format 2 record may follow one (its ``P`` is the format 1 record's hash).
"""

from __future__ import annotations

import hashlib
import json
import re

GENESIS_HASH = "0" * 64

_PREFIX = '{"prev_hash":"'
_SUFFIX_START = ',"hash":"'
#: len('{"prev_hash":"') + 64 + len('"')
CONTENT_START = len(_PREFIX) + 64 + 1
#: len(',"hash":"') + 64 + len('"}')
SUFFIX_LENGTH = len(_SUFFIX_START) + 64 + 2
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_HEAD = re.compile(r',"seq":([1-9][0-9]{0,17}),"journal_id":"([0-9a-f-]{36})","record_id":"([0-9a-f-]{36})",'
                   r'"recorded_at":"([^"\\]{1,64})","event":\{')
_HEAD_BYTES = re.compile(_HEAD.pattern.encode("ascii"))


class ChainError(ValueError):
    """A record or a proof does not hold together; the message says what is wrong, in words."""


def canonical_json(value):
    """Keys sorted, no spaces, ASCII: the form of every event (and of format 1 records)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def link(prev_hash, digest):
    """The hash of a record whose predecessor's hash is ``prev_hash`` and whose content digest is ``digest``."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + bytes.fromhex(digest)).hexdigest()


def encode_record(prev_hash, seq, journal_id, record_id, recorded_at, event):
    """One format 2 record: ``(line, hash, digest)``; the line has no newline."""
    content = ',"seq":%d,"journal_id":"%s","record_id":"%s","recorded_at":"%s","event":%s' % (
        seq, journal_id, record_id, recorded_at, canonical_json(event))
    digest = hashlib.sha256(content.encode("ascii")).hexdigest()
    record_hash = link(prev_hash, digest)
    return "%s%s\"%s%s%s\"}" % (_PREFIX, prev_hash, content, _SUFFIX_START, record_hash), record_hash, digest


def is_format2(line):
    """Whether ``line`` (str or bytes, without newline) is laid out as a format 2 record."""
    if isinstance(line, bytes):
        return line.startswith(b'{"prev_hash":"')
    return line.startswith(_PREFIX)


def split_record(line):
    """``(prev_hash, content, hash)`` of a format 2 line (str or bytes); ChainError when it is not laid out as one."""
    text = line.decode("ascii") if isinstance(line, bytes) else line
    if len(text) <= CONTENT_START + SUFFIX_LENGTH or not text.startswith(_PREFIX) or not text.endswith('"}') \
            or text[-SUFFIX_LENGTH:-SUFFIX_LENGTH + len(_SUFFIX_START)] != _SUFFIX_START \
            or text[CONTENT_START - 1] != '"':
        raise ChainError("not laid out as a journal record")
    prev_hash, record_hash = text[len(_PREFIX):CONTENT_START - 1], text[-66:-2]
    if not _HEX64.match(prev_hash) or not _HEX64.match(record_hash):
        raise ChainError("not laid out as a journal record")
    return prev_hash, text[CONTENT_START:-SUFFIX_LENGTH], record_hash


def record_digest(line):
    """The content digest of a format 2 line (what a proof of extension carries for it)."""
    return hashlib.sha256(split_record(line)[1].encode("ascii")).hexdigest()


def parse_head(content):
    """``(seq, journal_id, record_id, recorded_at)`` from a format 2 record's content (str or bytes)."""
    match = (_HEAD_BYTES if isinstance(content, bytes) else _HEAD).match(content)
    if not match:
        raise ChainError("the record's fields are not in the journal's order")
    seq, journal_id, record_id, recorded_at = match.groups()
    if isinstance(content, bytes):
        journal_id, record_id, recorded_at = journal_id.decode(), record_id.decode(), recorded_at.decode()
    return int(seq), journal_id, record_id, recorded_at


def decode_record(line):
    """A format 2 line as a dict (the fields, including ``event``), after checking its own hash."""
    prev_hash, content, record_hash = split_record(line)
    if link(prev_hash, hashlib.sha256(content.encode("ascii")).hexdigest()) != record_hash:
        raise ChainError("the hash does not match the record's content: the record was modified")
    fields = json.loads(line if isinstance(line, str) else line.decode("ascii"))
    return fields


def event_text(content):
    """The event of a format 2 record's content (str or bytes) as it is stored: its canonical JSON."""
    match = (_HEAD_BYTES if isinstance(content, bytes) else _HEAD).match(content)
    if not match:
        raise ChainError("the record's fields are not in the journal's order")
    return content[match.end() - 1:]


def outcome_digest(event_texts):
    """The digest a token's pin keeps of one task's audit events (``_journal_pin``, docs/audit.md): SHA-256 of
    each event's canonical JSON (str or bytes) followed by a newline, in the order the events were returned. The
    journal holds them as the records just before the task's ``audit-checkpoint`` record."""
    digest = hashlib.sha256()
    for text in event_texts:
        digest.update(text.encode("ascii") if isinstance(text, str) else text)
        digest.update(b"\n")
    return digest.hexdigest()


def is_task_outcome(value):
    """Whether ``value`` is a task's outcome as a pin remembers it: ``{intent_seq, events, sha256}``."""
    return isinstance(value, dict) and set(value) == {"intent_seq", "events", "sha256"} \
        and all(isinstance(value[f], int) and not isinstance(value[f], bool) and value[f] >= 0
                for f in ("intent_seq", "events")) \
        and isinstance(value["sha256"], str) and len(value["sha256"]) == 64


def legacy_record_hash(fields):
    """Format 1: SHA-256 of the canonical JSON of a record without its ``hash`` field."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


def extends(start_seq, start_hash, digests, head_seq, head_hash, pin_seq, pin_hash):
    """Check that record ``head_seq`` (hash ``head_hash``) extends the pinned record ``pin_seq`` (``pin_hash``).

    The proof starts at record ``start_seq`` whose hash is ``start_hash`` (0 and GENESIS_HASH for a journal's
    beginning) and gives the content digest of every record after it up to ``head_seq``. The pinned record must
    lie on that stretch (``start_seq <= pin_seq <= head_seq``) and the running hash must pass through
    ``pin_hash`` there. Raises ChainError naming what does not hold.
    """
    if not isinstance(digests, (list, tuple)):
        raise ChainError("the proof's digests are not 64 hex digits each")
    if head_seq - start_seq != len(digests):
        raise ChainError("the proof gives %d digests for records %d to %d" % (len(digests), start_seq + 1, head_seq))
    if pin_seq > head_seq:
        raise ChainError("the journal's record %d is behind the token's head, record %d" % (head_seq, pin_seq))
    if pin_seq == head_seq and pin_hash != head_hash:
        raise ChainError("record %d differs from the record the token pinned" % pin_seq)
    proof_passes_through(start_seq, start_hash, digests, {pin_seq: pin_hash, head_seq: head_hash})


def proof_passes_through(start_seq, start_hash, digests, marks):
    """Walk a proof (records ``start_seq``+1 onwards, by content digest) and check that its running hash is
    ``marks[seq]`` at each marked record; return ``(end_seq, end_hash)``, the last record the proof reaches.

    ``marks`` maps a sequence number to the hash the record must have there: the token's pinned head and the
    task's intent. A mark outside ``start_seq .. end_seq`` raises ChainError saying on which side it lies, so the
    caller can tell a journal behind the token's head from one that does not reach back to it.
    """
    if not isinstance(digests, (list, tuple)) or not all(isinstance(d, str) and _HEX64.match(d) for d in digests):
        raise ChainError("the proof's digests are not 64 hex digits each")
    if not _HEX64.match(str(start_hash)) or not all(_HEX64.match(str(h)) for h in marks.values()):
        raise ChainError("a hash in the proof is not 64 hex digits")
    if isinstance(start_seq, bool) or not isinstance(start_seq, int) or start_seq < 0:
        raise ChainError("the proof's start is not a record number")
    end_seq = start_seq + len(digests)
    for seq in marks:
        if seq < start_seq:
            raise ChainError("the proof starts at record %d, after record %d" % (start_seq, seq))
        if seq > end_seq:
            raise ChainError("the proof ends at record %d, before record %d" % (end_seq, seq))
    running = start_hash
    if start_seq in marks and marks[start_seq] != running:
        raise ChainError("record %d differs from the one expected" % start_seq)
    for seq, digest in enumerate(digests, start_seq + 1):
        running = link(running, digest)
        if seq in marks and marks[seq] != running:
            raise ChainError("record %d differs from the one expected" % seq)
    return end_seq, running
