"""The audit journal: chaining (format 2, reading format 1), durability rules, concurrency, torn tails."""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import subprocess
import uuid

import pytest


def _journal_mod():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _journal

    return _journal


def _chain_mod():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _journal_chain

    return _journal_chain


def _event(n):
    return {"event": {"action": "key-generate", "n": n}}


def independent_check(path):
    """The few lines an auditor runs (docs/audit.md), written here without collection code.

    Format 2 (``{"prev_hash":...`` first): content = line[79:-75], H = SHA-256(P bytes + SHA-256(content) bytes).
    Format 1: H = SHA-256 of the canonical JSON of the record without ``hash``. Returns the number of records.
    """
    prev, number = "0" * 64, 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        record = json.loads(line)
        if line.startswith('{"prev_hash":"'):
            content = line[79:-75]
            assert line[:79] == '{"prev_hash":"%s"' % record["prev_hash"], number
            assert line[-75:] == ',"hash":"%s"}' % record["hash"], number
            digest = hashlib.sha256(content.encode()).digest()
            assert hashlib.sha256(bytes.fromhex(record["prev_hash"]) + digest).hexdigest() == record["hash"], number
            digest = record.pop("hash")
        else:
            digest = record.pop("hash")
            body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
            assert hashlib.sha256(body).hexdigest() == digest, number
        assert record["prev_hash"] == prev and record["seq"] == number, number
        prev = digest
    return number


def _legacy_lines(count, journal_id=None):
    """Format 1 records (sorted keys), as journals were written before format 2."""
    journal_id = journal_id or str(uuid.uuid4())
    prev, lines = "0" * 64, []
    for seq in range(1, count + 1):
        fields = {"seq": seq, "record_id": str(uuid.uuid4()), "recorded_at": "2024-01-01T00:00:00.000000+00:00",
                  "journal_id": journal_id, "prev_hash": prev, "event": _event(seq)}
        body = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        fields["hash"] = prev = hashlib.sha256(body.encode()).hexdigest()
        lines.append(json.dumps(fields, sort_keys=True, separators=(",", ":")))
    return lines


def test_append_chains_and_is_checkable_by_hand(tmp_path):
    journal = _journal_mod().Journal(tmp_path / "j" / "journal.jsonl")
    first = journal.append([_event(1), _event(2)])
    second = journal.append([_event(3)])
    assert [r.seq for r in first + second] == [1, 2, 3]
    assert second[0].prev_hash == first[-1].hash
    assert len({r.journal_id for r in first + second}) == 1
    assert independent_check(tmp_path / "j" / "journal.jsonl") == 3
    assert oct((tmp_path / "j" / "journal.jsonl").stat().st_mode & 0o777) == "0o600"


def test_records_are_format_2_and_what_append_returns_is_what_is_stored(tmp_path):
    chain = _chain_mod()
    journal = _journal_mod().Journal(tmp_path / "journal.jsonl")
    written = journal.append([_event(1), {"b": [1, 2], "a": "x"}])
    lines = journal.read_lines()
    assert [r.line for r in written] == lines
    for record, line in zip(written, lines):
        assert record.format == 2 and chain.is_format2(line)
        assert chain.decode_record(line)["hash"] == record.hash
        assert chain.split_record(line)[2] == record.hash
        assert chain.parse_head(chain.split_record(line)[1])[:3] == (record.seq, record.journal_id, record.record_id)
    assert lines[1].endswith('"event":{"a":"x","b":[1,2]},"hash":"%s"}' % written[1].hash)
    parsed = journal.records_after(0)
    assert [(r.seq, r.hash, r.event, r.format) for r in parsed] == [(r.seq, r.hash, r.event, 2) for r in written]


