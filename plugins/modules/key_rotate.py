#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: key_rotate
short_description: Rotate keys on a PKCS#11 token; deactivate the previous version and retain it
version_added: 0.1.0
description:
  - Rotates one key, a list (O(name)), or every key whose rotation is due (O(all_due=true)).
  - A rotation generates the new version inside the token first (same type, size, curve, usage and
    distributability as the current one), then deactivates the previous active version. A deactivated version can
    only decrypt, unwrap and verify, because its encrypt, wrap, sign and derive usages are switched off on the token
    object itself. It is retained until C(retain_until = now + retention_period).
  - A key is due when its active version's age has reached its rotation period, never more than the policy's
    O(policy.max_rotation_period). O(force=true) rotates regardless.
  - O(reason=compromise) marks the previous version C(compromised) instead; with
    O(policy.compromise_disables_decrypt=true) it also loses decrypt and unwrap. A compromise always acts on the
    named keys, due or not (it needs no O(force)). Dual control applies, as the M signed approvals that
    O(policy.approvals_required) sets for C(compromise_rotate), over the versions it marks (O(approvals)), or,
    without signed approvals, as O(policy.compromise_requires_approval).
  - O(retire=true) without a compromise needs the signed approvals O(policy.approvals_required) sets for
    C(retire), over the active versions it retires. A Security Officer executing a compromise or a retirement is break-glass (two
    approvals at least).
  - With O(version), a compromise names the versions to mark, any that is not destroyed. The active one among them
    is rotated as above (a successor is generated, unless O(retire=true)); a deactivated one, the usual case of a
    leak found months after its rotation, is only marked C(compromised), with no new version and its retention
    unchanged. The token withdraws encrypt, wrap and sign (and decrypt and unwrap where the policy says so), the
    transition records who, when, why, O(approved_by) and O(change_ref), and recipients withdraw the version on the
    next distribution (M(secops.keylifecycle.key_distribute)), as they do for destroyed versions.
  - Compromise is a reason of this module rather than a module of its own because it is the same decision that
    rotates a key, with the same authorization (C(compromise_rotate)), the same dual control, one C(key-rotate) audit
    trail, and runbooks already written as O(reason=compromise).
  - An interrupted rotation can leave two active versions; every run first repairs that (the newest stays active,
    older ones are deactivated) and audits the repair.
  - Migration to trusted wrapping. The new version of a distributable key is generated with CKA_WRAP_WITH_TRUSTED
    (see O(policy.require_trusted_wrapping)). Every older version of that key that is not destroyed, is still
    extractable and is not wrap-with-trusted (made before trusted wrapping) is then sealed, CKA_EXTRACTABLE false
    on the token, C(sealed_at) in its metadata, one C(key-seal) event each (reason C(migration to trusted
    wrapping)). Recipients keep the copies they hold; a recipient enrolled after the migration receives only
    wrap-with-trusted versions. Check mode lists them as C(seal_versions) in RV(plan) without changing them.
  - The whole batch runs in one PKCS#11 session with one enumeration of the token. This module does not destroy
    anything; see the retention and destruction workflow.
author:
  - secops.keylifecycle maintainers (@secops)
extends_documentation_fragment:
  - secops.keylifecycle.connection
  - secops.keylifecycle.policy
  - secops.keylifecycle.approvals
  - secops.keylifecycle.audit_context
  - secops.keylifecycle.batch_result
  - secops.keylifecycle.attributes
  - secops.keylifecycle.attributes.action_group
attributes:
  check_mode:
    support: full
    details:
      - Nothing is changed; RV(plan) and the diff show which key would go from which version to which.
  diff_mode:
    support: full
    details:
      - Shows each key's active version metadata before and after (never key material).
  idempotent:
    support: full
    details:
      - A key that is not due is left alone; a second run right after a rotation changes nothing.
      - A compromise without O(version) rotates the named keys every time it runs; name the O(version) to make it
        idempotent (a version already compromised is left alone).
