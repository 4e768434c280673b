# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Clients of the audit log stores: syslog over TLS and PostgreSQL.

PRIVATE: not part of the public interface. Controller-only code (used by the audit
callback); it needs the standard library, plus psycopg 3 for the PostgreSQL store.

The audit callback ships records of the hash-chained journal to each store with
at-least-once delivery. Every store has a stable ``name`` (the key of its delivery
cursor) and ``deliver(records)``, which sends records in order and returns how many
leading records were delivered; the caller moves the cursor by that many and sends
the rest later. If not even the first record could be delivered, ``deliver`` raises
``StoreUnavailable``. A record may arrive twice (a retry after a partial failure):
its ``record_id`` is the idempotency key. PostgreSQL drops duplicates itself;
a syslog collector keeps them, and readers deduplicate on ``record_id``.

Both clients verify the server's TLS certificate and name by default, and bound
every network step by ``timeout`` seconds: a dead or frozen store makes ``deliver``
fail, it never hangs the run. No message contains a password.

Delivery semantics (docs/audit.md, "Delivery semantics", says the same for operators):

- Syslog (RFC 5424 over TLS, RFC 5425 octet-counted framing) has no application-level
  acknowledgement: a record counts as delivered once the TLS layer accepted its bytes
  (``sendall`` returned). ``deliver`` then sends a TLS close and waits (bounded) for the
  collector to close its side, but it counts the records as delivered whether or not that
  close completes. Records in flight (in a socket buffer, or read by the collector and not
  yet written) when the collector or its host dies are lost, and nothing tells the sender.
- PostgreSQL acknowledges with the commit: ``deliver`` counts a record as delivered only
  once the transaction holding its INSERT is committed. The PostgreSQL table is therefore
  the journal's acknowledged copy; ``fetch_records`` reads it back and
  ``_store_compare.compare_with_store`` compares it with the journal by record id.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import ssl
import threading
from urllib.parse import parse_qsl, unquote

from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption, KeyLifecycleError

PSYCOPG_INSTALL_HINT = 'pip install "psycopg[binary]"'

