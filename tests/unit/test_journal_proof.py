"""The proof of extension the controller sends with every intent (Journal.proof_since), and what it reads."""

from __future__ import annotations

import base64

import pytest


def _mods():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _journal_chain
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _journal

    return _journal, _journal_chain


def _context():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext

    return AuditContext("alice", "inventory", "run-1", host="ctl")


def _checkpoint(journal_id, seq, head_hash, token_label="tokA"):
    """An audit-checkpoint event as the lifecycle action journals it."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event

    checkpoint = {"journal_id": journal_id, "seq": seq, "head_hash": head_hash,
                  "signed_at": "2025-01-01T00:00:00+00:00",
                  "signature": base64.b64encode(b"s" * 64).decode(), "key_id": "ab" * 8, "key_version": 1,
                  "public_key_fingerprint": "sha256:" + "0" * 64}
    if token_label is not None:
        checkpoint["token_label"] = token_label
    return build_event("audit-checkpoint", "success", _context(),
                       extra={"module": "secops.keylifecycle.key_generate", "checkpoint": checkpoint})


def _event(n):
    return {"event": {"action": "key-generate", "n": n}}


def _holds(proof, intent, pin_seq, pin_hash):
    """The HSM host's check (section 1 of the design): the intent extends the pinned record."""
    _journal, chain = _mods()
    chain.extends(proof["start_seq"], proof["start_hash"], proof["digests"], intent.seq, intent.hash,
                  pin_seq, pin_hash)
    return True


def _no_anchor(proof, intent):
    return proof == {"start_seq": intent.seq, "start_hash": intent.hash, "digests": []}


def _task(journal, token_label="tokA", changes=2):
    """One lifecycle task: intent, changes, checkpoint of the intent, outcome. Returns (intent, checkpoint rec)."""
    intent = journal.append([_event("intent")])[0]
    checkpoint = _checkpoint(intent.journal_id, intent.seq, intent.hash, token_label)
    records = journal.append([_event("change")] * changes + [checkpoint, _event("outcome")])
    return intent, records[-2]


def test_proof_from_the_last_checkpoint_of_the_token(tmp_path):
    mod, chain = _mods()
    journal = mod.Journal(tmp_path / "journal.jsonl")
    first, _anchor_record = _task(journal)
    anchored, _anchor_record = _task(journal)
    _task(journal, token_label="tokB")  # another token's later checkpoint is not this token's anchor
    intent = journal.append([_event("intent")])[0]
    proof = journal.proof_since("tokA", intent.seq)
    assert proof["start_seq"] == anchored.seq and proof["start_hash"] == anchored.hash
    assert len(proof["digests"]) == intent.seq - anchored.seq
    lines = journal.read_lines()
    assert proof["digests"] == [chain.record_digest(line) for line in lines[anchored.seq:intent.seq]]
    assert _holds(proof, intent, anchored.seq, anchored.hash)
    with pytest.raises(chain.ChainError):  # the older checkpoint is not where the proof starts
        _holds(proof, intent, first.seq, first.hash)
    latest = journal.proof_since(None, intent.seq)  # any token: tokB's checkpoint
    assert latest["start_seq"] == intent.seq - 5 and _holds(latest, intent, latest["start_seq"],
                                                            latest["start_hash"])


def test_no_checkpoint_of_the_token_gives_the_no_anchor_proof(tmp_path):
    mod, _chain = _mods()
    journal = mod.Journal(tmp_path / "journal.jsonl")
    _task(journal, token_label="tokB")
    _task(journal, token_label=None)  # a checkpoint before token labels were journaled
    intent = journal.append([_event("intent")])[0]
    assert _no_anchor(journal.proof_since("tokA", intent.seq), intent)
    assert journal.proof_since(None, intent.seq)["start_seq"] == intent.seq - 5
    first = mod.Journal(tmp_path / "new.jsonl").append([_event("intent")])[0]
    assert _no_anchor(mod.Journal(tmp_path / "new.jsonl").proof_since("tokA", 1), first)


def test_records_after_the_intent_and_a_torn_tail_are_left_out(tmp_path):
    mod, _chain = _mods()
    journal = mod.Journal(tmp_path / "journal.jsonl")
    anchored, _anchor_record = _task(journal)
    intent = journal.append([_event("intent")])[0]
    _task(journal)  # another task on the same journal (another token lock) got in after the intent
    with open(journal.path, "ab") as handle:
        handle.write(b'{"prev_hash":"00')
    proof = journal.proof_since("tokA", intent.seq)
    assert proof["start_seq"] == anchored.seq and _holds(proof, intent, anchored.seq, anchored.hash)


