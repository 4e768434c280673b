# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.plugin_utils._pin_guard import PinGuardedAction


class ActionModule(PinGuardedAction):
    """Controller side of secops.keylifecycle.token_info: refuse a task that would expose the PIN, then run it (it
    only reads the token and tries mechanisms on session objects, so nothing is journaled)."""
