#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: key_destroy
short_description: Destroy key versions whose retention has expired (cryptographic erasure in the token)
version_added: 0.1.0
description:
  - Destroys one version (O(name) and O(version)) or every version whose retention has expired (O(all_expired=true)).
  - Only a C(deactivated) or C(compromised) version whose C(retain_until) has passed can be destroyed. An active
    version, or one still inside its retention period, is refused with a message naming C(retain_until), and nothing
    is changed.
  - Where the policy asks for it, the key must have been generated with C(destroy_allowed=true)
    (O(policy.destroy_requires_opt_in)), and the destruction needs M signed approvals of other people
    (O(approvals), O(policy.approvals_required), checked on the HSM host before anything is destroyed; a Security
    Officer executing it is break-glass and needs two), or, without signed approvals, a second person's name
    (O(approved_by), O(policy.destroy_requires_approval)).
  - The key objects go through the token's C_DestroyObject; the token is then searched again by CKA_ID and CKA_LABEL
    to confirm nothing is left, and only then the version's metadata becomes a tombstone (state C(destroyed), no key
    material). A logical key whose every version is destroyed is reported as C(destroyed) by
    M(secops.keylifecycle.key_info).
  - Destroying here does not reach copies held by recipients; those are removed by the recipient side.
author:
  - secops.keylifecycle maintainers (@secops)
extends_documentation_fragment:
  - secops.keylifecycle.connection
  - secops.keylifecycle.policy
  - secops.keylifecycle.approvals
  - secops.keylifecycle.audit_context
  - secops.keylifecycle.attributes
  - secops.keylifecycle.attributes.action_group
attributes:
  check_mode:
    support: full
    details:
      - Nothing is destroyed; RV(plan) says what would be.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A version already destroyed is reported with action V(none).
options:
  name:
    description: Logical key of the version to destroy. Requires O(version). Mutually exclusive with O(all_expired).
    type: str
  version:
    description: Version number to destroy.
    type: int
  all_expired:
    description:
      - Destroy every deactivated or compromised version whose retention has expired. Versions the policy does
        not allow (no opt-in) are listed as V(blocked) in RV(plan) and left alone.
    type: bool
    default: false
seealso:
  - module: secops.keylifecycle.key_rotate
  - module: secops.keylifecycle.key_info
"""

EXAMPLES = r"""
- name: Destroy one version with the two signed approvals the prod policy requires (approval_sign wrote them)
  secops.keylifecycle.key_destroy:
    pkcs11_module: /opt/vendor/lib/libpkcs11.so
    token_label: prod-keys
    user_pin: "{{ vault_hsm_user_pin }}"
    name: payments-db
    version: 1
    change_ref: CHG-2041
    approvals: "{{ lookup('ansible.builtin.file', 'approvals/dana.json', 'approvals/erin.json', wantlist=True)
                   | map('from_json') | list }}"
    policy: "{{ key_policy_signed.policy }}"
    signed_policy: "{{ key_policy_signed }}"

- name: Destroy every version whose retention has expired (an unsigned policy naming a second person)
  secops.keylifecycle.key_destroy:
    pkcs11_module: /opt/vendor/lib/libpkcs11.so
    token_label: dev-keys
    user_pin: "{{ vault_hsm_user_pin }}"
    all_expired: true
    approved_by: bob
    change_ref: CHG-2041
    policy:
      destroy_requires_opt_in: true
      destroy_requires_approval: true

- name: Destroy one version
  secops.keylifecycle.key_destroy:
    name: payments-db
    version: 1
"""

RETURN = r"""
destroyed:
  description: The versions destroyed by this run, each with its id and the result of the absence check.
  returned: success
  type: list
  elements: dict
  sample: [{name: payments-db, version: 1, id: 6f1c0d5e9a7b4c3d2e1f0a9b8c7d6e5f, verified_absent: true}]
plan:
  description: The versions considered, with V(destroy), V(none) or V(blocked) and why.
  returned: always
  type: list
  elements: dict