def test_a_format_1_record_in_the_stretch_gives_the_no_anchor_proof(tmp_path):
    mod, chain = _mods()
    from tests.unit.test_journal import _legacy_lines

    path = tmp_path / "journal.jsonl"
    legacy = _legacy_lines(4)
    path.write_text("\n".join(legacy) + "\n")
    journal = mod.Journal(path)
    old = mod.JournalRecord.parse(legacy[2])
    # a checkpoint (format 2) anchoring format 1 record 3: record 4, in the stretch, has no digest
    journal.append([_checkpoint(old.journal_id, 3, old.hash)])
    intent = journal.append([_event("intent")])[0]
    assert _no_anchor(journal.proof_since("tokA", intent.seq), intent)
    # anchored at the last format 1 record: its hash starts the proof
    last = mod.JournalRecord.parse(legacy[3])
    journal.append([_checkpoint(last.journal_id, 4, last.hash)])
    intent = journal.append([_event("intent")])[0]
    proof = journal.proof_since("tokA", intent.seq)
    assert proof["start_seq"] == 4 and proof["start_hash"] == last.hash and len(proof["digests"]) == 4
    assert _holds(proof, intent, 4, last.hash)
    assert chain.is_format2(journal.read_lines()[4])


def test_a_checkpoint_anchoring_nothing_before_it_gives_the_no_anchor_proof(tmp_path):
    mod, _chain = _mods()
    journal = mod.Journal(tmp_path / "journal.jsonl")
    first = journal.append([_event("intent")])[0]
    journal.append([_checkpoint(first.journal_id, 50, first.hash)])
    intent = journal.append([_event("intent")])[0]
    assert _no_anchor(journal.proof_since("tokA", intent.seq), intent)
    other = journal.append([_checkpoint("0" * 8 + "-0000-0000-0000-" + "0" * 12, 1, first.hash)])[0]
    intent = journal.append([_event("intent")])[0]  # another journal's checkpoint is no anchor either
    assert other.seq == intent.seq - 1 and _no_anchor(journal.proof_since("tokA", intent.seq), intent)


def test_an_intent_not_in_the_journal_is_an_error(tmp_path):
    mod, _chain = _mods()
    journal = mod.Journal(tmp_path / "journal.jsonl")
    journal.append([_event(1)])
    with pytest.raises(mod.JournalError, match="holds no record 5"):
        journal.proof_since("tokA", 5)
    with pytest.raises(mod.JournalError, match="deleted"):
        mod.Journal(tmp_path / "missing.jsonl").proof_since("tokA", 1)


def test_proof_reads_only_the_tail_of_a_large_journal(tmp_path, monkeypatch):
    """100k records: the proof reads the blocks of its stretch, not the journal (bytes counted, not timed)."""
    mod, _chain = _mods()
    journal = mod.Journal(tmp_path / "journal.jsonl")
    journal.append([_event(n) for n in range(100000)])
    anchored, _anchor_record = _task(journal)
    _task(journal, token_label="tokB")
    journal.append([_event(n) for n in range(20)])
    intent = journal.append([_event("intent")])[0]
    size = (tmp_path / "journal.jsonl").stat().st_size
    assert intent.seq > 100000 and size > 4_000_000
    reads = []

    def counting_pread(fd, length, offset):
        reads.append((offset, length))
        return pread(fd, length, offset)

    pread = mod._pread
    monkeypatch.setattr(mod, "_pread", counting_pread)
    proof = journal.proof_since("tokA", intent.seq)
    assert _holds(proof, intent, anchored.seq, anchored.hash)
    assert len(proof["digests"]) == intent.seq - anchored.seq == 30
    read = sum(length for _offset, length in reads)
    stretch = size - len(("\n".join(journal.read_lines()[:anchored.seq - 1]) + "\n").encode())
    assert read <= stretch + mod.BLOCK_SIZE and read < size / 20
    assert min(offset for offset, _length in reads) >= size - stretch - mod.BLOCK_SIZE
    reads.clear()
    assert journal.tail()[1] == intent.seq
    assert sum(length for _offset, length in reads) <= mod.BLOCK_SIZE


@pytest.mark.parametrize("block", [1, 7, 64, 4096])
def test_backwards_reader_gives_every_line_across_block_boundaries(tmp_path, monkeypatch, block):
    import os
    import random

    mod, _chain = _mods()
    monkeypatch.setattr(mod, "BLOCK_SIZE", block)
    generator = random.Random(block)
    for ending in (b"", b"\n", b"torn", b"\n\n"):
        data = b"\n".join(b"x" * generator.randrange(0, 90) + b"%d" % n for n in range(40)) + ending
        path = tmp_path / "lines"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            got = list(mod._Tail(fd, len(data)).lines())
        finally:
            os.close(fd)
        parts = data.split(b"\n")
        offsets = [sum(len(p) + 1 for p in parts[:i]) for i in range(len(parts))]
        assert got == list(zip(offsets, parts))[::-1]


def test_proof_with_tiny_blocks(tmp_path, monkeypatch):
    mod, _chain = _mods()
    monkeypatch.setattr(mod, "BLOCK_SIZE", 33)
    journal = mod.Journal(tmp_path / "journal.jsonl")
    anchored, _anchor_record = _task(journal)
    _task(journal, token_label="tokB")
    intent = journal.append([_event("intent")])[0]
    proof = journal.proof_since("tokA", intent.seq)
    assert proof["start_seq"] == anchored.seq and _holds(proof, intent, anchored.seq, anchored.hash)
    assert journal.tail() == (intent.journal_id, intent.seq, intent.hash)
