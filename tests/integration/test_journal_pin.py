"""The token pins its journal: each way of taking an action off the record is refused at the next lifecycle task
(nothing changed on the token) or reported by audit_verify; a rollover is the one explicit way to a new journal.

Journals are read, and rewritten as an attacker would, by this file's own code (docs/audit.md, format 2), not
by the collection's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PKCS11_MODULE, REPO, make_token

JOURNAL_REFUSALS = ("journal_mismatch", "journal_behind", "journal_rewritten", "journal_pin_missing",
                    "checkpoint_key_replaced")


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def rechain(records):
    """Lines of a valid format 2 chain over ``records`` (renumbered), as someone rewriting history would make."""
    prev, lines = "0" * 64, []
    for seq, record in enumerate(records, 1):
        content = ',"seq":%d,"journal_id":"%s","record_id":"%s","recorded_at":"%s","event":%s' % (
            seq, record["journal_id"], record["record_id"], record["recorded_at"],
            json.dumps(record["event"], sort_keys=True, separators=(",", ":")))
        digest = _sha256(content.encode("ascii"))
        record_hash = _sha256(bytes.fromhex(prev) + bytes.fromhex(digest))
        lines.append('{"prev_hash":"%s"%s,"hash":"%s"}' % (prev, content, record_hash))
        prev = record_hash
    return "\n".join(lines) + "\n"


def phase(record):
    return record["event"]["keylifecycle"].get("phase")


def action(record):
    return record["event"]["event"]["action"]


def assert_refused(result, kinds=JOURNAL_REFUSALS):
    assert result.task.get("failed") is True, result.task
    assert result.task.get("error_kind") in kinds, result.task
    assert "Nothing was changed" in result.task["msg"] or "nothing was changed" in result.task["msg"], result.task


def verify(runner, **args):
    return runner.task("audit_verify", dict({"fail_on_error": False}, **args)).task


def destroy_objects(token, *prefixes):
    proc = subprocess.run([sys.executable, str(Path(REPO) / "tests" / "helpers" / "destroy_objects.py"), PKCS11_MODULE,
                           token.label, str(token.pin_file), *prefixes], capture_output=True, text=True,
                          check=True, env={**os.environ, **token.env})
    return proc.stdout.split()


@pytest.fixture
def pinned(runner, token):
    """A token that pinned the runner's journal: two generate tasks."""
    for name in ("a", "b"):
        assert runner.task("key_generate", {"name": name}).rc == 0
    return runner


def test_deleted_journal_is_refused_and_a_rollover_continues(pinned, token):
    journal_id = pinned.journal_records()[0]["journal_id"]
    pinned.journal.unlink()
    before = token.objects()
    refused = pinned.task("key_generate", {"name": "c"})
    assert_refused(refused, ("journal_mismatch",))
    assert journal_id in refused.task["msg"] and str(pinned.journal) in refused.task["msg"]
    assert "audit_rollover" in refused.task["msg"]
    assert token.objects() == before

    rolled = pinned.task("audit_rollover", {"reason": "journal lost with its disk"})
    assert rolled.rc == 0 and not rolled.task.get("failed"), rolled.task
    assert rolled.task["previous_journal"]["journal_id"] == journal_id
    assert rolled.task["previous_journal"]["lost"] is True
    # the refused attempt's journal was kept aside, not overwritten
    assert os.path.exists(rolled.task["superseded_journal"]["path"])
    records = pinned.journal_records()
    assert action(records[0]) == "audit-journal-rollover" and phase(records[0]) == "intent"
    assert records[0]["event"]["keylifecycle"]["previous_journal"]["journal_id"] == journal_id
    assert pinned.task("key_generate", {"name": "c"}).rc == 0
    report = verify(pinned)
    assert report["ok"] is True, report["problems"]


def test_rollover_of_an_intact_journal_verifies_across(pinned, token):
    old_records = pinned.journal_records()
    rolled = pinned.task("audit_rollover", {"reason": "yearly archive"})
    assert rolled.rc == 0 and not rolled.task.get("failed"), rolled.task
    previous = rolled.task["previous_journal"]
    assert previous["lost"] is False and previous["head_seq"] == len(old_records)
    kept = previous["path"]
    assert os.path.exists(kept)
    with open(kept, encoding="ascii") as handle:
        assert [json.loads(line)["record_id"] for line in handle] == [r["record_id"] for r in old_records]
    assert pinned.task("key_generate", {"name": "c"}).rc == 0
    report = verify(pinned)
    assert report["ok"] is True, report["problems"]
    assert [j["journal_id"] for j in report["journals"]][-1] == old_records[0]["journal_id"]