approvals:
  description:
    - The approvals this call needed and was given (O(approvals)).
    - C(required) is M (two at least for a break-glass), C(break_glass) whether a Security Officer executed it,
      C(accepted) the approvals that verified (approver C(name) from the policy, key C(fingerprint), C(nonce),
      C(not_after)), C(missing) how many more are needed (only ever above 0 in check mode), and C(request) what the
      approvers sign for this call (C(action), C(token), C(keys), C(change_ref)), as
      M(secops.keylifecycle.approval_sign) takes it.
  returned: success
  type: dict
  sample: {required: 2, break_glass: false, missing: 0,
           accepted: [{name: dana, fingerprint: "sha256:3f1c...", nonce: 9b2e4f0c6a1d8e7f5a3b2c1d0e9f8a7b,
                       not_after: "2027-03-02T12:00:00+00:00"}],
           request: {action: destroy, token: prod-keys, keys: [{name: payments-db, version: 1}],
                     change_ref: CHG-2041}}
audit_events:
  description:
    - One C(key-destroy) event per destroyed version (key id, version, time, approvers with their key fingerprints
      and nonces, break-glass, verification).
  returned: always
  type: list
  elements: dict
audit_checkpoint:
  description:
    - The signed checkpoint of the controller's journal made by this call; null in check mode or without a journal.
      Its fields are those of RV(secops.keylifecycle.key_generate#module:audit_checkpoint) (docs/audit.md).
  returned: success, and the failure of a token's first task (it pinned the journal before the refusal)
  type: dict
policy_change:
  description:
    - The change of policy since the token's last anchored task, as
      RV(secops.keylifecycle.key_generate#module:policy_change).
  returned: when the policy changed
  type: dict
policy_in_force:
  description:
    - The environment's policy this call ran with, as the token's policy signers checked it (O(signed_policy)).
      Its fields are those of RV(secops.keylifecycle.key_generate#module:policy_in_force).
  returned: success
  type: dict
error_kind:
  description: Category of the error (for example V(policy_violation), V(key_not_found)).
  returned: failure
  type: str
error_option:
  description: The option the error is about (for example V(retain_until), V(approved_by)).
  returned: failure
  type: str
"""


from ansible_collections.secops.keylifecycle.plugins.module_utils._approval import validate_approval_options
from ansible_collections.secops.keylifecycle.plugins.module_utils._approvals import ApprovalGate
from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import (
    HsmModule,
    APPROVALS_ARGSPEC,
    AUDIT_CONTEXT_ARGSPEC,
    POLICY_ARGSPEC,
    hsm_module_kwargs,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._key_destruction import (
    apply_destruction,
    destruction_targets,
    plan_destruction,
    validate_destroy_target,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._lifecycle_module import run_lifecycle_module

ARGUMENT_SPEC = dict(
    name={"type": "str"},
    version={"type": "int"},
    all_expired={"type": "bool", "default": False},
    **APPROVALS_ARGSPEC,
    **POLICY_ARGSPEC,
    **AUDIT_CONTEXT_ARGSPEC,
)


def main():
    module = HsmModule(**hsm_module_kwargs(
        ARGUMENT_SPEC,
        mutually_exclusive=[["name", "all_expired"], ["version", "all_expired"]],
        required_one_of=[["name", "all_expired"]],
        required_together=[["name", "version"]],
        supports_check_mode=True,
    ))
    params = module.params

    def validate(policy):
        validate_approval_options(params["approved_by"], params["change_ref"])
        validate_destroy_target(params["name"], params["version"])

    def work(store, policy, context):
        now = utc_now()
        plans = plan_destruction(store, params["name"], params["version"], params["all_expired"], policy, now)
        gate = ApprovalGate(policy, "destroy", params, context, store.token_label, now)
        approval = gate.check(store.objects, destruction_targets(plans), module.check_mode)
        result = apply_destruction(store, plans, context, approval, module.check_mode)
        return result, dict(destroyed=result.destroyed, plan=result.plan, approvals=approval.as_dict())

    run_lifecycle_module(module, work, validate=validate, empty_result={"plan": [], "destroyed": []})


if __name__ == "__main__":
    main()
