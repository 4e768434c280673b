#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: key_replicate
short_description: Wrap every version of the backup keys for replica tokens the Security Officer approved
version_added: 0.2.0
description:
  - Runs where the HSM is, with the user PIN. For each replica token, finds what it must hold of the keys generated
    with C(backup) (M(secops.keylifecycle.key_generate)), that is every version that is not destroyed, active, deactivated
    or compromised, in its newest metadata revision. What the replica reports it holds (O(replicas[].held), from
    M(secops.keylifecycle.replica_install)) in the same revision is not sent again.
  - AES versions are wrapped in the HSM with CKM_RSA_PKCS_OAEP under the replica's trusted transport key; RSA and EC
    private keys with CKM_AES_KEY_WRAP_PAD (RFC 5649) under the replica's key-encryption key, which travels once per
    task wrapped under the transport key (RV(replicas[].kek)). Both keys are the Security Officer's
    (M(secops.keylifecycle.recipient_approve) with C(kind=replica)); backup keys carry CKA_WRAP_WITH_TRUSTED, so the
    token refuses any other wrapping key.
  - Each package carries the version's metadata exactly as the token holds it, and is signed in the HSM by the
    package-signing key (generated on first use, as for M(secops.keylifecycle.key_distribute)); the replica checks
    the signature against the signer it pinned at enrollment.
  - A version destroyed here that the replica still holds goes as a C(withdraw) package (metadata only); the replica
    destroys its copy and verifies it is gone.
  - Versions of backup keys that cannot leave the token (generated before backup was set) are returned in
    RV(replicas[].blocked).
  - Each wrapped version is journaled as a C(key-replicate) event (replica, host, key id, version, mechanism,
    trusted key label). This module changes the HSM only when it generates the package-signing key.
  - The key is never in plaintext on the HSM host, in the result, in the journal or in any file; a package is
    useless without the replica's transport private key, which never leaves the replica's token.
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
      - Nothing is wrapped or signed; the packages are returned without C(wrapped) and without signature.
  diff_mode:
    support: full
    details:
      - Per replica, the versions (with their state) it holds before and after; the signing key
        (C(package-signing), or C(restore-signing) for a restore) when the task generates it.
  idempotent:
    support: full
