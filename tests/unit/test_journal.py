"""The audit journal: chaining, durability rules, concurrency, torn tails."""

from __future__ import annotations

import hashlib
import json
import multiprocessing

import pytest


def _journal_mod():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _journal

    return _journal


def _event(n):
    return {"event": {"action": "key-generate", "n": n}}


def independent_check(path):
    """The few lines an auditor runs (docs/audit.md), written here without collection code."""
    prev = "0" * 64
    for number, line in enumerate(path.read_text().splitlines(), 1):
        record = json.loads(line)
        digest = record.pop("hash")
        body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        assert hashlib.sha256(body).hexdigest() == digest, number
        assert record["prev_hash"] == prev and record["seq"] == number
        prev = digest
    return number


def test_append_chains_and_is_checkable_by_hand(tmp_path):
    journal = _journal_mod().Journal(tmp_path / "j" / "journal.jsonl")
    first = journal.append([_event(1), _event(2)])
    second = journal.append([_event(3)])
    assert [r.seq for r in first + second] == [1, 2, 3]
    assert second[0].prev_hash == first[-1].hash
    assert len({r.journal_id for r in first + second}) == 1
    assert independent_check(tmp_path / "j" / "journal.jsonl") == 3
    assert oct((tmp_path / "j" / "journal.jsonl").stat().st_mode & 0o777) == "0o600"


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


def test_torn_tail_is_cut_before_next_append(tmp_path):
    journal = _journal_mod().Journal(tmp_path / "journal.jsonl")
    journal.append([_event(1)])
    with open(journal.path, "a", encoding="ascii") as handle:
        handle.write('{"event":{"action":"half')
    journal.append([_event(2)])
    assert independent_check(tmp_path / "journal.jsonl") == 2


def test_unwritable_journal_raises_clear_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    journal = _journal_mod().Journal(blocker / "journal.jsonl")
    with pytest.raises(_journal_mod().JournalError, match="cannot be opened"):
        journal.append([_event(1)])


def test_corrupt_last_record_refuses_append(tmp_path):
    journal = _journal_mod().Journal(tmp_path / "journal.jsonl")
    journal.append([_event(1)])
    with open(journal.path, "a", encoding="ascii") as handle:
        handle.write("garbage\n")
    with pytest.raises(_journal_mod().JournalError, match="audit_verify"):
        journal.append([_event(2)])


def test_registry(tmp_path):
    mod = _journal_mod()
    env = {"KEYLIFECYCLE_AUDIT_STATE_DIR": str(tmp_path / "state")}
    mod.register_journal("/a/journal.jsonl", env)
    mod.register_journal("/a/journal.jsonl", env)
    mod.register_journal("/b/journal.jsonl", env)
    assert sorted(mod.registered_journals(env)) == ["/a/journal.jsonl", "/b/journal.jsonl"]
