# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.plugin_utils._lifecycle_action import LifecycleActionBase


class ActionModule(LifecycleActionBase):
    """Controller side of secops.keylifecycle.package_signer_approve (see plugin_utils/_lifecycle_action.py).

    The Security Officer's PIN is the control: policy.authorization names no action for it (AUTHORIZATION_ACTION
    empty), an operator override is still checked against policy.allow_operator_override. Intent and outcome are
    journaled as package-signer-approve. The SO PIN is guarded like the user PIN (plugin_utils/_pin_guard.py):
    so_pin only with pipelining, never PKCS11_SO_PIN in environment:.
    """

    AUDIT_ACTION = "package-signer-approve"
    AUTHORIZATION_ACTION = ""

    def requested_keys(self, args):
        return []