options:
  name:
    description: Logical keys to rotate. Mutually exclusive with O(all_due).
    type: list
    elements: str
  all_due:
    description: Rotate every key on the token whose rotation is due.
    type: bool
    default: false
  force:
    description: Rotate the named keys even if they are not due.
    type: bool
    default: false
  reason:
    description:
      - Why the keys are rotated, recorded in the audit events and the version's transitions.
      - A key rotated with O(force=true) before it was due is recorded as V(manual), not V(scheduled).
    type: str
    choices: [scheduled, manual, compromise]
    default: scheduled
  retire:
    description:
      - Take the named keys out of service, that is retire (deactivate, or with O(reason=compromise) mark compromised) their
        active version without generating a successor. The key then has no active version; once the retention of
        every version has expired and they are destroyed, M(secops.keylifecycle.key_info) reports the key as
        C(destroyed). Requires O(name).
    type: bool
    default: false
  version:
    description:
      - With O(reason=compromise) and exactly one O(name), the versions of that key to mark compromised (a number,
        or a list for several), active or deactivated ones; a destroyed or unknown version is refused before
        anything changes. The active version among them is rotated (or retired with O(retire=true)).
    type: list
    elements: int
seealso:
  - module: secops.keylifecycle.key_generate
  - module: secops.keylifecycle.key_info
"""

EXAMPLES = r"""
- name: Rotate every key that is due (scheduled job)
  secops.keylifecycle.key_rotate:
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: dev-keys
    user_pin_file: /etc/keylifecycle/dev-user.pin
    all_due: true

- name: Emergency rotation of a compromised key
  secops.keylifecycle.key_rotate:
    name: payments-db
    force: true
    reason: compromise
    policy:
      compromise_disables_decrypt: true

- name: A leak found months after rotation - mark the deactivated version 3 compromised (no new version)
  secops.keylifecycle.key_rotate:
    name: payments-db
    version: 3
    reason: compromise
    approved_by: security-officer
    change_ref: INC-2041

- name: The same where the signed policy requires two signed approvals (approval_sign, action compromise_rotate)
  secops.keylifecycle.key_rotate:
    name: payments-db
    version: 3
    reason: compromise
    change_ref: INC-2041
    approvals: "{{ lookup('ansible.builtin.file', 'approvals/dana.json', 'approvals/erin.json', wantlist=True)
                   | map('from_json') | list }}"
    policy: "{{ key_policy_signed.policy }}"
    signed_policy: "{{ key_policy_signed }}"
"""

RETURN = r"""
rotated:
  description:
    - One entry per rotated key with the old and new version ids, and C(sealed_versions), the older versions made
      non-extractable by the migration to trusted wrapping (empty when none).
  returned: success
  type: list
  elements: dict
  sample: [{name: payments-db, old_version: 1, old_id: 6f1c0d5e9a7b4c3d2e1f0a9b8c7d6e5f, old_state: deactivated,
            retain_until: "2027-02-26T23:00:00+00:00", new_version: 2, new_id: 0a9b8c7d6e5f6f1c0d5e9a7b4c3d2e1f,
            sealed_versions: []}]
compromised:
  description:
    - One entry per version marked compromised by this call (the old version of a compromise rotation, and each
      deactivated version named in O(version)), as recorded in its transition.
  returned: success
  type: list
  elements: dict
  sample: [{name: payments-db, version: 3, id: 6f1c0d5e9a7b4c3d2e1f0a9b8c7d6e5f, previous_state: deactivated,
            at: "2027-02-26T23:00:00+00:00", by: alice, reason: compromise, approved_by: security-officer,
            change_ref: INC-2041, retain_until: "2027-05-27T23:00:00+00:00"}]
