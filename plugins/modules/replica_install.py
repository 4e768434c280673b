#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: replica_install
short_description: Store on a replica token the signed copies key_replicate made, and report what it holds
version_added: 0.2.0
description:
  - Runs on the replica token's host, with that token's user PIN. The token was enrolled first with
    M(secops.keylifecycle.recipient_enroll) (its transport key pair, generated in it, and the source token's
    package signer, pinned), and the source token's Security Officer approved its transport key as a replica
    (M(secops.keylifecycle.recipient_approve), C(kind=replica)).
  - Every package (and the key-encryption key package, RV(secops.keylifecycle.key_replicate#module:replicas[].kek))
    is checked before anything is stored - signed by the pinned package signer, addressed to this token's transport
    key, its metadata readable and consistent - and a refused batch changes nothing.
  - Each key is unwrapped in the token as a session object and checked against its signed metadata (the AES key
    check value computed in the token; for RSA and EC, a signature made with the unwrapped private key verifies under
    the signed public key, whose fingerprint is the recorded one), then copied onto the token with the label and
    CKA_ID of the source, CKA_SENSITIVE true, CKA_EXTRACTABLE and CKA_WRAP_WITH_TRUSTED true (it leaves only under a
    key this token's Security Officer made trusted, for a restore), and the usages of its state. Its metadata object
    is the source's, byte for byte, in the same revision. The source's C(audit-checkpoint) and C(package-signing)
    keys are stored with CKA_SIGN and CKA_MODIFIABLE false (a replica neither anchors the source's journal nor signs
    what its recipients install); O(restore=true) gives them the usages of their state.
  - With the first copies it stores, it generates the replica's own signer of restore packages (C(restore-signing),
    never backed up) and returns its public record (RV(restore_signer)) on every run.
  - A newer revision updates the copy (usages of its new state, then its metadata); a destroyed version's copy is
    destroyed (C_DestroyObject), the token searched again by CKA_ID, CKA_LABEL and check value, and only then the
    tombstone revision written. A revision older than or equal to the one held is ignored, so a replayed package
    changes nothing.
  - Always returns RV(held), what the token holds, for O(secops.keylifecycle.key_replicate#module:replicas[].held);
    with O(packages) empty it only reports.
  - Each change is journaled (C(replica-install), C(replica-update), C(replica-withdraw); C(key-restore) where
    O(restore=true)). Like M(secops.keylifecycle.key_install), it signs no checkpoint.
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
      - Every package is checked (signature, addressee, metadata); nothing is unwrapped or stored. RV(installed)
        lists what would change.
  diff_mode:
    support: full
    details:
      - The versions the token holds before and after, with their state and revision; the documents written (their
        SHA-256 before, or C(absent), and after); on a restore the journal pin before and after; the restore signer
        when the task generates it.
  idempotent:
    support: full
options:
  packages:
    description:
      - The packages key_replicate made for this replica (RV(secops.keylifecycle.key_replicate#module:replicas[].packages)),
        as it returned them, a list or the JSON Lines text of
        O(secops.keylifecycle.key_replicate#module:package_format=jsonl).
    type: raw
  kek:
    description: The replica KEK package key_replicate returned with them, needed where RSA or EC keys are installed.
    type: dict
  documents:
    description:
      - The token documents key_replicate returned for this replica
        (RV(secops.keylifecycle.key_replicate#module:replicas[].documents)), each signed. They are the signed-policy
        records, the used approval nonces, the signer certificates, the audit-checkpoint key history and the pin of
        the audit journal.
      - A replica keeps them as replica documents, outside its own logic; O(restore=true) writes them back as what
        they were (the pin last).
    type: list
    elements: dict
    default: []
  checkpoint:
    description:
      - With O(restore=true), the journal's last C(audit-checkpoint) of this token (the checkpoint of the last
        anchored task before the loss, for example the C(audit_checkpoint) that key_replicate returned). The restored
        pin is moved to it after its signature verifies under the restored checkpoint key history, so the journal
        continues. The action plugin reads it from the token's journal when it is not given.
    type: dict
  transport_key_label:
    description: CKA_LABEL of the token's transport key pair (as recipient_enroll made it).
    type: str
    default: keylifecycle-transport
  restore:
    description:
      - The copies rebuild a primary token from a replica (journaled as C(key-restore)); the documents are written
        back as their own kinds, the journal pin last. Run it on the new token before any other lifecycle task
        (the first task on an empty token pins it), after the Security Officer reinstalled the policy signers. A
        token that already names an audit journal is refused.
    type: bool
    default: false
seealso:
  - module: secops.keylifecycle.key_replicate
  - module: secops.keylifecycle.recipient_enroll
"""

EXAMPLES = r"""
- name: Report what the replica holds
  secops.keylifecycle.replica_install:
  register: dr_before

- name: Store the copies
  secops.keylifecycle.replica_install:
    packages: "{{ replication.replicas[0].packages }}"
    kek: "{{ replication.replicas[0].kek }}"
"""

RETURN = r"""
held:
  description: Every version the token holds copies or tombstones of (name, version, id, revision, state).
  returned: success
  type: list
  elements: dict
documents:
  description: The documents the token holds (kind, label, sha256), for key_replicate's O(secops.keylifecycle.key_replicate#module:replicas[].documents).
  returned: success
  type: list
  elements: dict
restore_signer:
  description:
    - The public record of the replica's own signer of restore packages (the managed key C(restore-signing),
      generated in this token, never backed up, with the first task that stores anything here), with the fields
      of RV(secops.keylifecycle.key_info#module:package_signer) (no certificates). Record its fingerprint; the
      Security Officer of a replacement token confirms it before a restore (M(secops.keylifecycle.package_signer_approve)).
      Null with O(restore=true) and before the first copies.
  returned: success
  type: dict
installed:
  description: The versions this task installed, updated or withdrew (in check mode, would), with the action.
  returned: success
  type: list
  elements: dict
audit_events:
  description: One event per version changed.
  returned: always
  type: list
  elements: dict
summary:
  description:
    - With O(return_records=false), instead of RV(installed) and RV(audit_events) (then not returned), how many of
      each; RV(held) and RV(documents) are returned either way (key_replicate needs them).
  returned: success, when O(return_records=false)
  type: dict
audit_journal:
  description:
    - With O(return_records=false), where the task's records are in the controller's audit journal, in place of
      RV(audit_events); its fields are those of RV(secops.keylifecycle.key_generate#module:audit_journal).
  returned: when O(return_records=false), once the module ran (not in check mode)
  type: dict
error_kind:
  description: Category of the error (for example V(package_rejected), V(key_conflict)).
  returned: failure
  type: str
error_option:
  description: The option the error is about (for example V(packages)).
  returned: failure
  type: str
"""

from dataclasses import dataclass

from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import (
    AUDIT_CONTEXT_ARGSPEC,
    BATCH_RESULT_ARGSPEC,
    POLICY_ARGSPEC,
    HsmModule,
    hsm_module_kwargs,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._key_store import TokenKeyStore
from ansible_collections.secops.keylifecycle.plugins.module_utils._lifecycle_module import run_lifecycle_module
from ansible_collections.secops.keylifecycle.plugins.module_utils._recipient_store import RecipientTokenStore
from ansible_collections.secops.keylifecycle.plugins.module_utils._replication import (
    ReplicaInstaller,
    ReplicaInstallResult,
    describe_installed,
    document_inventory,
    ensure_restore_signer,
    held_versions,
    install_diff,
    read_packages,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import DEFAULT_TRANSPORT_KEY_LABEL

ARGUMENT_SPEC = dict(
    packages={"type": "raw"},
    kek={"type": "dict"},
    documents={"type": "list", "elements": "dict", "default": []},
    checkpoint={"type": "dict"},
    transport_key_label={"type": "str", "default": DEFAULT_TRANSPORT_KEY_LABEL, "no_log": False},
    restore={"type": "bool", "default": False},
    **BATCH_RESULT_ARGSPEC,
    **POLICY_ARGSPEC,
    **AUDIT_CONTEXT_ARGSPEC,
)


@dataclass
class _Stores:
    keys: TokenKeyStore
    recipient: RecipientTokenStore


def main():
    module = HsmModule(**hsm_module_kwargs(ARGUMENT_SPEC, supports_check_mode=True))
    params = module.params

    def open_store(session, token_label):
        return _Stores(TokenKeyStore(session, token_label).load(),
                       RecipientTokenStore(session, token_label, params["transport_key_label"]).load())

    def work(stores, policy, context):
        before = held_versions(stores.keys)
        installer = ReplicaInstaller(stores.keys, stores.recipient.transport, stores.recipient.package_signer,
                                     policy, restore=params["restore"])
        planned = ([], [], None)
        packages = read_packages(params["packages"])
        if packages or params["documents"]:  # without them it only reports
            planned = installer.check(packages, params["kek"], params["documents"], params["checkpoint"])
        todo, documents_todo, pin = planned
        held_documents = {(d["kind"], d["label"]): d["sha256"]  # for the diff, before apply writes them
                          for d in document_inventory(stores.keys.objects, from_replica=not params["restore"])
                          } if documents_todo else {}
        events = installer.apply(planned, params["kek"], context, module.check_mode)
        restore_signer, created = None, False
        if not params["restore"]:
            restore_signer, created = ensure_restore_signer(stores.keys, context, events, bool(todo or documents_todo),
                                                            check_mode=module.check_mode)
        held = held_versions(stores.keys) if not module.check_mode else before
        after = {(entry["name"], entry["version"]): entry for entry in before}
        after.update({(entry["name"], entry["version"]): entry for entry in describe_installed(todo)})
        diff = install_diff(stores.keys, before, after.values(), held_documents, planned, restore_signer, created)
        result = ReplicaInstallResult(changed=bool(todo or documents_todo or pin or created), audit_events=events,
                                      diff=diff, installed=describe_installed(todo), held=held)
        documents = document_inventory(stores.keys.objects, from_replica=not params["restore"])
        return result, dict(held=held, installed=result.installed, documents=documents, restore_signer=restore_signer)

    run_lifecycle_module(module, work, empty_result={"held": [], "installed": [], "documents": [],
                                                     "restore_signer": None},
                         open_store=open_store, anchor=False, keep_records=("held", "documents"))


if __name__ == "__main__":
    main()