def test_format_1_journal_is_read_and_continued_in_format_2(tmp_path):
    mod = _journal_mod()
    path = tmp_path / "journal.jsonl"
    legacy = _legacy_lines(3)
    path.write_text("\n".join(legacy) + "\n")
    journal = mod.Journal(path)
    assert [r.format for r in journal.records_after(1)] == [1, 1]
    old = mod.JournalRecord.parse(legacy[-1])
    assert old.format == 1 and old.hash_holds()
    assert mod.JournalRecord.parse(legacy[-1].encode()).seq == 3
    assert journal.tail() == (old.journal_id, 3, old.hash)
    new = journal.append([_event(4)])
    assert (new[0].seq, new[0].prev_hash, new[0].journal_id, new[0].format) == (4, old.hash, old.journal_id, 2)
    assert independent_check(path) == 4
    assert [r.format for r in journal.records_after(2)] == [1, 2]
    assert journal.read_lines()[:3] == legacy


def _writer(path, count):
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import Journal

    journal = Journal(path)
    for n in range(count):
        journal.append([_event(n)])


def test_concurrent_writers_keep_one_chain(tmp_path, collections_path):
    path = str(tmp_path / "journal.jsonl")
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_writer, args=(path, 40)) for _n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    assert independent_check(tmp_path / "journal.jsonl") == 160


def _repair_of(record):
    assert record.event["event"]["action"] == "audit-journal-repair"
    assert record.event["keylifecycle"]["phase"] == "change"
    assert record.event["event"]["reason"] == "a torn last line (a failed write) was cut off"
    return record.event["keylifecycle"]["repair"]


def test_torn_tail_is_cut_and_the_repair_journaled_before_the_events(tmp_path):
    journal = _journal_mod().Journal(tmp_path / "journal.jsonl")
    journal.append([_event(1)])
    size = os.path.getsize(journal.path)
    torn = b'{"prev_hash":"0123","seq":2,"event":{"action":"half'
    with open(journal.path, "ab") as handle:
        handle.write(torn)
    assert journal.tail()[1] == 1  # reading passes over the torn line
    written = journal.append([_event(2)])
    assert [r.seq for r in written] == [3] and written[0].event == _event(2)
    repair = journal.last_repair
    assert repair.seq == 2 and written[0].prev_hash == repair.hash
    assert _repair_of(repair) == {"offset": size, "length": len(torn), "sha256": hashlib.sha256(torn).hexdigest()}
    assert repair.event["labels"]["operator_source"] == "controller_os_user"
    assert b"half" not in open(journal.path, "rb").read()
    assert independent_check(tmp_path / "journal.jsonl") == 3
    journal.append([_event(3)])
    assert journal.last_repair is None


def test_unreadable_complete_last_line_is_cut_and_repaired_with_the_given_context(tmp_path):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext

    journal = _journal_mod().Journal(tmp_path / "journal.jsonl")
    journal.append([_event(1)])
    size = os.path.getsize(journal.path)
    with open(journal.path, "ab") as handle:
        handle.write(b"\0\0\0garbage\n")
    context = AuditContext("alice", "inventory", "run-1", host="ctl", intent_id=str(uuid.uuid4()))
    journal.append([_event(2)], context=context)
    repair = journal.last_repair
    assert _repair_of(repair) == {"offset": size, "length": 11,
                                  "sha256": hashlib.sha256(b"\0\0\0garbage\n").hexdigest()}
    assert repair.event["user"]["name"] == "alice" and repair.event["labels"]["run_id"] == "run-1"
    assert repair.event["keylifecycle"]["intent_id"] == context.intent_id
    # a context given as the action plugin's dict works as well
    with open(journal.path, "ab") as handle:
        handle.write(b"{")
    journal.append([_event(3)], context={"operator": "bob", "operator_source": "env", "run_id": "r2", "host": "h"})
    assert journal.last_repair.event["user"]["name"] == "bob"
    assert independent_check(tmp_path / "journal.jsonl") == 5


def test_a_torn_line_alone_is_repaired_into_a_new_journal(tmp_path):
    journal = _journal_mod().Journal(tmp_path / "journal.jsonl")
    (tmp_path / "journal.jsonl").write_bytes(b'{"prev_ha')
    written = journal.append([_event(1)])
    assert journal.last_repair.seq == 1 and written[0].seq == 2
    assert _repair_of(journal.last_repair)["offset"] == 0
    assert independent_check(tmp_path / "journal.jsonl") == 2


