# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""At-least-once shipping of journal records to the server log stores.

PRIVATE: not part of the public interface.

For each (journal, store) pair a cursor file beside the journal
(``<journal>.shipped-<store id>.json``) holds the journal id and the last sequence
number the store acknowledged. Records after the cursor are delivered in order and
the cursor is advanced (atomically, fsync'ed) only past what the store acknowledged,
so a store that was down gets every record once it is back, and a record is sent
again only if a delivery was cut off before its acknowledgement (the record id is
the idempotency key: PostgreSQL ignores a known id; syslog readers deduplicate on it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager

from ansible_collections.secops.keylifecycle.plugins.plugin_utils._files import write_atomically
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import Journal

BATCH = 500


def _cursor_path(journal, store):
    return "%s.shipped-%s.json" % (journal.path, hashlib.sha256(store.cursor_key.encode()).hexdigest()[:16])


def read_cursor(journal, store):
    try:
        with open(_cursor_path(journal, store), encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return {"journal_id": None, "seq": 0}


def _write_cursor(journal, store, journal_id, seq):
    write_atomically(_cursor_path(journal, store),
                     json.dumps({"store": store.cursor_key, "journal_id": journal_id, "seq": seq}), durable=True)


class Shipper:
    """Delivers the records of journals to stores, remembering per store when it last failed."""

    def __init__(self, stores, retry_after=10.0, clock=time.monotonic):
        self.stores = list(stores)
        self.retry_after = retry_after
        self.clock = clock
        self._down_since = {}

    def ship(self, journal_paths, force=False):
        """Ship every pending record; return ``{store name: {"delivered": n, "pending": m, "error": str|None}}``."""
        report = {store.name: {"delivered": 0, "pending": 0, "error": None} for store in self.stores}
        for path in dict.fromkeys(journal_paths):
            journal = Journal(path)
            if not journal.exists():
                continue
            with self._shipping_lock(journal):
                everything = journal.records_after(0)  # read once, shared by every store
                for store in self.stores:
                    self._ship_one(journal, everything, store, report[store.name], force)
        return report

    def _ship_one(self, journal, everything, store, entry, force):
        down = self._down_since.get(store.name)
        cursor = read_cursor(journal, store)
        records = everything
        if everything and cursor["journal_id"] == everything[0].journal_id:
            records = [record for record in everything if record.seq > cursor["seq"]]
        # else: nothing shipped yet, or the journal was replaced: start it again
        if not force and down is not None and self.clock() - down < self.retry_after:
            entry["pending"] += len(records)
            return
        while records:
            batch = records[:BATCH]
            try:
                count = store.deliver(batch)
            except Exception as exc:  # pylint: disable=broad-except
                # Any failure leaves the records queued; the message never holds secrets (see _stores).
                self._down_since[store.name] = self.clock()
                entry["error"] = str(exc)
                entry["pending"] += len(records)
                return
            self._down_since.pop(store.name, None)
            if count:
                _write_cursor(journal, store, batch[count - 1].journal_id, batch[count - 1].seq)
                entry["delivered"] += count
            records = records[count:]
            if count < len(batch):
                entry["pending"] += len(records)
                return

    @staticmethod
    @contextmanager
    def _shipping_lock(journal):
        """One shipper per journal at a time (two playbooks finishing together ship once)."""
        fd = os.open(journal.path + ".ship.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
