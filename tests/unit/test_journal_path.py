"""The journal a task uses, resolved in one place for every action plugin."""

from __future__ import annotations

import os


class _Templar:
    def template(self, value):
        return value.replace("{{ env }}", "dev") if isinstance(value, str) else value


def _resolve(args, task_vars):
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _journal

    return _journal.resolve_journal_path(args, task_vars, _Templar())


def test_option_then_variable_then_default(tmp_path, monkeypatch):
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import JOURNAL_VARIABLE

    monkeypatch.setenv("KEYLIFECYCLE_AUDIT_STATE_DIR", str(tmp_path))
    variable = {JOURNAL_VARIABLE: "/var/lib/{{ env }}/journal.jsonl"}
    assert _resolve({"journal": "/tmp/j.jsonl"}, variable) == "/tmp/j.jsonl"
    assert _resolve({}, variable) == "/var/lib/dev/journal.jsonl"
    assert _resolve({"journal": None}, {}) == os.path.join(str(tmp_path), "audit-journal.jsonl")
