#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: audit_rollover
short_description: Start a new audit journal for a token, continuing the journal the token names
version_added: 0.2.0
description:
  - The HSM token names one audit journal (its pin, the journal's id and the head the token last anchored). Every
    lifecycle task refuses to change the token when the journal it would write is not that journal, or does not
    extend its head. This module is the one explicit way to start a new journal for such a token.
  - On the controller (this module has an action plugin), the new journal's first record (its genesis) names the
    journal it continues. When the journal at the path is the one the token names, the genesis carries its id and
    final head, with the proof that this head extends the one the token pinned, and the old journal is kept next to
    the new one as C(<name>.<journal id>.jsonl). When that journal is lost, the genesis carries the token's pin and
    says so (C(lost)); a different journal found at the path is kept as C(<name>.superseded-<journal id>.jsonl).
  - On the HSM host, the module checks the genesis against the token's pin and then pins the new journal, signing
    its first checkpoint. The new journal is moved into place only after that; when the module refuses, the old
    journal stays where it was and the refused attempt is kept in C(<name>.rollover-<journal id>.jsonl).
  - M(secops.keylifecycle.audit_verify) verifies across the rollover (the previous journal, where it is kept, is
    verified too and must end at the head the genesis names).
  - Authorized by O(policy.authorization) (action C(journal_rollover)); where the signed policy sets
    O(policy.approvals_required) for C(journal_rollover), the rollover needs that many signed approvals (O(approvals),
    action C(journal_rollover), no keys); else, where O(policy.journal_rollover_requires_approval) is set,
    O(approved_by) must name a second person.
author:
  - secops.keylifecycle maintainers (@secops)
extends_documentation_fragment:
  - secops.keylifecycle.connection
  - secops.keylifecycle.policy
  - secops.keylifecycle.approvals
  - secops.keylifecycle.audit_context
  - secops.keylifecycle.attributes
  - secops.keylifecycle.attributes.action_group
attributes:
  check_mode:
    support: full
    details:
      - Nothing is written on the controller or the token; the task reports whether a rollover would happen.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Every run starts a new journal.
options:
  reason:
    description: Why a new journal is started (recorded in the genesis record), for example that the journal was lost.
    type: str
    required: true
  previous_journal:
    description:
      - Path, on the controller, of the journal the token names when it is not at the journal's path, for example
        a journal several tokens shared, which this token leaves for a journal of its own. The genesis continues it
        there (its head, with the proof that it extends the token's pin), and it is not moved.
      - Without it, a journal file beside the journal's path that holds the journal the token names (kept there by
        an earlier rollover) is continued the same way; only when none is found is the journal declared lost.
      - A journal at the path that holds checkpoints of other tokens is never moved aside; the rollover is refused
        (C(journal_shared)) and names this option.
    type: path
notes:
  - The journal is the host's C(keylifecycle_audit_journal), else the token's default journal, the same one the
    lifecycle tasks on this token write.
seealso:
  - module: secops.keylifecycle.audit_verify
"""

EXAMPLES = r"""
- name: Start a new journal after the old one was lost (approved by a second custodian)
  secops.keylifecycle.audit_rollover:
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: kl-prod
    user_pin_file: /etc/keylifecycle/prod-user.pin
    reason: journal disk lost, no copy in the log store after record 41872
    approved_by: bob
    change_ref: CHG-2291
"""

RETURN = r"""
journal:
  description: Path of the new journal on the controller.
  returned: success
  type: str
journal_id:
  description: Id of the new journal.
  returned: success
  type: str
previous_journal:
  description:
    - The journal the new one continues (journal_id, head_seq, head_hash, path where it is kept, the token's pinned
      seq and hash, and C(lost) when only the token's pin of it was known), as the genesis record names it.
    - C(outcomes) are the finished tasks the token remembers of it (intent seq, number of audit events, their
      SHA-256), and C(lost_outcomes) the intent seqs of those whose events the old journal does not hold, declared
      lost (docs/audit.md).
  returned: success
  type: dict
superseded_journal:
  description: A journal found at the path that was not the one the token names (journal_id, path where it is kept).
  returned: when one was found
  type: dict
audit_checkpoint:
  description: The new journal's first signed checkpoint (see M(secops.keylifecycle.key_generate)).
  returned: success
  type: dict
approvals:
  description:
    - The approvals the rollover needed and was given (O(policy.approvals_required), C(journal_rollover)), as
      RV(secops.keylifecycle.key_destroy#module:approvals).
  returned: success
  type: dict
audit_events:
  description:
    - Events of changes made on the token besides the pin (a checkpoint key generated on first use), and, with signed
      approvals, one C(audit-journal-rollover) event naming the approvers and their key fingerprints.
  returned: always
  type: list
  elements: dict
policy_change:
  description:
    - The change of policy since the token's last anchored task, as
      RV(secops.keylifecycle.key_generate#module:policy_change).
  returned: when the policy changed
  type: dict
policy_in_force:
  description:
    - The environment's policy this call ran with, as the token's policy signers checked it (O(signed_policy)).
      Its fields are those of RV(secops.keylifecycle.key_generate#module:policy_in_force).
  returned: success
  type: dict
"""

from dataclasses import dataclass, field

from ansible_collections.secops.keylifecycle.plugins.module_utils._approval import validate_approval_options
from ansible_collections.secops.keylifecycle.plugins.module_utils._approvals import ApprovalGate
from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import (
    APPROVALS_ARGSPEC,
    AUDIT_CONTEXT_ARGSPEC,
    POLICY_ARGSPEC,
    HsmModule,
    hsm_module_kwargs,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._lifecycle_module import run_lifecycle_module

ARGUMENT_SPEC = dict(
    reason={"type": "str", "required": True},
    previous_journal={"type": "path"},  # read by the action plugin, on the controller
    **APPROVALS_ARGSPEC,
    **POLICY_ARGSPEC,
    **AUDIT_CONTEXT_ARGSPEC,
)


@dataclass
class RolloverResult:
    changed: bool
    audit_events: list = field(default_factory=list)


def main():
    module = HsmModule(**hsm_module_kwargs(ARGUMENT_SPEC, supports_check_mode=True))
    params = module.params

    def validate(policy):
        validate_approval_options(params["approved_by"], params["change_ref"])
        reason = params["reason"]
        if not reason.strip() or len(reason) > 128 or not all(" " <= c <= "~" for c in reason):
            raise InvalidOption("reason must be printable ASCII text of 1 to 128 characters.", option="reason")

    def work(store, policy, context):
        # the pin check (run before this, _checkpoint) has accepted the new journal's genesis; the new pin is written
        # when the run anchors it
        gate = ApprovalGate(policy, "journal_rollover", params, context, store.token_label, utc_now())
        approval = gate.check(store.objects, [], module.check_mode)
        events = []
        if approval.accepted:  # the signed approvals, journaled with their approvers' key fingerprints
            events.append(build_event("audit-journal-rollover", "success", context, reason=params["reason"],
                                      extra=approval.event_fields()))
        context_params = params["audit_context"] or {}
        return RolloverResult(changed=True, audit_events=events), dict(journal_id=context_params.get("journal_id"),
                                                                       approvals=approval.as_dict())

    run_lifecycle_module(module, work, validate=validate, empty_result={}, rollover=True)


if __name__ == "__main__":
    main()
