# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase

from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import hsm_module_kwargs
from ansible_collections.secops.keylifecycle.plugins.modules.audit_verify import ARGUMENT_SPEC
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._audit_verification import verify_journal
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import Journal, resolve_journal_path
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._pin_guard import check_pin_exposure


class ActionModule(ActionBase):
    """Reads and checks the journal on the controller; reads the token through the module."""

    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        # The module's own spec; the host's environment fallbacks of the connection options are the module's to apply.
        spec = hsm_module_kwargs(ARGUMENT_SPEC, env_fallbacks=False)
        params = self.validate_argument_spec(argument_spec=spec["argument_spec"],
                                             mutually_exclusive=spec["mutually_exclusive"])[1]
        check_pin_exposure(self)
        journal = Journal(resolve_journal_path(params, task_vars, self._templar))
        lines = journal.read_lines()

        module_args = {k: v for k, v in self._task.args.items() if k not in ARGUMENT_SPEC}
        token = self._execute_module(module_name=self._task.resolved_action, module_args=module_args,
                                     task_vars=task_vars)
        if token.get("failed"):
            result.update(token)
            return result
        report = verify_journal(lines, token.get("token_checkpoints") or {},
                                token.get("checkpoint_public_keys") or {}, params["journal_id"])
        report["journal"] = journal.path
        report["checkpoint_public_keys"] = token.get("checkpoint_public_keys") or {}
        if params["export_public_keys"]:
            directory = os.path.expanduser(params["export_public_keys"])
            os.makedirs(directory, exist_ok=True)
            for key_id, pem in report["checkpoint_public_keys"].items():
                with open(os.path.join(directory, "%s.pem" % key_id), "w", encoding="ascii") as handle:
                    handle.write(pem)
        result.update(report)
        result["changed"] = False
        if not report["ok"] and params["fail_on_error"]:
            result["failed"] = True
            result["msg"] = "The audit journal %s does not verify: %s" % (journal.path, "; ".join(report["problems"]))
        else:
            result["msg"] = "The audit journal %s verifies: %d records, head seq %d, %d checkpoint(s)" % (
                journal.path, report["records"], report["head"]["seq"], report["checkpoints_verified"])
        return result
