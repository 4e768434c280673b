# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.plugin_utils._lifecycle_action import LifecycleActionBase


class ActionModule(LifecycleActionBase):
    """Controller side of secops.keylifecycle.key_replicate (see plugin_utils/_lifecycle_action.py)."""

    AUDIT_ACTION = "key-replicate"
    AUTHORIZATION_ACTION = "replicate"

    def requested_keys(self, args):
        keys = args.get("keys")
        return sorted({str(name) for name in keys if name}) if isinstance(keys, list) else []
