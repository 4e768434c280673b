# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Compare the audit journal with its acknowledged copy in the PostgreSQL store, record by record.

PRIVATE: not part of the public interface. Controller-only (audit_verify's action plugin).

The audit callback counts a record as delivered to PostgreSQL only once the transaction holding its INSERT is
committed (``_stores.PostgresStore.deliver``), so the store's table is the journal's acknowledged copy (syslog
over TLS is not: it has no acknowledgement). ``compare_with_store`` reports, by record id:

- ``missing``: records of the journal the store does not hold (not shipped yet, or deleted from the store);
- ``extra``: rows of the store the journal does not hold (deleted from the journal, or inserted into the store);
- ``altered``: the same record id on both sides with a different ``seq``, ``hash`` or ``line`` (the line is
  compared byte for byte).

Both sides are streamed in ``seq`` order and merged, so memory stays flat in the journal's size: only records
that do not match at their ``seq`` are held (by record id, with a digest of their line) until the other side
shows them or ends, so a row whose ``seq`` was altered in the store is still reported as altered, not as missing
plus extra. Lists hold at most ``limit`` record ids each (lowest ``seq`` first); the counts are exact.

The journal's lines may be format 1 (sorted-key JSON) or format 2 (``module_utils._journal_chain``: the record id
is read from the fixed-order prefix with ``parse_head``, the event is not decoded). This module does not check the
chain (audit_verify does): a line that is not a record is counted as ``unreadable`` and skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from ansible_collections.secops.keylifecycle.plugins.module_utils import _journal_chain

DEFAULT_LIMIT = 100


class _Ids:
    """A count and the ``limit`` record ids with the lowest seq."""

    def __init__(self, limit):
        self.count = 0
        self._limit = limit
        self._items = []

    def add(self, seq, record_id):
        self.count += 1
        self._items.append((seq, record_id))
        if len(self._items) > 2 * self._limit + 64:
            self._items.sort()
            del self._items[self._limit:]

    def ids(self):
        self._items.sort()
        return [record_id for _seq, record_id in self._items[:self._limit]]


