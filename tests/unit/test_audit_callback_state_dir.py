"""The audit callback finds the journals the lifecycle actions registered, under the same state folder."""

from __future__ import annotations


def _callback(options):
    from ansible_collections.secops.keylifecycle.plugins.callback.audit import CallbackModule

    callback = CallbackModule.__new__(CallbackModule)
    callback.get_option = options.get
    return callback


def test_callback_reads_the_registry_under_ansible_home_by_default(tmp_path, monkeypatch):
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _journal

    monkeypatch.delenv("KEYLIFECYCLE_AUDIT_STATE_DIR", raising=False)
    monkeypatch.setenv("ANSIBLE_HOME", str(tmp_path / "home"))
    path = _journal.default_journal_path("m", "tok")
    _journal.register_journal(path)
    assert path.startswith(str(tmp_path / "home" / "secops_keylifecycle"))
    assert _callback({"state_dir": None, "journals": ["/extra.jsonl"]})._journals() == ["/extra.jsonl", path]
    # an explicit state_dir (option, ini or KEYLIFECYCLE_AUDIT_STATE_DIR) wins
    _journal.register_journal("/x.jsonl", {"KEYLIFECYCLE_AUDIT_STATE_DIR": str(tmp_path / "s")})
    assert _callback({"state_dir": str(tmp_path / "s"), "journals": []})._journals() == ["/x.jsonl"]
