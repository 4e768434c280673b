"""The streaming verifier (controller side of audit_verify) on format 2 journals: the chain on stored bytes, the
token's pin, checkpoints of other tokens, co-signatures, ranges (since_seq), rollovers, torn tails. Pure: journals
written here with _journal_chain.encode_record, checkpoints signed with cryptography; no token, no build."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def _mods():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _journal_chain
    from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import checkpoint_payload
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _audit_verification

    return _journal_chain, _audit_verification, checkpoint_payload


SIGNED_AT = "2026-01-01T00:00:00+00:00"


class Key:
    """A software stand-in for one version of the token's audit-checkpoint key."""

    def __init__(self, key_id):
        self.key_id = key_id
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")

    def signature(self, journal_id, seq, head_hash):
        payload = _mods()[2](journal_id, seq, head_hash, SIGNED_AT)
        return base64.b64encode(self.private.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()

    def checkpoint(self, journal_id, seq, head_hash, token_label="kl-test", previous=None):
        out = {"journal_id": journal_id, "seq": seq, "head_hash": head_hash, "signed_at": SIGNED_AT,
               "key_id": self.key_id, "key_version": 1, "signature": self.signature(journal_id, seq, head_hash),
               "token_label": token_label, "token_serial": "0001"}
        if previous is not None:
            out.update(previous_key_id=previous.key_id,
                       previous_signature=previous.signature(journal_id, seq, head_hash))
        return out


class Writer:
    """A format 2 journal in a file, written as the action plugin does (intent, changes, checkpoint, outcome)."""

    def __init__(self, path, journal_id=None):
        self.path, self.journal_id = path, journal_id or str(uuid.uuid4())
        self.seq, self.prev, self.hashes = 0, _mods()[0].GENESIS_HASH, {}
        path.write_bytes(b"")

    def record(self, event, record_id=None):
        self.seq += 1
        line, self.prev, _digest = _mods()[0].encode_record(self.prev, self.seq, self.journal_id,
                                                            record_id or str(uuid.uuid4()), SIGNED_AT, event)
        self.hashes[self.seq] = self.prev
        with open(self.path, "a", encoding="ascii") as handle:
            handle.write(line + "\n")
        return self.seq, self.prev

    def task(self, key=None, changes=1, outcome=True, token_label="kl-test", previous=None):
        intent_id = str(uuid.uuid4())
        seq, head = self.record({"event": {"action": "key-generate"}, "keylifecycle": {"phase": "intent"}},
                                intent_id)
        for n in range(changes):
            self.record({"event": {"action": "key-generate"}, "key": {"name": "k%d" % n},
                         "keylifecycle": {"phase": "change", "intent_id": intent_id}})
        if key is not None:
            self.checkpoint(key.checkpoint(self.journal_id, seq, head, token_label, previous), intent_id)
        if outcome:
            self.record({"event": {"action": "key-generate"},
                         "keylifecycle": {"phase": "outcome", "intent_id": intent_id}})
        return seq, head

    def checkpoint(self, checkpoint, intent_id=None):
        return self.record({"event": {"action": "audit-checkpoint"},
                            "keylifecycle": {"phase": "change", "intent_id": intent_id, "checkpoint": checkpoint}})

    def lines(self):
        return self.path.read_text(encoding="ascii").splitlines()

    def write_lines(self, lines):
        self.path.write_text("".join(line + "\n" for line in lines), encoding="ascii")


def token(*keys, pin=None, label="kl-test", checkpoints=None):
    return {"token_pin": pin, "token_checkpoints": checkpoints or {}, "checkpoint_public_keys": {
        k.key_id: k.pem for k in keys}, "checkpoint_certificates": [], "token_label": label, "token_serial": "0001"}


def verify(path, token_result=None, **kwargs):
    return _mods()[1].verify_journal_file(str(path), token_result, **kwargs)


@pytest.fixture
def key():
    return Key("a1" * 16)


@pytest.fixture
def writer(tmp_path, key):
    journal = Writer(tmp_path / "journal.jsonl")
    for _round in range(3):
        journal.task(key, changes=2)
    return journal


def pin_of(writer, key, seq=None):
    seq = seq or writer.seq
    return dict(key.checkpoint(writer.journal_id, seq, writer.hashes[seq]), schema=1, revision=1)


def test_an_intact_journal_verifies_with_and_without_the_token(writer, key):
    report = verify(writer.path)
    assert report["ok"] and report["records"] == 15 and report["head"] == {"seq": 15, "hash": writer.prev}
    assert report["checkpoints_verified"] == 3 and report["unanchored_records"] is None
    report = verify(writer.path, token(key, pin=pin_of(writer, key, 11)))
    assert report["ok"], report["problems"]
    assert report["checkpoints_verified"] == 3 and report["other_token_checkpoints"] == 0
    assert report["token_checkpoint"]["seq"] == 11 and report["last_anchored_seq"] == 11
    assert report["unanchored_records"] == 4 and report["interrupted_intents"] == []
    assert report["journals"] == [{"journal_id": writer.journal_id, "path": str(writer.path), "records": 15,
                                   "ok": True}]


@pytest.mark.parametrize("mutate, line, words", [
    (lambda lines: lines[:2] + [lines[2].replace('"k1"', '"k9"')] + lines[3:], 3, "the record was modified"),
    (lambda lines: lines[:3] + lines[4:], 4, "where 4 was expected: record(s) deleted"),
    (lambda lines: lines[:5] + [lines[6], lines[5]] + lines[7:], 6, "record(s) deleted"),
    (lambda lines: lines[:2] + [lines[3]] + [lines[2]] + lines[4:], 3, "where 3 was expected: record(s) deleted"),
    (lambda lines: lines[:5] + ["{not json"] + lines[6:], 6, "unreadable JSON"),
    (lambda lines: lines[:5] + [lines[5][:-3]] + lines[6:], 6, "not laid out as a journal record"),
])
def test_the_first_bad_record_is_named(writer, mutate, line, words):
    writer.write_lines(mutate(writer.lines()))
    report = verify(writer.path)
    assert not report["ok"] and report["first_bad"]["line"] == line and words in report["first_bad"]["problem"]
    assert report["records"] == line - 1 and report["head"]["seq"] == line - 1
    assert report["problems"][0].startswith("record on line %d (seq " % line)


def test_a_rechained_record_from_another_place_and_a_spliced_journal(tmp_path, writer, key):
    chain = _mods()[0]
    lines = writer.lines()
    # a record re-hashed onto a forged predecessor: its own hash holds, the link does not
    fields = json.loads(lines[6])
    forged, _h, _d = chain.encode_record("f" * 64, fields["seq"], fields["journal_id"], fields["record_id"],
                                         fields["recorded_at"], fields["event"])
    writer.write_lines(lines[:6] + [forged] + lines[7:])
    report = verify(writer.path)
    assert report["first_bad"]["line"] == 7 and "prev_hash does not match" in report["first_bad"]["problem"]
    # a record of another journal with the right link: spliced
    other, _h, _d = chain.encode_record(writer.hashes[6], 7, str(uuid.uuid4()), fields["record_id"],
                                        fields["recorded_at"], fields["event"])
    writer.write_lines(lines[:6] + [other])
    report = verify(writer.path)
    assert report["first_bad"]["line"] == 7 and "spliced" in report["first_bad"]["problem"]


def test_format_1_records_then_format_2(tmp_path, key):
    chain = _mods()[0]
    journal_id = str(uuid.uuid4())
    prev, lines = chain.GENESIS_HASH, []
    for seq in (1, 2):
        fields = {"seq": seq, "record_id": str(uuid.uuid4()), "recorded_at": SIGNED_AT, "journal_id": journal_id,
                  "prev_hash": prev, "event": {"event": {"action": "key-generate"}, "keylifecycle": {
                      "phase": "intent" if seq == 1 else "outcome"}}}
        if seq == 2:
            fields["event"]["keylifecycle"]["intent_id"] = lines and json.loads(lines[0])["record_id"]
        fields["hash"] = prev = chain.legacy_record_hash(fields)
        lines.append(chain.canonical_json(fields))
    line, _h, _d = chain.encode_record(prev, 3, journal_id, str(uuid.uuid4()), SIGNED_AT, {"event": {}})
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines + [line]) + "\n")
    report = verify(path)
    assert report["ok"] and report["records"] == 3 and report["interrupted_intents"] == []
    path.write_text("\n".join([lines[0].replace("key-generate", "key-destroy")] + lines[1:] + [line]) + "\n")
    assert "the record was modified" in verify(path)["first_bad"]["problem"]
    path.write_text("\n".join([lines[0].replace('{"event":', '{ "event":')] + lines[1:]) + "\n")
    assert "not in canonical form" in verify(path)["first_bad"]["problem"]


