"""Bench-only callback: the wall time of each task, from its start to its final result, as JSON lines.

Enabled by bench_generate.py (ANSIBLE_CALLBACKS_ENABLED=bench_task_time); writes to $KL_BENCH_TASK_TIMES.
For a loop, the final result comes after the last item, so the time covers the whole loop.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_task_time"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._name, self._start = task.get_name(), time.perf_counter()

    def v2_runner_on_ok(self, result):
        self._record()

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record()

    def _record(self):
        with open(os.environ["KL_BENCH_TASK_TIMES"], "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"task": self._name, "seconds": time.perf_counter() - self._start}) + "\n")
