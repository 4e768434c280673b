"""A PostgreSQL store's name (in warnings, -vv output, cursor files and audit_verify's problems) is built from the
DSN as libpq reads it, and never holds any part of the password. libpq's own parse (psycopg.conninfo) is the
reference. No server."""

from __future__ import annotations

import pytest

DSNS = [
    "postgresql://auditor:S3cr3tPassw0rd?x@db.example:5432/audit",
    "postgresql://auditor:pa/ss@db.example/audit",  # "/" before "@": libpq reads no user info here
    "postgresql://auditor:p%40ss?w@db.example:6432/audit?sslmode=verify-full&sslrootcert=/etc/ca.pem",
    "postgres://auditor@[::1]:5433/audit",
    "postgresql://db.example/audit?user=auditor&password=Secret%3Fx",
    "host=db.example port=5432 dbname=audit user=auditor password='S3cr3t ?@ x'",
]


@pytest.mark.parametrize("dsn", DSNS)
def test_the_parse_agrees_with_libpq(dsn):
    from psycopg.conninfo import conninfo_to_dict

    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._stores import _parse_conninfo

    ours, libpq = _parse_conninfo(dsn), conninfo_to_dict(dsn)
    for field in ("host", "port", "dbname", "user", "password"):
        assert ours.get(field) == libpq.get(field), (field, ours, libpq)


@pytest.mark.parametrize("dsn", DSNS)
def test_the_store_name_holds_no_part_of_the_password(dsn):
    from psycopg.conninfo import conninfo_to_dict

    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._stores import PostgresStore

    name = PostgresStore(dsn).name
    password = conninfo_to_dict(dsn).get("password") or ""
    assert not any(password[i:i + 4] in name for i in range(max(len(password) - 3, 0))), name
    assert PostgresStore("postgresql://auditor:S3cr3tPassw0rd?x@db.example:5432/audit").name == \
        "postgresql:db.example:5432/audit"


@pytest.mark.parametrize("dsn, warned", [
    ("postgresql://auditor@db.example/audit", None),  # no sslmode: verify-full is used
    ("postgresql://auditor@db.example/audit?sslmode=verify-ca&sslrootcert=/etc/ca.pem", None),
    ("host=db.example dbname=audit sslmode=verify-full", None),
    ("postgresql://auditor@db.example/audit?sslmode=require", "sslmode=require"),
    ("host=db.example dbname=audit sslmode='prefer'", "sslmode=prefer"),
    ("postgresql://auditor@db.example/audit?sslmode=disable", "sslmode=disable"),
])
def test_a_store_that_does_not_check_its_server_is_warned_about(dsn, warned):
    from psycopg.conninfo import conninfo_to_dict

    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._stores import (
        PostgresStore,
        SyslogTlsStore,
        transport_warnings,
    )

    assert (conninfo_to_dict(dsn).get("sslmode") or "verify-full") in (warned or "verify-full verify-ca")
    store = PostgresStore(dsn)
    warnings = transport_warnings([store, SyslogTlsStore("collector.example", 6514)])
    if warned is None:
        assert store.unverified is None and warnings == []
    else:
        expected = "secops.keylifecycle.audit: %s: %s. Anyone on the network path can read the audit records or take " \
                   "them in the store's place; use it only for tests." % (store.name, store.unverified)
        assert warnings == [expected]
        assert warned in warnings[0]
    unchecked = SyslogTlsStore("collector.example", 6514, validate_certs=False)
    assert transport_warnings([unchecked]) == [
        "secops.keylifecycle.audit: syslog-tls:collector.example:6514: syslog_validate_certs is false: the "
        "collector's certificate is not checked. Anyone on the network path can read the audit records or take them "
        "in the store's place; use it only for tests."]