def test_the_tokens_pin_catches_diversion_truncation_rewrite_and_deletion(writer, key, tmp_path):
    pin = pin_of(writer, key, 11)
    other_id = str(uuid.uuid4())
    report = verify(writer.path, token(key, pin=dict(pin, journal_id=other_id)))
    assert report["problems"] == [
        "the token names journal %s (pinned head record 11) and this file is journal %s: the token's journal was "
        "deleted, replaced or diverted; restore journal %s from the log store, or start a new journal with "
        "playbooks/audit_rollover.yml" % (other_id, writer.journal_id, other_id)]
    writer.write_lines(writer.lines()[:8])  # a valid chain cut below the pin
    report = verify(writer.path, token(key, pin=pin))
    assert report["first_bad"] is None and not report["ok"]
    assert "the journal ends at record 8 but the token's signed checkpoint anchors record 11: the journal was " \
           "truncated" in report["problems"]
    rewritten = dict(key.checkpoint(writer.journal_id, 6, "e" * 64), schema=1)
    assert "record 6 differs from the record the token's checkpoint signed: the journal was rewritten" in verify(
        writer.path, token(key, pin=rewritten))["problems"]
    unsigned = dict(pin_of(writer, key, 6), signature=Key("b2" * 16).signature(writer.journal_id, 6, "0" * 64))
    assert "the token's pin of this journal does not verify with its signing key" in verify(
        writer.path, token(key, pin=unsigned))["problems"]
    writer.path.unlink()
    report = verify(writer.path, token(key, pin=pin))
    assert report["problems"] == ["the journal is missing or empty, but the token holds a signed checkpoint of "
                                  "record 11 of journal %s: the journal was deleted or replaced" % writer.journal_id]
    assert report["records"] == 0 and report["head"]["seq"] == 0


