"""Bench-only callback: wall-clock timestamps of a playbook's phases, as JSON lines.

Enabled by bench_audit.py (ANSIBLE_CALLBACKS_ENABLED=...,bench_phases); writes to $KL_BENCH_PHASES one line per
event: playbook_start, task_start, task_end (with a few fields of an audit_verify result) and stats. Times are
time.time(), so they can be compared with the parent process's clock.

Callbacks of configured folders run before collection callbacks, so on each event this one records its time
before secops.keylifecycle.audit ships anything: the time from task_end to stats holds the callback's shipping
after the task, and the time from playbook_start to task_start its shipping at the start.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

RESULT_FIELDS = ("ok", "records", "checkpoints_verified")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_phases"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_start(self, playbook):
        self._write({"event": "playbook_start"})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._write({"event": "task_start", "task": task.get_name()})

    def v2_runner_on_ok(self, result):
        self._task_end(result, failed=False)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._task_end(result, failed=True)

    def v2_playbook_on_stats(self, stats):
        self._write({"event": "stats"})

    def _task_end(self, result, failed):
        fields = {name: result._result[name] for name in RESULT_FIELDS if name in result._result}
        if isinstance(result._result.get("problems"), list):
            fields["problems"] = len(result._result["problems"])
        self._write({"event": "task_end", "task": result._task.get_name(), "failed": failed, "result": fields})

    @staticmethod
    def _write(entry):
        entry["time"] = time.time()
        with open(os.environ["KL_BENCH_PHASES"], "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
