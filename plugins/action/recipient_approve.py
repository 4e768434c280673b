# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.plugin_utils._lifecycle_action import OfficerActionBase


class ActionModule(OfficerActionBase):
    """Controller side of secops.keylifecycle.recipient_approve (plugin_utils/_lifecycle_action.py,
    OfficerActionBase): intent and outcome journaled as recipient-approve (state present) or recipient-revoke
    (state absent)."""

    AUDIT_ACTION = "recipient-approve"

    def run(self, tmp=None, task_vars=None):
        self.AUDIT_ACTION = "recipient-revoke" if self._task.args.get("state") == "absent" else "recipient-approve"
        return super().run(tmp, task_vars)