def test_checkpoints_of_other_tokens_are_counted_not_problems(tmp_path, key):
    journal = Writer(tmp_path / "shared.jsonl")
    other = Key("c3" * 16)
    journal.task(key)
    journal.task(other, token_label="kl-other")           # another token's key
    journal.task(key, token_label="kl-other")             # this key id, but another token's label
    journal.task(key)
    report = verify(journal.path, token(key, pin=pin_of(journal, key, 13)))
    assert report["ok"], report["problems"]
    assert report["checkpoints_verified"] == 2 and report["other_token_checkpoints"] == 2
    assert report["unanchored_records"] == 3
    # a checkpoint of this token whose signature does not verify is a problem
    forged = dict(key.checkpoint(journal.journal_id, 13, journal.hashes[13]), signature=other.signature(
        journal.journal_id, 13, journal.hashes[13]))
    journal.checkpoint(forged)
    assert verify(journal.path, token(key))["problems"] == [
        "checkpoint record seq 17: the signature does not verify with the token's audit-checkpoint key %s"
        % key.key_id]


def test_a_new_checkpoint_keys_co_signature(tmp_path, key):
    journal = Writer(tmp_path / "rotated.jsonl")
    new = Key("d4" * 16)
    journal.task(key)
    journal.task(new, previous=key)
    report = verify(journal.path, token(key, new))
    assert report["ok"] and report["checkpoints_verified"] == 2
    stranger = Key("e5" * 16)
    journal.task(new, previous=stranger)  # a co-signature by a key the token never had
    report = verify(journal.path, token(key, new))
    assert report["problems"] == [
        "checkpoint record seq 11: the co-signature of the previous audit-checkpoint key %s does not verify: the "
        "signing key was replaced without its predecessor's consent" % stranger.key_id]


def test_a_checkpoint_over_a_record_long_before_it_is_resolved_by_a_second_pass(tmp_path, key):
    journal = Writer(tmp_path / "long.jsonl")
    seq, head = journal.task(None, changes=400)
    journal.checkpoint(key.checkpoint(journal.journal_id, seq, head))
    journal.checkpoint(key.checkpoint(journal.journal_id, seq + 1, "0" * 64))
    report = verify(journal.path, token(key))
    assert report["checkpoints_verified"] == 1 and report["last_anchored_seq"] == seq
    assert report["problems"] == ["checkpoint record seq %d signed record 2 with a hash the journal does not have"
                                  % journal.seq]


