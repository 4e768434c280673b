# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.plugin_utils._monitor_action import (
    JournaledReadAction,
    token_check_event,
)


class ActionModule(JournaledReadAction):
    """Controller side of secops.keylifecycle.token_check: refuse a task that would expose the PIN, run it, and
    journal its result as one token-check record (docs/monitoring.md)."""

    def observations(self, module_result, token_label, context):
        return [token_check_event(module_result, token_label, context, self._task.resolved_action)]
