"""audit_verify on records crafted to be well chained but odd inside (types a writer never produces): each is
reported as a problem of the journal, never a crash of the verifier (found by review)."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

JOURNAL_ID = str(uuid.uuid4())
CHANGE = json.dumps({"event": {"action": "key-generate"}, "keylifecycle": {"phase": "change"}}, sort_keys=True,
                    separators=(",", ":"))


def chain(events):
    """Format 2 lines, each hashed and linked as the journal writes them, with ``events`` as raw JSON text."""
    prev, lines = "0" * 64, []
    for seq, event in enumerate(events, 1):
        content = ',"seq":%d,"journal_id":"%s","record_id":"%s","recorded_at":"t","event":%s' % (
            seq, JOURNAL_ID, uuid.uuid4(), event)
        digest = hashlib.sha256(bytes.fromhex(prev) + hashlib.sha256(content.encode()).digest()).hexdigest()
        lines.append('{"prev_hash":"%s"%s,"hash":"%s"}' % (prev, content, digest))
        prev = digest
    return lines


ROLLOVER = '{"event":{"action":"audit-journal-rollover"},"keylifecycle":{"phase":"intent","previous_journal":%s}}'
CASES = {
    "an event that is not JSON": ([CHANGE, '{"keylifecycle":{"phase":"intent"}}}'], {},
                                  "the record's event is not JSON"),
    "an outcome whose intent_id is a list": ([CHANGE, '{"keylifecycle":{"intent_id":[],"phase":"outcome"}}'], {},
                                             None),
    "a genesis whose previous_journal is text": ([ROLLOVER % '"x"'], {}, "previous journal None is not at None"),
    "a genesis whose path is a list": ([ROLLOVER % '{"path":[1]}'], {}, "previous journal None is not at [1]"),
    "a checkpoint whose key_id is a list": (
        [CHANGE, '{"event":{"action":"audit-checkpoint"},"keylifecycle":{"checkpoint":{"key_id":[1],"seq":1},'
                 '"phase":"change"}}'], {"token_checkpoints": {}, "public_keys": {"aa": "x"}, "token_label": "t"},
        None),
    "an event field that is not a dict": ([CHANGE, '{"event":1,"keylifecycle":{"phase":"intent"}}'], {}, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_crafted_record_is_a_problem_not_a_crash(case):
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._audit_verification import verify_journal

    events, token, problem = CASES[case]
    report = verify_journal(chain(events), **token)
    reported = report["problems"] + ([report["first_bad"]["problem"]] if report["first_bad"] else [])
    if problem is None:
        assert report["first_bad"] is None, report
    else:
        assert not report["ok"] and any(problem in text for text in reported), reported


def test_a_format_1_record_with_a_journal_id_that_is_not_ascii():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._journal_chain import (
        canonical_json,
        legacy_record_hash,
    )
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._audit_verification import verify_journal

    record = {"seq": 1, "journal_id": "\u00e9", "record_id": "r", "recorded_at": "t", "prev_hash": "0" * 64,
              "event": {}}
    record["hash"] = legacy_record_hash(record)
    report = verify_journal([canonical_json(record)])
    assert report["records"] == 1 and report["journal_id"] == "\\xe9", report
