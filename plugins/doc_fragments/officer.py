# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The Security Officer's options of the modules that run in an SO session (OFFICER_ARGSPEC in
    # plugins/module_utils/_argspec.py, and approved_by): recipient_approve, policy_signer, package_signer_approve.
    DOCUMENTATION = r"""
options:
  so_pin:
    description:
      - The token's Security Officer PIN. Keep it in Ansible Vault, readable by the officer only; refused unless
        pipelining is on for the host (as O(user_pin) is).
      - If not set, the E(PKCS11_SO_PIN) environment variable of the module's host is used (an empty one counts as
        unset); a task refuses E(PKCS11_SO_PIN) given through C(environment:).
      - Not part of C(module_defaults) for C(group/secops.keylifecycle.hsm) on purpose; operators' plays and
        scheduled rotation never hold it.
      - Mutually exclusive with O(so_pin_file). One of them (or E(PKCS11_SO_PIN)) is required.
    type: str
  so_pin_file:
    description:
      - Path, on the module's host, of a file holding the Security Officer PIN (one line), readable only by its
        owner (mode V(0600) or V(0400)); a group- or world-accessible file is refused.
    type: path
  approved_by:
    description:
      - The Security Officer's name, recorded as C(keylifecycle.approved_by) in the task's events. Defaults to the
        operator the controller resolved for the task.
    type: str
"""
