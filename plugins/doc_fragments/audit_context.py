# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The audit_context option of the state-changing lifecycle modules (plugins/module_utils/_argspec.py).
    DOCUMENTATION = r"""
options:
  audit_context:
    description:
      - Who runs the action and in which run, recorded in the audit events.
      - Filled in on the controller by this module's action plugin (the controller's operator identity and the
        playbook run); values given in a task are replaced.
    type: dict
    suboptions:
      operator:
        description: Operator name.
        type: str
      operator_source:
        description: Where the operator name came from.
        type: str
      run_id:
        description: Identifier of the playbook run.
        type: str
      intent_id:
        description: Record id of the intent record journaled before this call.
        type: str
      host:
        description: Inventory name of the HSM host, recorded as C(host.name).
        type: str
      journal_id:
        description: Id of the controller's audit journal.
        type: str
      intent_seq:
        description: Sequence number of the intent record, anchored by a signed checkpoint.
        type: int
      intent_hash:
        description: Hash of the intent record, anchored by a signed checkpoint.
        type: str
      resolved_operator:
        description: With an operator override, the identity resolved on the controller.
        type: str
      resolved_operator_source:
        description: With an operator override, where the resolved identity came from.
        type: str
      journal_proof:
        description:
          - That the intent record extends the journal head the token pinned, as the content digests of the records
            after C(start_seq) up to the intent. The module refuses to change the token without it.
        type: dict
        suboptions:
          start_seq:
            description: Sequence number of the record the proof starts after (the last record this token anchored).
            type: int
          start_hash:
            description: Hash of that record.
            type: str
          digests:
            description: Content digest of every record after C(start_seq), up to the intent record.
            type: list
            elements: str
      journal_rollover:
        description:
          - Sent by M(secops.keylifecycle.audit_rollover) only, when a new journal continues the one the token names.
        type: dict
        suboptions:
          genesis:
            description: The new journal's first record (its line), which names the journal it continues.
            type: str
          previous_proof:
            description: That the previous journal's head named in the genesis extends the head the token pinned.
            type: dict
            suboptions:
              start_seq:
                description: Sequence number the proof starts after.
                type: int
              start_hash:
                description: Hash of that record.
                type: str
              digests:
                description: Content digests of the records after C(start_seq).
                type: list
                elements: str
"""
