"""The key store's index of recorded versions: per-name questions answered without scanning every key."""

from __future__ import annotations


def test_recorded_versions_by_name():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_store import RecordedVersions

    recorded = RecordedVersions([("b", 2), ("a", 1), ("b", 1), ("b", 10)])
    assert recorded.names() == ["a", "b"] and recorded.of("b") == [1, 2, 10] and recorded.of("c") == []
    assert ("b", 10) in recorded and ("a", 2) not in recorded and ("c", 1) not in recorded
    assert sorted(recorded) == [("a", 1), ("b", 1), ("b", 2), ("b", 10)]
    recorded.discard(("a", 1))
    recorded.discard(("a", 1))  # twice: nothing to do
    recorded.discard(("c", 3))
    recorded.add(("b", 2))  # already there
    assert recorded.names() == ["b"] and recorded.of("a") == [] and recorded.of("b") == [1, 2, 10]
