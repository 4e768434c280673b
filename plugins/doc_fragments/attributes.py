# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Standard attribute descriptions; each module states its support level.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying the token.
  diff_mode:
    description: Will return details on what has changed (or would change in C(check_mode)), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode with the same arguments, the second run indicates no change.
"""

    # For the modules of the action group hsm (meta/runtime.yml).
    ACTION_GROUP = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/secops.keylifecycle.hsm) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - secops.keylifecycle.hsm
"""

    # For read-only (info) modules.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    support: full
"""
