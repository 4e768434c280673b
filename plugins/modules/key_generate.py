#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: key_generate
short_description: Ensure keys exist, generated inside a PKCS#11 token
version_added: 0.1.0
description:
  - Ensures that one logical key (O(name)) or a batch of keys (O(keys)) exists on the token with an active version.
  - A missing key is generated inside the token (C_GenerateKey or C_GenerateKeyPair), never imported. Its secret
    (the AES key or the private key) is created with CKA_SENSITIVE true, and with CKA_EXTRACTABLE true only when
    O(distributable=true), so that it can leave the token only wrapped under another key.
  - Each version is a token object labelled C(<name>:v<version>) with a random 16-byte CKA_ID, plus a metadata
    object (CKO_DATA, application C(secops.keylifecycle)) recording its spec, state, creation time, key check
    value (AES) or public key fingerprint (RSA, EC) and state transitions.
  - A key that already exists with the same type, size, curve, usage and O(distributable) is left alone
    (C(changed=false)). A different O(rotation_period), O(retention_period) or O(recipients) rewrites the
    metadata only. A different type, size, curve, usage or O(distributable) is refused for the whole batch, and
    nothing is changed.
  - The whole batch is checked against the policy before anything is generated, and runs in one PKCS#11 session
    with one enumeration of the token.
  - This module does not rotate, deactivate or destroy keys; it never creates a second version of an existing key.
author:
  - secops.keylifecycle maintainers (@secops)
extends_documentation_fragment:
  - secops.keylifecycle.connection
  - secops.keylifecycle.policy
  - secops.keylifecycle.audit_context
  - secops.keylifecycle.batch_result
  - secops.keylifecycle.attributes
  - secops.keylifecycle.attributes.action_group
attributes:
  check_mode:
    support: full
    details:
      - Nothing is created or written to the token; RV(plan) and the diff say what would be done.
  diff_mode:
    support: full
    details:
      - Shows each key's metadata before and after (never key material).
  idempotent:
    support: full