def journal_entry(line):
    """``(seq, record_id, hash, line, journal_id)`` of one journal line (str or bytes, newline optional).

    Raises ValueError when the line is not a journal record.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8")
    line = line.rstrip("\n")
    if _journal_chain.is_format2(line):
        _prev, content, record_hash = _journal_chain.split_record(line)
        seq, journal_id, record_id, _at = _journal_chain.parse_head(content)
        return seq, record_id, record_hash, line, journal_id
    fields = json.loads(line)
    if not isinstance(fields, dict):
        raise ValueError("not a journal record")
    seq, record_id, record_hash, journal_id = (fields.get(k) for k in ("seq", "record_id", "hash", "journal_id"))
    if isinstance(seq, bool) or not isinstance(seq, int) or not all(
            isinstance(value, str) for value in (record_id, record_hash, journal_id)):
        raise ValueError("not a journal record")
    return seq, record_id, record_hash, line, journal_id


def first_journal_id(lines):
    """The journal id of the first readable record of ``lines`` (an iterable of lines), or None."""
    for line in lines:
        try:
            return journal_entry(line)[4]
        except ValueError:
            continue
    return None


def _store_entries(store_records):
    """``(seq, record_id, hash, line)`` from a mapping or from ``(record_id, (seq, hash, line))`` pairs."""
    if isinstance(store_records, Mapping):
        items = sorted(store_records.items(), key=lambda item: (item[1][0], str(item[0])))
    else:
        items = store_records
    for record_id, (seq, record_hash, line) in items:
        yield seq, str(record_id), record_hash, line


def _digest(line):
    return hashlib.sha256(line.encode("utf-8", "surrogateescape")).digest()


def compare_with_store(journal_lines, store_records, journal_id=None, limit=DEFAULT_LIMIT):
    """Compare a journal with the store's copy of it; see the module docstring.

    ``journal_lines``: the journal's lines (str or bytes; an open binary file will do), in order.
    ``store_records``: ``(record_id, (seq, hash, line))`` pairs in ``seq`` order (``PostgresStore.fetch_records``),
    or a mapping record_id -> (seq, hash, line). ``journal_id``: when given, journal lines of other journals are
    skipped (counted in ``other_journal``). Returns ``{"ok", "compared", "matched", "store_records",
    "missing", "missing_count", "extra", "extra_count", "altered", "altered_count", "unreadable",
    "other_journal", "limit"}``; the lists are record ids.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError("limit must be a number of record ids (0 or more), got %r" % (limit,))
    tally = {"compared": 0, "matched": 0, "store_records": 0, "unreadable": 0, "other_journal": 0}
    missing, extra, altered = _Ids(limit), _Ids(limit), _Ids(limit)
    held_journal, held_store = {}, {}  # record_id -> (seq, hash, line digest): not matched at their seq yet

    def journal_side():
        for line in journal_lines:
            if not line.strip():
                continue
            try:
                seq, record_id, record_hash, text, line_journal = journal_entry(line)
            except (ValueError, UnicodeDecodeError):
                tally["unreadable"] += 1
                continue
            if journal_id is not None and line_journal != journal_id:
                tally["other_journal"] += 1
                continue
            tally["compared"] += 1
            yield seq, record_id, record_hash, text

    def store_side():
        for entry in _store_entries(store_records):
            tally["store_records"] += 1
            yield entry

    def settle(record_id, journal_key, store_key):
        if journal_key == store_key:
            tally["matched"] += 1
        else:
            altered.add(journal_key[0], record_id)

    def journal_only(entry, final=False):
        seq, record_id, record_hash, line = entry
        key = (seq, record_hash, _digest(line))
        if record_id in held_store:
            settle(record_id, key, held_store.pop(record_id))
        elif final:
            missing.add(seq, record_id)
        else:
            held_journal[record_id] = key

    def store_only(entry, final=False):
        seq, record_id, record_hash, line = entry
        key = (seq, record_hash, _digest(line))
        if record_id in held_journal:
            settle(record_id, held_journal.pop(record_id), key)
        elif final:
            extra.add(seq, record_id)
        else:
            held_store[record_id] = key

    journal, store = journal_side(), store_side()
    j, s = next(journal, None), next(store, None)
    while j is not None and s is not None:
        if j[1] == s[1]:
            if j[0] == s[0] and j[2] == s[2] and j[3] == s[3]:
                tally["matched"] += 1
            else:
                altered.add(j[0], j[1])
            j, s = next(journal, None), next(store, None)
        elif (j[0], j[1]) < (s[0], s[1]):
            journal_only(j)
            j = next(journal, None)
        else:
            store_only(s)
            s = next(store, None)
    while j is not None:  # the store has ended: what is not held from it is missing
        journal_only(j, final=True)
        j = next(journal, None)
    while s is not None:  # the journal has ended: what is not held from it is extra
        store_only(s, final=True)
        s = next(store, None)
    for record_id, key in held_journal.items():
        missing.add(key[0], record_id)
    for record_id, key in held_store.items():
        extra.add(key[0], record_id)
    result = dict(tally, missing=missing.ids(), missing_count=missing.count, extra=extra.ids(),
                  extra_count=extra.count, altered=altered.ids(), altered_count=altered.count, limit=limit)
    result["ok"] = not (missing.count or extra.count or altered.count)
    return result


def compare_journal_with_store(journal_path, store, journal_id=None, since_seq=0, limit=DEFAULT_LIMIT):
    """Compare the journal file at ``journal_path`` with ``store`` (a ``_stores.PostgresStore``).

    The journal id is the first readable record's unless given. Records with ``seq <= since_seq`` are left out
    on both sides. Returns ``compare_with_store``'s result plus ``journal_id`` and ``store`` (the store's name,
    no password); raises ``_stores.StoreUnavailable`` when the store cannot be read, and OSError when the journal
    cannot.
    """
    if journal_id is None:
        with open(journal_path, "rb") as handle:
            journal_id = first_journal_id(handle)
    if journal_id is None:  # an empty journal: nothing to look up
        result = compare_with_store([], [], limit=limit)
    else:
        with store.fetch_records(journal_id, since_seq=since_seq) as rows, open(journal_path, "rb") as handle:
            lines = handle if not since_seq else _after(handle, since_seq)
            result = compare_with_store(lines, rows, journal_id=journal_id, limit=limit)
    result.update(journal_id=journal_id, store=store.name)
    return result


def _after(lines, since_seq):
    """The lines whose record has ``seq > since_seq`` (unreadable lines are passed on, to be counted)."""
    for line in lines:
        try:
            if journal_entry(line)[0] <= since_seq:
                continue
        except (ValueError, UnicodeDecodeError):
            pass
        yield line
