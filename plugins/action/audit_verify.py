# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import hsm_module_kwargs
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError
from ansible_collections.secops.keylifecycle.plugins.modules.audit_verify import ARGUMENT_SPEC
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._audit_verification import verify_journal_file
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import (
    Journal,
    resolve_journal_path,
    task_token,
)
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._pin_guard import check_pin_exposure
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._store_compare import compare_journal_with_store
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._stores import PostgresStore, StoreUnavailable


class ActionModule(ActionBase):
    """Streams and checks the journal on the controller; reads the token (pin, checkpoint keys) through the module."""

    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        # The module's own spec; the host's environment fallbacks of the connection options are the module's to apply.
        spec = hsm_module_kwargs(ARGUMENT_SPEC, env_fallbacks=False)
        params = self.validate_argument_spec(argument_spec=spec["argument_spec"],
                                             mutually_exclusive=spec["mutually_exclusive"])[1]
        check_pin_exposure(self)
        if params["since_seq"] is not None and params["since_seq"] < 1:
            result.update(failed=True, msg="since_seq must be a record's sequence number (1 or more), got %d"
                          % params["since_seq"])
            return result
        store = self._store(params) if params["compare_store"] else None
        journal = Journal(resolve_journal_path(params, task_vars, self._templar, token=task_token(self._task.args)))

        module_args = {k: v for k, v in self._task.args.items() if k not in ARGUMENT_SPEC}
        token = self._execute_module(module_name=self._task.resolved_action, module_args=module_args,
                                     task_vars=task_vars)
        if token.get("failed"):
            result.update(token)
            return result
        report = verify_journal_file(journal.path, token, params["journal_id"], params["since_seq"])
        report["journal"] = journal.path
        if store is not None:
            self._compare(report, journal, store, params["since_seq"])
        report["checkpoint_public_keys"] = token.get("checkpoint_public_keys") or {}
        if params["export_public_keys"]:
            directory = os.path.expanduser(params["export_public_keys"])
            os.makedirs(directory, exist_ok=True)
            for key_id, pem in report["checkpoint_public_keys"].items():
                with open(os.path.join(directory, "%s.pem" % key_id), "w", encoding="ascii") as handle:
                    handle.write(pem)
        result.update(report)
        result["changed"] = False
        if not report["ok"]:
            result["failed"] = bool(params["fail_on_error"])
            result["msg"] = "The audit journal %s does not verify: %s" % (journal.path, "; ".join(report["problems"]))
        else:
            result["msg"] = "The audit journal %s verifies: %d records, head seq %d, %d checkpoint(s)" % (
                journal.path, report["records"], report["head"]["seq"], report["checkpoints_verified"])
            if report["outcomes_verified"]:
                result["msg"] += ", the events of the token's last %d task(s)" % report["outcomes_verified"]
            if report["other_token_checkpoints"]:
                result["msg"] += ", %d checkpoint(s) of other tokens" % report["other_token_checkpoints"]
            if report["unanchored_records"]:
                result["msg"] += ", %d record(s) after the last signed checkpoint" % report["unanchored_records"]
        for key in ("token_pin", "checkpoint_certificates", "token_label", "token_serial", "token_checkpoints",
                    "policy_signers"):
            if key in token:
                result.setdefault(key, token[key])
        return result

    @staticmethod
    def _store(params):
        """The PostgreSQL store to compare with; a clear error before anything is read when it is not usable."""
        if not params["postgresql_dsn"]:
            raise AnsibleActionFail("compare_store needs postgresql_dsn (or KEYLIFECYCLE_AUDIT_POSTGRESQL_DSN on the "
                                    "controller): the store the callback ships the journal to.")
        if params["store_timeout"] <= 0:
            raise AnsibleActionFail("store_timeout must be a positive number of seconds, got %s."
                                    % params["store_timeout"])
        try:
            return PostgresStore(params["postgresql_dsn"], table=params["postgresql_table"],
                                 timeout=params["store_timeout"])
        except KeyLifecycleError as exc:
            option = {"dsn": "postgresql_dsn", "table": "postgresql_table"}.get(exc.option, exc.option)
            raise AnsibleActionFail("%s (option %s)" % (exc, option)) from None

    @staticmethod
    def _compare(report, journal, store, since_seq):
        """The journal against the store's acknowledged copy: every difference by record id is a problem."""
        try:
            comparison = compare_journal_with_store(journal.path, store, journal_id=report.get("journal_id"),
                                                    since_seq=since_seq or 0)
        except StoreUnavailable as exc:  # the message never holds the password
            report["problems"].append("the PostgreSQL store %s cannot be read to compare: %s" % (store.name, exc))
            report["ok"] = False
            return
        except FileNotFoundError:
            comparison = None
        if comparison is None:
            return
        report["store_comparison"] = comparison
        if not comparison["ok"]:
            parts = []
            for what, meaning in (("missing", "in the journal, not in the store"), ("extra", "only in the store"),
                                  ("altered", "different in the store")):
                if comparison["%s_count" % what]:
                    parts.append("%d %s (%s: %s)" % (comparison["%s_count" % what], what, meaning,
                                                     ", ".join(comparison[what][:5])))
            report["problems"].append("the PostgreSQL store %s (the acknowledged copy) differs from the journal: %s"
                                      % (store.name, "; ".join(parts)))
            report["ok"] = False
