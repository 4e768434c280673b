"""audit_verify finds the audit events of the finished tasks the token's pin remembers (``outcomes``: intent seq,
number of events, SHA-256 of their canonical JSON), in the records just before each task's checkpoint record;
a task small enough for the verifier's window and one larger than it (read by a second pass). Pure: journals in
tmp_path, checkpoints signed here with cryptography, digests computed here with hashlib."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNED_AT = "2026-01-01T00:00:00+00:00"


def _mods():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import checkpoint_payload
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _audit_verification, _journal

    return _journal, _audit_verification, checkpoint_payload


def _digest(events):
    return hashlib.sha256(b"".join(json.dumps(e, sort_keys=True, separators=(",", ":")).encode() + b"\n"
                                   for e in events)).hexdigest()


class Token:
    """An audit-checkpoint key and the pin it signs, as the module half of audit_verify returns them."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.pin = None
        self.outcomes = []

    def sign(self, journal_id, seq, head_hash):
        payload = _mods()[2](journal_id, seq, head_hash, SIGNED_AT)
        return {"journal_id": journal_id, "seq": seq, "head_hash": head_hash, "signed_at": SIGNED_AT,
                "key_id": "k1", "signature": base64.b64encode(self.key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()}

    def task(self, journal, events, journaled=None, checkpoint_record=True):
        """One task: its intent, then (``journaled``, default ``events``) its events, checkpoint and outcome."""
        intent = journal.append([{"event": {"action": "key-generate"}, "keylifecycle": {"phase": "intent"}}])[-1]
        outcome = {"intent_seq": intent.seq, "events": len(events), "sha256": _digest(events)}
        checkpoint = dict(self.sign(intent.journal_id, intent.seq, intent.hash),
                          outcome={"events": outcome["events"], "sha256": outcome["sha256"]})
        self.outcomes.append(outcome)
        self.pin = dict(checkpoint, outcomes=list(self.outcomes))
        records = list(events if journaled is None else journaled)
        if checkpoint_record:
            records.append({"event": {"action": "audit-checkpoint"}, "keylifecycle": {"checkpoint": checkpoint}})
        journal.append(records + [{"event": {"action": "key-generate", "outcome": "success"},
                                   "keylifecycle": {"phase": "outcome", "intent_id": intent.record_id}}])
        return intent.seq

    def verify(self, journal):
        pem = self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")
        return _mods()[1].verify_journal(journal.read_lines(), {}, {"k1": pem}, token_pin=self.pin)


def _events(n, tag="k"):
    return [{"event": {"action": "key-generate", "outcome": "success"},
             "key": {"name": "%s%d" % (tag, i), "version": 1}} for i in range(n)]


@pytest.fixture
def journal(tmp_path):
    return _mods()[0].Journal(tmp_path / "journal.jsonl")


def test_small_and_large_tasks_are_found(journal):
    token = Token()
    token.task(journal, _events(3))
    token.task(journal, _events(300))  # more than the verifier's window of recent records: a second pass
    report = token.verify(journal)
    assert report["ok"] is True and report["outcomes_verified"] == 2, report["problems"]
    assert report["outcomes_missing"] == []


@pytest.mark.parametrize("size", [3, 300])
def test_an_altered_event_is_reported(journal, size):
    token = Token()
    events = _events(size)
    altered = [dict(e) for e in events]
    altered[1] = dict(altered[1], key={"name": "someone-else", "version": 1})
    intent = token.task(journal, events, journaled=altered)
    token.task(journal, _events(2, "later"))
    report = token.verify(journal)
    assert report["ok"] is False and report["outcomes_verified"] == 1 and report["outcomes_missing"] == [intent]
    assert report["problems"] == [
        "records %d to %d are not the audit events the token remembers of the task whose intent is record %d: they "
        "were altered or replaced; restore the journal from the log store" % (intent + 1, intent + size, intent)]


def test_deleted_events_and_checkpoint_are_reported(journal):
    token = Token()
    intent = token.task(journal, _events(4), journaled=[], checkpoint_record=False)
    token.task(journal, _events(1, "later"))
    report = token.verify(journal)
    assert report["ok"] is False and report["outcomes_missing"] == [intent]
    assert "the 4 audit event(s) of the task whose intent is record %d are not in the journal" % intent \
        in report["problems"][0]


def test_without_the_token_no_outcome_is_checked(journal):
    token = Token()
    token.task(journal, _events(2))
    unread = _mods()[1].verify_journal(journal.read_lines())
    assert unread["ok"] is True and unread["outcomes_verified"] == 0 and unread["outcomes_missing"] == []


def test_missing_outcomes_names_what_a_rollover_declares_lost(journal):
    token = Token()
    kept = token.task(journal, _events(2))
    lost = token.task(journal, _events(5), journaled=_events(4))
    assert _mods()[1].missing_outcomes(journal.path, token.outcomes) == [lost]
    assert kept not in _mods()[1].missing_outcomes(journal.path, token.outcomes)


def _pem(token):
    return token.key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def _rechain(lines, prev, first_seq, format1_first=False):
    """``lines`` re-chained from record ``first_seq`` on ``prev``, as someone rewriting the journal would; the first
    one as a format 1 record (``format1_first``), which leaves no event text in the verifier's window."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _journal_chain as chain

    out = []
    for seq, line in enumerate(lines, first_seq):
        fields = chain.decode_record(line)
        if format1_first and seq == first_seq:
            record = {"seq": seq, "journal_id": fields["journal_id"], "record_id": fields["record_id"],
                      "recorded_at": fields["recorded_at"], "prev_hash": prev, "event": fields["event"]}
            record["hash"] = prev = chain.legacy_record_hash(record)
            out.append(chain.canonical_json(record))
        else:
            text, prev, _digest = chain.encode_record(prev, seq, fields["journal_id"], fields["record_id"],
                                                      fields["recorded_at"], fields["event"])
            out.append(text)
    return out


@pytest.mark.parametrize("size, format1_first", [(3, True), (3, False), (300, False)])
def test_a_range_verification_is_not_misled_by_lines_before_the_range(journal, size, format1_first):
    """Task P's events replaced after its intent and the chain re-hashed; before the range (not verified), blank-
    looking lines and copies of the genuine events placed where a second pass counting lines would look."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _journal_chain as chain

    token = Token()
    token.task(journal, _events(size + 10, "old"))  # room before the range for the copies below
    intent = token.task(journal, _events(size, "secret"))
    lines = journal.read_lines()
    verify = _mods()[1].verify_journal
    assert verify(lines, {}, {"k1": _pem(token)}, since_seq=intent, token_pin=token.pin)["outcomes_verified"] == 1
    genuine = lines[intent:intent + size]
    forged = []
    for line in genuine:
        fields = chain.decode_record(line)
        forged.append(chain.encode_record("0" * 64, 1, fields["journal_id"], fields["record_id"],
                                          fields["recorded_at"], dict(fields["event"], key={"name": "innocent"}))[0])
    tail = _rechain(forged + lines[intent + size:], json.loads(lines[intent - 1])["hash"], intent + 1, format1_first)
    # before the range: the same number of records (so the range still starts at the intent), and the genuine
    # events at the line numbers of records intent+1.. for a pass that counts a line of spaces as a line
    tampered = lines[:intent - 1 - size] + [" "] * (size + 1) + genuine + [lines[intent - 1]] + tail
    report = verify(tampered, {}, {"k1": _pem(token)}, since_seq=intent, token_pin=token.pin)
    assert report["ok"] is False and report["outcomes_verified"] == 0, report
    assert verify(tampered, {}, {"k1": _pem(token)}, token_pin=token.pin)["ok"] is False