# RFC 5424: facility authpriv (10), severity informational (6).
SYSLOG_PRI = 10 * 8 + 6
SYSLOG_VERSION = 1
_RFC5424_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})\Z")
_TABLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?\Z")
_CONNINFO_PAIR = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^'\\]|\\.)*'|(?:[^\s'\\]|\\.)+)")
_PG_CHUNK = 500  # records per transaction
_PG_FETCH = 2000  # rows per FETCH when reading the store back


class StoreUnavailable(KeyLifecycleError):
    """A store could not take any record now (unreachable, refused, timed out): retry later.

    The message names the store and the cause; it never contains a password.
    """

    kind = "store_unavailable"

    def __init__(self, message, store=None):
        super().__init__(message)
        self.store = store


def _printable(text, limit):
    """``text`` reduced to RFC 5424 PRINTUSASCII (33..126), at most ``limit`` characters, or the NILVALUE."""
    kept = "".join(char for char in str(text or "") if 33 <= ord(char) <= 126)[:limit]
    return kept or "-"


def _action(record):
    event = record.event if isinstance(record.event, dict) else {}
    inner = event.get("event")
    return inner.get("action") if isinstance(inner, dict) else None


def _check_timeout(timeout):
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise InvalidOption("timeout must be a number of seconds between 0 and 3600, got %r." % (timeout,),
                            option="timeout")
    return float(timeout)


class SyslogTlsStore:
    """A syslog collector reached over TLS (RFC 5425), e.g. rsyslog ``imtcp`` with a TLS stream driver.

    Each record becomes one RFC 5424 message: ``<86>1 RECORDED_AT HOSTNAME APP-NAME PID ACTION - LINE``
    (facility authpriv, severity info; MSGID is ``event.action``; MSG is the journal line, byte for byte),
    framed by octet counting. ``validate_certs=False`` turns off certificate and host name checks:
    anyone on the path can then read and suppress the audit trail. Use it only for tests.
    """

    def __init__(self, host, port, ca_file=None, validate_certs=True, timeout=5.0, client_cert=None,
                 client_key=None, app_name="secops-keylifecycle", hostname=None):
        if not host or not isinstance(host, str):
            raise InvalidOption("host must name the syslog collector.", option="host")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise InvalidOption("port must be a TCP port number (1-65535), got %r." % (port,), option="port")
        self.host = host
        self.port = port
        self.timeout = _check_timeout(timeout)
        self.app_name = _printable(app_name, 48)
        self.hostname = _printable(hostname or socket.gethostname(), 255)
        self.validate_certs = bool(validate_certs)
        self._context = self._make_context(ca_file, client_cert, client_key)

    @property
    def name(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "syslog-tls:%s:%d" % (host, self.port)

    @property
    def cursor_key(self):
        """What the shipping cursor of a journal is kept per: the collector."""
        return self.name

    @property
    def unverified(self):
        """Why the collector is not authenticated (a sentence), or None."""
        return None if self.validate_certs else "syslog_validate_certs is false: the collector's certificate is not " \
                                                "checked"

    def _make_context(self, ca_file, client_cert, client_key):
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidOption("ca_file %s cannot be loaded as PEM CA certificates: %s." % (ca_file, exc),
                                option="ca_file") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client_cert:
            try:
                context.load_cert_chain(client_cert, client_key)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidOption("client_cert %s / client_key %s cannot be loaded: %s." % (
                    client_cert, client_key, exc), option="client_cert") from None
        elif client_key:
            raise InvalidOption("client_key needs client_cert.", option="client_cert")
        return context

    def frame(self, record):
        """The bytes sent for one record: ``LEN SP SYSLOG-MSG`` (RFC 5425 octet counting)."""
        stamp = record.recorded_at if _RFC5424_TIMESTAMP.match(record.recorded_at or "") else "-"
        msgid = _printable(_action(record), 32)
        header = "<%d>%d %s %s %s %d %s -" % (
            SYSLOG_PRI, SYSLOG_VERSION, stamp, self.hostname, self.app_name, os.getpid(), msgid)
        message = ("%s %s" % (header, record.line)).encode("utf-8")
        return b"%d %s" % (len(message), message)

    def _unavailable(self, what, exc):
        if isinstance(exc, ssl.SSLCertVerificationError):
            cause = ("the server certificate was refused (%s): it must be signed by a CA in ca_file and name %s "
                     "(validate_certs=false skips this check and is insecure)" % (exc.verify_message, self.host))
        elif isinstance(exc, socket.timeout):
            cause = "no answer within %g s" % self.timeout
        else:
            cause = str(exc) or type(exc).__name__
        return StoreUnavailable("Audit store %s is unavailable: %s failed: %s." % (self.name, what, cause),
                                store=self.name)

    def deliver(self, records):
        """Send ``records`` in order on one TLS connection; return how many leading records were sent."""
        records = list(records)
        if not records:
            return 0
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise self._unavailable("connecting", exc) from None
        try:
            tls = self._context.wrap_socket(raw, server_hostname=self.host)
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            raise self._unavailable("TLS handshake", exc) from None
        sent = 0
        try:
            for record in records:
                try:
                    tls.sendall(self.frame(record))
                except (OSError, ssl.SSLError) as exc:
                    if sent == 0:
                        raise self._unavailable("sending", exc) from None
                    break
                sent += 1
        finally:
            self._close(tls)
        return sent

    @staticmethod
    def _close(tls):
        """Send close_notify and wait (bounded) for the collector to close; rsyslog answers with a bare EOF."""
        try:
            tls.unwrap().close()
        except (OSError, ssl.SSLError):
            tls.close()


class _Watchdog:
    """Cut a connection's socket if the server has not answered by the deadline.

    libpq has no read timeout and a frozen server never trips its own statement_timeout;
    shutting the socket down makes the pending call fail at once.
    """

    def __init__(self, fileno, seconds):
        self.fired = False
        self._fileno = fileno
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self):
        with self._lock:
            if self._done:
                return
            self.fired = True
            try:
                sock = socket.socket(fileno=os.dup(self._fileno))
            except OSError:
                return
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                sock.close()

    def cancel(self):
        """Disarm; after this returns the watchdog never touches the socket (call it before closing)."""
        with self._lock:
            self._done = True
        self._timer.cancel()


def _parse_conninfo(dsn):
    """Connection parameters of a libpq DSN (``key=value ...`` or ``postgresql://`` URI), stdlib only.

    Used for the store's name and to keep the password out of messages; libpq parses the DSN again
    when connecting.
    """
    if dsn.startswith(("postgresql://", "postgres://")):
        rest = dsn.split("://", 1)[1]
        params = {}
        # as libpq reads a URI: the user info runs to the first "@" met before any "/" ("?" may be in a password)
        userinfo = re.match(r"^([^@/]*)@", rest)
        if userinfo:
            rest = rest[userinfo.end():]
            user, has_password, password = userinfo.group(1).partition(":")
            if user:
                params["user"] = unquote(user)
            if has_password:
                params["password"] = unquote(password)
        rest, query = rest.split("?", 1) if "?" in rest else (rest, "")
        netloc, path = rest.split("/", 1) if "/" in rest else (rest, "")
        match = re.match(r"^(\[[^\]]*\]|[^:,]*)(?::([^:,]*))?\Z", netloc)
        if match:
            params["host"], params["port"] = unquote(match.group(1).strip("[]")), match.group(2) or ""
        else:
            params["host"] = unquote(netloc)  # several hosts: kept as written
        if path:
            params["dbname"] = unquote(path)
        params.update(parse_qsl(query, keep_blank_values=True))
        return {key: value for key, value in params.items() if value != ""}
    params = {}
    position = 0
    while dsn[position:].strip():
        match = _CONNINFO_PAIR.match(dsn, position)
        if not match:
            raise InvalidOption("dsn is not a valid libpq connection string (key=value pairs or a postgresql:// "
                                "URI); its text is not shown as it may contain a password.", option="dsn")
        value = match.group(2)
        if value.startswith("'"):
            value = value[1:-1]
        params[match.group(1)] = re.sub(r"\\(.)", r"\1", value)
        position = match.end()
    return params


class PostgresStore:
    """A PostgreSQL table of audit records, written with ``INSERT ... ON CONFLICT (record_id) DO NOTHING``.

    ``dsn`` is a libpq connection string. If it sets no ``sslmode``, ``sslmode=verify-full`` is used: the
    server certificate must chain to ``sslrootcert`` (a CA file, or ``system``; the libpq default is
    ``~/.postgresql/root.crt``) and name the host. PGSSLMODE is not consulted. The table is created when
    missing (that needs CREATE on the schema once; afterwards INSERT and SELECT on the table are enough), with an
    index on ``(journal_id, seq, record_id)`` for reading a journal back in order.
    Records go in transactions of up to 500; a commit is the acknowledgement: ``deliver`` counts a record only once
    the transaction holding its INSERT is committed, so the table is the journal's acknowledged copy.
    ``fetch_records`` reads one journal's rows back (SELECT only, in a read-only transaction).
    """

    def __init__(self, dsn, table="keylifecycle_audit", timeout=5.0):
        if not dsn or not isinstance(dsn, str):
            raise InvalidOption("dsn must be a libpq connection string.", option="dsn")
        if not isinstance(table, str) or not _TABLE_RE.match(table):
            raise InvalidOption("table must be a lower-case SQL name (optionally schema.name), got %r." % (table,),
                                option="table")
        self._dsn = dsn
        self._params = _parse_conninfo(dsn)
        self.table = table
        self.timeout = _check_timeout(timeout)
        self._table_ready = False

    def __repr__(self):
        return "PostgresStore(%s, table=%s)" % (self.name, self.table)

    @property
    def name(self):
        params = self._params
        return "postgresql:%s:%s/%s" % (params.get("host") or "local", params.get("port") or "5432",
                                        params.get("dbname") or params.get("user") or "postgres")

    @property
    def cursor_key(self):
        """What the shipping cursor of a journal is kept per: the database and the table (another table of the same
        database holds none of the records the first one acknowledged)."""
        return "%s/%s" % (self.name, self.table)

    @property
    def unverified(self):
        """Why the server is not authenticated (a sentence), or None: an ``sslmode`` in the DSN that does not verify
        the server's certificate (without one, ``verify-full`` is used)."""
        mode = self._params.get("sslmode", "verify-full")
        if mode in ("verify-ca", "verify-full"):
            return None
        if mode == "require":
            return "sslmode=require in postgresql_dsn: the server's certificate is not checked"
        return "sslmode=%s in postgresql_dsn: the records may travel unencrypted, to an unchecked server" % mode

    @staticmethod
    def _scrub(text, secrets):
        for secret in secrets:
            if secret:
                text = text.replace(secret, "********")
        return text

    def _fail(self, what, exc, secrets, watchdog=None):
        if watchdog is not None and watchdog.fired:
            cause = "no answer within %g s, connection cut" % (3 * self.timeout)
        else:
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            cause = "%s: %s" % (type(exc).__name__, " ".join(lines[:4]) or "no detail")
        return StoreUnavailable("Audit store %s is unavailable: %s failed: %s." % (
            self.name, what, self._scrub(cause, secrets)), store=self.name)

    def _connect_kwargs(self, params):
        kwargs = {
            "connect_timeout": max(2, math.ceil(self.timeout)),
            "options": ("%s -c statement_timeout=%d" % (params.get("options", ""), self.timeout * 1000)).strip(),
        }
        if "sslmode" not in params:
            kwargs["sslmode"] = "verify-full"
        if "application_name" not in params:
            kwargs["application_name"] = "secops-keylifecycle"
        return kwargs

    def _connect(self):
        """``(psycopg, connection, secrets)``; StoreUnavailable when psycopg is missing or the server unreachable."""
        secrets = [self._params.get("password")]
        try:
            # pylint: disable-next=import-outside-toplevel
            import psycopg
        except ImportError as exc:
            raise StoreUnavailable("Audit store %s needs the Python library psycopg 3 on the controller (%s): %s." % (
                self.name, exc, PSYCOPG_INSTALL_HINT), store=self.name) from None
        try:
            params = psycopg.conninfo.conninfo_to_dict(self._dsn)
        except psycopg.Error:
            raise StoreUnavailable("Audit store %s: libpq cannot parse the dsn (its text is not shown as it may "
                                   "contain a password)." % self.name, store=self.name) from None
        secrets.append(params.get("password"))
        try:
            conn = psycopg.connect(self._dsn, **self._connect_kwargs(params))
        except psycopg.Error as exc:
            raise self._fail("connecting", exc, secrets) from None
        return psycopg, conn, secrets

    def deliver(self, records):
        """Insert ``records`` (duplicates ignored); return how many leading records are committed.

        A record counts only once the transaction holding its INSERT is committed (``conn.transaction()`` commits
        on leaving the block; a failed commit raises and the chunk is not counted).
        """
        records = list(records)
        if not records:
            return 0
        psycopg, conn, secrets = self._connect()
        done = 0
        try:
            while done < len(records):
                chunk = records[done:done + _PG_CHUNK]
                watchdog = _Watchdog(conn.fileno(), 3 * self.timeout)
                try:
                    self._insert(psycopg, conn, chunk)
                except psycopg.Error as exc:
                    self._table_ready = False
                    if done == 0:
                        raise self._fail("writing", exc, secrets, watchdog) from None
                    break
                finally:
                    watchdog.cancel()
                done += len(chunk)
        finally:
            conn.close()
        return done

    def _insert(self, psycopg, conn, chunk):
        """One transaction: create the table if missing, insert the chunk, commit."""
        sql = psycopg.sql
        table = sql.Identifier(*self.table.split("."))
        with conn.transaction(), conn.cursor() as cur:
            if not self._table_ready:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", [self.table])
                if not cur.fetchone()[0]:
                    cur.execute(sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (record_id uuid PRIMARY KEY, journal_id text NOT NULL, "
                        "seq bigint NOT NULL, recorded_at timestamptz NOT NULL, action text, event jsonb NOT NULL, "
                        "line text NOT NULL, hash text NOT NULL, prev_hash text)").format(table))
                    cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (journal_id, seq, record_id)").format(
                        sql.Identifier(self._index_name()), table))
            cur.executemany(sql.SQL(
                "INSERT INTO {} (record_id, journal_id, seq, recorded_at, action, event, line, hash, prev_hash) "
                "VALUES (%s::uuid, %s, %s, %s::timestamptz, %s, %s::jsonb, %s, %s, %s) "
                "ON CONFLICT (record_id) DO NOTHING").format(table),
                [(record.record_id, record.journal_id, record.seq, record.recorded_at, _action(record),
                  json.dumps(record.event, sort_keys=True), record.line, record.hash, record.prev_hash)
                 for record in chunk])
        self._table_ready = True

    def _index_name(self):
        return self.table.split(".")[-1][:50] + "_journal_seq"

    def fetch_records(self, journal_id, since_seq=0):
        """The stored rows of journal ``journal_id`` with ``seq > since_seq``, read back for a comparison.

        Returns a ``StoredRecords`` iterator of ``(record_id, (seq, hash, line))`` pairs in ``(seq, record_id)``
        order (``dict(...)`` of it is the record_id -> (seq, hash, line) map), streamed through a server-side
        cursor in batches of 2000 rows, so memory stays flat in the table's size. Close it (or use it as a context
        manager) when not read to the end. Needs only SELECT on the table; the transaction is read-only.
        Raises StoreUnavailable (now, or while iterating) when the store cannot be read, or has no such table.
        """
        if not isinstance(journal_id, str) or not journal_id:
            raise InvalidOption("journal_id must name a journal.", option="journal_id")
        psycopg, conn, secrets = self._connect()
        sql = psycopg.sql
        try:
            conn.read_only = True
            watchdog = _Watchdog(conn.fileno(), 3 * self.timeout)
            try:
                exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [self.table]).fetchone()[0]
                cursor = None
                if exists:
                    cursor = conn.cursor(name="keylifecycle_audit_fetch")
                    cursor.execute(sql.SQL(
                        "SELECT record_id, seq, hash, line FROM {} WHERE journal_id = %s AND seq > %s "
                        "ORDER BY seq, record_id").format(sql.Identifier(*self.table.split("."))),
                        [journal_id, int(since_seq)])
            except psycopg.Error as exc:
                raise self._fail("reading", exc, secrets, watchdog) from None
            finally:
                watchdog.cancel()
            if not exists:
                raise StoreUnavailable("Audit store %s has no table %s: nothing was ever shipped there, or the table "
                                       "name is wrong (postgresql_table)." % (self.name, self.table), store=self.name)
        except BaseException:
            conn.close()
            raise
        return StoredRecords(self, psycopg, conn, cursor, secrets)


