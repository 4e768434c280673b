#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: approval_sign
short_description: As an approver, sign an approval of one high-risk lifecycle action on the controller
version_added: 0.2.0
description:
  - The approver's step of signed approvals, M of N (docs/access-control.md, "Signed approvals"). Runs on the
    controller (action plugin); nothing is sent to a managed host, the HSM token the request is about is not
    touched and nothing is journaled. The approval takes effect, and is journaled, when the operator passes it in
    the C(approvals) option of M(secops.keylifecycle.key_destroy), M(secops.keylifecycle.key_rotate) or
    M(secops.keylifecycle.audit_rollover), which check it on the HSM host against the signed policy.
  - "Builds the request C({action, token, keys, change_ref, not_after, nonce}) from the options and shows it in
    words before it signs, for example: dana approves: DESTROY (cryptographic erasure, irreversible) of
    payments-dek v1 on token 'prod-hsm', change CHG-2041, valid until 2027-03-02T12:00:00+00:00, nonce 5f0c...
    It then signs it with the approver's EC P-256 private key (ECDSA P-256 / SHA-256), checks the signature with
    the approver's public key, returns the approval, and writes it to O(dest) when given."
  - 'The approval is C({format, request, approver, approver_name, signature}): C(approver) is C(sha256:) and the
    SHA-256 of the approver public key (SubjectPublicKeyInfo); the signature covers the canonical JSON (sorted keys,
    no blanks, ASCII) of C(approver), C(format) and C(request). C(approver_name) is not signed: the name that counts
    on the HSM host is the one the signed policy gives the key (C(policy.approvers)).'
  - The private key is either a passphrase-protected PEM (O(private_key_path), O(private_key_passphrase)) or an EC
    P-256 private key object in the approver's own PKCS#11 token (O(pkcs11_module), O(token_label),
    O(user_pin_file), O(key_label)), which signs inside that token (C_Sign, CKM_ECDSA), exactly as
    M(secops.keylifecycle.policy_sign) takes the policy signer's key.
  - Each approval is good for one task (its nonce is remembered by the token once used), on the one token, action,
    key versions and change it names, until O(not_after).
  - Holds names, the request, a fingerprint and the signature only; never the passphrase, a PIN or key material.
author:
  - secops.keylifecycle maintainers (@secops)
extends_documentation_fragment:
  - secops.keylifecycle.attributes
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
    choices: [destroy, compromise_rotate, retire, journal_rollover]
  token:
    description:
      - Label of the HSM token the action runs on (the environment's token, for example V(prod-hsm)); not the
        approver's own token (O(token_label)).
    type: str
    required: true
  keys:
    description:
      - The key versions the action may act on; the task that uses the approval must act on none other.
      - Required unless O(action=journal_rollover).
    type: list
    elements: dict
    suboptions:
      name:
        description: The key's name.
        type: str
        required: true
      version:
        description: The key version, 1 or more.
        type: int
        required: true
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
  private_key_path:
    description:
      - Path, on the controller, of the approver's EC P-256 private key, PEM, encrypted with a passphrase (PKCS#8
        C(-----BEGIN ENCRYPTED PRIVATE KEY-----)). Refused when it is not encrypted, or when its mode lets its group
        or others access it (use V(0600) or V(0400)).
      - Mutually exclusive with O(pkcs11_module); one of them is required.
    type: path
  private_key_passphrase:
    description: The passphrase of O(private_key_path). Keep it in Ansible Vault or prompt for it.
    type: str
  pkcs11_module:
    description:
      - Path, on the controller, of the PKCS#11 library of the approver's own token, which holds the approver's
        private key. Its environment (for SoftHSM2, E(SOFTHSM2_CONF)) is the controller's.
      - With it, O(token_label), O(user_pin_file) and O(key_label) are required.
    type: path
  token_label:
    description: Label of the approver's own token (not the HSM token of O(token)).
    type: str
  user_pin_file:
    description:
      - Path, on the controller, of a file holding the user PIN of the approver's own token (one line), readable
        only by its owner (mode V(0600) or V(0400)).
    type: path
  key_label:
    description:
      - CKA_LABEL of the approver's EC P-256 private key object in their own token. Its public key object (same
        CKA_ID, else same label) must be on the token too, as it names the approver's fingerprint.
    type: str
  signed_policy:
    description:
      - The environment's signed policy (the C(key_policy_signed) variable M(secops.keylifecycle.policy_sign)
        writes). When given, the approval is refused unless O(approver_name) is listed in its C(policy.approvers)
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
  - The operator passes the approvals to the lifecycle task's C(approvals) option (see the last example).
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
  description: The request (signed, or to be signed in check mode), canonical - key versions sorted and unique.
  returned: success
  type: dict
  contains:
    action:
      description: O(action).
      type: str
    token:
      description: O(token).
      type: str
    keys:
      description: The key versions, each C({name, version}); empty for a journal rollover without O(keys).
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

# The one declaration of the options: the action plugin, which does the work on the controller, validates the
# task's arguments with it (ActionBase.validate_argument_spec); this stub only refuses to run on a target.
ARGUMENT_SPEC = dict(
    action={"type": "str", "required": True,
            "choices": ["destroy", "compromise_rotate", "retire", "journal_rollover"]},
    token={"type": "str", "required": True, "no_log": False},
    keys={"type": "list", "elements": "dict", "no_log": False, "options": {
        "name": {"type": "str", "required": True},
        "version": {"type": "int", "required": True},
    }},
    change_ref={"type": "str", "required": True},
    not_after={"type": "str", "default": "24h"},
    nonce={"type": "str"},
    approver_name={"type": "str", "required": True},
    private_key_path={"type": "path"},
    private_key_passphrase={"type": "str", "no_log": True},
    pkcs11_module={"type": "path"},
    token_label={"type": "str", "no_log": False},
    user_pin_file={"type": "path"},
    key_label={"type": "str", "no_log": False},
    signed_policy={"type": "dict"},
    dest={"type": "path"},
)
MUTUALLY_EXCLUSIVE = [["private_key_path", "pkcs11_module"]]
REQUIRED_ONE_OF = [["private_key_path", "pkcs11_module"]]
REQUIRED_TOGETHER = [["private_key_path", "private_key_passphrase"]]
REQUIRED_BY = {"pkcs11_module": ["token_label", "user_pin_file", "key_label"]}


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           mutually_exclusive=MUTUALLY_EXCLUSIVE, required_one_of=REQUIRED_ONE_OF,
                           required_together=REQUIRED_TOGETHER, required_by=REQUIRED_BY)
    module.fail_json(msg="approval_sign runs on the controller through its action plugin; call it as "
                         "secops.keylifecycle.approval_sign in a task.")


if __name__ == "__main__":
    main()
