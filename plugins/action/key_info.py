# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.plugin_utils._monitor_action import (
    JournaledReadAction,
    drift_events,
)


class ActionModule(JournaledReadAction):
    """Controller side of secops.keylifecycle.key_info: refuse a task that would expose the PIN, run it, and
    journal one key-drift record per drift finding (docs/monitoring.md)."""

    def observations(self, module_result, token_label, context):
        if module_result.get("failed"):
            return []
        return drift_events(module_result.get("drift"), token_label, context, self._task.resolved_action)
