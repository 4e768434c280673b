# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The approval options of the high-risk lifecycle actions (destroy, compromise rotation, retire, journal
    # rollover): _argspec.APPROVALS_ARGSPEC, checked by _approvals.ApprovalGate.
    DOCUMENTATION = r"""
options:
  approvals:
    description:
      - Signed approvals of this action, each a document written by M(secops.keylifecycle.approval_sign) (a dict,
        or its JSON text) for one approver.
      - Required where the signed policy sets O(policy.approvals_required) for the action, and for a break-glass
        (a person in O(policy.security_officers) executing a destroy, compromise rotation or retire), which needs at
        least two. Checked on the HSM host after the plan is known and before the token changes. Each must verify
        with the key O(policy.approvers) gives its approver, approve this action on this token, every key version
        the task acts on and O(change_ref), be unexpired and within O(policy.approval_max_validity), carry a nonce
        the token has not seen, and not be signed by the operator; the same approver counts once. A refusal
        (C(approval_missing), C(approval_invalid), C(approval_unknown_approver), C(approval_expired),
        C(approval_replayed), C(approval_mismatch), C(approval_self)) changes nothing and is journaled.
      - The nonces of an accepted task are written to the token before its work starts, one C(approval-nonce:<nonce>)
        object each, public, with CKA_MODIFIABLE and CKA_DESTROYABLE false, so neither a user nor a Security Officer
        session can remove them; an approval is good for one task.
      - In check mode missing approvals are not a refusal; RV(approvals) says how many are missing and the request
        to sign.
    type: list
    elements: raw
  approved_by:
    description:
      - Without signed approvals (the policy sets no O(policy.approvals_required) for the action), the second
        person who approved it, as the legacy switches (O(policy.destroy_requires_approval),
        O(policy.compromise_requires_approval), O(policy.journal_rollover_requires_approval)) ask. Must not be the
        operator and must be authorized for the action. Recorded in the audit; it is an asserted name, not proof.
      - Refused where the action needs signed approvals; the records then name the approvers from their keys.
    type: str
  change_ref:
    description:
      - Change or ticket reference of the action, recorded in the audit. Required with signed approvals, and equal
        to the C(change_ref) they approve.
    type: str
"""
