#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: policy_signer
short_description: As the Security Officer, install the environment's policy signer in the HSM token
version_added: 0.2.0
description:
  - The Security Officer's step of the signed environment policy (docs/access-control.md, "Signed policy"). Runs
    where the HSM is, in a Security Officer session (CKU_SO, logged in with the SO PIN from O(so_pin_file),
    O(so_pin) or E(PKCS11_SO_PIN)); the user PIN is not used.
  - Installs O(public_key_pem), the policy signer's EC P-256 public key, in the token as a I(policy signer) - a
    public key object with CKA_TRUSTED and CKA_VERIFY true and nothing else, CKA_MODIFIABLE false and
    CKA_DESTROYABLE false, labelled C(policy-signer:<name>). Only a Security Officer session can create a
    CKA_TRUSTED object; a user session is refused by the token.
  - Once a token holds a policy signer, every lifecycle module verifies the policy it is given
    (C(signed_policy), written by M(secops.keylifecycle.policy_sign)) against the signers it finds in the token,
    inside the token, before it acts, and refuses an unsigned, altered, expired or rolled-back policy.
  - There is no C(state=absent). A policy signer cannot be removed from the token - SoftHSM2 and tokens that honour
    CKA_DESTROYABLE refuse C(C_DestroyObject) to the user and to the Security Officer alike - and it cannot be
    changed (CKA_MODIFIABLE false). To change the signer's key, install the new key under a new O(name); the old
    signer stays on the token. A token that does not implement CKA_DESTROYABLE gets the signer without it
    (destroyable), with a warning; the journal pin remembers its fingerprint, and lifecycle modules refuse to act on
    a token whose pinned signer is gone.
  - A signer already installed with the same key is left as it is (C(changed=false)). O(name) already installed
    with another key is refused, naming O(name).
  - Each signer installed is journaled as a C(policy-signer-approve) event with its name, fingerprint, whether the
    token lets it be destroyed, the approving officer (O(approved_by)) and O(change_ref).
  - Takes no lease on the token and writes no signed audit checkpoint, because a Security Officer session cannot use
    the token's private keys. The next lifecycle task run with the user PIN anchors the journal head that chains
    the record.
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
      - The Security Officer still logs in (PKCS#11 allows the SO only read/write sessions), but nothing is created;
        RV(policy_signers) and the diff show the signers as they would be.
  diff_mode:
    support: full
    details:
      - The installed C(name fingerprint) entries before and after.
  idempotent:
    support: full
options:
  name:
    description:
      - The signer's name, usually the Security Officer's (letters, digits and C(. _ @ + -), up to 63 characters).
        Recorded in the label C(policy-signer:<name>) and as C(signer_name) in the signed policy.
    type: str
    required: true
  public_key_pem:
    description:
      - The policy signer's public key, EC P-256, PEM (C(-----BEGIN PUBLIC KEY-----)). Policies are signed with
        ECDSA P-256 / SHA-256, which every PKCS#11 token this collection targets verifies natively.
      - Confirm its fingerprint (RV(policy_signers[].fingerprint), C(sha256:) of the SubjectPublicKeyInfo) with the
        signer before relying on it.
    type: str
    required: true
  change_ref:
    description: A change or ticket reference recorded in the event (C(keylifecycle.change_ref)).
    type: str
notes:
  - The user PIN options and O(lease_wait) of the connection fragment are accepted (so C(module_defaults) for the
    group apply) but not used.
  - The private key stays with the signer (a passphrase-protected PEM or the officer's own PKCS#11 token); only the
    public key is given here.
seealso:
  - module: secops.keylifecycle.policy_sign
  - module: secops.keylifecycle.recipient_approve
  - module: secops.keylifecycle.key_info
"""

EXAMPLES = r"""
- name: Install the prod policy signer (Security Officer)
  secops.keylifecycle.policy_signer:
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: prod-keys
    so_pin_file: /etc/keylifecycle/officer/prod-keys.so.pin
    name: dana.officer
    public_key_pem: "{{ lookup('ansible.builtin.file', 'files/policy-signer-dana.pub.pem') }}"
    approved_by: dana.officer
    change_ref: CHG-2001

- name: Show what would be installed
  secops.keylifecycle.policy_signer:
    so_pin_file: /etc/keylifecycle/officer/prod-keys.so.pin
    name: dana.officer
    public_key_pem: "{{ signer_public_key_pem }}"
  check_mode: true
  diff: true
"""

RETURN = r"""
policy_signers:
  description: Every policy signer on the token after the task (in check mode, as it would be).
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The signer's name (from the label C(policy-signer:<name>)).
      type: str
    label:
      description: CKA_LABEL of the signer's public key object.
      type: str
    fingerprint:
      description: C(sha256:<hex>) of the key's SubjectPublicKeyInfo, computed from the key on the token.
      type: str
    destroyable:
      description: Whether the token would let a session destroy the signer (false where CKA_DESTROYABLE is honoured).
      type: bool
audit_events:
  description: One C(policy-signer-approve) event for the signer installed (none when unchanged or in check mode).
  returned: always
  type: list
  elements: dict
audit_checkpoint:
  description: Always null (a Security Officer session signs no checkpoint).
  returned: success
  type: dict
diff:
  description: The installed C(name fingerprint) entries before and after, with C(--diff).
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
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy_signer_install import (
    install_policy_signer,
    parse_signer_request,
)

ARGUMENT_SPEC = dict(
    name={"type": "str", "required": True},
    public_key_pem={"type": "str", "required": True, "no_log": False},
    **OFFICER_APPROVER_ARGSPEC,
    **OFFICER_COMMON_ARGSPEC,
)


def main():
    module = officer_module(ARGUMENT_SPEC)
    params = module.params

    def validate(policy):
        return parse_signer_request(params["name"], params["public_key_pem"], params["approved_by"],
                                    params["change_ref"])

    def work(session, token_label, policy, context, request):
        result = install_policy_signer(session, token_label, request, context, approved_by=params["approved_by"],
                                       change_ref=params["change_ref"], check_mode=module.check_mode)
        for warning in result.warnings:
            module.warn(warning)
        return result, dict(policy_signers=result.policy_signers)

    run_officer_module(module, work, validate=validate, empty_result={"policy_signers": []})


if __name__ == "__main__":
    main()
