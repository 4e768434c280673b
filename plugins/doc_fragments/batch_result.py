# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The return_records option of the batch lifecycle modules: _argspec.BATCH_RESULT_ARGSPEC, applied by
    # _lifecycle_module.summarise_output and _lifecycle_action.
    DOCUMENTATION = r"""
options:
  return_records:
    description:
      - Whether the result lists every key version, plan entry and audit event of the task.
      - With V(false), for large batches and scheduled jobs, the result holds RV(summary) (how many of each, and the
        plan's actions counted) and RV(audit_journal) (where the task's records are) instead of those lists. Nothing
        is journaled differently; every record is written and fsync'ed to the journal before the task reports
        success, as always. The result's C(invocation) (shown with C(-vvv)) gives each list option, such as the
        key specs, as its length. A task of 1000 keys returns some 2 MB less, which Ansible would otherwise copy,
        tag and pass to every callback (bench/README.md).
      - The diff (C(--diff)) and the errors are the same either way.
    type: bool
    default: true
"""
