"""The PostgreSQL store as the journal's acknowledged copy, on a real PostgreSQL 15 (TLS) on loopback.

In process (no ansible-playbook): journals are written with _journal_chain.encode_record, shipped with the
callback's Shipper (the same cursor bookkeeping as a play), read back with PostgresStore.fetch_records and
compared with _store_compare. The stores are imported from this checkout (tests/conftest.py source_collection).
"""

from __future__ import annotations

import json
import uuid

import pytest

TIMEOUT = 10.0  # the server answers: generous, so a busy machine still answers in time


@pytest.fixture(scope="module")
def mods(source_collection):  # pylint: disable=unused-argument
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _journal_chain
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _shipping, _store_compare, _stores

    class Mods:
        chain, shipping, compare, stores = _journal_chain, _shipping, _store_compare, _stores

    return Mods


def write_journal(mods, path, count):
    """A format 2 journal of ``count`` records; returns its lines."""
    journal_id, prev, lines = str(uuid.uuid4()), mods.chain.GENESIS_HASH, []
    for seq in range(1, count + 1):
        line, prev, _digest = mods.chain.encode_record(
            prev, seq, journal_id, str(uuid.uuid4()), "2025-01-02T03:04:05.%06d+00:00" % seq,
            {"event": {"action": "key-generate", "outcome": "success"}, "key": {"name": "k%d" % seq}})
        lines.append(line)
    path.write_text("".join(line + "\n" for line in lines))
    return lines


def rid(line):
    return json.loads(line)["record_id"]


def table_name():
    return "cmp_%s" % uuid.uuid4().hex[:10]


def store_for(mods, postgres, table, dsn=None):
    return mods.stores.PostgresStore(dsn or postgres.dsn, table=table, timeout=TIMEOUT)


def ship(mods, store, path):
    return mods.shipping.Shipper([store], retry_after=0).ship([str(path)], force=True)[store.name]


def test_shipped_journal_compares_clean_then_tampering_is_reported_by_record_id(mods, postgres, tmp_path):
    table = table_name()
    path = tmp_path / "journal.jsonl"
    lines = write_journal(mods, path, 120)
    store = store_for(mods, postgres, table)
    assert ship(mods, store, path) == {"delivered": 120, "pending": 0, "error": None}
    result = mods.compare.compare_journal_with_store(str(path), store)
    assert result["ok"] and result["compared"] == result["matched"] == result["store_records"] == 120
    assert result["journal_id"] == json.loads(lines[0])["journal_id"]
    assert result["store"] == store.name and postgres.password not in json.dumps(result)

    deleted, altered_line, altered_hash, moved = rid(lines[10]), rid(lines[40]), rid(lines[41]), rid(lines[90])
    postgres.execute("DELETE FROM %s WHERE record_id = %%s" % table, [deleted])
    postgres.execute("UPDATE %s SET line = replace(line, '\"k41\"', '\"k14\"') WHERE record_id = %%s" % table,
                     [altered_line])
    postgres.execute("UPDATE %s SET hash = repeat('a', 64) WHERE record_id = %%s" % table, [altered_hash])
    postgres.execute("UPDATE %s SET seq = 500 WHERE record_id = %%s" % table, [moved])
    forged = str(uuid.uuid4())
    postgres.execute(
        "INSERT INTO %s (record_id, journal_id, seq, recorded_at, action, event, line, hash, prev_hash) "
        "SELECT %%s, journal_id, seq, recorded_at, action, event, line, hash, prev_hash FROM %s "
        "WHERE record_id = %%s" % (table, table), [forged, rid(lines[60])])
    result = mods.compare.compare_journal_with_store(str(path), store)
    assert not result["ok"]
    assert (result["missing"], result["extra"]) == ([deleted], [forged])
    assert result["altered"] == [altered_line, altered_hash, moved]
    assert (result["missing_count"], result["extra_count"], result["altered_count"]) == (1, 1, 3)
    assert result["matched"] == 116 and result["compared"] == 120 and result["store_records"] == 120


