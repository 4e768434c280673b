#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: approval_sign
short_description: As an approver, sign an approval of one high-risk action or policy change on the controller
version_added: 0.2.0
description:
  - The approver's step of signed approvals, M of N (docs/access-control.md, "Signed approvals"). Runs on the
    controller (action plugin); nothing is sent to a managed host, the HSM token the request is about is not
    touched and nothing is journaled. The approval takes effect, and is journaled, when the operator passes it in
    the C(approvals) option of M(secops.keylifecycle.key_destroy), M(secops.keylifecycle.key_rotate),
    M(secops.keylifecycle.audit_rollover) or the recipient modules, which check it on the HSM host against the
    signed policy; an approval of a policy change (O(action=policy_change)) rides in the new signed policy itself
    (M(secops.keylifecycle.policy_sign) O(secops.keylifecycle.policy_sign#module:approvals)).
  - "What is approved depends on O(action): key versions (V(destroy), V(compromise_rotate), V(retire)), nothing
    (V(journal_rollover), the token itself), recipients' transport keys (V(recipient_approve),
    V(recipient_revoke)), or one new signed policy (V(policy_change), on every token of the environment by
    default)."
  - "Builds the request C({action, token, keys, change_ref, not_after, nonce}) from the options and shows it in
    words before it signs, for example: dana approves: DESTROY (cryptographic erasure, irreversible) of
    payments-dek v1 on token 'prod-hsm', change CHG-2041, valid until 2027-03-02T12:00:00+00:00, nonce 5f0c...
    For a policy change the words also give the new policy's environment, serial, signer and the settings it
    changes from the policy in force. It then signs it with the approver's EC P-256 private key (ECDSA P-256 /
    SHA-256), checks the signature with the approver's public key, returns the approval, and writes it to O(dest)
    when given."
  - 'The approval is C({format, request, approver, approver_name, signature}): C(approver) is C(sha256:) and the
    SHA-256 of the approver public key (SubjectPublicKeyInfo); the signature covers the canonical JSON (sorted keys,
    no blanks, ASCII) of C(approver), C(format) and C(request). C(approver_name) is not signed: the name that counts
    on the HSM host is the one the signed policy gives the key (C(policy.approvers)).'
  - The private key is either a passphrase-protected PEM (O(private_key_path), O(private_key_passphrase)) or an EC
    P-256 private key object in the approver's own PKCS#11 token (O(pkcs11_module), O(token_label),
    O(user_pin_file), O(key_label)), which signs inside that token (C_Sign, CKM_ECDSA), exactly as
    M(secops.keylifecycle.policy_sign) takes the policy signer's key.
  - Each approval is good for one task (its nonce is remembered by the token once used), on the one token, action,
    key versions and change it names, until O(not_after). A policy change approved for every token (O(token=*))
    is good once on each token of the environment.
  - Holds names, the request, a fingerprint and the signature only; never the passphrase, a PIN or key material.
author:
  - secops.keylifecycle maintainers (@secops)
extends_documentation_fragment:
  - secops.keylifecycle.attributes
  - secops.keylifecycle.signing_key