def test_unreadable_line_before_a_torn_one_refuses_append(tmp_path):
    journal = _journal_mod().Journal(tmp_path / "journal.jsonl")
    journal.append([_event(1)])
    with open(journal.path, "a", encoding="ascii") as handle:
        handle.write("garbage\n{\"half")
    before = open(journal.path, "rb").read()
    with pytest.raises(_journal_mod().JournalError, match="audit_verify"):
        journal.append([_event(2)])
    assert open(journal.path, "rb").read() == before


def test_edited_last_record_refuses_append(tmp_path):
    journal = _journal_mod().Journal(tmp_path / "journal.jsonl")
    journal.append([_event(1)])
    text = (tmp_path / "journal.jsonl").read_text()
    (tmp_path / "journal.jsonl").write_text(text.replace('"n":1', '"n":7'))
    with pytest.raises(_journal_mod().JournalError, match="hash does not match.*audit_verify"):
        journal.append([_event(2)])
    with pytest.raises(_journal_mod().JournalError, match="hash does not match"):
        journal.tail()


def test_unwritable_journal_raises_clear_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    journal = _journal_mod().Journal(blocker / "journal.jsonl")
    with pytest.raises(_journal_mod().JournalError, match="cannot be opened"):
        journal.append([_event(1)])


def test_create_false_never_creates_a_deleted_journal(tmp_path):
    mod = _journal_mod()
    journal = mod.Journal(tmp_path / "j" / "journal.jsonl")
    intent = journal.append([_event(1)])[0]
    os.unlink(journal.path)
    with pytest.raises(mod.JournalError, match="was deleted while the task ran.*outcome could not be journaled"):
        journal.append([_event(2)], expect_journal_id=intent.journal_id, create=False)
    assert not os.path.exists(journal.path)
    os.unlink(journal.lock_path)
    os.rmdir(tmp_path / "j")
    with pytest.raises(mod.JournalError, match="%s was deleted while the task ran" % journal.path):
        journal.append([_event(2)], create=False)
    assert not (tmp_path / "j").exists()


def test_create_false_refuses_an_emptied_journal(tmp_path):
    mod = _journal_mod()
    journal = mod.Journal(tmp_path / "journal.jsonl")
    intent = journal.append([_event(1)])[0]
    open(journal.path, "w").close()
    with pytest.raises(mod.JournalError, match="replaced while the task ran.*holds no record"):
        journal.append([_event(2)], expect_journal_id=intent.journal_id, create=False)
    with pytest.raises(mod.JournalError, match="deleted while the task ran"):
        journal.append([_event(2)], create=False)
    assert os.path.getsize(journal.path) == 0


def test_expect_journal_id_refuses_a_replaced_journal(tmp_path):
    mod = _journal_mod()
    journal = mod.Journal(tmp_path / "journal.jsonl")
    intent = journal.append([_event(1)])[0]
    os.unlink(journal.path)
    other = journal.append([_event(1)])[0]  # someone started a new journal at the same path
    assert other.journal_id != intent.journal_id
    before = open(journal.path, "rb").read()
    with pytest.raises(mod.JournalError, match="replaced while the task ran.*journal %s now" % other.journal_id):
        journal.append([_event(2)], expect_journal_id=intent.journal_id, create=False)
    assert open(journal.path, "rb").read() == before
    written = journal.append([_event(2)], expect_journal_id=other.journal_id, create=False)
    assert written[0].seq == 2


def test_tail(tmp_path):
    journal = _journal_mod().Journal(tmp_path / "journal.jsonl")
    assert journal.tail() is None
    (tmp_path / "journal.jsonl").write_text("")
    assert journal.tail() is None
    written = journal.append([_event(n) for n in range(300)])
    assert journal.tail() == (written[-1].journal_id, 300, written[-1].hash)


