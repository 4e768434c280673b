#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: recipient_approve
short_description: As the Security Officer, approve or revoke recipients' transport keys as trusted wrapping keys
version_added: 0.2.0
description:
  - The Security Officer's step of distribution. Runs where the HSM is, in a Security Officer session (CKU_SO,
    logged in with the SO PIN from O(so_pin_file), O(so_pin) or E(PKCS11_SO_PIN)); the user PIN is not used.
  - With O(state=present), installs each recipient's enrolled transport public key in the HSM token as a
    I(trusted transport key) - an RSA public key object with CKA_TRUSTED and CKA_WRAP true, CKA_ENCRYPT,
    CKA_VERIFY and CKA_VERIFY_RECOVER false, CKA_MODIFIABLE false where the token allows it, labelled
    C(trusted-transport:<recipient>@<host>:<fingerprint>). Distributable keys are generated with
    CKA_WRAP_WITH_TRUSTED, so the token itself wraps them only under such keys, and only a Security Officer
    session can create one. M(secops.keylifecycle.key_distribute) wraps only under trusted keys it finds in the
    token.
  - A recipient already approved with the same key is left as it is. Approving a new transport key for a
    recipient and host does not revoke its older one; revoke that with O(state=absent) and its
    O(recipients[].fingerprint).
  - With O(state=absent), destroys the recipient's trusted transport key (the one of O(recipients[].public_key_pem)
    or O(recipients[].fingerprint); with neither, every trusted key of that recipient and host). Further wraps
    under it are then refused by the token; copies the recipient already holds are not withdrawn (use
    M(secops.keylifecycle.key_install) with O(secops.keylifecycle.key_install#module:state=absent)).
  - Each key approved or revoked is journaled as a C(recipient-approve) or C(recipient-revoke) event naming the
    recipient, its host, the fingerprint, the label and the approving officer (O(approved_by)).
  - Takes no lease on the token and writes no signed audit checkpoint, because a Security Officer session cannot use the
    token's private keys. The next lifecycle task run with the user PIN anchors the journal head that chains
    these records.
  - Weak transport keys (RSA below 3072 bits or below O(policy.min_rsa_bits)) and EC keys are refused before the
    token is touched.
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
        or destroyed; RV(approved) and the diff show the keys as they would be.
  diff_mode:
    support: full
    details:
      - The approved C(recipient@host fingerprint) entries before and after; for an approved replica whose
        key-encryption key went missing, C(replica_keks) (the KEK missing before, generated after).
      - A replica's KEK generated again is a change (C(changed), a C(recipient-approve) event with that reason).
  idempotent:
    support: full
options:
  recipients:
    description:
      - The recipients to approve or revoke, as M(secops.keylifecycle.recipient_enroll) described them (the
        C(key_recipient_entry) the C(secops.keylifecycle.key_recipient) role sets can be passed unchanged).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The recipient's name (the service it runs), as listed in the keys' C(recipients).
        type: str
        required: true
      host:
        description: The host the recipient runs on. Defaults to O(recipients[].name).
        type: str
      public_key_pem:
        description:
          - The recipient's transport public key, C(transport_key.public_key_pem) from
            M(secops.keylifecycle.recipient_enroll). Required with O(state=present).
        type: str
      fingerprint:
        description:
          - The transport key's fingerprint (C(sha256:<hex>) of its SubjectPublicKeyInfo) that the officer confirmed
            with the recipient's owner. With O(state=present), a O(recipients[].public_key_pem) of another
            fingerprint is refused; required when O(policy.require_transport_key_pin) is on.
          - With O(state=absent), selects the key to revoke.
        type: str
      installed:
        description: Ignored (accepted so that C(key_recipient_entry) passes unchanged).
        type: list
        elements: dict
      keys:
        description: Ignored (accepted so that C(key_recipient_entry) passes unchanged).
        type: list
        elements: str
      oaep_hashes:
        description: Ignored (accepted so that C(key_recipient_entry) passes unchanged).
        type: list
        elements: str
      kind:
        description:
          - V(recipient), a service that receives distributable keys; or V(replica), a replica token that receives
            copies of the backup keys (M(secops.keylifecycle.key_replicate), docs/replication.md).
          - A replica's key is labelled C(trusted-replica:<name>@<host>:<fingerprint>), and the officer also
            generates its key-encryption key in the token (C(replica-kek:<name>@<host>:<fingerprint>), AES-256,
            trusted, wrap-only, extractable only under trusted keys, not modifiable), under which RSA and EC keys
            travel. Revoking a replica destroys both.
        type: str
        choices: [recipient, replica]
        default: recipient
  state:
    description: V(present) approves, V(absent) revokes.
    type: str
    choices: [present, absent]
    default: present
  change_ref:
    description:
      - A change or ticket reference recorded in each event (C(keylifecycle.change_ref)). Required with signed
        approvals, and equal to the C(change_ref) they approve.
    type: str
  approvals:
    description:
      - Signed approvals of other people (documents of M(secops.keylifecycle.approval_sign), action
        C(recipient_approve) or, with O(state=absent), C(recipient_revoke), each naming the recipients and transport
        key fingerprints it approves), where the signed policy sets O(policy.approvals_required) for that action.
      - Checked in this Security Officer session before the token changes, as the lifecycle modules check theirs
        (approver key from O(policy.approvers), signature, action, token, every transport key approved or revoked,
        change, expiry, a nonce never used on the token); the officer's own approval (the operator, or
        O(approved_by)) does not count. Their nonces are recorded on the token as public objects nobody can delete.
      - Once the token holds a policy signer this module checks O(signed_policy) like every lifecycle module (in this
        session the signed policies the token recorded are the floor for its serial).
    type: list
    elements: raw
notes:
  - The user PIN options and O(lease_wait) of the connection fragment are accepted (so C(module_defaults) for the
    group apply) but not used.
seealso:
  - module: secops.keylifecycle.recipient_enroll
  - module: secops.keylifecycle.key_distribute
  - module: secops.keylifecycle.token_check
"""

EXAMPLES = r"""
- name: Approve an enrolled recipient's transport key (Security Officer)
  secops.keylifecycle.recipient_approve:
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: prod-keys
    so_pin_file: /etc/keylifecycle/officer/prod-keys.so.pin
    approved_by: alice.officer
    change_ref: CHG-1042
    recipients:
      - name: billing
        host: billing-api-1
        public_key_pem: "{{ enrollment.transport_key.public_key_pem }}"
        fingerprint: sha256:4f1c0d9b7e2a3c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5

- name: Revoke every trusted key of a decommissioned recipient host
  secops.keylifecycle.recipient_approve:
    so_pin_file: /etc/keylifecycle/officer/prod-keys.so.pin
    state: absent
    recipients:
      - name: billing
        host: billing-api-1
"""

RETURN = r"""
approvals:
  description:
    - The signed approvals this call needed and was given, as RV(secops.keylifecycle.key_destroy#module:approvals)
      (C(request.keys) are the recipients and transport key fingerprints to approve).
  returned: success
  type: dict
policy_in_force:
  description:
    - The environment's policy this call ran with, as RV(secops.keylifecycle.key_generate#module:policy_in_force).
  returned: success
  type: dict
approved:
  description:
    - Every trusted transport key on the token after the task (in check mode, as it would be). C(recipient) and
      C(host) are null for a trusted key whose label does not name its own fingerprint (not made by this module).
  returned: success
  type: list
  elements: dict
  contains:
    recipient:
      description: The recipient's name.
      type: str
    host:
      description: The recipient's host.
      type: str
    fingerprint:
      description: C(sha256:<hex>) of the key's SubjectPublicKeyInfo, computed from the key on the token.
      type: str
    label:
      description: CKA_LABEL of the trusted key.
      type: str
    kind:
      description: V(recipient) or V(replica) (from the label); null when the label names no recipient.
      type: str
audit_events:
  description: One C(recipient-approve) or C(recipient-revoke) event per key created or destroyed.
  returned: always
  type: list
  elements: dict
audit_checkpoint:
  description: Always null (a Security Officer session signs no checkpoint).
  returned: success
  type: dict
diff:
  description: The approved C(recipient@host fingerprint) entries before and after, with C(--diff).
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


from ansible_collections.secops.keylifecycle.plugins.module_utils._approval import validate_approval_options
from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import (
    APPROVALS_ARGSPEC,
    OFFICER_COMMON_ARGSPEC,
    officer_module,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._approvals import ApprovalGate
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._officer_module import run_officer_module
from ansible_collections.secops.keylifecycle.plugins.module_utils._trusted_keys import (
    approve_recipients,
    parse_approvals,
)

RECIPIENT_OPTIONS = {
    "name": {"type": "str", "required": True},
    "host": {"type": "str"},
    "public_key_pem": {"type": "str", "no_log": False},
    "fingerprint": {"type": "str"},
    "installed": {"type": "list", "elements": "dict"},
    "keys": {"type": "list", "elements": "str", "no_log": False},
    "oaep_hashes": {"type": "list", "elements": "str"},
    "kind": {"type": "str", "choices": ["recipient", "replica"], "default": "recipient"},
}

ARGUMENT_SPEC = dict(
    recipients={"type": "list", "elements": "dict", "required": True, "options": RECIPIENT_OPTIONS},
    state={"type": "str", "choices": ["present", "absent"], "default": "present"},
    **APPROVALS_ARGSPEC,
    **OFFICER_COMMON_ARGSPEC,
)


def main():
    module = officer_module(ARGUMENT_SPEC)
    params = module.params

    def validate(policy):
        validate_approval_options(params["approved_by"], params["change_ref"])
        return parse_approvals(params["recipients"], params["state"], policy)

    def work(session, token_label, policy, context, approvals, objects):
        action = "recipient_approve" if params["state"] == "present" else "recipient_revoke"
        gate = ApprovalGate(policy, action, params, context, token_label, utc_now())
        result = approve_recipients(session, token_label, approvals, params["state"], context,
                                    approved_by=params["approved_by"], change_ref=params["change_ref"],
                                    check_mode=module.check_mode, gate=(gate, objects))
        output = dict(approved=result.approved)
        if result.approval is not None:
            output["approvals"] = result.approval.as_dict()
        return result, output

    run_officer_module(module, work, validate=validate, empty_result={"approved": []}, signed_policy=True)


if __name__ == "__main__":
    main()