approvals:
  description:
    - For a compromise or a retirement, the approvals it needed and was given, as
      RV(secops.keylifecycle.key_destroy#module:approvals) (C(approved_by) in RV(compromised) is then the list of
      approvers' names).
  returned: with O(reason=compromise) or O(retire=true)
  type: dict
plan:
  description:
    - Per key, V(rotate), V(repair), V(retire), V(compromise) (versions marked compromised, no new version) or
      V(none), whether it was due, and the versions involved (C(compromise_versions) for versions marked,
      C(seal_versions) for versions the rotation seals).
  returned: always
  type: list
  elements: dict
audit_events:
  description: One C(key-rotate) event per rotated (or repaired) key, with the new and previous ids.
  returned: always
  type: list
  elements: dict
summary:
  description:
    - With O(return_records=false), instead of RV(rotated), RV(compromised), RV(plan) and RV(audit_events) (which
      are then not returned), how many of each, and the plan's entries counted by action.
  returned: success, when O(return_records=false)
  type: dict
  sample: {rotated: 1000, compromised: 0, plan: 1000, plan_actions: {rotate: 1000}, audit_events: 1000}
audit_journal:
  description:
    - With O(return_records=false), where the task's records are in the controller's audit journal, in place of
      RV(audit_events); its fields are those of RV(secops.keylifecycle.key_generate#module:audit_journal).
  returned: when O(return_records=false), once the module ran (not in check mode)
  type: dict
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
  description: Category of the error (for example V(key_not_found), V(login_failed)).
  returned: failure
  type: str
error_option:
  description: The option the error is about, when there is one.
  returned: failure
  type: str
"""


from ansible_collections.secops.keylifecycle.plugins.module_utils._approval import validate_approval_options
from ansible_collections.secops.keylifecycle.plugins.module_utils._approvals import ApprovalGate
from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import (
    HsmModule,
    APPROVALS_ARGSPEC,
    AUDIT_CONTEXT_ARGSPEC,
    BATCH_RESULT_ARGSPEC,
    POLICY_ARGSPEC,
    hsm_module_kwargs,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._key_rotation import (
    REASONS,
    apply_rotation,
    approval_action,
    plan_rotation,
    rotation_targets,
    validate_versions,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._lifecycle_module import run_lifecycle_module

ARGUMENT_SPEC = dict(
    name={"type": "list", "elements": "str"},
    all_due={"type": "bool", "default": False},
    force={"type": "bool", "default": False},
    reason={"type": "str", "choices": list(REASONS), "default": "scheduled"},
    retire={"type": "bool", "default": False},
    version={"type": "list", "elements": "int"},
    **APPROVALS_ARGSPEC,
    **POLICY_ARGSPEC,
    **AUDIT_CONTEXT_ARGSPEC,
    **BATCH_RESULT_ARGSPEC,
)


def main():
    module = HsmModule(**hsm_module_kwargs(
        ARGUMENT_SPEC,
        mutually_exclusive=[["name", "all_due"], ["retire", "all_due"]],
        required_one_of=[["name", "all_due"]],
        required_if=[["retire", True, ["name"]]],
        supports_check_mode=True,
    ))
    params = module.params

    def validate(policy):
        validate_approval_options(params["approved_by"], params["change_ref"])
        validate_versions(params["version"], params["name"], params["reason"])

    def work(store, policy, context):
        now = utc_now()
        compromise = params["reason"] == "compromise"
        plans = plan_rotation(store, params["name"] or [], params["all_due"], params["force"], policy, now,
                              retire=params["retire"], compromise=compromise, versions=params["version"])
        action = approval_action(compromise, params["retire"])
        approval = None
        if action:
            gate = ApprovalGate(policy, action, params, context, store.token_label, now)
            approval = gate.check(store.objects, rotation_targets(plans, compromise), module.check_mode)
        recorded = approval.event_fields() if approval else {
            name: params[name] for name in ("approved_by", "change_ref") if params[name]}
        result = apply_rotation(store, plans, context, params["reason"], policy, module.check_mode, recorded)
        output = dict(rotated=result.rotated, plan=result.plan, compromised=result.compromised)
        if approval:
            output["approvals"] = approval.as_dict()
        return result, output

    run_lifecycle_module(module, work, validate=validate, empty_result={"plan": [], "rotated": [], "compromised": []})


if __name__ == "__main__":
    main()
