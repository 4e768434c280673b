"""The token pins its journal (design 13, section 1): every row of the decision table on a real SoftHSM2 token.

Lifecycle modules' main() run in this process with the intent the action plugin would journal first
(``tests/hsm/journal_intents.MemoryJournal``: real format 2 records, proofs from ``_journal_chain``). A refused
task leaves every object on the token as it was (compared with python-pkcs11 directly).
"""

from __future__ import annotations

import base64
from datetime import timedelta

from tests.hsm.journal_intents import MemoryJournal
from tests.hsm.test_key_store import _open, _store
from tests.hsm.test_module_main import connection, objects_of
from tests.unit.test_module_main import run_main


def run(capsys, token, journal, module="key_generate", context=None, **args):
    """One lifecycle task: intent journaled, module run, outcome (changes, checkpoint) journaled."""
    args = dict({"name": "k"} if module == "key_generate" and not args else args)
    context = context or journal.intent(token.label)
    result = run_main(capsys, module, dict(connection(token, **args), audit_context=context))
    journal.outcome(result)
    return result


def pin_of(settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._journal_pin import JournalPin

    with _open(settings) as session:
        return JournalPin(session, _store(session, settings.token_label)).pin


def refused(capsys, settings, token, kind, context, module="key_generate", **args):
    """Run a task that must be refused with ``kind``; nothing on the token may change. Returns the message."""
    before = objects_of(settings)
    pin = pin_of(settings)
    args = args or {"name": "other"}
    result = run_main(capsys, module, dict(connection(token, **args), audit_context=context))
    assert result.get("failed") is True, result
    assert result["error_kind"] == kind, result
    assert result["error_option"] == "audit_context" and result["changed"] is False, result
    assert "Nothing was changed" in result["msg"] and "Traceback" not in result["msg"]
    assert objects_of(settings) == before
    assert pin_of(settings) == pin
    return result["msg"]


def verify(pem, signature, payload):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    serialization.load_pem_public_key(pem.encode()).verify(base64.b64decode(signature), payload,
                                                           ec.ECDSA(hashes.SHA256()))


def payload_of(checkpoint):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import checkpoint_payload

    return checkpoint_payload(checkpoint["journal_id"], checkpoint["seq"], checkpoint["head_hash"],
                              checkpoint["signed_at"])


def outcome_of(intent_seq, events):
    """What the pin must remember of a task whose intent is ``intent_seq`` and that returned ``events``: computed
    here from the events as returned, independently of the module's code."""
    import hashlib
    import json

    digest = hashlib.sha256(b"".join(json.dumps(event, sort_keys=True, separators=(",", ":")).encode() + b"\n"
                                     for event in events)).hexdigest()
    return {"intent_seq": intent_seq, "events": len(events), "sha256": digest}


def verify_report(capsys, token):
    return run_main(capsys, "audit_verify", connection(token))


# ---- rows 2 and 7 (accepted): the first pin, then every task extends it -----------------------------------


def test_first_pin_then_extension(capsys, hsm_token, settings):
    journal = MemoryJournal()
    first = run(capsys, hsm_token, journal)
    assert first["changed"] is True and not first.get("failed"), first
    checkpoint = first["audit_checkpoint"]
    assert checkpoint["token_label"] == hsm_token.label and checkpoint["token_serial"]
    assert "previous_key_id" not in checkpoint
    pin = pin_of(settings)
    assert (pin["journal_id"], pin["seq"], pin["head_hash"]) == (journal.journal_id, 1, journal.records[0][1])
    # pinned before the work (revision 1), then the task's outcome remembered (revision 2)
    assert pin["revision"] == 2 and pin["previous_journal"] is None and pin["pinned_since"] == pin["signed_at"]
    assert pin["token_serial"] == checkpoint["token_serial"] and "adopted_from_legacy" not in pin
    assert pin["outcomes"] == [outcome_of(1, first["audit_events"])]
    assert checkpoint["outcome"] == {"events": len(first["audit_events"]), "sha256": pin["outcomes"][0]["sha256"]}

    second = run(capsys, hsm_token, journal, name="k2")
    assert second["changed"] is True, second
    again = pin_of(settings)
    assert again["revision"] == 3 and again["seq"] == second["audit_checkpoint"]["seq"] > pin["seq"]
    assert again["outcomes"] == pin["outcomes"] + [outcome_of(again["seq"], second["audit_events"])]
    assert again["pinned_since"] == pin["pinned_since"] and again["key_id"] == pin["key_id"]

    report = verify_report(capsys, hsm_token)
    assert report["token_pin"] == again and report["token_label"] == hsm_token.label
    assert report["token_serial"] == checkpoint["token_serial"] and report["checkpoint_certificates"] == []
    assert report["token_checkpoints"][journal.journal_id]["seq"] == again["seq"]
    pem = report["checkpoint_public_keys"][again["key_id"]]
    verify(pem, second["audit_checkpoint"]["signature"], payload_of(second["audit_checkpoint"]))
    verify(pem, again["signature"], payload_of(again))


# ---- row 1: no intent -------------------------------------------------------------------------------------


def test_no_intent_is_refused_unless_check_mode(capsys, hsm_token, settings):
    before = objects_of(settings)
    result = run_main(capsys, "key_generate", connection(hsm_token, name="k"))
    assert result["failed"] is True and result["error_kind"] == "journal_required", result
    assert "action plugin" in result["msg"] and "secops.keylifecycle.key_generate" in result["msg"]
    assert objects_of(settings) == before
    checked = run_main(capsys, "key_generate", connection(hsm_token, name="k", _ansible_check_mode=True))
    assert not checked.get("failed") and checked["changed"] is True and checked["audit_checkpoint"] is None, checked
    assert objects_of(settings) == before
    journal = MemoryJournal()
    run(capsys, hsm_token, journal)
    refused(capsys, settings, hsm_token, "journal_required", context=None)
    # an intent without its hash is no intent
    partial = journal.intent(hsm_token.label)
    del partial["intent_hash"]
    refused(capsys, settings, hsm_token, "journal_required", context=partial)


# ---- rows 5 and 6: another journal, a journal behind ---------------------------------------------------------


def test_deleted_or_diverted_journal_is_journal_mismatch(capsys, hsm_token, settings):
    journal = MemoryJournal()
    run(capsys, hsm_token, journal)
    pin = pin_of(settings)
    fresh = MemoryJournal()  # the journal deleted and a new chain started, or -e keylifecycle_audit_journal=...
    message = refused(capsys, settings, hsm_token, "journal_mismatch", fresh.intent(hsm_token.label))
    assert journal.journal_id in message and fresh.journal_id in message and "record %d" % pin["seq"] in message


def test_truncated_journal_is_journal_behind(capsys, hsm_token, settings):
    journal = MemoryJournal()
    run(capsys, hsm_token, journal)
    run(capsys, hsm_token, journal, name="k2")
    pin = pin_of(settings)
    truncated = MemoryJournal(journal.journal_id)
    truncated.records = list(journal.records[:pin["seq"] - 1])  # cut just before the pinned intent
    message = refused(capsys, settings, hsm_token, "journal_behind", truncated.intent(hsm_token.label))
    assert "record %d" % pin["seq"] in message


# ---- row 7: rewritten histories ------------------------------------------------------------------------------


def _events(journal, records):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._journal_chain import decode_record

    return [decode_record(line)["event"] for line, _hash, _digest in records]


def test_rewrite_without_checkpoints_is_refused(capsys, hsm_token, settings):
    """Delete one earlier task's records, re-hash, drop the checkpoint records, then run no-op tasks."""
    journal = MemoryJournal()
    run(capsys, hsm_token, journal, name="a")
    start_b = len(journal.records)
    run(capsys, hsm_token, journal, name="b")
    end_b = len(journal.records)
    run(capsys, hsm_token, journal, name="c")
    forged = MemoryJournal(journal.journal_id)
    for event in _events(journal, journal.records[:start_b] + journal.records[end_b:]):
        if event["event"]["action"] != "audit-checkpoint":
            forged.append(event)
    pin = pin_of(settings)
    while forged.head[0] < pin["seq"]:  # shorter than the token's head: journal_behind; padded past it
        refused(capsys, settings, hsm_token, "journal_behind", forged.intent(hsm_token.label), name="c")
        forged.append(forged.event("key-generate", phase="outcome"))
    for _round in range(3):  # the no-op tasks that would re-anchor the forged head: each one refused
        message = refused(capsys, settings, hsm_token, "journal_rewritten", forged.intent(hsm_token.label),
                          name="c")
        assert "holds no checkpoint" in message
        forged.append(forged.event("key-generate", phase="outcome"))


def test_rewrite_reanchored_from_an_earlier_checkpoint_is_refused(capsys, hsm_token, settings):
    """A forged chain from an earlier (genuine) checkpoint, with more records on top than the token's head."""
    journal = MemoryJournal()
    run(capsys, hsm_token, journal, name="a")
    keep = len(journal.records)  # ends with task a's checkpoint and outcome: a genuine anchor of this token
    run(capsys, hsm_token, journal, name="b")
    pin = pin_of(settings)
    forged = MemoryJournal(journal.journal_id)
    forged.records = list(journal.records[:keep])
    for _round in range(pin["seq"] - keep + 3):  # something else where task b was, and more on top
        forged.append(forged.event("key-update", phase="outcome"))
    context = forged.intent(hsm_token.label)
    assert context["journal_proof"]["start_seq"] < pin["seq"] < context["intent_seq"]
    message = refused(capsys, settings, hsm_token, "journal_rewritten", context, name="b")
    assert "record %d differs" % pin["seq"] in message


def test_proof_starting_after_the_pin_has_its_own_wording(capsys, hsm_token, settings):
    journal = MemoryJournal()
    run(capsys, hsm_token, journal)
    pin = pin_of(settings)
    for _round in range(3):
        journal.append(journal.event("key-update", phase="outcome"))
    context = journal.intent(hsm_token.label)
    later = pin["seq"] + 2  # as if the journal held a later checkpoint of this token (restored token, same label)
    context["journal_proof"] = {"start_seq": later, "start_hash": journal.records[later - 1][1],
                                "digests": [d for _l, _h, d in journal.records[later:context["intent_seq"]]]}
    message = refused(capsys, settings, hsm_token, "journal_rewritten", context)
    assert "restored from an older backup, or another token has the same label" in message


def test_a_proof_that_does_not_lead_to_the_intent_is_refused(capsys, hsm_token, settings):
    journal = MemoryJournal()
    run(capsys, hsm_token, journal)
    context = journal.intent(hsm_token.label)
    context["journal_proof"]["digests"] = context["journal_proof"]["digests"][:-1]
    refused(capsys, settings, hsm_token, "journal_rewritten", context)


# ---- rows 3 and 4: no pin ------------------------------------------------------------------------------------


def _destroy_pin(settings):
    from pkcs11 import Attribute

    with _open(settings) as session:
        for obj in session.get_objects({Attribute.LABEL: "audit-journal-pin"}):
            obj.destroy()


def test_deleted_pin_is_journal_pin_missing_and_a_rollover_recovers(capsys, hsm_token, settings):
    journal = MemoryJournal()
    run(capsys, hsm_token, journal)
    _destroy_pin(settings)
    message = refused(capsys, settings, hsm_token, "journal_pin_missing", journal.intent(hsm_token.label))
    assert "audit_rollover" in message
    new = MemoryJournal()
    context = new.rollover_genesis(journal, lost=True)
    result = run(capsys, hsm_token, new, context=context, module="audit_rollover", reason="pin deleted")
    assert not result.get("failed"), result
    pin = pin_of(settings)
    assert pin["journal_id"] == new.journal_id and pin["seq"] == 1
    assert pin["previous_journal"]["journal_id"] == journal.journal_id
    loss = {"journal_id": journal.journal_id, "lost": True, "lost_outcomes": []}
    assert pin["declared_losses"] == [loss]
    # the declaration stays in the pin through later tasks and rollovers (the report lists it, whatever follows)
    assert not run(capsys, hsm_token, new, name="k2").get("failed")
    newer = MemoryJournal()
    pinned = pin_of(settings)
    context = newer.rollover_genesis(new, outcomes=pinned["outcomes"])
    context["journal_rollover"]["previous_proof"] = new.proof(hsm_token.label, new.head[0])
    assert not run(capsys, hsm_token, newer, context=context, module="audit_rollover", reason="yearly").get("failed")
    assert pin_of(settings)["journal_id"] == newer.journal_id and pin_of(settings)["declared_losses"] == [loss]
    # a malformed declaration (a crafted genesis record: the event schema keeps the action plugin from writing one)
    newest = MemoryJournal()
    pinned = pin_of(settings)
    context = newest.rollover_genesis({"journal_id": newer.journal_id, "head_seq": pinned["seq"],
                                       "head_hash": pinned["head_hash"]}, outcomes=pinned.get("outcomes"))
    genesis = _events(newest, newest.records)[0]
    genesis["keylifecycle"]["previous_journal"]["lost_outcomes"] = ["7"]
    crafted = MemoryJournal(newest.journal_id)
    seq, record_hash = crafted.append(genesis)
    context.update(intent_hash=record_hash, journal_proof={"start_seq": 0, "start_hash": "0" * 64,
                                                           "digests": [crafted.records[0][2]]},
                   journal_rollover={"genesis": crafted.records[0][0]})
    message = refused(capsys, settings, hsm_token, "journal_mismatch", context, module="audit_rollover", reason="r")
    assert "lost_outcomes is malformed" in message


def test_legacy_checkpoints_are_adopted(capsys, hsm_token, settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import (
        CheckpointSigner,
        checkpoint_label,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import AUDIT_CHECKPOINT

    journal = MemoryJournal()
    seq, head = journal.append(journal.event())
    with _open(settings) as session:  # a token as the previous release left it: a key, per-journal checkpoints
        store = _store(session, settings.token_label)
        signer = CheckpointSigner(session, store)
        version, _created = signer.signing_version("alice")
        store.objects.write(AUDIT_CHECKPOINT, checkpoint_label(journal.journal_id), {
            "journal_id": journal.journal_id, "seq": seq, "head_hash": head, "signed_at": "2025-01-01T00:00:00Z",
            "signature": signer.sign(version, journal.journal_id, seq, head, "2025-01-01T00:00:00Z"),
            "key_id": version.key_id, "key_version": 1, "public_key_fingerprint": version.public_key_fingerprint})
    stale = MemoryJournal(journal.journal_id)
    stale.records = []
    refused(capsys, settings, hsm_token, "journal_behind", stale.intent(hsm_token.label))
    result = run(capsys, hsm_token, journal)
    assert not result.get("failed"), result
    pin = pin_of(settings)
    assert pin["adopted_from_legacy"] is True and pin["journal_id"] == journal.journal_id
    report = verify_report(capsys, hsm_token)
    assert report["token_checkpoints"][journal.journal_id]["seq"] == pin["seq"]
    run(capsys, hsm_token, journal, name="k2")
    assert pin_of(settings)["adopted_from_legacy"] is True


# ---- row 8: rollover -----------------------------------------------------------------------------------------


def test_rollover_accepted_from_the_pinned_head_or_a_later_one(capsys, hsm_token, settings):
    journal = MemoryJournal()
    run(capsys, hsm_token, journal)
    run(capsys, hsm_token, journal, name="k2")
    pin = pin_of(settings)
    assert journal.head[0] > pin["seq"]  # the outcome and checkpoint records lie after the pinned intent
    new = MemoryJournal()
    # the genesis must name the outcomes the token remembers of the old journal's tasks
    context = new.rollover_genesis(journal)
    context["journal_rollover"]["previous_proof"] = journal.proof(hsm_token.label, journal.head[0])
    message = refused(capsys, settings, hsm_token, "journal_mismatch", context, module="audit_rollover",
                      reason="archive")
    assert "previous_journal.outcomes" in message
    new = MemoryJournal()
    context = new.rollover_genesis(journal, outcomes=pin["outcomes"])
    # the old journal's head lies after the pin: the proof of extension comes with the rollover
    refused(capsys, settings, hsm_token, "journal_mismatch", context, module="audit_rollover", reason="archive")
    context["journal_rollover"]["previous_proof"] = journal.proof(hsm_token.label, journal.head[0])
    # only audit_rollover starts a new journal
    message = refused(capsys, settings, hsm_token, "journal_mismatch", context, module="key_generate", name="k3")
    assert "audit_rollover" in message
    result = run(capsys, hsm_token, new, context=context, module="audit_rollover", reason="archive")
    assert not result.get("failed"), result
    rolled = pin_of(settings)
    assert rolled["journal_id"] == new.journal_id and rolled["revision"] == pin["revision"] + 1
    assert rolled["previous_journal"] == {"journal_id": journal.journal_id, "head_seq": journal.head[0],
                                          "head_hash": journal.head[1]}
    assert rolled["pinned_since"] == rolled["signed_at"]
    # the new journal is the token's now: the old one is refused, the new one extends
    refused(capsys, settings, hsm_token, "journal_mismatch", journal.intent(hsm_token.label))
    assert not run(capsys, hsm_token, new, name="k4").get("failed")
    # a lost journal: the rollover names exactly the pinned head
    lost = MemoryJournal()
    pinned = pin_of(settings)
    context = lost.rollover_genesis({"journal_id": pinned["journal_id"], "head_seq": pinned["seq"],
                                     "head_hash": pinned["head_hash"]}, lost=True, outcomes=pinned["outcomes"])
    assert not run(capsys, hsm_token, lost, context=context, module="audit_rollover", reason="lost").get("failed")
    assert pin_of(settings)["journal_id"] == lost.journal_id


def test_rollover_refused_when_it_does_not_continue_the_pin(capsys, hsm_token, settings):
    journal = MemoryJournal()
    run(capsys, hsm_token, journal)
    other = MemoryJournal()
    other.append(other.event())
    # names another journal
    message = refused(capsys, settings, hsm_token, "journal_mismatch", MemoryJournal().rollover_genesis(other),
                      module="audit_rollover", reason="r")
    assert "rollover" in message
    # names the pinned journal but a forged head (a rewritten old journal)
    forged = MemoryJournal(journal.journal_id)
    for _round in range(journal.head[0] + 2):
        forged.append(forged.event("key-update", phase="outcome"))
    context = MemoryJournal().rollover_genesis(forged)
    context["journal_rollover"]["previous_proof"] = forged.proof(hsm_token.label, forged.head[0])
    refused(capsys, settings, hsm_token, "journal_mismatch", context, module="audit_rollover", reason="r")
    # a genesis that is not this task's intent
    genuine = MemoryJournal().rollover_genesis({"journal_id": journal.journal_id, "head_seq": pin_of(settings)["seq"],
                                                "head_hash": pin_of(settings)["head_hash"]})
    genuine["intent_hash"] = journal.records[0][1]
    refused(capsys, settings, hsm_token, "journal_mismatch", genuine, module="audit_rollover", reason="r")


# ---- the checkpoint key ----------------------------------------------------------------------------------------


def _destroy_version(settings, name, number):
    """key_destroy's logic on a version whose retention has passed (the destruction rules of the module)."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._approvals import ApprovalOutcome
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_destruction import (
        apply_destruction,
        plan_destruction,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import utc_now
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy

    with _open(settings) as session:
        store = _store(session, settings.token_label)
        later = utc_now() + timedelta(days=400 * 100)
        plans = plan_destruction(store, name, number, False, load_policy({}), later)
        apply_destruction(store, plans, AuditContext("alice", "test", "run"),
                          ApprovalOutcome(required=0, break_glass=False, legacy_approved_by="bob", change_ref="CHG-1"),
                          False)


def test_checkpoint_key_rotation_keeps_old_checkpoints_verifiable(capsys, hsm_token, settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import (
        follow_certificates,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._signatures import (
        load_public_key as load_signer_public_key,
    )

    journal = MemoryJournal()
    first = run(capsys, hsm_token, journal)["audit_checkpoint"]
    rotated = run(capsys, hsm_token, journal, module="key_rotate", name=["audit-checkpoint"], force=True)
    assert not rotated.get("failed") and rotated["rotated"][0]["new_version"] == 2, rotated
    [event] = [e for e in rotated["audit_events"] if e["event"]["action"] == "key-rotate"]
    new_id = rotated["rotated"][0]["new_id"]
    assert event["key"]["certificate_label"] == "audit-checkpoint-certificate:" + new_id
    after = rotated["audit_checkpoint"]
    assert after["key_id"] == new_id and after["key_version"] == 2
    report = verify_report(capsys, hsm_token)
    [certificate] = report["checkpoint_certificates"]
    assert certificate["name"] == "audit-checkpoint" and certificate["previous_fingerprint"] == \
        first["public_key_fingerprint"]
    old_key = load_signer_public_key(report["checkpoint_public_keys"][first["key_id"]])
    follow_certificates(old_key, report["checkpoint_certificates"], after["public_key_fingerprint"],
                        name="audit-checkpoint")  # the old version certifies the new one
    assert not run(capsys, hsm_token, journal, name="k2").get("failed")

    _destroy_version(settings, "audit-checkpoint", 1)
    report = verify_report(capsys, hsm_token)
    assert first["key_id"] in report["checkpoint_public_keys"]  # kept in the history after the destruction
    verify(report["checkpoint_public_keys"][first["key_id"]], first["signature"], payload_of(first))
    verify(report["checkpoint_public_keys"][new_id], after["signature"], payload_of(after))
    assert not run(capsys, hsm_token, journal, name="k3").get("failed")


def test_key_replaced_outside_rotation_is_refused(capsys, hsm_token, settings):
    from pkcs11 import Attribute

    from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import CheckpointSigner

    journal = MemoryJournal()
    run(capsys, hsm_token, journal)
    with _open(settings) as session:  # with the PIN: the key and its metadata destroyed, a new one generated
        for obj in session.get_objects({Attribute.LABEL: "audit-checkpoint:v1"}):
            obj.destroy()
    with _open(settings) as session:
        store = _store(session, settings.token_label)
        CheckpointSigner(session, store).signing_version("mallory")
    message = refused(capsys, settings, hsm_token, "checkpoint_key_replaced", journal.intent(hsm_token.label))
    assert "audit_rollover" in message


def test_new_key_is_cosigned_by_the_pinned_key(capsys, hsm_token, settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import CheckpointSigner
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import utc_now

    journal = MemoryJournal()
    first = run(capsys, hsm_token, journal)["audit_checkpoint"]
    with _open(settings) as session:  # a second active version (as an interrupted rotation leaves it)
        store = _store(session, settings.token_label)
        key = CheckpointSigner(session, store).key
        store.generate(key.spec(), 2, "alice", utc_now())
    result = run(capsys, hsm_token, journal, name="k2")
    checkpoint = result["audit_checkpoint"]
    assert checkpoint["key_version"] == 2 and checkpoint["previous_key_id"] == first["key_id"], result
    report = verify_report(capsys, hsm_token)
    verify(report["checkpoint_public_keys"][first["key_id"]], checkpoint["previous_signature"],
           payload_of(checkpoint))
    verify(report["checkpoint_public_keys"][checkpoint["key_id"]], checkpoint["signature"], payload_of(checkpoint))
    # only a new key's first checkpoint is co-signed
    assert "previous_key_id" not in run(capsys, hsm_token, journal, name="k3")["audit_checkpoint"]


# ---- two controllers on one journal: an intent overtaken at the token by a later one ---------------------------


def test_intent_overtaken_by_a_later_one_is_anchored_with_a_proof_through_the_pin(capsys, hsm_token, settings):
    journal = MemoryJournal()
    run(capsys, hsm_token, journal)
    first = journal.intent(hsm_token.label)  # controller A journals its intent ...
    second = journal.intent(hsm_token.label)  # ... then B journals its own, and B reaches the token first
    result = run_main(capsys, "key_generate", dict(connection(hsm_token, name="b"), audit_context=second))
    assert not result.get("failed"), result
    pin = pin_of(settings)
    assert pin["seq"] == second["intent_seq"]
    # A's proof ends at its intent, before the pin: refused as behind, nothing changed
    refused(capsys, settings, hsm_token, "journal_behind", first, name="a")
    # proved again up to the journal's end, covering A's intent and the pin: anchored, the pin is not moved back
    start = first["journal_proof"]["start_seq"]
    first["journal_proof"] = {"start_seq": start, "start_hash": journal.records[start - 1][1],
                              "digests": [digest for _line, _hash, digest in journal.records[start:]]}
    result = run_main(capsys, "key_generate", dict(connection(hsm_token, name="a"), audit_context=first))
    assert not result.get("failed"), result
    assert result["audit_checkpoint"]["seq"] == first["intent_seq"]
    # the pin stays at B's intent and remembers A's outcome as well
    assert pin_of(settings) == dict(pin, revision=pin["revision"] + 1,
                                    outcomes=pin["outcomes"] + [outcome_of(first["intent_seq"], result["audit_events"])])
    # a proof that passes through the pin but not through A's intent as journaled is refused
    first["intent_hash"] = "0" * 64
    refused(capsys, settings, hsm_token, "journal_rewritten", first, name="a2")
