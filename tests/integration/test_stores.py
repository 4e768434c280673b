"""Audit store clients against real servers on loopback: rsyslog with TLS and PostgreSQL 15 with TLS.

In process: the store clients are imported from this checkout (tests/conftest.py source_collection).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest

from tests.servers import RsyslogTls, issue_cert, make_ca

# Client timeouts. A server that should answer (a delivery, a refusal, a password error) gets TIMEOUT, generous so
# that a busy machine still answers in time; a server that cannot answer (frozen by SIGSTOP, or blocked on a lock)
# gets NO_ANSWER_TIMEOUT, whose value only decides how soon the client gives up.
TIMEOUT = 10.0
NO_ANSWER_TIMEOUT = 2.0
BOUND = 60.0  # a failing delivery must return well within this
RFC5424 = re.compile(r"^<(\d+)>(\d) (\S+) (\S+) (\S+) (\S+) (\S+) (-) (.*)\Z", re.S)


@dataclass
class Record:
    """A journal record as the store clients see it (the journal itself is built elsewhere)."""

    seq: int
    journal_id: str
    event: dict
    prev_hash: str
    record_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    recorded_at: str = "2025-01-02T03:04:05.123456+00:00"
    hash: str = ""
    line: str = ""

    def __post_init__(self):
        body = {"seq": self.seq, "record_id": self.record_id, "recorded_at": self.recorded_at,
                "journal_id": self.journal_id, "prev_hash": self.prev_hash, "event": self.event}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        self.hash = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        self.line = json.dumps(dict(body, hash=self.hash), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def make_records(count, journal_id=None, start=1, action="key-generate", note="ok"):
    journal_id = journal_id or "journal-%s" % uuid.uuid4().hex[:12]
    records, prev = [], "0" * 64
    for seq in range(start, start + count):
        event = {"event": {"action": action, "outcome": "success"}, "key": {"name": "k%d" % seq},
                 "labels": {"note": note}}
        record = Record(seq=seq, journal_id=journal_id, event=event, prev_hash=prev,
                        recorded_at="2025-01-02T03:04:%02d.%06d+00:00" % (seq % 60, seq))
        records.append(record)
        prev = record.hash
    return records


@pytest.fixture(scope="module")
def stores(source_collection):  # pylint: disable=unused-argument
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _stores

    return _stores


@pytest.fixture(scope="module")
def rogue_ca(tmp_path_factory):
    """Another CA, which signed nothing the servers use."""
    return make_ca(tmp_path_factory.mktemp("rogue"), common_name="rogue CA")


@pytest.fixture
def syslog_store(stores, rsyslog):
    return stores.SyslogTlsStore("localhost", rsyslog.port, ca_file=rsyslog.ca_file, timeout=TIMEOUT,
                                 hostname="controller1")


def fails_fast(stores, store, records):
    """Deliver and expect StoreUnavailable, returned within BOUND seconds."""
    started = time.monotonic()
    with pytest.raises(stores.StoreUnavailable) as info:
        store.deliver(records)
    assert time.monotonic() - started < BOUND
    assert info.value.store == store.name
    return str(info.value)


# ------------------------------------------------------------------------------------------------ syslog


def test_frame_is_octet_counted_rfc5424(stores):
    store = stores.SyslogTlsStore("localhost", 6514, hostname="ctl", app_name="kl app")
    record = make_records(1, note="caf\u00e9 \u20ac")[0]
    frame = store.frame(record)
    length, _sep, message = frame.partition(b" ")
    assert int(length) == len(message) and len(message) > len(record.line)  # bytes, not characters
    head = "<86>1 %s ctl klapp " % record.recorded_at
    assert message.decode("utf-8").startswith(head)
    assert message.decode("utf-8").endswith(" key-generate - " + record.line)
    assert store.name == "syslog-tls:localhost:6514"


def test_frame_sanitises_header_fields(stores):
    store = stores.SyslogTlsStore("::1", 6514, hostname="bad host")
    record = make_records(1, action="x" * 40 + " y")[0]
    record.recorded_at = "yesterday"
    match = RFC5424.match(store.frame(record).partition(b" ")[2].decode("utf-8"))
    assert match.group(3) == "-" and match.group(4) == "badhost" and match.group(7) == "x" * 32
    assert match.group(9) == record.line
    assert store.name == "syslog-tls:[::1]:6514"


def test_syslog_delivers_each_record_once_with_exact_line(stores, rsyslog, syslog_store):
    records = make_records(5, note="caf\u00e9 \u20ac \U0001f510")
    assert syslog_store.deliver(records) == 5
    journal = records[0].journal_id
    got = rsyslog.wait_for(5, contains=journal)
    marker = make_records(1)  # sent after the batch: once it is written, a duplicate of the batch would be too
    assert syslog_store.deliver(marker) == 1
    rsyslog.wait_for(1, contains=marker[0].journal_id)
    assert [m for m in rsyslog.messages() if journal in m] == got  # nothing more arrived
    assert len(got) == 5
    for record, message in zip(records, got):
        match = RFC5424.match(message)
        assert match, message
        pri, version, stamp, host, app, procid, msgid, sd, body = match.groups()
        assert (int(pri), version, stamp, host, app) == (86, "1", record.recorded_at, "controller1",
                                                         "secops-keylifecycle")
        assert procid.isdigit() and msgid == "key-generate" and sd == "-"
        assert body == record.line
        assert json.loads(body)["record_id"] == record.record_id


def test_syslog_octet_counting_keeps_newlines_and_multibyte(stores, rsyslog, syslog_store):
    """With LF framing a newline would split a message; a character count instead of a byte count would
    shift every later frame. Both lines must arrive whole, in order."""
    records = make_records(3)
    records[0].line = records[0].line[:-1] + ',"x":"a\nb \u00e9\u00e9\u00e9"}'
    records[1].line = records[1].line[:-1] + ',"y":"\U0001f510\n\n"}'
    assert syslog_store.deliver(records) == 3
    got = rsyslog.wait_for(3, contains=records[0].journal_id)
    assert [RFC5424.match(m).group(9) for m in got] == [r.line for r in records]


def test_syslog_empty_batch_sends_nothing(stores, rsyslog):
    store = stores.SyslogTlsStore("localhost", 1, ca_file=rsyslog.ca_file, timeout=TIMEOUT)
    assert store.deliver([]) == 0


def test_syslog_outage_then_recovery(stores, rsyslog, syslog_store):
    records = make_records(4)
    rsyslog.stop()
    try:
        message = fails_fast(stores, syslog_store, records[:2])
        assert "localhost:%d" % rsyslog.port in message and "connecting" in message
    finally:
        rsyslog.start()
    assert syslog_store.deliver(records) == 4
    got = rsyslog.wait_for(4, contains=records[0].journal_id)
    assert [RFC5424.match(m).group(9) for m in got] == [r.line for r in records]


def test_syslog_frozen_collector_times_out(stores, rsyslog):
    """SIGSTOP: the kernel still accepts the TCP connection, the TLS handshake gets no answer."""
    store = stores.SyslogTlsStore("localhost", rsyslog.port, ca_file=rsyslog.ca_file, timeout=NO_ANSWER_TIMEOUT)
    rsyslog.pause()
    try:
        message = fails_fast(stores, store, make_records(1))
    finally:
        rsyslog.resume()
    assert "no answer within %g s" % NO_ANSWER_TIMEOUT in message and "TLS handshake" in message


def test_syslog_refuses_server_signed_by_another_ca(stores, rsyslog, rogue_ca):
    records = make_records(1)
    store = stores.SyslogTlsStore("localhost", rsyslog.port, ca_file=str(rogue_ca.ca_file), timeout=TIMEOUT)
    message = fails_fast(stores, store, records)
    assert "certificate" in message and "validate_certs" in message
    insecure = stores.SyslogTlsStore("localhost", rsyslog.port, ca_file=str(rogue_ca.ca_file),
                                     validate_certs=False, timeout=TIMEOUT)
    assert insecure.deliver(records) == 1
    assert rsyslog.wait_for(1, contains=records[0].journal_id)[0].endswith(records[0].line)


def test_syslog_refuses_certificate_for_another_name(stores, tls, tmp_path):
    """Signed by the right CA but issued to another host name: refused (host name checked)."""
    other = issue_cert(tls, tmp_path / "tls", ["elsewhere.invalid"])
    with RsyslogTls(tmp_path / "rsyslog", other) as server:
        store = stores.SyslogTlsStore("localhost", server.port, ca_file=server.ca_file, timeout=TIMEOUT)
        message = fails_fast(stores, store, make_records(1))
        assert "name localhost" in message and "mismatch" in message.lower()


def test_syslog_bad_options(stores, tmp_path):
    with pytest.raises(stores.InvalidOption, match="ca_file"):
        stores.SyslogTlsStore("localhost", 6514, ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(stores.InvalidOption, match="port"):
        stores.SyslogTlsStore("localhost", "6514")
    with pytest.raises(stores.InvalidOption, match="timeout"):
        stores.SyslogTlsStore("localhost", 6514, timeout=0)


# ------------------------------------------------------------------------------------------------ PostgreSQL


def pg_store(stores, postgres, table, **kwargs):
    return stores.PostgresStore(postgres.dsn, table=table, timeout=kwargs.pop("timeout", TIMEOUT), **kwargs)


def table_name():
    return "audit_%s" % uuid.uuid4().hex[:10]


def test_postgres_creates_table_and_stores_each_record_once(stores, postgres):
    table = table_name()
    store = pg_store(stores, postgres, table)
    records = make_records(5, note="caf\u00e9 \U0001f510")
    assert store.deliver(records) == 5
    rows = postgres.rows(table)
    assert [str(row["record_id"]) for row in rows] == [r.record_id for r in records]
    for row, record in zip(rows, records):
        assert row["line"] == record.line and row["event"] == record.event and row["seq"] == record.seq
        assert row["action"] == "key-generate" and row["hash"] == record.hash and row["prev_hash"] == record.prev_hash
        assert row["journal_id"] == record.journal_id and row["recorded_at"].isoformat() == record.recorded_at
    columns = {row["column_name"]: row["data_type"] for row in postgres.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s", [table])}
    assert columns == {"record_id": "uuid", "journal_id": "text", "seq": "bigint",
                       "recorded_at": "timestamp with time zone", "action": "text", "event": "jsonb",
                       "line": "text", "hash": "text", "prev_hash": "text"}


def test_postgres_redelivery_inserts_nothing_new(stores, postgres):
    table = table_name()
    records = make_records(6)
    assert pg_store(stores, postgres, table).deliver(records[:4]) == 4
    store = pg_store(stores, postgres, table)  # a new process: it does not know the table exists
    assert store.deliver(records[:4]) == 4
    assert store.deliver(records[2:]) == 4  # overlap: records 3 and 4 again, 5 and 6 new
    rows = postgres.rows(table)
    assert [row["seq"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert [row["line"] for row in rows] == [r.line for r in records]


def test_postgres_many_records_in_chunks(stores, postgres):
    table = table_name()
    records = make_records(1203)
    assert pg_store(stores, postgres, table).deliver(records) == 1203
    assert postgres.execute("SELECT count(*) AS n, count(DISTINCT record_id) AS d FROM %s" % table) == [
        {"n": 1203, "d": 1203}]


def test_postgres_insert_only_role(stores, postgres):
    """Once the table exists, a role with only INSERT and SELECT on it can deliver (no UPDATE, DELETE, CREATE)."""
    table = table_name()
    pg_store(stores, postgres, table).deliver(make_records(1))
    role, password = "writer_%s" % uuid.uuid4().hex[:8], uuid.uuid4().hex
    postgres.execute("CREATE ROLE %s LOGIN PASSWORD '%s'" % (role, password))
    postgres.execute("GRANT INSERT, SELECT ON %s TO %s" % (table, role))
    dsn = postgres.dsn.replace("user=postgres password=%s" % postgres.password,
                               "user=%s password=%s" % (role, password))
    records = make_records(3)
    store = stores.PostgresStore(dsn, table=table, timeout=TIMEOUT)
    assert store.deliver(records) == 3
    assert store.deliver(records) == 3
    assert len(postgres.rows(table)) == 4


def test_postgres_outage_then_recovery(stores, postgres):
    table = table_name()
    store = pg_store(stores, postgres, table)
    records = make_records(3)
    postgres.stop()
    try:
        message = fails_fast(stores, store, records)
        assert "postgresql:127.0.0.1:%d/postgres" % postgres.port in message and "connecting" in message
        assert postgres.password not in message
    finally:
        postgres.start()
    assert store.deliver(records) == 3
    assert len(postgres.rows(table)) == 3


def test_postgres_frozen_server_times_out_on_connect(stores, postgres):
    store = pg_store(stores, postgres, table_name(), timeout=NO_ANSWER_TIMEOUT)
    postgres.pause()
    try:
        message = fails_fast(stores, store, make_records(1))
    finally:
        postgres.resume()
    assert "connecting" in message and postgres.password not in message


def test_postgres_blocked_insert_hits_statement_timeout(stores, postgres):
    import psycopg

    table = table_name()
    store = pg_store(stores, postgres, table)
    assert store.deliver(make_records(1)) == 1
    blocked = pg_store(stores, postgres, table, timeout=NO_ANSWER_TIMEOUT)  # the server's own statement_timeout
    with psycopg.connect(postgres.admin_dsn) as lock:
        lock.execute("LOCK TABLE %s IN ACCESS EXCLUSIVE MODE" % table)
        message = fails_fast(stores, blocked, make_records(1))
        lock.rollback()
    assert "statement timeout" in message
    assert store.deliver(make_records(1)) == 1


def test_postgres_server_frozen_mid_transaction_is_cut(stores, postgres):
    """A frozen server never fires its own statement_timeout; the client cuts the connection itself.

    The freeze has to come before the server's statement_timeout (the store's timeout) would cancel the INSERT: 5 s
    from the moment the INSERT waits, however busy the machine; the client's watchdog then cuts at 3 x 5 s."""
    import psycopg

    table = table_name()
    store = pg_store(stores, postgres, table, timeout=5.0)
    assert store.deliver(make_records(1)) == 1
    frozen = threading.Event()

    def freeze_once_the_insert_waits():
        """Freeze the server only once the INSERT is waiting for the lock, however long it takes to get there."""
        with psycopg.connect(postgres.admin_dsn, autocommit=True) as watcher:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE "
                    "'INSERT%%' AND pid <> pg_backend_pid()").fetchone()[0]
                if waiting:
                    postgres.pause()
                    frozen.set()
                    return
                time.sleep(0.05)

    with psycopg.connect(postgres.admin_dsn) as lock:
        lock.execute("LOCK TABLE %s IN ACCESS EXCLUSIVE MODE" % table)
        freezer = threading.Thread(target=freeze_once_the_insert_waits)
        freezer.start()
        try:
            message = fails_fast(stores, store, make_records(1))
        finally:
            freezer.join()
            postgres.resume()
        lock.rollback()
    assert frozen.is_set(), "the INSERT never waited for the lock"
    assert "no answer within 15 s, connection cut" in message


