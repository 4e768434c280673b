"""What a token's pin remembers of a task (``_journal_pin.task_outcome``) is what the journal receives, whichever
form the result takes (the events as a list, or as one JSON Lines text with ``return_records: false``), also when a
no_log value (a PIN) occurs in an event: AnsibleModule masks the result (``remove_values``) after the digest is
taken. The controller's side is simulated as the action plugin reads the result. Pure: no token."""

from __future__ import annotations

import hashlib
import json

import pytest

EVENTS = [
    {"event": {"action": "key-generate", "reason": "rotated for ab\"c and p\u00e455 and 1234"},
     "key": {"name": "k1", "version": 1234, "id": "0a1234ff"}},
    {"event": {"action": "key-generate", "reason": "p\u00e455"}, "key": {"name": "k2", "version": 2}},
    {"event": {"action": "key-rotate"}, "key": {"name": "k3", "version": 3}},
]


def _journaled(result):
    """The events as the action plugin journals them: from the list, or from the JSON Lines text."""
    if "audit_events_jsonl" in result:
        return [json.loads(line) for line in result["audit_events_jsonl"].splitlines()]
    return result["audit_events"]


def _digest(events):
    return hashlib.sha256(b"".join(json.dumps(e, sort_keys=True, separators=(",", ":")).encode() + b"\n"
                                   for e in events)).hexdigest()


@pytest.mark.parametrize("hidden", [set(), {"1234"}, {"ab\"c"}, {"p\u00e455"}, {"1234", "ab\"c", "p\u00e455"}])
@pytest.mark.parametrize("summary", [False, True])
def test_the_remembered_outcome_is_what_the_journal_receives(hidden, summary):
    from ansible.module_utils.common.parameters import remove_values

    from ansible_collections.secops.keylifecycle.plugins.module_utils._journal_pin import task_outcome
    from ansible_collections.secops.keylifecycle.plugins.module_utils._lifecycle_module import summarise_output

    events = json.loads(json.dumps(EVENTS))
    output = {"changed": True, "audit_events": events, "plan": [{"action": "generate"}]}
    if summary:
        output = summarise_output(output, {"keys": [1, 2, 3]}, hidden=hidden)
    returned = remove_values(output, hidden)  # what exit_json does with the result
    journaled = _journaled(returned)
    outcome = task_outcome(7, events, hidden)
    assert outcome == {"intent_seq": 7, "events": 3, "sha256": _digest(journaled)}
    for value in hidden:  # and no hidden value reaches the journal, escaped or not
        assert value not in json.dumps(journaled, ensure_ascii=False)
