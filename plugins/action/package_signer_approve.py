# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.plugin_utils._lifecycle_action import OfficerActionBase


class ActionModule(OfficerActionBase):
    """Controller side of secops.keylifecycle.package_signer_approve (plugin_utils/_lifecycle_action.py,
    OfficerActionBase): intent and outcome journaled as package-signer-approve."""

    AUDIT_ACTION = "package-signer-approve"
