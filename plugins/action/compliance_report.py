# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.secops.keylifecycle.plugins.modules.compliance_report import ARGUMENT_SPEC
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._files import write_atomically
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import Journal, resolve_journal_path
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._report import (
    OUTPUTS,
    ReportTemplateError,
    build_model,
    distribution_records,
    last_events,
    render_all,
    summary,
    vanished_versions,
)


class ActionModule(ActionBase):
    """Renders the report on the controller from key_info, audit_verify and the journal.

    The options are validated with the module's ARGUMENT_SPEC (declared once, in modules/compliance_report.py).
    """

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)  # unknown options: refused by ActionBase.run, naming the task's action

    def _find_template(self, path):
        """A relative template path is searched as ansible.builtin.template's src is; None: the shipped one."""
        if not path or os.path.isabs(path):
            return path
        try:
            return self._find_needle("templates", path)
        except AnsibleError:
            return path  # refused by render() with a message naming the option

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        key_info = args["key_info"]
        if "key_versions" not in key_info:
            raise AnsibleActionFail("key_info must be the registered result of secops.keylifecycle.key_info "
                                    "(it has no key_versions).")
        events = args["events"]
        if events < 1:
            raise AnsibleActionFail("events must be a positive number of events to list, got %r." % events)
        # the journal audit_verify checked (its result is the audit option) is the token's journal
        audited = args["audit"].get("journal") if isinstance(args["audit"], dict) else None
        journal = Journal(args.get("journal") or audited or resolve_journal_path(args, task_vars, self._templar))
        lines = journal.read_lines()
        model = build_model(str(args["environment_name"] or "default"), key_info, args["audit"],
                            last_events(lines, events), distribution=distribution_records(lines),
                            vanished=vanished_versions(lines, key_info))
        try:  # both rendered, in check mode too, before anything is written
            rendered = render_all(model, {option: self._find_template(args[option]) for option in OUTPUTS})
        except ReportTemplateError as exc:
            raise AnsibleActionFail(str(exc)) from None
        result.update(changed=False, summary=summary(model))
        if self._task.check_mode:
            return result
        directory = os.path.expanduser(str(args["output_dir"]))
        os.makedirs(directory, mode=0o750, exist_ok=True)
        for name, content in rendered.items():
            target = os.path.join(directory, name)
            write_atomically(target, content, mode=0o640)  # two hosts' tasks may write at once
            result["markdown" if name.endswith(".md") else "html"] = target
        return result