attributes:
  check_mode:
    support: full
    details:
      - The options are checked and the request is shown and returned as RV(request) and RV(request_text), but
        nothing is signed (neither the passphrase nor the token's PIN is used) and O(dest) is not written.
  diff_mode:
    support: full
    details:
      - The content of O(dest) before and after. In check mode the after is the approval as it would be, without
        its signature.
  idempotent:
    support: partial
    details:
      - When O(dest) already holds a valid approval by the same key and name for the same request, nonce included,
        it is kept (C(changed=false)). That needs a fixed O(nonce) and an absolute O(not_after); with the defaults
        (a new random nonce, a validity from now) every run is a new approval and O(dest) is written again.
      - Without O(dest) nothing is written and the task reports C(changed=false); the approval is only returned.
options:
  action:
    description: The lifecycle action approved.
    type: str
    required: true
    choices: [destroy, compromise_rotate, retire, journal_rollover, recipient_approve, recipient_revoke,
      policy_change]
  token:
    description:
      - Label of the HSM token the action runs on (the environment's token, for example V(prod-hsm)); not the
        approver's own token (O(token_label)).
      - Required, except for O(action=policy_change), where it defaults to V(*) - every token of the environment
        (each token accepts the approval once). Give a label to approve the new policy on that token only.
    type: str
  keys:
    description:
      - What the action may act on; the task that uses the approval must act on nothing else. Each entry is one of
        a key version C({name, version}) for V(destroy), V(compromise_rotate) and V(retire); a recipient's
        transport key C({recipient, fingerprint}) for V(recipient_approve) and V(recipient_revoke); the new policy
        C({policy}) for V(policy_change). None for V(journal_rollover). Another shape is refused.
      - Required, except for V(journal_rollover), and for V(policy_change) with O(new_policy) (which then names
        the policy; if O(keys) is given too it must name the same).
    type: list
    elements: dict
    suboptions:
      name:
        description: A key's name (with O(keys[].version)).
        type: str
      version:
        description: The key version, 1 or more (with O(keys[].name)).
        type: int
      recipient:
        description: A recipient's name (with O(keys[].fingerprint)).
        type: str
      fingerprint:
        description:
          - The recipient's transport public key, C(sha256:) and the 64 hex digits of the SHA-256 of its
            SubjectPublicKeyInfo (with O(keys[].recipient)).
        type: str
      policy:
        description:
          - The SHA-256 (64 hex digits) of the new signed policy's payload, as M(secops.keylifecycle.policy_sign)
            returns it (its C(sha256)); simpler, give O(new_policy).
        type: str
  new_policy:
    description:
      - Only with O(action=policy_change) - the NEW signed policy document the change puts in force, as
        M(secops.keylifecycle.policy_sign) wrote it (the C(key_policy_signed) variable of its O(dest) file). The
        request then approves its SHA-256, and the words shown before signing give its environment, serial,
        signer and the settings that differ from O(signed_policy).
      - With O(signed_policy) it must be for the same environment and not have a lower serial. Its signature is
        checked on the HSM host, not here.
    type: dict
  change_ref:
    description:
      - The change or ticket the action is done under (letters, digits and C(.), C(_), C(:), C(/), C(#), C(-), up to
        64 characters); the task must give the same C(change_ref).
    type: str
    required: true
  not_after:
    description:
      - When the approval expires. An ISO 8601 time with its time zone (V(2027-03-02T12:00:00+00:00)), or a duration
        from now (V(24h), V(2d)). Written as an ISO 8601 UTC time ending in V(+00:00).
      - Must lie in the future, and no further ahead than C(policy.approval_max_validity) (baseline V(7d); the
        signed policy's when O(signed_policy) is given), or the HSM host refuses the approval.
    type: str
    default: 24h
  nonce:
    description:
      - The request's nonce, 32 to 64 lowercase hex digits. Leave it out and a new random one (128 bits) is drawn.
      - Give one only to re-create the same request (see the C(idempotent) attribute); never reuse the nonce of an
        approval that was used.
    type: str
  approver_name:
    description:
      - The approver's name, as the signed policy lists it under C(policy.approvers) (letters, digits and
        C(. _ @ + -), up to 128 characters).
    type: str
    required: true
  signed_policy:
    description:
      - The environment's signed policy IN FORCE (the C(key_policy_signed) variable M(secops.keylifecycle.policy_sign)
        writes); for O(action=policy_change) that is the current policy, whose approvers approve the change, not
        O(new_policy). When given, the approval is refused unless O(approver_name) is listed in its C(policy.approvers)
        and the signing key is the key listed there, and O(not_after) is checked against its
        C(policy.approval_max_validity). This catches a wrong key before the approval travels; the policy's own
        signature is checked on the HSM host, not here.
    type: dict
  dest:
    description:
      - A JSON file to write the approval to, on the controller (mode V(0644), written atomically; it holds no
        secret). Its directory must exist. Without it, the approval is only returned.
    type: path
notes:
  - Run it on the approver's own workstation (C(hosts=localhost)); the private key never leaves it.
  - The operator passes the approvals to the lifecycle task's C(approvals) option (see the destroy example); the
    policy signer embeds policy change approvals in the new policy (see the three-step example).
seealso:
  - module: secops.keylifecycle.policy_sign
  - module: secops.keylifecycle.key_destroy
"""

EXAMPLES = r"""
- name: Approve the destruction of payments-dek v1 on prod-hsm (passphrase-protected key)
  secops.keylifecycle.approval_sign:
    action: destroy
    token: prod-hsm
    keys:
      - name: payments-dek
        version: 1
    change_ref: CHG-2041
    not_after: 24h
    approver_name: dana
    private_key_path: ~/.keylifecycle/approver.enc.pem
    private_key_passphrase: "{{ approver_passphrase }}"
    signed_policy: "{{ key_policy_signed }}"
    dest: approvals/dana.json

- name: Approve a journal rollover with the key in the approver's own token
  secops.keylifecycle.approval_sign:
    action: journal_rollover
    token: prod-hsm
    change_ref: CHG-2077
    not_after: "2027-03-02T12:00:00+00:00"
    approver_name: erin
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: erin-officer
    user_pin_file: ~/.keylifecycle/officer-token.pin
    key_label: approver
    dest: approvals/erin.json

- name: Show the request without signing it
  secops.keylifecycle.approval_sign:
    action: retire
    token: staging-hsm
    keys: [{name: reports-kek, version: 3}]
    change_ref: CHG-2100
    approver_name: dana
    private_key_path: ~/.keylifecycle/approver.enc.pem
    private_key_passphrase: "{{ approver_passphrase }}"
  check_mode: true

- name: Approve trusting recipient partner-bank's transport key on prod-hsm
  secops.keylifecycle.approval_sign:
    action: recipient_approve
    token: prod-hsm
    keys:
      - recipient: partner-bank
        fingerprint: sha256:4f2a9c0d1e8b7a6f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7
    change_ref: CHG-2150
    approver_name: dana
    private_key_path: ~/.keylifecycle/approver.enc.pem
    private_key_passphrase: "{{ approver_passphrase }}"
    signed_policy: "{{ key_policy_signed }}"
    dest: approvals/dana-partner-bank.json

# A change of policy in three steps. 1. The policy signer signs the new policy (serial 5) to a new file:
- name: Sign the new prod policy
  secops.keylifecycle.policy_sign:
    environment: prod
    serial: 5
    not_after: "2027-12-31T00:00:00+00:00"
    signer_name: prod-officer
    private_key_path: ~/.keylifecycle/policy-signer.enc.pem
    private_key_passphrase: "{{ policy_signer_passphrase }}"
    policy: "{{ lookup('ansible.builtin.file', 'prod-policy.yml') | from_yaml }}"
    dest: proposed/policy.yml

# 2. Each approver of the policy IN FORCE approves it; the words name what it changes (token defaults to *)
- name: Approve putting the new prod policy in force
  secops.keylifecycle.approval_sign:
    action: policy_change
    new_policy: "{{ (lookup('ansible.builtin.file', 'proposed/policy.yml') | from_yaml).key_policy_signed }}"
    signed_policy: "{{ key_policy_signed }}"
    change_ref: CHG-2200
    not_after: 3d
    approver_name: erin
    private_key_path: ~/.keylifecycle/approver.enc.pem
    private_key_passphrase: "{{ approver_passphrase }}"
    dest: approvals/erin-policy.json

# 3. The policy signer runs policy_sign again with the same options plus the approvals: the same signature,
#    the approvals embedded (see policy_sign), and the file goes to inventories/prod/group_vars/all/policy.yml.

# The operator's side: the approvals collected from dana and erin, passed to the task they approve
- name: Destroy payments-dek v1 with two signed approvals
  secops.keylifecycle.key_destroy:
    name: payments-dek
    version: 1
    change_ref: CHG-2041
    approvals: "{{ lookup('ansible.builtin.file', 'approvals/dana.json', 'approvals/erin.json', wantlist=True)
      | map('from_json') | list }}"
