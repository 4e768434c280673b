# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.plugin_utils._lifecycle_action import LifecycleActionBase


class ActionModule(LifecycleActionBase):
    """Controller side of secops.keylifecycle.recipient_enroll (see plugin_utils/_lifecycle_action.py)."""

    AUDIT_ACTION = "transport-key-enroll"
    AUTHORIZATION_ACTION = "distribute"
    TOKEN_IS_PER_HOST = True

    def requested_keys(self, args):
        return []
