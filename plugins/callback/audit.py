# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: audit
type: notification
short_description: Ship the key lifecycle audit journal to syslog over TLS and PostgreSQL
version_added: 0.1.0
description:
  - Ships the records of the controller's audit journals (written, fail-closed, by the collection's lifecycle
    action plugins) to the configured server stores, with at-least-once delivery and the record id as the
    idempotency key.
  - Ships the backlog when a playbook starts, after every task of this collection, and when the playbook ends.
    A store that was down gets every record once it is back, in the same run if it recovers, else in the next.
  - Sends only journal records. It adds nothing from the play (no task arguments, no variables).
  - Every connection has a bounded timeout, so a dead store never hangs the play; a store that failed is retried
    after O(retry_after) seconds. Failures are warnings (a callback cannot fail a run); the journal keeps the
    records, and C(audit_verify) checks them.
  - The journals shipped are those the lifecycle action plugins registered under O(state_dir), plus O(journals).
requirements:
  - enable it with C(callbacks_enabled = secops.keylifecycle.audit) in C(ansible.cfg) or E(ANSIBLE_CALLBACKS_ENABLED)
  - psycopg (3) on the controller for the PostgreSQL store
options:
  state_dir:
    description:
      - Folder of the controller's audit state (the registry of journals, and each token's default journal).
      - Defaults to C(secops_keylifecycle) under E(ANSIBLE_HOME) (as ansible is configured, else C(~/.ansible)),
        the same folder the lifecycle action plugins use.
    type: path
    env:
      - name: KEYLIFECYCLE_AUDIT_STATE_DIR
    ini:
      - section: secops_keylifecycle_audit
        key: state_dir
  journals:
    description: Journal paths to ship in addition to the registered ones.
    type: list
    elements: path
    default: []
    env:
      - name: KEYLIFECYCLE_AUDIT_JOURNALS
    ini:
      - section: secops_keylifecycle_audit
        key: journals
  syslog_host:
    description: Host of the syslog collector (RFC 5425, TLS). No syslog shipping when not set.
    type: str
    env:
      - name: KEYLIFECYCLE_AUDIT_SYSLOG_HOST
    ini:
      - section: secops_keylifecycle_audit
        key: syslog_host
  syslog_port:
    description: TLS port of the syslog collector.
    type: int
    default: 6514
    env:
      - name: KEYLIFECYCLE_AUDIT_SYSLOG_PORT
    ini:
      - section: secops_keylifecycle_audit
        key: syslog_port
  syslog_ca_file:
    description: PEM file of the CA(s) that sign the collector's certificate (system CAs when not set).
    type: path
    env:
      - name: KEYLIFECYCLE_AUDIT_SYSLOG_CA_FILE
    ini:
      - section: secops_keylifecycle_audit
        key: syslog_ca_file
  syslog_validate_certs:
    description:
      - Verify the collector's certificate and host name. V(false) is insecure, for tests only, and every run warns
        about it.
    type: bool
    default: true
    env:
      - name: KEYLIFECYCLE_AUDIT_SYSLOG_VALIDATE_CERTS
    ini:
      - section: secops_keylifecycle_audit
        key: syslog_validate_certs
  postgresql_dsn:
    description:
      - libpq connection string of the PostgreSQL store. No PostgreSQL shipping when not set.
      - Without C(sslmode) in it, C(sslmode=verify-full) is used. An C(sslmode) that does not verify the server
        (C(require), C(prefer), C(allow), C(disable)) is for tests only, and every run warns about it. Keep a password
        out of C(ansible.cfg) and use E(PGPASSWORD) or C(~/.pgpass).
    type: str
    env:
      - name: KEYLIFECYCLE_AUDIT_POSTGRESQL_DSN
    ini:
      - section: secops_keylifecycle_audit
        key: postgresql_dsn
  postgresql_table:
    description: Table of the PostgreSQL store (created if missing, record id unique).
    type: str
    default: keylifecycle_audit
    env:
      - name: KEYLIFECYCLE_AUDIT_POSTGRESQL_TABLE
    ini:
      - section: secops_keylifecycle_audit
        key: postgresql_table
  timeout:
    description: Seconds allowed for each connection step of a store.
    type: float
    default: 5.0
    env:
      - name: KEYLIFECYCLE_AUDIT_TIMEOUT
    ini:
      - section: secops_keylifecycle_audit
        key: timeout
  retry_after:
    description: Seconds to wait before trying again a store that failed during this run.
    type: float
    default: 10.0
    env:
      - name: KEYLIFECYCLE_AUDIT_RETRY_AFTER
    ini:
      - section: secops_keylifecycle_audit
        key: retry_after
"""

import os

from ansible.plugins.callback import CallbackBase

from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import registered_journals
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._shipping import Shipper
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._stores import (
    PostgresStore,
    SyslogTlsStore,
    transport_warnings,
)

_COLLECTION_PREFIX = "secops.keylifecycle."


class CallbackModule(CallbackBase):
    """Ships the lifecycle audit journal to the configured server stores."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "secops.keylifecycle.audit"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None, options=None):
        super().__init__(display=display, options=options)
        self._shipper = None

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        stores = []
        try:
            if self.get_option("syslog_host"):
                stores.append(SyslogTlsStore(
                    self.get_option("syslog_host"), int(self.get_option("syslog_port")),
                    ca_file=self.get_option("syslog_ca_file"),
                    validate_certs=self.get_option("syslog_validate_certs"), timeout=self.get_option("timeout")))
            if self.get_option("postgresql_dsn"):
                stores.append(PostgresStore(self.get_option("postgresql_dsn"),
                                            table=self.get_option("postgresql_table"),
                                            timeout=self.get_option("timeout")))
        except Exception as exc:  # pylint: disable=broad-except
            self._display.warning("secops.keylifecycle.audit: a store is misconfigured and is not used: %s" % exc)
        if not stores:
            self._display.warning("secops.keylifecycle.audit is enabled but no store is configured "
                                  "(syslog_host, postgresql_dsn): records stay in the journal only.")
        for warning in transport_warnings(stores):
            self._display.warning(warning)
        self._shipper = Shipper(stores, retry_after=self.get_option("retry_after"))

    def _journals(self):
        given = self.get_option("state_dir")
        environ = dict(os.environ, KEYLIFECYCLE_AUDIT_STATE_DIR=given) if given else None
        return list(self.get_option("journals") or []) + registered_journals(environ)

    def _ship(self, force=False):
        if self._shipper is None or not self._shipper.stores:
            return
        try:
            report = self._shipper.ship(self._journals(), force=force)
        except Exception as exc:  # pylint: disable=broad-except
            self._display.warning("secops.keylifecycle.audit: shipping failed: %s" % exc)
            return
        for name, entry in report.items():
            if entry["error"]:
                self._display.warning("secops.keylifecycle.audit: %d record(s) queued for %s: %s"
                                      % (entry["pending"], name, entry["error"]))
            elif entry["delivered"]:
                self._display.vv("secops.keylifecycle.audit: %d record(s) shipped to %s" % (entry["delivered"], name))

    def v2_playbook_on_start(self, playbook):
        self._ship(force=True)

    def _after_task(self, result):
        action = getattr(result._task, "resolved_action", None) or getattr(result._task, "action", "")
        if str(action).startswith(_COLLECTION_PREFIX):
            self._ship()

    def v2_runner_on_ok(self, result):
        self._after_task(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._after_task(result)

    def v2_playbook_on_stats(self, stats):
        self._ship(force=True)