def test_postgres_verifies_server_certificate_by_default(stores, postgres, rogue_ca):
    base = "host=127.0.0.1 port=%d dbname=postgres user=postgres password=%s" % (postgres.port, postgres.password)
    good = stores.PostgresStore(base + " sslrootcert=%s" % postgres.ca_file, table=table_name(), timeout=TIMEOUT)
    assert good.deliver(make_records(1)) == 1
    # no sslmode in the dsn: verify-full is used, so a CA that did not sign the server certificate is refused
    rogue = stores.PostgresStore(base + " sslrootcert=%s" % rogue_ca.ca_file, table=table_name(), timeout=TIMEOUT)
    message = fails_fast(stores, rogue, make_records(1))
    assert "certificate verify failed" in message and postgres.password not in message
    # an explicit sslmode is respected: require encrypts without verifying (insecure, for tests only).
    # libpq quirk: with an sslrootcert file present, require verifies like verify-ca.
    with pytest.raises(stores.StoreUnavailable, match="certificate verify failed"):
        stores.PostgresStore(base + " sslmode=require sslrootcert=%s" % rogue_ca.ca_file, table=table_name(),
                             timeout=TIMEOUT).deliver(make_records(1))
    insecure = stores.PostgresStore(base + " sslmode=require", table=table_name(), timeout=TIMEOUT)
    assert insecure.deliver(make_records(1)) == 1


