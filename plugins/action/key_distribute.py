# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.plugin_utils._lifecycle_action import LifecycleActionBase


class ActionModule(LifecycleActionBase):
    """Controller side of secops.keylifecycle.key_distribute (see plugin_utils/_lifecycle_action.py)."""

    AUDIT_ACTION = "key-distribute"
    AUTHORIZATION_ACTION = "distribute"

    def requested_keys(self, args):
        names = []
        for recipient in args.get("recipients") or ():
            if isinstance(recipient, dict):
                names.extend(str(n) for n in recipient.get("keys") or () if n)
        return sorted(set(names))