options:
  replicas:
    description:
      - The replica tokens, each as M(secops.keylifecycle.recipient_enroll) enrolled it on the replica's host and
        M(secops.keylifecycle.replica_install) reported what it holds.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The replica's name, as the Security Officer approved it.
        type: str
        required: true
      host:
        description: The replica's host, as approved. Defaults to O(replicas[].name).
        type: str
      public_key_pem:
        description: The replica token's transport public key (C(transport_key.public_key_pem) of recipient_enroll).
        type: str
        required: true
      fingerprint:
        description: The transport key's pinned fingerprint; required with O(policy.require_transport_key_pin).
        type: str
      held:
        description: What the replica holds (RV(secops.keylifecycle.replica_install#module:held)); empty for a new
          replica.
        type: list
        elements: dict
      oaep_hashes:
        description: The OAEP hashes the replica's token unwraps with (C(transport_key.oaep_hashes)).
        type: list
        elements: str
        choices: [sha1, sha256, sha384, sha512]
      documents:
        description: The documents the replica holds (RV(secops.keylifecycle.replica_install#module:documents)).
        type: list
        elements: dict
  keys:
    description: Replicate only these keys (each must be a backup key). Default, every backup key on the token.
    type: list
    elements: str
  oaep_hash:
    description: The OAEP hash to wrap with; V(auto), the strongest the token wraps with that every replica unwraps.
    type: str
    choices: [auto, sha1, sha256, sha384, sha512]
    default: auto
  package_format:
    description:
      - V(list), RV(replicas[].packages) is a list of packages; V(jsonl), it is one text of JSON Lines (one signed
        package a line), which M(secops.keylifecycle.replica_install) takes as it is. For large batches, as Ansible
        passes one string between tasks far more cheaply than thousands of small dicts (bench/README.md,
        "Replication benchmark").
    type: str
    choices: [list, jsonl]
    default: list
  restore:
    description:
      - This token is a replica, and the "replicas" are the replacement primary tokens to rebuild from it (approved
        by this token's Security Officer, as kind C(replica)). The documents sent are those the replica keeps of its
        primary. The task is journaled but anchors no checkpoint on the replica (the replica's copy of the
        audit-checkpoint key belongs to its primary's journal); so a token that names an audit journal (a primary)
        is refused. The packages are signed by the replica's own C(restore-signing) key
        (RV(secops.keylifecycle.replica_install#module:restore_signer)), not by its copy of the primary's
        package-signing key, which cannot sign on a replica.
    type: bool
    default: false
seealso:
  - module: secops.keylifecycle.replica_install
  - module: secops.keylifecycle.recipient_approve
"""

EXAMPLES = r"""
- name: Copy every backup key to the disaster-recovery token
  secops.keylifecycle.key_replicate:
    replicas:
      - name: dr
        host: hsm-b
        public_key_pem: "{{ dr_enrollment.transport_key.public_key_pem }}"
        fingerprint: "{{ keylifecycle_replica_fingerprints.dr }}"
        held: "{{ dr_before.held }}"
  register: replication
"""

RETURN = r"""
replicas:
  description: Per replica, its signed packages and what it keeps or cannot get.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The replica's name.
      type: str
    host:
      description: The replica's host.
      type: str
    trusted_key_label:
      description: CKA_LABEL of the replica's trusted transport key.
      type: str
    kek:
      description: The replica's key-encryption key wrapped under its transport key (signed), where key pairs go.
      type: dict
    packages:
      description:
        - One signed package per version to install, update, withdraw or record as destroyed (metadata, wrapped key
          or null); with O(package_format=jsonl) one text, a package per line.
      type: raw
    unchanged:
      description: Versions the replica holds in their newest revision.
      type: list
      elements: dict
    blocked:
      description: Versions that cannot leave the token, with why.
      type: list
      elements: dict
    documents:
      description:
        - The token documents the replica does not hold as they are (signed-policy records, used approval nonces,
          signer certificates, the audit-checkpoint key history, the audit journal pin), each signed.
      type: list
      elements: dict
package_signer:
  description:
    - The token's package-signing key (public record), which the replica pins; with O(restore=true), the replica's
      C(restore-signing) key, which the Security Officer of the replacement token pins.
  returned: success
  type: dict
oaep_hash:
  description: The OAEP hash the packages are wrapped with.
  returned: success
  type: str
audit_events:
  description: One C(key-replicate) event per wrapped version (and C(key-generate) for a new package signer).
  returned: always
  type: list
  elements: dict
summary:
  description:
    - With O(return_records=false), instead of RV(audit_events) (then not returned), how many events; RV(replicas)
      is returned either way (the packages are the task's product).
  returned: success, when O(return_records=false)
  type: dict
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
policy_in_force:
  description:
    - The environment's policy this call ran with, as
      RV(secops.keylifecycle.key_generate#module:policy_in_force).
  returned: success
  type: dict
error_kind:
  description: Category of the error (for example V(policy_violation), V(key_conflict)).
  returned: failure
  type: str
error_option:
  description: The option the error is about (for example V(replicas)).
  returned: failure
  type: str
"""

from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import (
    AUDIT_CONTEXT_ARGSPEC,
    BATCH_RESULT_ARGSPEC,
    POLICY_ARGSPEC,
    TRANSPORT_TARGET_OPTIONS,
    HsmModule,
    hsm_module_kwargs,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._lifecycle_module import run_lifecycle_module
from ansible_collections.secops.keylifecycle.plugins.module_utils._replication import (
    apply_replication,
    backup_keys,
    choose_oaep_hash,
    parse_replicas,
    plan_replication,
    require_replica,
    token_documents,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_probe import probe_oaep_hashes
from ansible_collections.secops.keylifecycle.plugins.module_utils._trusted_keys import find_trusted_transport_keys
from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import AUTO_OAEP_HASH, OAEP_HASHES

ARGUMENT_SPEC = dict(
    replicas={"type": "list", "elements": "dict", "required": True, "options": dict(
        TRANSPORT_TARGET_OPTIONS, held={"type": "list", "elements": "dict"},
        documents={"type": "list", "elements": "dict"})},
    restore={"type": "bool", "default": False},
    package_format={"type": "str", "choices": ["list", "jsonl"], "default": "list"},
    **BATCH_RESULT_ARGSPEC,
    keys={"type": "list", "elements": "str", "no_log": False},
    oaep_hash={"type": "str", "choices": [AUTO_OAEP_HASH] + list(OAEP_HASHES), "default": AUTO_OAEP_HASH},
    **POLICY_ARGSPEC,
    **AUDIT_CONTEXT_ARGSPEC,
)


def main():
    module = HsmModule(**hsm_module_kwargs(ARGUMENT_SPEC, supports_check_mode=True))
    params = module.params
    parsed = {}

    def validate(policy):
        parsed["replicas"] = parse_replicas(params["replicas"], policy)

    def work(store, _policy, context):
        replicas = parsed["replicas"]
        if params["restore"]:
            require_replica(store.objects, store.token_label)
        plans = plan_replication(store, replicas, backup_keys(store, params["keys"]),
                                 find_trusted_transport_keys(store.session),
                                 token_documents(store.objects, from_replica=params["restore"]))
        pinned = params["oaep_hash"] != AUTO_OAEP_HASH
        token_hashes = [params["oaep_hash"]] if pinned else probe_oaep_hashes(store.session, store.token_label)
        oaep_hash = choose_oaep_hash(replicas, token_hashes, store.token_label)
        result = apply_replication(store, plans, oaep_hash, context, module.check_mode, params["package_format"],
                                   restore=params["restore"])
        return result, dict(replicas=result.replicas, package_signer=result.package_signer, oaep_hash=oaep_hash)

    run_lifecycle_module(module, work, validate=validate, empty_result={"replicas": [], "package_signer": None},
                         anchor=not params["restore"], keep_records=("replicas",))


if __name__ == "__main__":
    main()
