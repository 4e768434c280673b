"""compare_with_store: the journal against the store's acknowledged copy, by record id (no server)."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

GENESIS = "0" * 64


def _compare_mod():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _store_compare

    return _store_compare


def _chain_mod():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _journal_chain

    return _journal_chain


def format2(count, journal_id=None, start=1, prev=GENESIS):
    """``count`` format 2 lines (no newline) and their ``(record_id, seq, hash)``."""
    chain = _chain_mod()
    journal_id = journal_id or str(uuid.uuid4())
    lines = []
    for seq in range(start, start + count):
        line, prev, _digest = chain.encode_record(prev, seq, journal_id, str(uuid.uuid4()),
                                                  "2025-01-02T03:04:05.000001+00:00",
                                                  {"event": {"action": "key-generate"}, "n": seq})
        lines.append(line)
    return lines


def format1(count, journal_id=None):
    chain = _chain_mod()
    journal_id = journal_id or str(uuid.uuid4())
    lines, prev = [], GENESIS
    for seq in range(1, count + 1):
        fields = {"seq": seq, "record_id": str(uuid.uuid4()), "recorded_at": "2025-01-02T03:04:05+00:00",
                  "journal_id": journal_id, "prev_hash": prev, "event": {"event": {"action": "key-generate"}}}
        fields["hash"] = prev = chain.legacy_record_hash(fields)
        lines.append(chain.canonical_json(fields))
    return lines


def stored(lines):
    """The store's copy of ``lines``: ``(record_id, (seq, hash, line))`` pairs in seq order."""
    pairs = []
    for line in lines:
        fields = json.loads(line)
        pairs.append((fields["record_id"], (fields["seq"], fields["hash"], line)))
    return pairs


def rid(line):
    return json.loads(line)["record_id"]


def compare(lines, pairs, **kwargs):
    return _compare_mod().compare_with_store(lines, pairs, **kwargs)


def test_identical_copy_is_ok():
    lines = format2(50)
    result = compare(lines, stored(lines))
    assert result["ok"] and result["compared"] == result["matched"] == result["store_records"] == 50
    assert result["missing"] == result["extra"] == result["altered"] == []
    assert result["missing_count"] == result["extra_count"] == result["altered_count"] == 0


def test_format1_and_a_format2_continuation():
    old = format1(3)
    last = json.loads(old[-1])
    new = format2(3, journal_id=last["journal_id"], start=4, prev=last["hash"])
    lines = old + new
    assert compare(lines, stored(lines))["matched"] == 6
    pairs = stored(lines)
    pairs[1] = (pairs[1][0], (2, pairs[1][1][1], pairs[1][1][2].replace("key-generate", "key-destroy")))
    result = compare(lines, pairs)
    assert result["altered"] == [rid(old[1])] and result["matched"] == 5


def test_deleted_row_is_missing_and_store_behind_is_missing():
    lines = format2(10)
    pairs = stored(lines)
    del pairs[3]
    result = compare(lines, pairs[:-2])  # row 4 deleted; rows 9, 10 not shipped yet
    assert not result["ok"]
    assert result["missing"] == [rid(lines[3]), rid(lines[8]), rid(lines[9])] and result["missing_count"] == 3
    assert result["extra"] == result["altered"] == [] and result["matched"] == 7


def test_inserted_rows_are_extra():
    lines = format2(5)
    pairs = stored(lines)
    forged_same_seq = str(uuid.uuid4())
    forged_after = str(uuid.uuid4())
    pairs.insert(2, (forged_same_seq, (3, "f" * 64, lines[2].replace('"n":3', '"n":33'))))
    pairs.append((forged_after, (6, "e" * 64, "{}")))
    result = compare(lines, pairs)
    assert sorted(result["extra"]) == sorted([forged_same_seq, forged_after]) and result["extra_count"] == 2
    assert result["missing"] == [] and result["altered"] == [] and result["matched"] == 5


def test_journal_without_records_the_store_holds():
    """Records deleted from the journal (and re-chained) are still in the store: extra, by record id."""
    lines = format2(6)
    result = compare(lines[:2] + lines[4:], stored(lines))
    assert result["extra"] == [rid(lines[2]), rid(lines[3])]
    assert result["missing"] == [] and result["matched"] == 4