"""

RETURN = r"""
approval:
  description: The signed approval, as written to O(dest); pass it in the lifecycle task's C(approvals) option.
  returned: success, not in check mode
  type: dict
  contains:
    format:
      description: The document format, 1.
      type: int
    request:
      description: The request approved, as RV(request).
      type: dict
    approver:
      description: C(sha256:<hex>) of the approver's public key (SubjectPublicKeyInfo).
      type: str
    approver_name:
      description: O(approver_name).
      type: str
    signature:
      description: Base64 of the DER ECDSA P-256 / SHA-256 signature.
      type: str
request:
  description: The request (signed, or to be signed in check mode), canonical - its keys sorted and unique.
  returned: success
  type: dict
  contains:
    action:
      description: O(action).
      type: str
    token:
      description: O(token); V(*) (every token of the environment) for a policy change without O(token).
      type: str
    keys:
      description:
        - What is approved - key versions C({name, version}), recipients' transport keys C({recipient,
          fingerprint}) or the new policy C({policy}); empty for a journal rollover.
      type: list
      elements: dict
    change_ref:
      description: O(change_ref).
      type: str
    not_after:
      description: When the approval expires, ISO 8601 UTC.
      type: str
    nonce:
      description: The nonce, lowercase hex.
      type: str
request_text:
  description: The request in words, as shown before signing.
  returned: success
  type: str
  sample: "dana approves: DESTROY (cryptographic erasure, irreversible) of payments-dek v1 on token 'prod-hsm',
    change CHG-2041, valid until 2027-03-02T12:00:00+00:00, nonce 5f0c..."
