#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: policy_sign
short_description: As the policy signer, sign the environment's policy on the controller
version_added: 0.2.0
description:
  - The policy signer's step of the signed environment policy (docs/access-control.md, "Signed policy"). Runs on
    the controller (action plugin); nothing is sent to a managed host and the HSM token is not touched.
  - Checks O(policy) as every lifecycle module's C(policy) option does (a setting that would weaken the collection's
    baseline, an unknown or malformed setting is refused with the same message), signs it with the signer's EC
    P-256 private key (ECDSA P-256 / SHA-256), checks the signature with the signer's public key, and writes the
    signed document to O(dest).
  - The signed document is C({format, environment, serial, not_after, policy, signer, signer_name, signature});
    the signature covers the canonical JSON (sorted keys, no blanks, ASCII) of C(environment), C(format),
    C(not_after), C(policy), C(serial) and C(signer) (the signer's public key fingerprint). C(policy) holds the
    settings as the lifecycle modules' C(policy) option holds them once checked (V("4096") becomes V(4096)).
  - The private key is either a passphrase-protected PEM (O(private_key_path), O(private_key_passphrase)) or an EC
    P-256 private key object in the officer's own PKCS#11 token (O(pkcs11_module), O(token_label),
    O(user_pin_file), O(key_label)), which signs inside that token (C_Sign, CKM_ECDSA). The public key must be
    installed in the environment's HSM token with M(secops.keylifecycle.policy_signer) before lifecycle tasks
    accept the policy.
  - ECDSA P-256 rather than Ed25519, because every PKCS#11 token this collection targets (SoftHSM2, Luna,
    CloudHSM, YubiHSM) verifies it natively inside the token, where lifecycle modules check the policy; CKM_EDDSA is
    missing from several of them.
  - O(dest) is a YAML file for the inventory's C(group_vars/all), with a header comment and exactly two
    variables, C(key_policy_signed) (the document; passed to lifecycle tasks as C(signed_policy)) and
    C(key_policy) (C("{{ key_policy_signed.policy }}"), the settings the tasks run with). It is written
    atomically, mode V(0644); it holds no secret.
  - The policy in words (each setting with its baseline, serial, not_after, signer) is shown before the file is
    written and returned as RV(summary).
  - "A new policy can carry the signed approvals of its coming into force (O(approvals)): the documents
    M(secops.keylifecycle.approval_sign) writes for O(secops.keylifecycle.approval_sign#module:action=policy_change)
    with O(secops.keylifecycle.approval_sign#module:new_policy) set to this document. They are written under
    C(key_policy_signed.approvals), are not covered by the signer's signature, and are checked on the HSM host:
    when a task brings a policy other than the one in force on a token, M approvers of the policy IN FORCE
    (C(policy.approvals_required.policy_change)) must have approved it."
  - "The workflow of a policy change: 1. the policy signer signs the new policy; 2. each approver runs
    M(secops.keylifecycle.approval_sign) with C(new_policy) = the file's C(key_policy_signed); 3. the policy
    signer runs this module again with the same options plus O(approvals) - the payload is the same, so the
    existing signature is kept and only the approvals are added."
  - Holds names, settings, fingerprints and the signature only; never the passphrase, a PIN or key material.
author:
  - secops.keylifecycle maintainers (@secops)
extends_documentation_fragment:
  - secops.keylifecycle.attributes
  - secops.keylifecycle.signing_key
attributes:
  check_mode:
    support: full
    details:
      - The policy is checked and signed (the passphrase or the token's PIN is used, the signature is checked), and
        RV(summary) and RV(signed_policy) are returned, but O(dest) is not written and a new signature is not
        returned (C(signature) reads C(<made when run without check mode>)), so that a C(--check --diff) in a job
        log holds no usable signed policy.
  diff_mode:
    support: full
    details:
      - The content of O(dest) before and after.
  idempotent:
    support: partial
    details:
      - When O(dest) already holds a valid signature by the same signer over the same document, its signature is
        kept (ECDSA signatures differ at each signing); with the same O(approvals) too, the file is not rewritten
        (C(changed=false)). Other O(approvals) (or none) rewrite the file with the same signature.
      - With O(not_after) given as a duration, the document changes at every run (its expiry moves), so the file is
        signed and written again.
options:
  policy:
    description:
      - The environment's policy settings, exactly as the lifecycle modules' C(policy) option takes them (the
        C(secops.keylifecycle.policy) doc fragment lists them). May only tighten the collection's baseline.
      - V({}) signs the baseline policy.
    type: dict
    required: true
  environment:
    description: The environment the policy is for (1 to 64 letters, digits, C(.), C(_) or C(-)).
    type: str
    required: true
  serial:
    description:
      - The policy's serial number, 1 or more. Sign each new policy with a higher serial than the one it replaces;
        a token remembers the highest serial it accepted and refuses an older one.
    type: int
    required: true
  not_after:
    description:
      - When the signed policy expires. An ISO 8601 time with its time zone (V(2027-06-30T00:00:00+00:00)), or a
        duration from now (V(180d), V(26w)). Written as an ISO 8601 UTC time ending in V(+00:00). Must lie in the
        future.
    type: str
    required: true
  signer_name:
    description:
      - The signer's name, as installed with M(secops.keylifecycle.policy_signer) (letters, digits and C(. _ @ + -),
        up to 63 characters). A label for people; the signer that counts is the key's fingerprint.
    type: str
    required: true
  approvals:
    description:
      - The approvals of this policy change, each an approval document of M(secops.keylifecycle.approval_sign) (a
        dict, or its JSON text), of action V(policy_change), whose keys name exactly this document's SHA-256
        (RV(sha256)). Anything else is refused, naming the approval.
      - Written under C(key_policy_signed.approvals), sorted by approver fingerprint; the same nonce is kept once.
        Without O(approvals) the document carries none (a file that held some is rewritten without them).
      - Without O(in_force_policy) only their shape and what they approve are checked here; the HSM host checks
        their signatures against the approvers of the policy in force on its token.
    type: list
    elements: raw
  in_force_policy:
    description:
      - The signed policy in force on the environment's tokens (its C(key_policy_signed)), whose approvers approve
        the change. When given, each approval must be signed by an approver it lists (C(policy.approvers)) and
        verify with that key, it must be for the same environment, and RV(summary) says how many approvers of how
        many required (C(policy.approvals_required.policy_change)) approved. Its own signature is not checked here.
    type: dict
  dest:
    description:
      - The YAML file to write on the controller, usually C(inventories/<environment>/group_vars/all/policy.yml).
        Its directory must exist.
    type: path
    required: true
notes:
  - Run it on the signer's own workstation (C(hosts=localhost)); the private key never leaves it.
  - The signed policy takes effect on a token once a lifecycle task brings it and the token holds its signer.
seealso:
  - module: secops.keylifecycle.policy_signer
  - module: secops.keylifecycle.approval_sign
"""

EXAMPLES = r"""
- name: Sign the prod policy with a passphrase-protected key
  secops.keylifecycle.policy_sign:
    environment: prod
    serial: 4
    not_after: 180d
    signer_name: dana.officer
    private_key_path: ~/.keylifecycle/policy-signer.enc.pem
    private_key_passphrase: "{{ policy_signer_passphrase }}"
    policy:
      min_rsa_bits: 4096
      destroy_requires_approval: true
      max_rotation_period: 180d
    dest: inventories/prod/group_vars/all/policy.yml

- name: Sign with the key in the officer's own token
  secops.keylifecycle.policy_sign:
    environment: staging
    serial: 2
    not_after: "2027-06-30T00:00:00+00:00"
    signer_name: dana.officer
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: dana-officer
    user_pin_file: ~/.keylifecycle/officer-token.pin
    key_label: policy-signer
    policy: "{{ lookup('ansible.builtin.file', 'staging-policy.yml') | from_yaml }}"
    dest: inventories/staging/group_vars/all/policy.yml
  check_mode: true

# A change of policy in three steps. 1. Sign the new policy (serial 5) to a file of its own.
- name: Sign the new prod policy
  secops.keylifecycle.policy_sign:
    environment: prod
    serial: 5
    not_after: "2027-12-31T00:00:00+00:00"
    signer_name: dana.officer
    private_key_path: ~/.keylifecycle/policy-signer.enc.pem
    private_key_passphrase: "{{ policy_signer_passphrase }}"
    policy:
      min_rsa_bits: 4096
      max_rotation_period: 90d
      approvals_required: {destroy: 2, policy_change: 2}
    dest: proposed/policy.yml

# 2. Each approver of the policy in force runs secops.keylifecycle.approval_sign with action policy_change,
#    new_policy the proposed file's key_policy_signed and signed_policy the policy in force (see approval_sign).

# 3. The same task again, plus the approvals (JSON text or dicts): the same signature, the approvals embedded.
- name: Embed the approvals of the new prod policy
  secops.keylifecycle.policy_sign:
    environment: prod
    serial: 5
    not_after: "2027-12-31T00:00:00+00:00"
    signer_name: dana.officer
    private_key_path: ~/.keylifecycle/policy-signer.enc.pem
    private_key_passphrase: "{{ policy_signer_passphrase }}"
    policy:
      min_rsa_bits: 4096
      max_rotation_period: 90d
      approvals_required: {destroy: 2, policy_change: 2}
    approvals: "{{ lookup('ansible.builtin.file', 'approvals/erin-policy.json', 'approvals/frank-policy.json',
      wantlist=True) }}"
    in_force_policy: "{{ key_policy_signed }}"
    dest: proposed/policy.yml