def _rewrite_task_b(runner, alter=None):
    """Task b's audit events and checkpoint record removed (``alter`` None) or its events altered in place; the
    chain re-hashed. Its intent and outcome records stay, so the token's pin (b's intent) still lies on the chain."""
    records = runner.journal_records()
    b_intent = next(r["record_id"] for r in records if phase(r) == "intent"
                    and r["event"]["keylifecycle"].get("requested_keys") == ["b"])
    b_seq = next(r["seq"] for r in records if r["record_id"] == b_intent)
    mine = [r for r in records if r["event"]["keylifecycle"].get("intent_id") == b_intent and phase(r) == "change"]
    assert any(action(r) == "audit-checkpoint" for r in mine) and any(action(r) == "key-generate" for r in mine)
    if alter is None:
        records = [r for r in records if r not in mine]
    else:
        for record in mine:
            if action(record) == "key-generate":
                alter(record["event"])
    runner.journal.write_text(rechain(records))
    return b_seq


def test_a_finished_tasks_events_are_remembered_by_the_token_and_found_by_audit_verify(pinned, token):
    report = verify(pinned)
    assert report["ok"] is True and report["outcomes_verified"] == 2, report
    pin = report["token_pin"]
    assert [o["intent_seq"] for o in pin["outcomes"]] == [r["seq"] for r in pinned.journal_records()
                                                          if phase(r) == "intent"]


def test_deleted_events_of_the_last_task_are_reported_by_audit_verify(pinned, token):
    b_seq = _rewrite_task_b(pinned)
    report = verify(pinned)
    assert report["ok"] is False and report["outcomes_verified"] == 1, report
    assert any("task whose intent is record %d are not in the journal" % b_seq in p for p in report["problems"]), \
        report["problems"]
    # the pin's intent still lies on the chain, so the next task runs (a concurrent controller may journal its
    # outcome after a later intent: the token cannot refuse on a missing one); the token keeps remembering b's
    assert pinned.task("key_generate", {"name": "c"}).rc == 0
    report = verify(pinned)
    assert report["ok"] is False and report["outcomes_verified"] == 2, report
    assert any("record %d are not in the journal" % b_seq in p for p in report["problems"]), report["problems"]


def test_altered_events_of_a_finished_task_are_reported_by_audit_verify(pinned, token):
    def alter(event):
        event["keylifecycle"]["reason"] = "generated by someone else"

    _rewrite_task_b(pinned, alter)
    report = verify(pinned)
    assert report["ok"] is False and report["outcomes_verified"] == 1, report
    assert any("are not the audit events the token remembers" in p for p in report["problems"]), report["problems"]


def test_journal_deleted_while_the_task_runs_fails_the_outcome_loudly(pinned, token, tmp_path):
    wrapper = tmp_path / "python-that-deletes-the-journal"
    wrapper.write_text("#!/bin/sh\nrm -f '%s'\nexec '%s' \"$@\"\n" % (pinned.journal, sys.executable))
    wrapper.chmod(0o755)
    result = pinned.task("key_generate", {"name": "c"}, "-e", "ansible_python_interpreter=%s" % wrapper)
    assert result.task["failed"] is True
    assert "deleted" in result.task["msg"] and "outcome" in result.task["msg"], result.task["msg"]
    assert not pinned.journal.exists()  # not silently recreated
    assert "c:v1" in [o["label"] for o in token.key_objects()]  # the module did run: that is why it is loud


def test_diverted_journal_is_refused(pinned, token, tmp_path):
    kept = pinned.journal.read_text()
    before = token.objects()
    private = tmp_path / "private.jsonl"
    refused = pinned.task("key_generate", {"name": "c"}, "-e", "keylifecycle_audit_journal=%s" % private)
    assert_refused(refused, ("journal_mismatch",))
    assert token.objects() == before and pinned.journal.read_text() == kept


def test_copy_diverted_journal_leaves_the_environment_journal_behind(pinned, token, tmp_path):
    private = tmp_path / "private.jsonl"
    shutil.copy(pinned.journal, private)
    assert pinned.task("key_generate", {"name": "c"}, "-e", "keylifecycle_audit_journal=%s" % private).rc == 0
    before = token.objects()
    refused = pinned.task("key_generate", {"name": "d"})
    assert_refused(refused, ("journal_behind",))
    assert token.objects() == before
    report = verify(pinned)
    assert report["ok"] is False