options:
  name:
    description:
      - Name of one logical key. 1 to 63 letters, digits, V(.), V(_) or V(-), starting with a letter or digit.
      - Not the name of one of the collection's own signing keys (V(audit-checkpoint), V(package-signing),
        V(restore-signing)), which it generates itself.
      - Mutually exclusive with O(keys).
    type: str
  type:
    description: Key type of O(name).
    type: str
    choices: [aes, rsa, ec]
    default: aes
  size:
    description:
      - Key size in bits for AES (default V(256)) and RSA (default V(3072)), one of the sizes the policy allows,
        V(128), V(192) or V(256) for AES and V(2048), V(3072) or V(4096) for RSA, at or above the policy minimum
        (O(policy.min_aes_bits), O(policy.min_rsa_bits)). The baseline allows AES V(256) and RSA V(3072) or V(4096).
        Any other size, V(0) included, is refused with the list.
      - Not used for EC keys (the curve sets the size).
    type: int
  curve:
    description: Curve of an EC key, V(P-256) (default), V(P-384) or V(P-521).
    type: str
  usage:
    description:
      - What the key may be used for, among V(encrypt), V(decrypt), V(wrap), V(unwrap), V(sign), V(verify) and
        V(derive), as the policy allows for the key type.
      - Defaults to V([encrypt, decrypt]) for AES and V([sign, verify]) for RSA and EC.
    type: list
    elements: str
  distributable:
    description:
      - Whether the key may be distributed to recipients. Only then is the secret created with CKA_EXTRACTABLE
        true, and it can still only leave the token wrapped (it stays CKA_SENSITIVE).
      - It is also created with CKA_WRAP_WITH_TRUSTED true, so the token wraps it only under a transport key the
        Security Officer approved (M(secops.keylifecycle.recipient_approve)); the metadata records
        C(wrap_with_trusted). A token without that attribute is refused while O(policy.require_trusted_wrapping)
        is on; with it off (development tokens only) the key is generated without it.
      - Generating a distributable key also generates the token's package-signing key (C(package-signing), EC
        P-256 where the token generates EC keys, else RSA-3072; never extractable) if it has none, journaled as
        its own C(key-generate) event, so that recipients can pin it at enrollment.
    type: bool
    default: false
  rotation_period:
    description: How often the key must be rotated (for example V(90d)), a positive duration. Defaults to, and may
      not exceed, the policy's O(policy.max_rotation_period).
    type: str
  retention_period:
    description: How long a deactivated version is kept before it may be destroyed, a positive duration of at most
      V(36500d) (100 years). Defaults to the policy's O(policy.default_retention_period).
    type: str
  recipients:
    description: Names of the recipients allowed to receive this key (only with O(distributable=true)).
    type: list
    elements: str
  destroy_allowed:
    description:
      - Opt-in for destroying this key's expired versions, where the policy asks for it
        (O(policy.destroy_requires_opt_in)). Can be changed on an existing key (metadata only).
    type: bool
    default: false
  backup:
    description:
      - Whether the key's versions survive the loss of this token. Each new version is generated CKA_EXTRACTABLE
        and CKA_WRAP_WITH_TRUSTED, so the token lets it leave only wrapped under a key the Security Officer made
        trusted (a replica token's, M(secops.keylifecycle.recipient_approve) with O(secops.keylifecycle.recipient_approve#module:kind=replica)),
        and M(secops.keylifecycle.key_replicate) copies it to the replicas (docs/replication.md). Without it a
        non-distributable key stays CKA_EXTRACTABLE false.
      - Defaults to O(policy.require_backup); V(false) is refused where that policy is on. Can be changed on an
        existing key (metadata only); it applies to the versions generated from then on (the next rotation).
      - A token without CKA_WRAP_WITH_TRUSTED refuses a backup key, whatever O(policy.require_trusted_wrapping)
        says.
    type: bool
  keys:
    description:
      - A batch of key specs, each with the same options as the single-key form (O(name) required).
      - Mutually exclusive with O(name).
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the logical key, as O(name).
        type: str
        required: true
      type:
        description: Key type.
        type: str
        choices: [aes, rsa, ec]
        default: aes
      size:
        description: Key size in bits (AES, RSA).
        type: int
      curve:
        description: EC curve.
        type: str
      usage:
        description: Key usages.
        type: list
        elements: str
      distributable:
        description: Whether the key may be distributed (wrapped) to recipients.
        type: bool
        default: false
      rotation_period:
        description: Rotation period.
        type: str
      retention_period:
        description: Retention period of deactivated versions.
        type: str
      recipients:
        description: Recipients allowed to receive the key.
        type: list
        elements: str
      destroy_allowed:
        description: Opt-in for destroying the key's expired versions.
        type: bool
        default: false
      backup:
        description: Whether the key's versions may be copied to replica tokens (default O(policy.require_backup)).
        type: bool
seealso:
  - module: secops.keylifecycle.key_info
"""

EXAMPLES = r"""
- name: Ensure the payments database key exists (AES-256, default policy)
  secops.keylifecycle.key_generate:
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: dev-keys
    user_pin_file: /etc/keylifecycle/dev-user.pin
    name: payments-db
    rotation_period: 180d

- name: Ensure a batch of keys in one session, connection set once for the play
  module_defaults:
    group/secops.keylifecycle.hsm:
      pkcs11_module: "{{ hsm_pkcs11_module }}"
      token_label: "{{ hsm_token_label }}"
      user_pin: "{{ vault_hsm_user_pin }}"
  secops.keylifecycle.key_generate:
    policy:
      min_rsa_bits: 4096
      max_rotation_period: 90d
    keys:
      - name: payments-db
        distributable: true
        usage: [encrypt, decrypt]
        recipients: [app01]
      - name: invoice-signing
        type: rsa
        size: 4096
        usage: [sign, verify]
      - name: api-tokens
        type: ec
        curve: P-384
"""

RETURN = r"""
key_versions:
  description: The active version of every requested key after the run (existing or new), as in M(secops.keylifecycle.key_info).
  returned: success
  type: list
  elements: dict
  sample:
    - name: payments-db
      version: 1
      label: payments-db:v1
      id: 6f1c0d5e9a7b4c3d2e1f0a9b8c7d6e5f
      state: active
      type: aes
      size: 256
      curve: null
      usage: [decrypt, encrypt]
      distributable: false
      recipients: []
      created: "2026-11-28T23:00:00+00:00"
      age_seconds: 0
      rotation_period: 365d
      next_rotation_due: "2027-11-28T23:00:00+00:00"
      rotation_overdue: false
      retention_period: 90d
      retain_until: null
      retention_expired: false
      key_check_value: 4b75b7
      public_key_fingerprint: null
      evidence: {local: true, sensitive: true, always_sensitive: true, never_extractable: true, extractable: false}
      transitions: [{state: active, at: "2026-11-28T23:00:00+00:00", by: alice, reason: generated}]
generated:
  description:
    - The versions created by this run, by name, version, label and id (their full records are in
      RV(key_versions)). Empty when nothing was generated or in check mode.
  returned: success
  type: list
  elements: dict
  sample: [{name: payments-db, version: 1, label: "payments-db:v1", id: 6f1c0d5e9a7b4c3d2e1f0a9b8c7d6e5f}]
plan:
  description: One entry per requested key with the action taken (or, in check mode, that would be taken).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Key name.
      type: str
    action:
      description: V(create), V(update) (metadata only) or V(none).
      type: str
    version:
      description: The version created, updated or found.
      type: int
    changes:
      description: The metadata fields an update changes.
      type: list
      elements: str
      returned: when action is update
  sample: [{name: payments-db, action: create, version: 1}]
audit_events:
  description:
    - One audit event per state change (and one for a failed change), in the schema of docs/audit-schema.md
      (ECS field names). Never holds key material or a PIN.
  returned: always
  type: list
  elements: dict
summary:
  description:
    - With O(return_records=false), instead of RV(key_versions), RV(generated), RV(plan) and RV(audit_events) (which
      are then not returned), how many of each, and the plan's entries counted by action.
  returned: success, when O(return_records=false)
  type: dict
  sample: {key_versions: 1000, generated: 998, plan: 1000, plan_actions: {create: 998, none: 2}, audit_events: 998}
audit_journal:
  description:
    - With O(return_records=false), where the task's records are in the controller's audit journal (they were
      written and fsync'ed before the task reported success), in place of RV(audit_events); read them with
      M(secops.keylifecycle.audit_verify) or from the log store.
  returned: when O(return_records=false), once the module ran (not in check mode)
  type: dict
  contains:
    path:
      description: The journal file on the controller.
      type: str
    journal_id:
      description: The journal's id.
      type: str
    intent_seq:
      description: Sequence number of the task's intent record.
      type: int
    first_seq:
      description: Sequence number of the first record written after the module returned.
      type: int
    last_seq:
      description: Sequence number of the task's outcome record (the last one).
      type: int
    records:
      description: How many records were written after the module returned (the events, the checkpoint, the outcome).
      type: int
  sample: {path: /var/lib/keylifecycle/audit/prod-keys.jsonl, journal_id: 0b8e..., intent_seq: 41, first_seq: 42,
           last_seq: 1043, records: 1002}
audit_checkpoint:
  description:
    - The signed checkpoint of the controller's journal made by this call (the intent record's sequence number
      and hash, signed in the token by the C(audit-checkpoint) key). Null in check mode or without a journal.
  returned: success, and the failure of a token's first task (it pinned the journal before the refusal)
  type: dict
  contains:
    journal_id:
      description: Journal id.
      type: str
    seq:
      description: Anchored record number.
      type: int
    head_hash:
      description: Anchored record hash.
      type: str
    signed_at:
      description: Signing time (UTC).
      type: str
    signature:
      description: Base64 DER ECDSA signature over the canonical JSON of journal_id, seq, head_hash and signed_at.
      type: str
    key_id:
      description: CKA_ID of the signing key.
      type: str
    key_version:
      description: Version of the signing key.
      type: int
    public_key_fingerprint:
      description: Fingerprint of the signing key.
      type: str
policy_change:
  description:
    - When the policy this call brings differs from the one the token's last anchored task ran under, the two
      (C(from), C(to)), each with C(sha256), C(signed) and, for a signed policy, C(serial) and C(signer_name).
      With C(--diff) the change is also a line of the task's diff, so C(--check --diff) shows a change of policy
      before it takes effect.
  returned: when the policy changed
  type: dict
policy_in_force:
  description:
    - The environment's policy this call ran with, as the token's policy signers checked it before anything on the
      token changed (O(signed_policy), docs/access-control.md). The same fields are in the intent record's
      C(keylifecycle.policy).
    - On a token without a policy signer, C(signed) is false and only C(sha256) is given (the unsigned O(policy)).
  returned: success
  type: dict
  contains:
    signed:
      description: Whether a policy signer on the token verified the policy.
      type: bool
    sha256:
      description:
        - SHA-256 (hex) of the signed policy's payload (the canonical JSON that was signed); for an unsigned policy,
          of the canonical JSON of the O(policy) settings given.
      type: str
    serial:
      description: The signed policy's serial (signed policies only).
      type: int
    signer:
      description: Fingerprint (C(sha256:...)) of the policy signer whose key in the token verified it.
      type: str
    signer_name:
      description: That signer's name on the token (C(policy-signer:<name>)).
      type: str
    environment:
      description: The environment named in the signed policy.
      type: str
    not_after:
      description: When the signed policy expires (UTC); after it every lifecycle task is refused.
      type: str
    rejected_records:
      description:
        - The signed policy records on the token that do not prove themselves (a document that does not verify
          with its policy signers, or a change without the approvals the policy before it required), each as
          C(<label> (<why>)). None is the policy in force; one whose document the token's signers signed still
          raises the serial floor. Only raw PKCS#11 with the user PIN writes one (docs/access-control.md, "A change
          of policy").
      type: list
      elements: str
      returned: when the token holds such a record
  sample: {signed: true, sha256: "5d41...", serial: 3, signer: "sha256:3b1f...", signer_name: dana,
           environment: prod, not_after: "2027-06-30T00:00:00+00:00"}
error_kind:
  description: Category of the error (for example V(policy_violation), V(key_conflict), V(login_failed)).
  returned: failure
  type: str
error_option:
  description: The option the error is about, when there is one.
  returned: failure
  type: str
"""


from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import (
    HsmModule,
    AUDIT_CONTEXT_ARGSPEC,
    BATCH_RESULT_ARGSPEC,
    POLICY_ARGSPEC,
    hsm_module_kwargs,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._key_generation import (
    apply_generation,
    plan_generation,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import build_key_specs
from ansible_collections.secops.keylifecycle.plugins.module_utils._lifecycle_module import run_lifecycle_module
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import DEFAULT_KEY_TYPE, KEY_TYPES

KEY_SPEC_OPTIONS = {
    "type": {"type": "str", "choices": list(KEY_TYPES), "default": DEFAULT_KEY_TYPE},
    "size": {"type": "int"},
    "curve": {"type": "str"},
    "usage": {"type": "list", "elements": "str"},
    "distributable": {"type": "bool", "default": False},
    "rotation_period": {"type": "str"},
    "retention_period": {"type": "str"},
    "recipients": {"type": "list", "elements": "str"},
    "destroy_allowed": {"type": "bool", "default": False},
    "backup": {"type": "bool"},
}

ARGUMENT_SPEC = dict(
    name={"type": "str"},
    keys={"type": "list", "elements": "dict", "no_log": False,
          "options": dict(name={"type": "str", "required": True}, **KEY_SPEC_OPTIONS)},
    **KEY_SPEC_OPTIONS,
    **POLICY_ARGSPEC,
    **AUDIT_CONTEXT_ARGSPEC,
    **BATCH_RESULT_ARGSPEC,
)


def requested_specs(params):
    """The raw key specs of the task: the single-key options or the batch."""
    if params["keys"] is not None:
        return params["keys"]
    return [dict({name: params[name] for name in KEY_SPEC_OPTIONS}, name=params["name"])]


def main():
    module = HsmModule(**hsm_module_kwargs(
        ARGUMENT_SPEC,
        mutually_exclusive=[[option, "keys"] for option in ["name"] + list(KEY_SPEC_OPTIONS)],
        required_one_of=[["name", "keys"]],
        supports_check_mode=True,
    ))
    specs = []

    def validate(policy):
        specs.extend(build_key_specs(requested_specs(module.params), policy,
                                     option="keys" if module.params["keys"] is not None else "name"))

    def work(store, policy, context):
        result = apply_generation(store, plan_generation(store, specs), context, module.check_mode, policy)
        return result, dict(key_versions=result.key_versions, generated=result.generated, plan=result.plan)

    run_lifecycle_module(module, work, validate=validate, empty_result={"plan": []})


if __name__ == "__main__":
    main()