def test_registry(tmp_path):
    mod = _journal_mod()
    env = {"KEYLIFECYCLE_AUDIT_STATE_DIR": str(tmp_path / "state")}
    mod.register_journal("/a/journal.jsonl", env)
    mod.register_journal("/a/journal.jsonl", env)
    mod.register_journal("/b/journal.jsonl", env)
    assert sorted(mod.registered_journals(env)) == ["/a/journal.jsonl", "/b/journal.jsonl"]


# ---- a full file system: the failed write leaves a torn line, the next append repairs it ----------------------

@contextlib.contextmanager
def _tiny_tmpfs(directory, size="64k"):
    directory.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the full-disk test did not run")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", str(directory)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("mount -t tmpfs is not permitted here (%s); the full-disk test did not run"
                    % (mounted.stderr.strip() or mounted.returncode))
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def _fill(path):
    """Write to ``path`` until the file system is full."""
    with open(path, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
        try:
            while True:
                handle.write(b"\0")
        except OSError:
            pass


def test_full_disk_leaves_a_torn_line_that_the_next_append_repairs(tmp_path):
    mod, chain = _journal_mod(), _chain_mod()
    with _tiny_tmpfs(tmp_path / "fs") as fs:
        journal = mod.Journal(fs / "journal.jsonl")
        intent = journal.append([_event(1)])[0]
        size = os.path.getsize(journal.path)
        _fill(fs / "filler")
        big = {"blob": "x" * 20000}
        with pytest.raises(mod.JournalError, match="cannot be written.*durable audit record"):
            journal.append([_event(2), big], expect_journal_id=intent.journal_id, create=False)
        data = open(journal.path, "rb").read()
        assert len(data) > size and not data.endswith(b"\n")  # the failed write left part of a line
        torn = data[data.rindex(b"\n") + 1:]
        torn_offset = len(data) - len(torn)
        os.unlink(fs / "filler")
        written = journal.append([_event(3)], expect_journal_id=intent.journal_id, create=False)
        repair = _repair_of(journal.last_repair)
        assert repair == {"offset": torn_offset, "length": len(torn), "sha256": hashlib.sha256(torn).hexdigest()}
        assert written[0].prev_hash == journal.last_repair.hash
        lines = open(journal.path, "rb").read().decode("ascii").splitlines()
        assert "x" * 100 not in lines[-2] and "x" * 100 not in lines[-1]  # never the removed bytes
        prev = chain.GENESIS_HASH
        for seq, line in enumerate(lines, 1):
            prev_hash, content, record_hash = chain.split_record(line)
            assert prev_hash == prev and chain.parse_head(content)[0] == seq
            assert chain.link(prev_hash, chain.record_digest(line)) == record_hash
            prev = record_hash
        assert prev == written[0].hash and independent_check(fs / "journal.jsonl") == len(lines)


def test_a_complete_record_torn_of_its_newline_is_not_shipped_and_its_repair_is(tmp_path):
    """A well-formed record whose newline was never written is no record of the journal (the next append cuts it
    off): shipping (records_after) leaves it out, so the repair record that replaces it under the same seq is the
    one the stores get."""
    journal = _journal_mod().Journal(tmp_path / "journal.jsonl")
    journal.append([_event(1)])
    first = json.loads(open(journal.path).readline())
    line, _hash, _digest = _chain_mod().encode_record(first["hash"], 2, first["journal_id"], str(uuid.uuid4()),
                                                      "2026-12-03T00:00:00+00:00", _event(2))
    with open(journal.path, "ab") as handle:
        handle.write(line.encode("ascii"))  # complete, chained, but no newline
    assert [r.seq for r in journal.records_after(0)] == [1]
    journal.append([_event(3)])
    shipped = journal.records_after(0)
    assert [r.seq for r in shipped] == [1, 2, 3] and shipped[1].hash == journal.last_repair.hash
    assert shipped[1].event["event"]["action"] == "audit-journal-repair"