class StoredRecords:
    """``(record_id, (seq, hash, line))`` pairs of one journal read back from a PostgresStore, fetched in batches.

    The connection is closed at the end of the rows, by ``close()``, or on leaving a ``with`` block.
    """

    def __init__(self, store, psycopg, conn, cursor, secrets):
        self._store = store
        self._psycopg = psycopg
        self._conn = conn
        self._cursor = cursor
        self._secrets = secrets
        self._rows = []
        self._next = 0
        self.read = 0  # rows returned so far

    def __iter__(self):
        return self

    def __next__(self):
        if self._next >= len(self._rows):
            if self._conn is None:
                raise StopIteration
            watchdog = _Watchdog(self._conn.fileno(), 3 * self._store.timeout)
            try:
                self._rows = self._cursor.fetchmany(_PG_FETCH)
            except self._psycopg.Error as exc:
                error = self._store._fail("reading", exc, self._secrets, watchdog)  # pylint: disable=protected-access
                watchdog.cancel()
                self.close()
                raise error from None
            watchdog.cancel()
            self._next = 0
            if not self._rows:
                self.close()
                raise StopIteration
        record_id, seq, record_hash, line = self._rows[self._next]
        self._next += 1
        self.read += 1
        return str(record_id), (seq, record_hash, line)

    def close(self):
        """Release the connection (idempotent)."""
        conn, self._conn, self._rows = self._conn, None, []
        if conn is not None:
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def transport_warnings(stores):
    """One warning per store that does not authenticate its server: anyone on the network path can then read the
    records, or take them and acknowledge them in the store's place."""
    return ["secops.keylifecycle.audit: %s: %s. Anyone on the network path can read the audit records or take them "
            "in the store's place; use it only for tests." % (store.name, store.unverified)
            for store in stores if store.unverified]