@pytest.mark.parametrize("what", ["line", "hash", "seq"])
def test_altered_row_by_record_id(what):
    lines = format2(8)
    pairs = stored(lines)
    record_id, (seq, record_hash, line) = pairs[4]
    if what == "line":
        line = line.replace('"n":5', '"n":6')
    elif what == "hash":
        record_hash = hashlib.sha256(b"x").hexdigest()
    else:
        seq = 42  # moved: still the same record id, so altered, not missing + extra
        pairs.append(pairs.pop(4))
    pairs[-1 if what == "seq" else 4] = (record_id, (seq, record_hash, line))
    result = compare(lines, pairs)
    assert result["altered"] == [record_id] and result["altered_count"] == 1
    assert result["missing"] == result["extra"] == [] and result["matched"] == 7


def test_mapping_input_and_bytes_lines_with_newlines():
    lines = format2(4)
    mapping = dict(reversed(stored(lines)))
    del mapping[rid(lines[0])]
    result = compare([(line + "\n").encode() for line in lines], mapping)
    assert result["missing"] == [rid(lines[0])] and result["matched"] == 3


def test_lists_are_bounded_counts_exact():
    lines = format2(30)
    result = compare(lines, [], limit=5)
    assert result["missing_count"] == 30 and result["missing"] == [rid(line) for line in lines[:5]]
    assert result["limit"] == 5
    result = compare([], stored(lines), limit=0)
    assert result["extra_count"] == 30 and result["extra"] == [] and result["compared"] == 0
    many = format2(400)
    pairs = stored(many)[::2]  # every other row deleted
    result = compare(many, pairs, limit=7)
    assert result["missing_count"] == 200 and result["missing"] == [rid(line) for line in many[1::2][:7]]


def test_unreadable_lines_and_other_journals_are_counted_not_compared():
    lines = format2(3)
    other = format2(2)
    journal_id = json.loads(lines[0])["journal_id"]
    mixed = [lines[0], "not json", other[0], lines[1], '{"prev_hash":"torn', "", lines[2], other[1]]
    result = compare(mixed, stored(lines), journal_id=journal_id)
    assert result["ok"] and result["matched"] == 3 and result["unreadable"] == 2 and result["other_journal"] == 2


def test_streams_in_step_with_flat_memory():
    """The store is read in step with the journal: never far ahead of it (a server-side cursor stays flat)."""
    lines = format2(300)
    pairs = stored(lines)
    del pairs[100]
    consumed = {"journal": 0, "store": 0}
    ahead = []

    def journal():
        for line in lines:
            consumed["journal"] += 1
            yield line

    def store():
        for pair in pairs:
            consumed["store"] += 1
            ahead.append(consumed["store"] - consumed["journal"])
            yield pair

    result = compare(journal(), store())
    assert result["missing"] == [rid(lines[100])] and result["matched"] == 299
    assert max(ahead) <= 2


def test_first_journal_id_and_entry():
    mod = _compare_mod()
    lines = format2(2)
    fields = json.loads(lines[1])
    assert mod.first_journal_id(["", "garbage", lines[0]]) == fields["journal_id"]
    assert mod.first_journal_id(["garbage"]) is None
    expected = (2, fields["record_id"], fields["hash"], lines[1], fields["journal_id"])
    assert mod.journal_entry(lines[1] + "\n") == expected
    with pytest.raises(ValueError):
        mod.journal_entry('{"seq": true}')
    with pytest.raises(ValueError):
        compare([], [], limit=-1)


def test_compare_journal_file_with_a_store_stub(tmp_path):
    mod = _compare_mod()
    lines = format2(5)
    path = tmp_path / "journal.jsonl"
    path.write_text("\n".join(lines) + "\n")
    pairs = stored(lines)

    class Store:
        name = "stub"
        asked = None

        def fetch_records(self, journal_id, since_seq=0):
            self.asked = (journal_id, since_seq)

            class Rows(list):
                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    return False
            return Rows(pair for pair in pairs if pair[1][0] > since_seq)

    store = Store()
    result = mod.compare_journal_with_store(str(path), store)
    assert result["ok"] and result["matched"] == 5 and result["store"] == "stub"
    assert result["journal_id"] == json.loads(lines[0])["journal_id"] == store.asked[0]
    result = mod.compare_journal_with_store(str(path), store, since_seq=3)
    assert result["ok"] and result["compared"] == 2 and store.asked[1] == 3
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert mod.compare_journal_with_store(str(empty), store)["journal_id"] is None