def test_postgres_host_name_is_verified(stores, postgres):
    """verify-full by default: the certificate names localhost and 127.0.0.1, not 127.0.0.2."""
    dsn = "host=127.0.0.2 hostaddr=127.0.0.1 port=%d user=postgres password=%s sslrootcert=%s" % (
        postgres.port, postgres.password, postgres.ca_file)
    message = fails_fast(stores, stores.PostgresStore(dsn, timeout=TIMEOUT), make_records(1))
    assert "127.0.0.2" in message and postgres.password not in message


@pytest.mark.parametrize("dsn_form", ["keyword", "uri"])
def test_postgres_messages_never_contain_the_password(stores, postgres, dsn_form):
    password = "S3cr3t-%s" % uuid.uuid4().hex
    if dsn_form == "uri":
        dsn = "postgresql://postgres:%s@127.0.0.1:%d/postgres?sslrootcert=%s" % (
            password, postgres.port, postgres.ca_file)
    else:
        dsn = "host=127.0.0.1 port=%d dbname=postgres user=postgres password='%s' sslrootcert=%s" % (
            postgres.port, password, postgres.ca_file)
    store = stores.PostgresStore(dsn, timeout=TIMEOUT)
    message = fails_fast(stores, store, make_records(1))  # wrong password
    assert "password authentication failed" in message
    for text in (message, store.name, repr(store)):
        assert password not in text
    stopped = stores.PostgresStore(dsn.replace(str(postgres.port), "1"), timeout=TIMEOUT)
    assert password not in fails_fast(stores, stopped, make_records(1))