"""

RETURN = r"""
signed_policy:
  description: The signed policy document, as written to O(dest) under C(key_policy_signed).
  returned: success
  type: dict
  contains:
    format:
      description: The document format, 1.
      type: int
    environment:
      description: O(environment).
      type: str
    serial:
      description: O(serial).
      type: int
    not_after:
      description: When the policy expires, ISO 8601 UTC.
      type: str
    policy:
      description: The policy settings signed.
      type: dict
    signer:
      description: C(sha256:<hex>) of the signer's public key (SubjectPublicKeyInfo).
      type: str
    signer_name:
      description: O(signer_name).
      type: str
    signature:
      description: Base64 of the DER ECDSA P-256 / SHA-256 signature.
      type: str
    approvals:
      description: The approvals of this policy change (O(approvals)), checked and sorted; absent without them.
      type: list
      elements: dict
sha256:
  description: SHA-256 (hex) of the signed payload; the lifecycle modules' records name the policy in force by it.
  returned: success
  type: str
dest:
  description: O(dest), the file written (or that would be written in check mode).
  returned: success
  type: str
summary:
  description: The policy in words, shown before the file is written - environment, serial, not_after, signer,
    each setting with its baseline value, and each approval embedded (approver, change, validity, nonce).
  returned: success
  type: list
  elements: str
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
    policy={"type": "dict", "required": True},
    environment={"type": "str", "required": True},
    serial={"type": "int", "required": True},
    not_after={"type": "str", "required": True},
    signer_name={"type": "str", "required": True},
    **SIGNING_KEY_ARGSPEC,
    approvals={"type": "list", "elements": "raw"},
    in_force_policy={"type": "dict"},
    dest={"type": "path", "required": True},
)
MUTUALLY_EXCLUSIVE = SIGNING_KEY_RULES["mutually_exclusive"]
REQUIRED_ONE_OF = SIGNING_KEY_RULES["required_one_of"]
REQUIRED_TOGETHER = SIGNING_KEY_RULES["required_together"]
REQUIRED_BY = SIGNING_KEY_RULES["required_by"]


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           mutually_exclusive=MUTUALLY_EXCLUSIVE, required_one_of=REQUIRED_ONE_OF,
                           required_together=REQUIRED_TOGETHER, required_by=REQUIRED_BY)
    module.fail_json(msg="policy_sign runs on the controller through its action plugin; call it as "
                         "secops.keylifecycle.policy_sign in a task.")


if __name__ == "__main__":
    main()
