"""Half-made versions (key objects without metadata) are removed in one place, for generation and rotation."""

from __future__ import annotations


def test_half_made_versions_are_removed_and_audited():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext
    from ansible_collections.secops.keylifecycle.plugins.module_utils._version_repair import remove_half_made

    class Store:
        token_label = "t"
        discarded = []

        def discard_half_made(self, name, number):
            self.discarded.append((name, number))
            return "%032x" % number

    store = Store()
    events = remove_half_made(store, "k", (2, 3), AuditContext("alice", "test", "run-1", host="h"), "key-rotate")
    assert store.discarded == [("k", 2), ("k", 3)]
    assert [e["event"]["reason"] for e in events] == ["repair: removed half-made version"] * 2