def test_postgres_malformed_dsn_is_not_echoed(stores):
    with pytest.raises(stores.InvalidOption) as info:
        stores.PostgresStore("host=localhost password=se cret=x =oops")
    assert "se cret" not in str(info.value) and "cret" not in str(info.value)
    # accepted by the light parser, refused by libpq: still not echoed
    store = stores.PostgresStore("postgresql://u:hunter2%zz@localhost/db", timeout=TIMEOUT)
    message = fails_fast(stores, store, make_records(1))
    assert "hunter2" not in message and "cannot parse" in message


def test_postgres_without_psycopg_says_what_to_install(stores, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    store = stores.PostgresStore("host=127.0.0.1 password=hunter2", timeout=TIMEOUT)
    message = fails_fast(stores, store, make_records(1))
    assert 'pip install "psycopg[binary]"' in message and "hunter2" not in message


@pytest.mark.parametrize("dsn, name", [
    ("host=db.example port=5433 dbname=audit user=u password=p", "postgresql:db.example:5433/audit"),
    ("host = 'db.example'  dbname='a b' password='x\\'y'", "postgresql:db.example:5432/a b"),
    ("postgresql://u:p%40ss@db.example:6000/audit?sslmode=verify-ca", "postgresql:db.example:6000/audit"),
    ("postgresql://[::1]/audit", "postgresql:::1:5432/audit"),
    ("postgres://u@/audit?host=/run/postgresql", "postgresql:/run/postgresql:5432/audit"),
    ("user=u", "postgresql:local:5432/u"),
])
def test_postgres_name_matches_libpq(stores, dsn, name):
    from psycopg.conninfo import conninfo_to_dict

    store = stores.PostgresStore(dsn)
    assert store.name == name
    libpq = conninfo_to_dict(dsn)
    params = stores._parse_conninfo(dsn)  # pylint: disable=protected-access
    for key in ("host", "port", "dbname", "user", "password", "sslmode"):
        assert params.get(key) == libpq.get(key), key


def test_postgres_bad_options(stores):
    with pytest.raises(stores.InvalidOption, match="table"):
        stores.PostgresStore("host=x", table="audit; DROP TABLE x")
    with pytest.raises(stores.InvalidOption, match="dsn"):
        stores.PostgresStore("")
