#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: package_signer_approve
short_description: As the Security Officer, pin the package signer a token may be restored from, trusted
version_added: 0.2.0
description:
  - The Security Officer's step of a restore (docs/replication.md, "Restore"). Runs where the replacement token is, in
    a Security Officer session (CKU_SO, logged in with the SO PIN from O(so_pin_file), O(so_pin) or
    E(PKCS11_SO_PIN)); the user PIN is not used.
  - Pins O(package_signer), the signer of the replica the token is restored from (its C(restore-signing) key, the
    RV(secops.keylifecycle.key_info#module:restore_signer) that M(secops.keylifecycle.key_info) returns there), in
    the token as
    C(keylifecycle-package-signer) with CKA_TRUSTED true - a public key object that may only verify, CKA_MODIFIABLE
    false. Only a Security Officer session can create a CKA_TRUSTED object; a user session is refused by the token.
  - M(secops.keylifecycle.replica_install) with C(restore=true) accepts packages only from a pinned signer with
    CKA_TRUSTED true. A restore brings back what governs the token (the journal pin, the approval nonces already
    used, the signed-policy floor, the checkpoint key history); without this step an operator could pin a key of
    their own with M(secops.keylifecycle.recipient_enroll) and restore records they wrote.
  - Whatever was pinned before (another key, or the same key pinned by an operator) is replaced, the trusted pin
    created first. The same key already pinned trusted is left as it is (C(changed=false)).
    M(secops.keylifecycle.recipient_enroll) with the same signer leaves a trusted pin as it is; an operator can
    destroy it (a public object), and then the restore is refused, not misled.
  - O(fingerprint) is the officer's confirmation, obtained out of band and recorded before the loss (the
    RV(secops.keylifecycle.replica_install#module:restore_signer) of the replication, or its C(key-generate) record in
    the journal); a key whose fingerprint differs is refused and nothing is pinned.
  - Journaled as C(package-signer-approve) with the approving officer (O(approved_by)) and O(change_ref). Takes no
    lease and signs no checkpoint (a Security Officer session cannot use the token's private keys).
author:
  - secops.keylifecycle maintainers (@secops)
extends_documentation_fragment:
  - secops.keylifecycle.connection
  - secops.keylifecycle.officer
  - secops.keylifecycle.policy
  - secops.keylifecycle.audit_context
  - secops.keylifecycle.attributes
  - secops.keylifecycle.attributes.action_group
attributes:
  check_mode:
    support: full
    details:
      - The Security Officer still logs in (PKCS#11 allows the SO only read/write sessions), but nothing is created
        or destroyed; RV(package_signer) and the diff show the pin as it would be.
  diff_mode:
    support: full
    details:
      - The pinned signer's fingerprint and whether it is trusted, before and after.
  idempotent:
    support: full
options:
  package_signer:
    description:
      - The package signer to pin, the C(package_signer) that M(secops.keylifecycle.key_info) returns on the source
        token's host; only its C(public_key_pem) is used (EC P-256, P-384 or P-521, or RSA of 3072 bits or more).
    type: dict
    required: true
  fingerprint:
    description:
      - C(sha256:<hex>) of the signer's SubjectPublicKeyInfo, confirmed with the source token's owner out of band.
        Refused when it is not the fingerprint of O(package_signer).
    type: str
    required: true
  change_ref:
    description: A change or ticket reference recorded in the event (C(keylifecycle.change_ref)).
    type: str
notes:
  - The user PIN options and O(lease_wait) of the connection fragment are accepted (so C(module_defaults) for the
    group apply) but not used.
seealso:
  - module: secops.keylifecycle.replica_install
  - module: secops.keylifecycle.recipient_enroll
  - module: secops.keylifecycle.policy_signer
"""

EXAMPLES = r"""
- name: Trust the replica's restore signer for the restore (Security Officer of the replacement token)
  secops.keylifecycle.package_signer_approve:
    token_label: prod-keys
    so_pin_file: /etc/keylifecycle/officer/prod-keys.so.pin
    package_signer: "{{ dr_info.restore_signer }}"
    fingerprint: "{{ keylifecycle_restore_signer_fingerprint }}"
    approved_by: dana.officer
    change_ref: CHG-3001
"""

RETURN = r"""
package_signer:
  description: The pinned package signer after the task (in check mode, as it would be).
  returned: success
  type: dict
  contains:
    label:
      description: CKA_LABEL of the pinned object (C(keylifecycle-package-signer)).
      type: str
    id:
      description: CKA_ID of the pinned object, hex (null in check mode for a new pin).
      type: str
    type:
      description: C(ec) or C(rsa).
      type: str
    curve:
      description: The curve of an EC signer, null for RSA.
      type: str
    fingerprint:
      description: C(sha256:<hex>) of the key's SubjectPublicKeyInfo, computed from the key on the token.
      type: str
    trusted:
      description: CKA_TRUSTED of the pinned object, as the token reports it.
      type: bool
audit_events:
  description: One C(package-signer-approve) event when the pin was created (none when unchanged or in check mode).
  returned: always
  type: list
  elements: dict
audit_checkpoint:
  description: Always null (a Security Officer session signs no checkpoint).
  returned: success
  type: dict
diff:
  description: The pinned signer's fingerprint and trust before and after, with C(--diff).
  returned: success, in diff mode
  type: dict
error_kind:
  description: Category of the error.
  returned: failure
  type: str
error_option:
  description: The option the error is about, when there is one.
  returned: failure
  type: str
"""


from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import (
    OFFICER_APPROVER_ARGSPEC,
    OFFICER_COMMON_ARGSPEC,
    officer_module,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._officer_module import run_officer_module
from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signer_approval import (
    approve_package_signer,
    parse_signer_approval,
)

ARGUMENT_SPEC = dict(
    package_signer={"type": "dict", "required": True, "no_log": False},
    fingerprint={"type": "str", "required": True, "no_log": False},
    **OFFICER_APPROVER_ARGSPEC,
    **OFFICER_COMMON_ARGSPEC,
)


def main():
    module = officer_module(ARGUMENT_SPEC)
    params = module.params

    def validate(policy):
        return parse_signer_approval(params["package_signer"], params["fingerprint"], params["approved_by"],
                                     params["change_ref"])

    def work(session, token_label, policy, context, approval):
        result = approve_package_signer(session, token_label, approval, context, approved_by=params["approved_by"],
                                        change_ref=params["change_ref"], check_mode=module.check_mode)
        return result, dict(package_signer=result.package_signer)

    run_officer_module(module, work, validate=validate, empty_result={"package_signer": None})


if __name__ == "__main__":
    main()