def _rewrite_without_b(runner):
    """Delete task b's records and every checkpoint record, and re-hash the chain."""
    records = runner.journal_records()
    b_intent = next(r["record_id"] for r in records if phase(r) == "intent"
                    and r["event"]["keylifecycle"].get("requested_keys") == ["b"])
    kept = [r for r in records if r["record_id"] != b_intent
            and r["event"]["keylifecycle"].get("intent_id") != b_intent and action(r) != "audit-checkpoint"]
    runner.journal.write_text(rechain(kept))


def test_rewritten_history_cannot_be_reanchored_with_no_op_tasks(pinned, token):
    assert pinned.task("key_generate", {"name": "c"}).rc == 0
    _rewrite_without_b(pinned)
    before = token.objects()
    for _round in range(3):
        assert_refused(pinned.task("key_generate", {"name": "a"}))  # a no-op, had it run
    assert token.objects() == before
    assert verify(pinned)["ok"] is False


def test_rewritten_history_is_refused_after_the_checkpoint_key_was_replaced(pinned, token):
    _rewrite_without_b(pinned)
    assert destroy_objects(token, "audit-checkpoint:")  # the signing key and its metadata
    before = token.objects()
    for _round in range(2):
        assert_refused(pinned.task("key_generate", {"name": "a"}))
    assert token.objects() == before


def test_deleting_the_pin_and_the_checkpoint_key_does_not_make_a_fresh_token(pinned, token):
    _rewrite_without_b(pinned)
    assert destroy_objects(token, "audit-checkpoint", "audit-journal")
    before = token.objects()
    assert_refused(pinned.task("key_generate", {"name": "a"}), ("journal_pin_missing",))
    assert token.objects() == before


def test_module_without_its_action_plugin_changes_nothing(pinned, token, collections_path, tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    source = collections_path / "ansible_collections" / "secops" / "keylifecycle" / "plugins" / "modules"
    shutil.copy(source / "key_generate.py", library / "kl_generate_copy.py")
    before = token.objects()
    play = [{"hosts": "hsm", "gather_facts": False, "environment": token.env, "tasks": [{
        "name": "copied module", "kl_generate_copy": dict(token.connection(), name="x"), "register": "copied",
        "ignore_errors": True}, {
        "ansible.builtin.copy": {"content": "{{ copied | to_json }}", "dest": str(tmp_path / "copied.json")}}]}]
    path = tmp_path / "copied.yml"
    path.write_text(yaml.safe_dump(play))
    pinned.playbook(path, extra_env={"ANSIBLE_LIBRARY": str(library)})
    copied = json.loads((tmp_path / "copied.json").read_text())
    assert copied["failed"] is True and copied["error_kind"] == "journal_required", copied

    # run with python directly, with a made-up intent that does not extend the token's head
    args = {"ANSIBLE_MODULE_ARGS": dict(token.connection(), name="y", audit_context={
        "operator": "mallory", "operator_source": "controller_os_user", "run_id": "r-1",
        "journal_id": pinned.journal_records()[0]["journal_id"], "intent_id": "6f1c1f4e-7a55-4f0e-9a43-0c1b8e7c2d11",
        "intent_seq": 1000, "intent_hash": "ab" * 32,
        "journal_proof": {"start_seq": 1000, "start_hash": "ab" * 32, "digests": []}})}
    (tmp_path / "args.json").write_text(json.dumps(args))
    proc = subprocess.run([sys.executable, str(source / "key_generate.py"), str(tmp_path / "args.json")],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, **token.env, "PYTHONPATH": str(collections_path)})
    direct = json.loads(proc.stdout)
    assert direct["failed"] is True and direct["error_kind"] in JOURNAL_REFUSALS, direct
    assert token.objects() == before


