"""Real journal records for in-process module runs: what the lifecycle action plugin sends the module.

A lifecycle module changes the token only with a journaled intent (``audit_context``: journal id, the intent's
seq and hash, and the proof that it extends the journal's last checkpoint of the token). ``MemoryJournal`` keeps
format 2 records in memory, built with ``_journal_chain.encode_record`` (real records, real hashes), and gives
the ``audit_context`` of the next intent as the controller would (``journal_proof`` from the last
``audit-checkpoint`` record of the token, or the "no anchor known" proof).
"""

from __future__ import annotations

import uuid


def _chain():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _journal_chain

    return _journal_chain


def _context(operator="alice"):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext

    return AuditContext(operator, "test", str(uuid.uuid4()), host="controller", intent_id=str(uuid.uuid4()))


class MemoryJournal:
    """One journal's records (format 2) in memory."""

    def __init__(self, journal_id=None):
        self.journal_id = journal_id or str(uuid.uuid4())
        #: (line, hash, digest) of each record, seq = index + 1
        self.records = []

    @property
    def head(self):
        """(seq, hash) of the last record; (0, GENESIS_HASH) for an empty journal."""
        if not self.records:
            return 0, _chain().GENESIS_HASH
        return len(self.records), self.records[-1][1]

    def append(self, event):
        """Append one event as a record; returns (seq, hash)."""
        _seq, prev = self.head
        seq = len(self.records) + 1
        line, record_hash, digest = _chain().encode_record(prev, seq, self.journal_id, str(uuid.uuid4()),
                                                           "2025-01-01T00:00:00.000000+00:00", event)
        self.records.append((line, record_hash, digest))
        return seq, record_hash

    def event(self, action="key-generate", phase="intent", **extra):
        from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event

        return build_event(action, "success" if phase != "intent" else "unknown", _context(), phase=phase,
                           extra=extra or None)

    def proof(self, token_label, intent_seq):
        """The ``journal_proof`` the controller sends: from the last audit-checkpoint record of ``token_label``."""
        chain = _chain()
        start = None
        for line, _hash, _digest in reversed(self.records[:intent_seq]):
            record = chain.decode_record(line)
            checkpoint = record["event"].get("keylifecycle", {}).get("checkpoint")
            if record["event"]["event"]["action"] == "audit-checkpoint" and checkpoint \
                    and checkpoint.get("token_label") == token_label:
                start = int(checkpoint["seq"])
                break
        if start is None:
            return {"start_seq": intent_seq, "start_hash": self.records[intent_seq - 1][1], "digests": []}
        return {"start_seq": start, "start_hash": self.records[start - 1][1],
                "digests": [digest for _line, _hash, digest in self.records[start:intent_seq]]}

    def intent(self, token_label, action="key-generate", event=None):
        """Journal an intent; return the module's ``audit_context`` for it."""
        seq, record_hash = self.append(event or self.event(action))
        return {"operator": "alice", "operator_source": "test", "run_id": str(uuid.uuid4()),
                "intent_id": str(uuid.uuid4()), "host": "controller", "journal_id": self.journal_id,
                "intent_seq": seq, "intent_hash": record_hash, "journal_proof": self.proof(token_label, seq)}

    def lines(self):
        """The journal's lines, as a file holds them."""
        return [line + "\n" for line, _hash, _digest in self.records]

    def outcome(self, result):
        """Journal what the module returned: its changes, its checkpoint (an audit-checkpoint record), the end."""
        for event in result.get("audit_events") or ():
            self.append(event)
        checkpoint = result.get("audit_checkpoint")
        if checkpoint:
            self.append(self.event("audit-checkpoint", phase="change", checkpoint=checkpoint))
        self.append(self.event("key-update", phase="outcome"))

    def rollover_genesis(self, previous, lost=False, path="/var/lib/old.jsonl", outcomes=None):
        """This (empty) journal's record 1: the rollover intent naming ``previous`` (a MemoryJournal or a dict
        {journal_id, head_seq, head_hash}) and the ``outcomes`` the token's pin remembers of it, as the action
        plugin names them; returns the module's ``audit_context``."""
        assert not self.records
        if isinstance(previous, MemoryJournal):
            head_seq, head_hash = previous.head
            previous = {"journal_id": previous.journal_id, "head_seq": head_seq, "head_hash": head_hash}
        named = dict(previous, path=path, lost=lost)
        if outcomes:
            named["outcomes"] = outcomes
        seq, record_hash = self.append(self.event("audit-journal-rollover", previous_journal=named))
        return {"operator": "alice", "operator_source": "test", "run_id": str(uuid.uuid4()),
                "intent_id": str(uuid.uuid4()), "host": "controller", "journal_id": self.journal_id,
                "intent_seq": seq, "intent_hash": record_hash,
                "journal_proof": {"start_seq": seq, "start_hash": record_hash, "digests": []},
                "journal_rollover": {"genesis": self.records[0][0]}}