def test_only_committed_records_count_as_delivered(mods, postgres, tmp_path):
    """A commit that fails (a deferred trigger refuses record 550 at COMMIT, after every INSERT succeeded) leaves
    its records undelivered: the cursor stays behind them, the store holds exactly what the cursor says, and the
    comparison names the rest as missing until they are shipped."""
    table = table_name()
    store = store_for(mods, postgres, table)
    other = tmp_path / "other.jsonl"
    write_journal(mods, other, 1)
    assert ship(mods, store, other)["delivered"] == 1  # creates the table
    postgres.execute("CREATE FUNCTION %s_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "IF NEW.seq = 550 THEN RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; END $$"
                     % table)
    postgres.execute("CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON %s DEFERRABLE INITIALLY DEFERRED "
                     "FOR EACH ROW EXECUTE FUNCTION %s_refuse()" % (table, table))
    path = tmp_path / "journal.jsonl"
    lines = write_journal(mods, path, 600)
    entry = ship(mods, store, path)
    assert entry["delivered"] == 500 and entry["pending"] == 100 and "refused at commit" in entry["error"]
    cursor = mods.shipping.read_cursor(mods.shipping.Journal(str(path)), store)
    assert cursor["seq"] == 500
    journal_id = json.loads(lines[0])["journal_id"]
    assert postgres.execute("SELECT max(seq) AS m, count(*) AS n FROM %s WHERE journal_id = %%s" % table,
                            [journal_id]) == [{"m": 500, "n": 500}]
    result = mods.compare.compare_journal_with_store(str(path), store, limit=3)
    assert result["missing_count"] == 100 and result["missing"] == [rid(line) for line in lines[500:503]]
    assert result["extra_count"] == result["altered_count"] == 0 and result["matched"] == 500
    postgres.execute("DROP TRIGGER refuse ON %s" % table)
    assert ship(mods, store, path) == {"delivered": 100, "pending": 0, "error": None}
    assert mods.compare.compare_journal_with_store(str(path), store)["ok"]


def test_fetch_records_streams_in_order_with_a_select_only_role(mods, postgres, tmp_path):
    table = table_name()
    path = tmp_path / "journal.jsonl"
    lines = write_journal(mods, path, 4500)  # more than two FETCH batches
    store = store_for(mods, postgres, table)
    assert ship(mods, store, path)["delivered"] == 4500
    index = postgres.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexname <> %s",
                             [table, table + "_pkey"])
    assert [row["indexdef"].split(" USING ")[1] for row in index] == ["btree (journal_id, seq, record_id)"]
    role, password = "reader_%s" % uuid.uuid4().hex[:8], uuid.uuid4().hex
    postgres.execute("CREATE ROLE %s LOGIN PASSWORD '%s'" % (role, password))
    postgres.execute("GRANT SELECT ON %s TO %s" % (table, role))
    dsn = postgres.dsn.replace("user=postgres password=%s" % postgres.password,
                               "user=%s password=%s" % (role, password))
    reader = store_for(mods, postgres, table, dsn=dsn)
    journal_id = json.loads(lines[0])["journal_id"]
    with reader.fetch_records(journal_id) as rows:
        got = list(rows)
        assert rows.read == 4500
    assert [pair[0] for pair in got] == [rid(line) for line in lines]
    assert got[7][1] == (8, json.loads(lines[7])["hash"], lines[7])
    assert dict(reader.fetch_records(journal_id))[rid(lines[0])][2] == lines[0]
    tail = list(reader.fetch_records(journal_id, since_seq=4490))
    assert [seq for _rid, (seq, _h, _l) in tail] == list(range(4491, 4501))
    assert list(reader.fetch_records(str(uuid.uuid4()))) == []
    result = mods.compare.compare_journal_with_store(str(path), reader, since_seq=4000)
    assert result["ok"] and result["compared"] == result["matched"] == 500
    # a reader that is abandoned half-way releases its connection
    rows = reader.fetch_records(journal_id)
    next(rows)
    rows.close()
    assert list(rows) == []


def test_fetch_records_failures_are_store_unavailable_without_password(mods, postgres):
    store = store_for(mods, postgres, table_name())
    with pytest.raises(mods.stores.StoreUnavailable, match="has no table") as info:
        store.fetch_records(str(uuid.uuid4()))
    assert postgres.password not in str(info.value)
    with pytest.raises(mods.stores.InvalidOption, match="journal_id"):
        store.fetch_records("")
    postgres.stop()
    try:
        with pytest.raises(mods.stores.StoreUnavailable, match="connecting") as info:
            store.fetch_records(str(uuid.uuid4()))
    finally:
        postgres.start()
    assert postgres.password not in str(info.value)


def test_a_new_table_of_the_same_database_gets_every_record(mods, postgres, tmp_path):
    """The shipping cursor is kept per table: after postgresql_table changes, the new table is sent the records the
    old one acknowledged (it holds none of them), not only the later ones."""
    path = tmp_path / "journal.jsonl"
    write_journal(mods, path, 30)
    first, second = store_for(mods, postgres, table_name()), store_for(mods, postgres, table_name())
    assert first.name == second.name  # what messages show: the database
    assert ship(mods, first, path) == {"delivered": 30, "pending": 0, "error": None}
    assert ship(mods, second, path) == {"delivered": 30, "pending": 0, "error": None}
    assert mods.compare.compare_journal_with_store(str(path), second)["matched"] == 30
