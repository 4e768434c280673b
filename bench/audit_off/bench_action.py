# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""BENCH ONLY - never part of the collection: the "audit off" variant's action plugin (bench/README.md).

bench_audit.py copies this file over plugins/action/key_generate.py and key_rotate.py in a throwaway copy of the
installed collection. A lifecycle module refuses to change the token without a journaled intent that extends the
token's pin (design: "Modules refuse to change the token without a journaled intent"), so "audit off" cannot mean
"no action plugin" any more. This plugin gives the module what it needs and nothing else: no journal is written,
no audit state, no shipping.

- The first task on the fresh token sends a fabricated first-pin intent: a new journal id, record 1 whose hash is
  ``link(GENESIS_HASH, digest)`` of a random digest, and the "no anchor known" proof (start = the intent).
- Every later task extends the head the token pinned by one fabricated record: intent ``seq = pin.seq + 1``,
  ``hash = link(pin.hash, digest)``, proof ``{start_seq: pin.seq, start_hash: pin.hash, digests: [digest]}``.
  The head comes from the module's previous ``audit_checkpoint``, kept in the file named by the environment
  variable ``KL_BENCH_AUDIT_OFF_STATE`` (one JSON object: journal_id, seq, hash); that file is the whole of the
  "chain" (_journal_chain computes it), it is not a journal.

So the module does all its token-side work in every variant (pin check, checkpoint signed in the token, pin
written); what "audit off" leaves out is the controller's journal (intent and outcome records, fsync, lock,
tail scan, proof) and the callback's shipping.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.secops.keylifecycle.plugins.module_utils._journal_chain import GENESIS_HASH, link
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._lifecycle_action import audit_context

STATE_VARIABLE = "KL_BENCH_AUDIT_OFF_STATE"


def fabricated_intent(state):
    """The audit_context fields of the next intent of the in-memory chain that starts at ``state`` (or None)."""
    digest = hashlib.sha256(os.urandom(32)).hexdigest()
    if state is None:
        intent_hash = link(GENESIS_HASH, digest)
        return {"journal_id": str(uuid.uuid4()), "intent_seq": 1, "intent_hash": intent_hash,
                "journal_proof": {"start_seq": 1, "start_hash": intent_hash, "digests": []}}
    return {"journal_id": state["journal_id"], "intent_seq": state["seq"] + 1,
            "intent_hash": link(state["hash"], digest),
            "journal_proof": {"start_seq": state["seq"], "start_hash": state["hash"], "digests": [digest]}}


class ActionModule(ActionBase):
    """Runs the lifecycle module with a fabricated intent; writes no journal (bench only)."""

    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        state_path = os.environ.get(STATE_VARIABLE)
        if not state_path:
            raise AnsibleActionFail("bench-only action plugin: set %s" % STATE_VARIABLE)
        try:
            with open(state_path, encoding="ascii") as handle:
                state = json.load(handle)
        except FileNotFoundError:
            state = None
        context = audit_context(task_vars, os.environ, self._task._uuid)  # pylint: disable=protected-access
        context.update(fabricated_intent(state), intent_id=str(uuid.uuid4()))
        module_args = dict(self._task.args, audit_context=context)
        module_result = self._execute_module(module_name=self._task.resolved_action, module_args=module_args,
                                             task_vars=task_vars)
        checkpoint = module_result.get("audit_checkpoint")
        if isinstance(checkpoint, dict):
            with open(state_path + ".tmp", "w", encoding="ascii") as handle:
                json.dump({"journal_id": checkpoint["journal_id"], "seq": checkpoint["seq"],
                           "hash": checkpoint["head_hash"]}, handle)
            os.replace(state_path + ".tmp", state_path)
        module_result.pop("audit_events", None)
        result.update(module_result)
        return result
