# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption
from ansible_collections.secops.keylifecycle.plugins.module_utils._replication import read_packages
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._lifecycle_action import LifecycleActionBase


class ActionModule(LifecycleActionBase):
    """Controller side of secops.keylifecycle.replica_install (see plugin_utils/_lifecycle_action.py)."""

    AUDIT_ACTION = "replica-install"
    AUTHORIZATION_ACTION = "replicate"
    TOKEN_IS_PER_HOST = True

    def requested_keys(self, args):
        try:
            packages = read_packages(args.get("packages"))
        except InvalidOption:  # the module refuses it, naming the option
            return []
        return sorted({str(p.get("name")) for p in packages if isinstance(p, dict) and p.get("name")})

    def module_audit_context(self, journal, intent, context, module_args):
        """As for every lifecycle task; a restore without ``checkpoint`` also gets the journal's last checkpoint of
        the token being restored, to which the module moves the restored pin (after verifying it)."""
        if module_args.get("restore") and not module_args.get("checkpoint"):
            module_args["checkpoint"] = journal.last_checkpoint(module_args.get("token_label"))
        return super().module_audit_context(journal, intent, context, module_args)
