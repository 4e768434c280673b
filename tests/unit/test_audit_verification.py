"""verify_journal (controller side of audit_verify): chain, checkpoint records, the token's checkpoint, interrupted
tasks. Pure: a journal in tmp_path and checkpoints signed here with cryptography; no token, no build."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def _mods():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import checkpoint_payload
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _audit_verification, _journal

    return _journal, _audit_verification, checkpoint_payload


def _intent(n):
    return {"event": {"action": "key-generate"}, "keylifecycle": {"phase": "intent", "n": n}}


def _outcome(intent_id):
    return {"event": {"action": "key-generate", "outcome": "success"},
            "keylifecycle": {"phase": "outcome", "intent_id": intent_id}}


@pytest.fixture
def signer():
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")

    def sign(journal_id, seq, head_hash, key_id="k1"):
        payload = _mods()[2](journal_id, seq, head_hash, "2026-01-01T00:00:00+00:00")
        return {"journal_id": journal_id, "seq": seq, "head_hash": head_hash, "signed_at": "2026-01-01T00:00:00+00:00",
                "key_id": key_id, "signature": base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()}

    sign.public_keys = {"k1": pem}
    return sign


@pytest.fixture
def journal(tmp_path):
    journal = _mods()[0].Journal(tmp_path / "journal.jsonl")
    intent = journal.append([_intent(1)])[0]
    journal.append([_outcome(intent.record_id)])
    return journal


def test_a_complete_journal_verifies_without_the_token(journal):
    report = _mods()[1].verify_journal(journal.read_lines())
    assert report["ok"] and report["records"] == 2 and report["head"]["seq"] == 2
    assert report["problems"] == [] and report["interrupted_intents"] == [] and report["token_checkpoint"] is None


def test_checkpoint_records_and_the_tokens_checkpoint_verify(journal, signer):
    head = journal.append([_intent(2)])[-1]
    signed = signer(head.journal_id, head.seq, head.hash)
    journal.append([{"event": {"action": "audit-checkpoint"}, "keylifecycle": {"checkpoint": signed}}])
    last = journal.append([_outcome(head.record_id)])[-1]
    token = signer(last.journal_id, last.seq, last.hash)
    report = _mods()[1].verify_journal(journal.read_lines(), {last.journal_id: token}, signer.public_keys)
    assert report["ok"], report["problems"]
    assert report["checkpoints_verified"] == 1 and report["token_checkpoint"] == token


def test_a_checkpoint_record_signed_by_another_key_or_over_an_unknown_hash(journal, signer):
    head = journal.read_lines()
    first = _mods()[0].JournalRecord.parse(head[-1])
    forged = dict(signer(first.journal_id, first.seq, first.hash), key_id="other")
    wrong_hash = signer(first.journal_id, first.seq, "0" * 64)
    journal.append([{"event": {"action": "audit-checkpoint"}, "keylifecycle": {"checkpoint": forged}},
                    {"event": {"action": "audit-checkpoint"}, "keylifecycle": {"checkpoint": wrong_hash}}])
    report = _mods()[1].verify_journal(journal.read_lines(), {}, signer.public_keys)
    # a key that is not one of the token's: another token's checkpoint, counted, not a problem
    assert report["problems"] == [
        "checkpoint record seq 4 signed record 2 with a hash the journal does not have"]
    assert report["checkpoints_verified"] == 0 and report["other_token_checkpoints"] == 1
    # the token's key, but a signature that does not verify
    bad = dict(wrong_hash, signature=forged["signature"][:-8] + "AAAAAAA=")
    journal.append([{"event": {"action": "audit-checkpoint"}, "keylifecycle": {"checkpoint": bad}}])
    report = _mods()[1].verify_journal(journal.read_lines(), {}, signer.public_keys)
    assert report["problems"][-1] == ("checkpoint record seq 5: the signature does not verify with the token's "
                                      "audit-checkpoint key k1")


def test_truncated_rewritten_and_deleted_journals(journal, signer):
    lines = journal.read_lines()
    last = _mods()[0].JournalRecord.parse(lines[-1])
    ahead = signer(last.journal_id, last.seq + 5, "f" * 64)
    report = _mods()[1].verify_journal(lines, {last.journal_id: ahead}, signer.public_keys)
    assert "the journal was truncated" in report["problems"][0]
    other = signer(last.journal_id, last.seq, "e" * 64)
    report = _mods()[1].verify_journal(lines, {last.journal_id: other}, signer.public_keys)
    assert report["problems"] == ["record 2 differs from the record the token's checkpoint signed: the journal was "
                                  "rewritten"]
    bad = dict(other, key_id="unknown")
    report = _mods()[1].verify_journal(lines, {last.journal_id: bad}, signer.public_keys)
    assert report["problems"] == ["the token's checkpoint for this journal does not verify with its signing key"]
    report = _mods()[1].verify_journal([], {last.journal_id: other}, signer.public_keys)
    assert "the journal was deleted or replaced" in report["problems"][0]
    assert _mods()[1].verify_journal([], {last.journal_id: other}, signer.public_keys, "another-id")["ok"]


def test_a_journal_ending_inside_a_task_and_a_modified_record(journal):
    journal.append([_intent(2)])
    lines = journal.read_lines()
    report = _mods()[1].verify_journal(lines)
    assert report["interrupted_intents"] == [3]
    assert report["problems"] == ["the journal ends inside a task: intent record 3 has no outcome (the run was "
                                  "interrupted, or the journal was truncated)"]
    report = _mods()[1].verify_journal([lines[0].replace('"n":1', '"n":2')] + lines[1:])
    assert not report["ok"] and report["first_bad"]["line"] == 1
    assert report["problems"][0].startswith("record on line 1 (seq 1): hash does not match")
