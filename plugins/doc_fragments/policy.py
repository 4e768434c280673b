# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The environment policy option. Its settings are declared in plugins/module_utils/_policy.py (SETTINGS);
    # ansible-doc reads this text without importing module_utils, so it is written out here, and
    # tests/unit/test_policy_settings.py checks that it lists exactly those settings, with their types and defaults.
    DOCUMENTATION = r"""
options:
  signed_policy:
    description:
      - The environment's policy as signed by a policy signer, the Security Officer (the document
        M(secops.keylifecycle.policy_sign) writes; inventories hold it as C(key_policy_signed)). Keys C(format),
        C(environment), C(serial), C(not_after), C(policy), C(signer), C(signer_name) and C(signature).
      - Once the HSM token holds a policy signer (M(secops.keylifecycle.policy_signer), a CKA_TRUSTED public key only
        a Security Officer session can install), every state-changing lifecycle module verifies this document's
        ECDSA P-256 signature inside the token, before it changes anything, and refuses the task, journaled, with
        the token unchanged, when it is missing or malformed (C(policy_unsigned)), signed by another key or altered
        (C(policy_signature_invalid)), past its C(not_after) (C(policy_expired)), older than the highest serial the
        token accepted (C(policy_rolled_back)), signed for another environment than the policy in force on the token
        (C(policy_environment_changed)), or when O(policy) differs from its C(policy) (C(policy_mismatch), naming the
        settings). The task runs with exactly the signed settings. A policy signer the token once held
        and no longer holds is refused too (C(policy_signer_removed)).
      - On a token without a policy signer it is not checked and O(policy) applies as given; the compliance report
        lists such a token as a finding. Modules that act on a recipient's token
        (M(secops.keylifecycle.key_install), M(secops.keylifecycle.recipient_enroll)) and the Security Officer's
        modules do not check it.
    type: dict
  policy:
    description:
      - The environment's key policy. It can only tighten the collection's baseline (AES-256, RSA 3072,
        EC P-256/P-384/P-521, rotation at least every 365 days); a setting that would weaken it is refused.
      - Durations are written like V(30s), V(10m), V(12h), V(90d) or V(365d).
    type: dict
    default: {}
    suboptions:
      min_aes_bits:
        description: Minimum AES key size in bits (baseline 256).
        type: int
      min_rsa_bits:
        description: Minimum RSA modulus size in bits (baseline 3072).
        type: int
      allowed_key_types:
        description: Key types that may be generated (subset of V(aes), V(rsa), V(ec)).
        type: list
        elements: str
      allowed_curves:
        description: EC curves that may be used (subset of V(P-256), V(P-384), V(P-521)).
        type: list
        elements: str
      allowed_usages:
        description:
          - Per key type, the list of usages that may be given, for example V(aes) mapped to V(encrypt) and V(decrypt).
        type: dict
      max_rotation_period:
        description: Longest allowed rotation period (baseline V(365d)).
        type: str
      default_retention_period:
        description: Retention period of a deactivated version when the key spec gives none (default V(90d)).
        type: str
      min_retention_period:
        description: Shortest retention period a key spec may give.
        type: str
      compromise_disables_decrypt:
        description:
          - Whether a compromise rotation also switches off decrypt and unwrap on the compromised version
            (baseline V(false) keeps data encrypted under it readable).
        type: bool
      destroy_requires_opt_in:
        description: Destroy only versions of keys generated (or updated) with C(destroy_allowed=true).
        type: bool
      destroy_requires_approval:
        description: Destroy only with C(approved_by) naming a second person, different from the operator.
        type: bool
      compromise_requires_approval:
        description: Compromise rotations only with C(approved_by) naming a second person, different from the operator.
        type: bool
      journal_rollover_requires_approval:
        description:
          - Start a new audit journal for a token (M(secops.keylifecycle.audit_rollover)) only with C(approved_by)
            naming a second person, different from the operator.
        type: bool
      require_transport_key_pin:
        description:
          - M(secops.keylifecycle.key_distribute) refuses a recipient whose transport key fingerprint is not pinned
            (O(secops.keylifecycle.key_distribute#module:recipients[].fingerprint)), so a re-enrolled or substituted
            transport key is not used before its owner confirmed it.
        type: bool
      require_trusted_wrapping:
        description:
          - Distributable keys are generated with CKA_WRAP_WITH_TRUSTED and
            M(secops.keylifecycle.key_distribute) wraps only under transport keys the Security Officer approved in
            the token (M(secops.keylifecycle.recipient_approve), CKA_TRUSTED). A token without these attributes
            is refused, naming the missing capability (baseline V(true)).
          - Turning it off is for development tokens only. A token without the attributes then generates
            distributable keys without CKA_WRAP_WITH_TRUSTED, and a recipient without an approved key gets its
            packages wrapped under its unapproved transport key; each such wrap is journaled with a warning and
            the module warns.
        type: bool
      require_backup:
        description:
          - Every key, and the collection's own signing keys, is generated with C(backup=true), extractable only
            wrapped under keys the Security Officer made trusted in the token (CKA_WRAP_WITH_TRUSTED), so that
            M(secops.keylifecycle.key_replicate) can copy it to approved replica tokens (docs/replication.md).
          - A key spec that gives O(secops.keylifecycle.key_generate#module:backup=false) is refused, and
            M(secops.keylifecycle.key_rotate) generates the new version of an older key with backup (baseline
            V(false)).
        type: bool
      allow_operator_override:
        description:
          - Whether the variable C(keylifecycle_operator) may name the operator instead of the identity resolved on
            the controller (automation platform user, CI actor, OS user). Off by default; when on, every record
            carries both the named operator (source C(override)) and the resolved identity.
        type: bool
      authorization:
        description:
          - Who may perform which lifecycle action. Keys are V(generate), V(rotate), V(compromise_rotate),
            V(destroy), V(distribute), V(journal_rollover) and V(replicate) (M(secops.keylifecycle.key_replicate),
            M(secops.keylifecycle.replica_install)); values are lists of operator names or
            C(group:<name>) entries (see O(policy.groups)). An action not listed is allowed to nobody once this is
            set; without it every operator who can open the token may act.
          - Checked on the controller, before anything touches the HSM; a refusal is journaled. An approver
            (C(approved_by)) must be authorized for the action too.
        type: dict
      groups:
        description: Groups of operator names used by O(policy.authorization) as C(group:<name>).
        type: dict
      approvers:
        description:
          - The people whose signed approvals count, each with the PEM of their EC P-256 public key (a dict from
            name to PEM). The key an approver signs with in M(secops.keylifecycle.approval_sign); the name is the
            one audit records give as C(approved_by).
          - Part of the signed policy, so only the Security Officer who signs it can add or remove an approver.
        type: dict
      approvals_required:
        description:
          - How many signed approvals (M) each high-risk lifecycle action needs (a dict from action to M). Actions are
            V(destroy), V(compromise_rotate), V(retire) and V(journal_rollover); at most the number of
            O(policy.approvers).
          - Where M is set, the task must bring C(approvals) from M different approvers other than the operator,
            each over this action, token, the key versions the task acts on and its C(change_ref), unexpired and
            never used before on the token; C(approved_by) is then refused. Checked on the HSM host before the
            token changes; a refusal is journaled.
        type: dict
      security_officers:
        description:
          - The people who hold the Security Officer role. One of them executing V(destroy), V(compromise_rotate)
            or V(retire) is break-glass, which needs at least two signed approvals from other people and is
            flagged in every record and the compliance report.
        type: list
        elements: str
      approval_max_validity:
        description:
          - Longest time from now an approval's C(not_after) may lie (baseline V(7d)); a longer-lived approval is
            refused. Nonces of accepted approvals are kept on the token until their approval expires.
        type: str
"""