def test_a_range_since_an_anchored_record(writer, key):
    report = verify(writer.path, token(key), since_seq=6)
    assert report["ok"], report["problems"]
    assert report["records"] == 10 and report["since_seq"] == 6 and report["checkpoints_verified"] == 2
    report = verify(writer.path, token(key), since_seq=7)
    assert report["problems"] == [
        "record 7 (since_seq) is not anchored by a signed checkpoint of this token in the journal or by the token's "
        "pin: verify from a checkpointed record, or the whole journal"]
    assert verify(writer.path, token(key, pin=pin_of(writer, key, 13)), since_seq=13)["ok"]
    assert verify(writer.path, token(key), since_seq=16)["problems"] == [
        "the journal has no record 16 (since_seq): it ends before it"]
    lines = writer.lines()
    writer.write_lines(lines[:7] + [lines[7].replace('"k1"', '"k7"')] + lines[8:])
    report = verify(writer.path, token(key), since_seq=6)
    assert report["first_bad"]["line"] == 8 and "modified" in report["first_bad"]["problem"]


def test_a_rollover_is_followed_to_the_previous_journal(tmp_path, key):
    old = Writer(tmp_path / "old.jsonl")
    old.task(key)
    new = Writer(tmp_path / "new.jsonl")
    previous = {"journal_id": old.journal_id, "head_seq": old.seq, "head_hash": old.prev, "path": str(old.path)}
    new.record({"event": {"action": "audit-journal-rollover"},
                "keylifecycle": {"phase": "change", "previous_journal": previous}})
    new.task(key)
    report = verify(new.path, token(key, pin=pin_of(new, key, 2)))
    assert report["ok"], report["problems"]
    assert report["previous_journal"] == previous
    assert [(j["journal_id"], j["records"], j["ok"]) for j in report["journals"]] == [
        (new.journal_id, 5, True), (old.journal_id, 4, True)]
    old.task(key)  # the old journal changed after the rollover
    report = verify(new.path, token(key, pin=pin_of(new, key, 2)))
    assert report["problems"] == [
        "previous journal %s (%s): it ends at record 8 (hash %s) but the rollover's genesis record names head record "
        "4 (hash %s): the journal was changed after the rollover" % (
            old.journal_id, old.path, old.prev, previous["head_hash"])]
    assert report["journals"][0]["ok"] is True and report["journals"][1]["ok"] is False
    old.path.unlink()  # the kept journal deleted: the history before the rollover is gone, which is not ok
    report = verify(new.path, token(key, pin=pin_of(new, key, 2)))
    assert not report["ok"] and report["journals"][1] == {"journal_id": old.journal_id, "path": str(old.path),
                                                          "records": None, "ok": None, "present": False}
    assert report["problems"] == [
        "previous journal %s is not at %s, where the rollover's genesis record says it was kept: the history before "
        "the rollover cannot be verified (it was deleted or moved after the rollover). Put the kept journal back "
        "there (from the log store or a backup) and verify again" % (old.journal_id, old.path)]


def test_a_journal_declared_lost_at_the_rollover_is_not_a_problem(tmp_path, key):
    old = Writer(tmp_path / "old.jsonl")
    old.task(key)
    new = Writer(tmp_path / "new.jsonl")
    previous = {"journal_id": old.journal_id, "head_seq": old.seq, "head_hash": old.prev,
                "path": str(tmp_path / "gone.jsonl"), "lost": True}
    new.record({"event": {"action": "audit-journal-rollover"},
                "keylifecycle": {"phase": "change", "previous_journal": previous}})
    new.task(key)
    report = verify(new.path, token(key, pin=pin_of(new, key, 2)))
    assert report["ok"], report["problems"]
    assert report["journals"][1] == {"journal_id": old.journal_id, "path": previous["path"], "records": None,
                                     "ok": None, "present": False, "lost": True}


def test_a_torn_last_line_is_reported_not_verified(writer):
    with open(writer.path, "ab") as handle:
        handle.write(b'{"prev_hash":"' + writer.prev.encode() + b'","seq":16,"journal')
    report = verify(writer.path)
    assert report["ok"] and report["records"] == 15
    assert report["torn_tail"] == {"line": 16, "length": 97}


def test_an_interrupted_last_task_and_blank_lines(writer, key):
    writer.task(key, outcome=False)
    report = verify(writer.path)
    assert report["interrupted_intents"] == [16]
    assert report["problems"] == ["the journal ends inside a task: intent record 16 has no outcome (the run was "
                                  "interrupted, or the journal was truncated)"]
    lines = writer.lines()
    writer.path.write_text("\n".join(lines[:3] + [""] + lines[3:]) + "\n")
    assert verify(writer.path)["records"] == 18
