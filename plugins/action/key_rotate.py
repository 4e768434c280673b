# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.plugin_utils._lifecycle_action import LifecycleActionBase


class ActionModule(LifecycleActionBase):
    """Controller side of secops.keylifecycle.key_rotate (see plugin_utils/_lifecycle_action.py)."""

    AUDIT_ACTION = "key-rotate"

    def authorization_action(self, args):
        return "compromise_rotate" if args.get("reason") == "compromise" else "rotate"

    def requested_keys(self, args):
        names = args.get("name") or []
        return [str(n) for n in ([names] if isinstance(names, str) else names)]
