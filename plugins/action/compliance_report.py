# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.secops.keylifecycle.plugins.plugin_utils._files import write_atomically
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import Journal, default_journal_path
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._lifecycle_action import JOURNAL_VARIABLE
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._report import (
    build_model,
    last_events,
    render_html,
    render_markdown,
    summary,
)


class ActionModule(ActionBase):
    """Renders the report on the controller from key_info, audit_verify and the journal."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("key_info", "audit", "journal", "output_dir", "environment_name", "events"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = self._task.args
        key_info = args.get("key_info")
        if not isinstance(key_info, dict) or "key_versions" not in key_info:
            raise AnsibleActionFail("key_info must be the registered result of secops.keylifecycle.key_info "
                                    "(it has no key_versions).")
        if not args.get("output_dir"):
            raise AnsibleActionFail("output_dir is required: the directory on the controller for the report.")
        try:
            events = int(args.get("events", 25))
        except (TypeError, ValueError):
            events = 0
        if events < 1:
            raise AnsibleActionFail("events must be a positive number of events to list, got %r." % args.get("events"))
        path = args.get("journal") or self._templar.template(task_vars.get(JOURNAL_VARIABLE)) or \
            default_journal_path()
        journal = Journal(path)
        lines = journal.read_lines()
        model = build_model(str(args.get("environment_name") or "default"), key_info, args.get("audit"),
                            last_events(lines, events))
        result.update(changed=False, summary=summary(model))
        if self._task.check_mode:
            return result
        directory = os.path.expanduser(str(args["output_dir"]))
        os.makedirs(directory, mode=0o750, exist_ok=True)
        for name, content in (("report.md", render_markdown(model)), ("report.html", render_html(model))):
            target = os.path.join(directory, name)
            write_atomically(target, content, mode=0o640)  # two hosts' tasks may write at once
            result["markdown" if name.endswith(".md") else "html"] = target
        return result
