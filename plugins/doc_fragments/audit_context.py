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
"""