new_policy:
  description: The new policy a policy change approves, as the words before signing describe it.
  returned: success, when O(new_policy) is given
  type: dict
  contains:
    sha256:
      description: SHA-256 (hex) of the new signed policy's payload; the request's C(keys[0].policy).
      type: str
    environment:
      description: The new policy's environment.
      type: str
    serial:
      description: The new policy's serial.
      type: int
    signer_name:
      description: The new policy's signer name (a label; the HSM host checks the signer's key).
      type: str
    changes:
      description:
        - The settings that differ from O(signed_policy)'s policy; null when O(signed_policy) is not given.
        - O(signed_policy)'s signature is not checked here (only the HSM host checks it), so the words also give
          what the new policy itself requires (RV(new_policy.approvals_required), RV(new_policy.approvers)).
      type: list
      elements: str
    approvals_required:
      description: The new policy's C(approvals_required), action to number of signed approvals.
      type: dict
    approvers:
      description: The names the new policy lists as approvers.
      type: list
      elements: str
dest:
  description: O(dest) as an absolute path, the file written (or that would be written in check mode).
  returned: success, when O(dest) is given
  type: str
error_kind:
  description: Category of the error.
  returned: failure
  type: str
error_option:
  description: The option the error is about, when there is one.
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import SIGNING_KEY_ARGSPEC, SIGNING_KEY_RULES

# The one declaration of the options: the action plugin, which does the work on the controller, validates the
# task's arguments with it (ActionBase.validate_argument_spec); this stub only refuses to run on a target.
ARGUMENT_SPEC = dict(
    action={"type": "str", "required": True,
            "choices": ["destroy", "compromise_rotate", "retire", "journal_rollover", "recipient_approve",
                        "recipient_revoke", "policy_change"]},
    token={"type": "str", "no_log": False},  # required except for policy_change (default *): _approval_signing
    keys={"type": "list", "elements": "dict", "no_log": False, "options": {
        "name": {"type": "str"},
        "version": {"type": "int"},
        "recipient": {"type": "str"},
        "fingerprint": {"type": "str", "no_log": False},
        "policy": {"type": "str", "no_log": False},
    }},
    new_policy={"type": "dict"},
    change_ref={"type": "str", "required": True},
    not_after={"type": "str", "default": "24h"},
    nonce={"type": "str"},
    approver_name={"type": "str", "required": True},
    **SIGNING_KEY_ARGSPEC,
    signed_policy={"type": "dict"},
    dest={"type": "path"},
)
MUTUALLY_EXCLUSIVE = SIGNING_KEY_RULES["mutually_exclusive"]
REQUIRED_ONE_OF = SIGNING_KEY_RULES["required_one_of"]
REQUIRED_TOGETHER = SIGNING_KEY_RULES["required_together"]
REQUIRED_BY = SIGNING_KEY_RULES["required_by"]


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           mutually_exclusive=MUTUALLY_EXCLUSIVE, required_one_of=REQUIRED_ONE_OF,
                           required_together=REQUIRED_TOGETHER, required_by=REQUIRED_BY)
    module.fail_json(msg="approval_sign runs on the controller through its action plugin; call it as "
                         "secops.keylifecycle.approval_sign in a task.")


if __name__ == "__main__":
    main()
