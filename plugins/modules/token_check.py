#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: token_check
short_description: Check a PKCS#11 token's access protection (PINs, token flags, storage permissions)
version_added: 0.1.0
description:
  - Read-only checks, run where the token is, that a key-management token is protected as the procedure requires.
  - The user PIN is not a well-known default (vendor defaults, C(1234), C(12345678), C(password), ...) and has at
    least O(min_pin_length) characters.
  - The SO PIN (O(so_pin_file), compared in memory only; this module never logs in as the Security Officer, only
    M(secops.keylifecycle.recipient_approve) does) differs from the user PIN and is not a default either.
  - The token's own flags (C_GetTokenInfo) say it is initialised, its user PIN is set and does not have to be
    changed, login is required, no PIN is locked, and it is not write-protected; failed user logins
    (CKF_USER_PIN_COUNT_LOW) are reported as a warning.
  - A login with the user PIN works (one read-only session, nothing read or changed).
  - Every path in O(storage_paths) (for a software token, its token directory and configuration; for a network
    HSM, the client's certificate and configuration files) and everything below it is owned by the user the
    module runs as and closed to group and others.
  - Fails, listing every failed check, when any check of severity C(error) fails.
  - Outside check mode, the action plugin journals the result as one C(token-check) record in the audit journal
    (C(keylifecycle_audit_journal); failed checks and warnings by name, never a PIN) and fails the task if the
    journal cannot be written. C(playbooks/check.yml) runs this module on a schedule (docs/monitoring.md).
author:
  - secops.keylifecycle maintainers (@secops)
extends_documentation_fragment:
  - secops.keylifecycle.connection
  - secops.keylifecycle.attributes
  - secops.keylifecycle.attributes.action_group
  - secops.keylifecycle.attributes.INFO_MODULE
options:
  so_pin_file:
    description:
      - File (mode 0600) holding the SO PIN, only to compare it with the user PIN. Without it that check is a
        warning saying it was not made. Read with the same rules as
        O(secops.keylifecycle.recipient_approve#module:so_pin_file).
    type: path
  storage_paths:
    description: Paths that must be owned by the module's user and closed to group and others (checked recursively).
    type: list
    elements: path
    default: []
  default_pins:
    description: More PINs to treat as well-known defaults (for example the vendor's shipping PIN).
    type: list
    elements: str
    default: []
  min_pin_length:
    description: Minimum length of the user PIN.
    type: int
    default: 8
seealso:
  - module: secops.keylifecycle.key_info
"""

EXAMPLES = r"""
- name: Check the dev token's protection
  secops.keylifecycle.token_check:
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: kl-dev
    user_pin_file: .state/dev/user.pin
    so_pin_file: .state/dev/so.pin
    storage_paths:
      - .state/dev/tokens
      - .state/dev/softhsm2.conf
"""

RETURN = r"""
checks:
  description: Every check with its result.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Check name (for example V(user_pin_not_default), V(so_pin_differs), V(storage:/path)).
      type: str
    ok:
      description: Whether the check passed.
      type: bool
    detail:
      description: What was found (never a PIN).
      type: str
    severity:
      description: V(error) (fails the task) or V(warning).
      type: str
failed_checks:
  description: Names of the failed checks of severity error.
  returned: always
  type: list
  elements: str
error_kind:
  description: Category of the error when the checks could not run (for example V(login_failed)).
  returned: failure
  type: str
"""


from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import HsmModule, hsm_module_kwargs
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import require_dependencies
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import ConnectionSettings
from ansible_collections.secops.keylifecycle.plugins.module_utils._module_result import fail_with_error
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_check import MIN_PIN_LENGTH, run_checks

ARGUMENT_SPEC = dict(
    so_pin_file={"type": "path"},
    storage_paths={"type": "list", "elements": "path", "default": []},
    default_pins={"type": "list", "elements": "str", "default": [], "no_log": True},
    min_pin_length={"type": "int", "default": MIN_PIN_LENGTH},
)


def main():
    module = HsmModule(**hsm_module_kwargs(ARGUMENT_SPEC, supports_check_mode=True))
    require_dependencies(module)
    params = module.params
    try:
        checks = run_checks(ConnectionSettings.from_params(params), params["so_pin_file"], params["storage_paths"],
                            params["default_pins"], params["min_pin_length"])
    except KeyLifecycleError as exc:
        fail_with_error(module, exc, checks=[], failed_checks=[])
    failed = [c for c in checks if not c.ok and c.severity == "error"]
    result = dict(changed=False, checks=[c.as_dict() for c in checks], failed_checks=[c.name for c in failed])
    if failed:
        module.fail_json(msg="The token %r fails %d check(s): %s." % (
            params["token_label"], len(failed), "; ".join("%s: %s" % (c.name, c.detail) for c in failed)), **result)
    module.exit_json(msg="The token %r passes %d checks." % (params["token_label"], len(checks)), **result)


if __name__ == "__main__":
    main()