def test_two_tokens_keep_their_own_default_journal_under_ansible_home(runner, token, tmp_path):
    other = make_token(tmp_path / "hsm-other", "kl-other")
    inventory = tmp_path / "default-journal.yml"
    inventory.write_text(yaml.safe_dump({"hsm": {"hosts": {"test-hsm": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    ansible_home = tmp_path / "ansible-home"
    env = {"KEYLIFECYCLE_AUDIT_STATE_DIR": "", "ANSIBLE_HOME": str(ansible_home)}
    play = []
    for which in (token, other, token, other):
        play.append({"hosts": "hsm", "gather_facts": False, "environment": which.env, "tasks": [
            {"secops.keylifecycle.key_generate": dict(which.connection(), name="k-%s" % which.label)},
            {"secops.keylifecycle.audit_verify": dict(which.connection()), "register": "report"},
            {"ansible.builtin.assert": {"that": ["report.ok", "report.records > 0"]}}]})
    path = tmp_path / "two-tokens.yml"
    path.write_text(yaml.safe_dump(play))
    proc = runner.playbook(path, extra_env=env, inventory=inventory)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    journals = sorted((ansible_home / "secops_keylifecycle" / "journals").glob("*.jsonl"))
    assert len(journals) == 2, journals
    for journal in journals:
        tokens = {json.loads(line)["event"].get("key", {}).get("token") for line in journal.read_text().splitlines()}
        assert len(tokens - {None}) == 1, (journal, tokens)


def test_old_checkpoints_verify_after_the_checkpoint_key_is_rotated_and_destroyed(pinned, token, clock):
    rotated = pinned.task("key_rotate", {"name": "audit-checkpoint", "force": True})
    assert rotated.rc == 0, rotated.output
    assert pinned.task("key_generate", {"name": "c"}).rc == 0
    clock.advance(days=400)
    destroyed = pinned.task("key_destroy", {"name": "audit-checkpoint", "version": 1})
    assert destroyed.rc == 0, destroyed.output
    assert not [o for o in token.objects() if o["label"] == "audit-checkpoint:v1" and o["class"] != "DATA"]
    report = verify(pinned)
    assert report["ok"] is True, report["problems"]
    checkpoints = [r for r in pinned.journal_records() if action(r) == "audit-checkpoint"]
    signers = {r["event"]["keylifecycle"]["checkpoint"]["key_version"] for r in checkpoints}
    assert signers == {1, 2}
    assert report["checkpoints_verified"] == len(checkpoints)


def test_full_disk_mid_outcome_then_torn_tail_repaired(runner, token, tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        pytest.skip("a tmpfs cannot be mounted here (%s): the full-disk case needs root" % proc.stderr.strip())
    try:
        journal = mount / "journal.jsonl"
        inventory = yaml.safe_load(runner.inventory.read_text())
        inventory["hsm"]["hosts"]["test-hsm"]["keylifecycle_audit_journal"] = str(journal)
        runner.inventory.write_text(yaml.safe_dump(inventory))
        assert runner.task("key_generate", {"name": "first"}).rc == 0
        # leave two pages: the intent fits, the outcome of 20 keys does not
        stat = os.statvfs(mount)
        filler = mount / "filler"
        filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 2 * stat.f_frsize))
        failed = runner.task("key_generate", {"keys": [{"name": "many-%02d" % n} for n in range(20)]})
        assert failed.task["failed"] is True and "outcome" in failed.task["msg"], failed.task
        assert not journal.read_bytes().endswith(b"\n")  # a torn last line
        filler.unlink()
        assert runner.task("key_generate", {"name": "after"}).rc == 0
        lines = journal.read_text().splitlines()
        repairs = [json.loads(line) for line in lines if '"action":"audit-journal-repair"' in line]
        assert len(repairs) == 1 and repairs[0]["event"]["keylifecycle"]["repair"]["length"] > 0
        # the 20 keys' events never reached the journal, and the token remembers them: audit_verify says so
        lost = [r["seq"] for r in map(json.loads, lines) if phase(r) == "intent"][1]  # first, many, after
        report = verify(runner)
        assert report["ok"] is False and report["outcomes_missing"] == [lost], report
        assert any("the 20 audit event(s) of the task whose intent is record %d are not in the journal" % lost in p
                   for p in report["problems"]), report["problems"]
        # a rollover declares the loss in the new journal's genesis record; then the chain verifies, with it
        rolled = runner.task("audit_rollover", {"reason": "outcome lost to a full disk"})
        assert rolled.rc == 0 and rolled.task["previous_journal"]["lost_outcomes"] == [lost], rolled.task
        report = verify(runner)
        assert report["ok"] is True, report["problems"]
        assert report["journals"][1]["lost_outcomes"] == [lost], report["journals"]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_check_mode_needs_no_intent_and_changes_nothing(pinned, token):
    before = token.objects()
    result = pinned.task("key_generate", {"name": "c"}, "--check")
    assert result.rc == 0 and result.task["changed"] is True
    assert token.objects() == before


def test_playbook_rollover_needs_its_approval_where_the_policy_says(pinned, token, tmp_path):
    policy = {"journal_rollover_requires_approval": True}
    kept = pinned.journal.read_text()
    refused = pinned.task("audit_rollover", {"reason": "archive", "policy": policy})
    assert refused.task["failed"] is True and "approved_by" in refused.task["msg"]
    assert pinned.journal.read_text() == kept  # the refused attempt is kept aside, the journal is unchanged
    assert pinned.task("key_generate", {"name": "c"}).rc == 0  # and it is still the token's journal
    done = pinned.task("audit_rollover", {"reason": "archive", "policy": policy, "approved_by": "second-person",
                                          "change_ref": "CHG-1"})
    assert done.rc == 0, done.output


def test_a_shared_journal_is_left_in_place_by_a_rollover(runner, token, tmp_path, collections_path, clock):
    """Two tokens write one journal. A rollover never moves it aside under the other token: refused at its path; a
    journal of its own continues it where it is (found beside, or named with previous_journal)."""
    from tests.integration.conftest import Runner

    other = Runner(tmp_path, collections_path, make_token(tmp_path / "hsm-other", "kl-other"), clock)
    other.count = 100  # its own result and play files
    assert runner.task("key_generate", {"name": "a"}).rc == 0
    assert other.task("key_generate", {"name": "b"}).rc == 0
    shared = runner.journal.read_text()
    refused = runner.task("audit_rollover", {"reason": "archive"})
    assert refused.task.get("error_kind") == "journal_shared", refused.task.get("msg")
    assert "kl-other" in refused.task["msg"] and "previous_journal" in refused.task["msg"]
    journals = sorted(p.name for p in runner.journal.parent.iterdir() if p.suffix == ".jsonl")
    assert runner.journal.read_text() == shared and journals == ["journal.jsonl"]

    own = "keylifecycle_audit_journal=%s" % (runner.journal.parent / "kl-test.jsonl")
    assert runner.task("key_generate", {"name": "c"}, "-e", own).task["error_kind"] == "journal_mismatch"
    rolled = runner.task("audit_rollover", {"reason": "a journal of its own"}, "-e", own)
    assert rolled.rc == 0, rolled.task
    previous = rolled.task["previous_journal"]
    assert previous["path"] == str(runner.journal) and previous["in_place"] is True and previous["lost"] is False
    assert runner.task("key_generate", {"name": "c"}, "-e", own).rc == 0
    assert other.task("key_generate", {"name": "d"}).rc == 0  # the shared journal is still the other token's
    mine = runner.task("audit_verify", {"fail_on_error": False}, "-e", own).task
    assert mine["ok"] is True and mine["journals"][1]["continued"] > 0, mine
    theirs = other.task("audit_verify", {"fail_on_error": False}).task
    assert theirs["ok"] is True, theirs["problems"]

    # the other token, named explicitly, and a path that does not hold its journal
    elsewhere = "keylifecycle_audit_journal=%s" % (tmp_path / "elsewhere" / "kl-other.jsonl")
    (tmp_path / "elsewhere").mkdir()
    wrong = other.task("audit_rollover", {"reason": "own", "previous_journal": str(tmp_path / "elsewhere" / "x")},
                       "-e", elsewhere)
    assert wrong.task["failed"] is True and wrong.task["error_option"] == "previous_journal", wrong.task
    moved = other.task("audit_rollover", {"reason": "own", "previous_journal": str(runner.journal)}, "-e", elsewhere)
    assert moved.rc == 0 and moved.task["previous_journal"]["path"] == str(runner.journal), moved.task
    assert other.task("key_generate", {"name": "e"}, "-e", elsewhere).rc == 0


def test_a_rollover_whose_result_never_came_back_is_continued_not_declared_lost(pinned, token):
    """The token pinned the new journal but the controller never heard (a lost connection): the new journal was
    kept beside the path as the refused attempt, the old one stayed in place. The next rollover continues the
    journal the token names where it lies, and sets the old one where that journal's genesis says it is kept."""
    old_id = pinned.journal_records()[0]["journal_id"]
    rolled = pinned.task("audit_rollover", {"reason": "yearly archive"})
    assert rolled.rc == 0, rolled.task
    new_id, kept = rolled.task["journal_id"], rolled.task["previous_journal"]["path"]
    # the state a lost result leaves: the new journal aside as an attempt, the old one back at the path
    attempt = pinned.journal.parent / ("journal.rollover-%s.jsonl" % new_id)
    os.replace(pinned.journal, attempt)
    os.replace(kept, pinned.journal)

    again = pinned.task("audit_rollover", {"reason": "the last rollover's result was lost"})
    assert again.rc == 0, again.task
    previous = again.task["previous_journal"]
    assert previous["journal_id"] == new_id and previous["lost"] is False and previous["path"] == str(attempt)
    assert again.task["superseded_journal"] == {"journal_id": old_id, "path": kept}
    assert pinned.task("key_generate", {"name": "c"}).rc == 0
    report = verify(pinned)
    assert report["ok"] is True, report["problems"]
    assert [j["journal_id"] for j in report["journals"]] == [again.task["journal_id"], new_id, old_id]
