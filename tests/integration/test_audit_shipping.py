"""The audit callback ships the journal to rsyslog (TLS) and PostgreSQL (TLS) on loopback: once, and after outages."""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml

from tests.conftest import make_token


@pytest.fixture
def shipping(runner, rsyslog, postgres):
    """Callback enabled for every ansible-playbook run of this test; both stores up at the start."""
    for server in (rsyslog, postgres):
        if not _up(server):
            server.start()
    env = {
        "ANSIBLE_CALLBACKS_ENABLED": "secops.keylifecycle.audit",
        "KEYLIFECYCLE_AUDIT_SYSLOG_HOST": "localhost",
        "KEYLIFECYCLE_AUDIT_SYSLOG_PORT": str(rsyslog.port),
        "KEYLIFECYCLE_AUDIT_SYSLOG_CA_FILE": rsyslog.ca_file,
        "KEYLIFECYCLE_AUDIT_POSTGRESQL_DSN": postgres.dsn,
        "KEYLIFECYCLE_AUDIT_TIMEOUT": "10",  # the stores answer: generous, so a busy machine still answers in time
        "KEYLIFECYCLE_AUDIT_RETRY_AFTER": "0",
    }
    original = runner.env
    runner.env = lambda extra=None: original(dict(env, **(extra or {})))
    return runner


def _up(server):
    from tests.servers import is_listening

    return is_listening(server.port)


def journal_ids(runner):
    return [r["record_id"] for r in runner.journal_records()]


def syslog_ids(rsyslog, journal_id):
    ids = []
    for message in rsyslog.messages():
        if journal_id not in message:
            continue  # other tests' messages share this collector
        body = message[message.index("{"):]
        record = json.loads(body)
        if record["journal_id"] == journal_id:
            ids.append(record["record_id"])
    return ids


def postgres_ids(postgres, journal_id):
    return [str(row["record_id"]) for row in postgres.rows() if row["journal_id"] == journal_id]


def write_play(runner, token, tasks, name):
    play = [{"hosts": "hsm", "gather_facts": False, "environment": token.env, "tasks": tasks}]
    path = runner.tmp_path / name
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    return path


def generate(token, name):
    return {"name": "generate %s" % name, "secops.keylifecycle.key_generate": dict(token.connection(), name=name)}


def assert_shipped_once(runner, rsyslog, postgres):
    expected = journal_ids(runner)
    journal_id = runner.journal_records()[0]["journal_id"]
    rsyslog.wait_for(len(expected), contains=journal_id)
    assert sorted(syslog_ids(rsyslog, journal_id)) == sorted(expected)
    assert sorted(postgres_ids(postgres, journal_id)) == sorted(expected)
    return expected


def test_every_record_reaches_both_stores_once(shipping, token, rsyslog, postgres, tmp_path):
    connection = token.connection()
    recipient = make_token(tmp_path / "recipient", "kl-recipient")  # a recipient with its own token
    at_recipient = {"environment": recipient.env}
    shared = {"distributable": True, "recipients": ["svc"]}
    tasks = [
        {"name": "generate a",
         "secops.keylifecycle.key_generate": dict(connection, name="a", retention_period="1d", **shared)},
        generate(token, "b"),
        {"name": "update a",
         "secops.keylifecycle.key_generate": dict(connection, name="a", retention_period="2d", **shared)},
        {"name": "rotate a", "secops.keylifecycle.key_rotate": dict(connection, name=["a"], force=True)},
        {"name": "read the HSM's package signer", "register": "hsm_info",
         "secops.keylifecycle.key_info": dict(connection, name=[])},
        dict(at_recipient, name="enroll the recipient", register="enrollment",
             **{"secops.keylifecycle.recipient_enroll": dict(recipient.connection(), package_signer={
                 "public_key_pem": "{{ hsm_info.package_signer.public_key_pem }}"})}),
        {"name": "the Security Officer approves it", "secops.keylifecycle.recipient_approve": dict(
            connection, so_pin_file=str(token.so_pin_file), recipients=[
                {"name": "svc", "public_key_pem": "{{ enrollment.transport_key.public_key_pem }}"}])},
        {"name": "distribute", "register": "distribution", "secops.keylifecycle.key_distribute": dict(
            connection, oaep_hash="sha1", recipients=[
                {"name": "svc", "public_key_pem": "{{ enrollment.transport_key.public_key_pem }}"}])},
        dict(at_recipient, name="install at the recipient", **{"secops.keylifecycle.key_install": dict(
            recipient.connection(), recipient="svc", packages="{{ distribution.recipients[0].packages }}")}),
    ]
    proc = shipping.playbook(write_play(shipping, token, tasks, "ship.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shipping.clock.advance(days=3)  # a's first version is past its 2-day retention
    later = [
        {"name": "destroy expired", "secops.keylifecycle.key_destroy": dict(connection, all_expired=True)},
        {"name": "generate a again (nothing to do)",
         "secops.keylifecycle.key_generate": dict(connection, name="a", **shared)},
    ]
    proc = shipping.playbook(write_play(shipping, token, later, "ship-later.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shipped = assert_shipped_once(shipping, rsyslog, postgres)
    actions = {r["event"]["event"]["action"] for r in shipping.journal_records()}
    assert actions == {"key-generate", "key-update", "key-rotate", "key-destroy", "audit-checkpoint",
                       "transport-key-enroll", "package-signer-pin", "recipient-approve", "key-distribute",
                       "key-install"}
    assert len(shipped) == len(shipping.journal_records()) >= 30  # 9 tasks: intents, changes, checkpoints, outcomes
    assert {r["event"]["key"]["label"] for r in shipping.journal_records()
            if r["event"]["event"]["action"] == "key-install" and r["event"]["keylifecycle"]["phase"] == "change"} \
        >= {"a:v2"}
    # the syslog copy is the journal line byte for byte: its chain can be checked from the collector alone
    lines = shipping.journal.read_text().splitlines()
    journal_id = json.loads(lines[0])["journal_id"]
    bodies = [m[m.index("{"):] for m in rsyslog.messages() if journal_id in m]
    assert bodies == lines
    # a second run of the callback sends nothing again
    again = write_play(shipping, token, [{"name": "nothing", "ansible.builtin.debug": {"msg": "x"}}], "noop.yml")
    assert shipping.playbook(again).returncode == 0
    assert_shipped_once(shipping, rsyslog, postgres)


def test_outage_queues_then_next_run_delivers_once(shipping, token, rsyslog, postgres):
    first = write_play(shipping, token, [generate(token, "a")], "first.yml")
    assert shipping.playbook(first).returncode == 0
    before = assert_shipped_once(shipping, rsyslog, postgres)
    rsyslog.stop()
    postgres.stop()
    second = write_play(shipping, token, [generate(token, "b"), generate(token, "c")], "second.yml")
    proc = shipping.playbook(second)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the play goes on, within the stores' timeouts
    assert "queued for syslog-tls" in proc.stdout + proc.stderr
    assert "queued for postgresql" in proc.stdout + proc.stderr
    journal_id = shipping.journal_records()[0]["journal_id"]
    assert len(journal_ids(shipping)) > len(before)
    rsyslog.start()
    postgres.start()
    assert sorted(postgres_ids(postgres, journal_id)) == sorted(before)  # nothing new arrived while down
    noop = write_play(shipping, token, [{"name": "nothing", "ansible.builtin.debug": {"msg": "x"}}], "noop.yml")
    assert shipping.playbook(noop).returncode == 0
    assert_shipped_once(shipping, rsyslog, postgres)


def test_store_recovering_mid_play_gets_records_in_the_same_run(shipping, token, rsyslog, postgres):
    rsyslog.stop()
    postgres.stop()
    flag = shipping.tmp_path / "stores-are-back"
    path = write_play(shipping, token, [
        generate(token, "early"),
        {"name": "wait for the stores", "ansible.builtin.wait_for": {"path": str(flag), "timeout": 120}},
        generate(token, "late"),
    ], "recover.yml")

    failures = []

    def bring_back():
        """Once the first task's outcome is journaled, start the stores again; the play waits for the flag."""
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    records = shipping.journal_records()
                except ValueError:  # read while a record was being appended: read again
                    records = []
                if any(r["event"]["keylifecycle"]["phase"] == "outcome" for r in records):
                    break
                time.sleep(0.2)
            rsyslog.start()
            postgres.start()
        except Exception as exc:  # pylint: disable=broad-except
            failures.append(exc)
        finally:
            flag.write_text("ok")  # never leave the play waiting for its timeout

    helper = threading.Thread(target=bring_back)
    helper.start()
    proc = shipping.playbook(path)
    helper.join()
    assert not failures, failures
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_shipped_once(shipping, rsyslog, postgres)


def test_hung_store_does_not_hang_the_play(shipping, token, rsyslog, postgres):
    rsyslog.pause()
    try:
        path = write_play(shipping, token, [generate(token, "a")], "hung.yml")
        # a frozen collector cannot answer: the timeout only decides how soon each attempt gives up
        proc = shipping.playbook(path, extra_env={"KEYLIFECYCLE_AUDIT_TIMEOUT": "2"})
        assert proc.returncode == 0
        assert "queued for syslog-tls" in proc.stdout + proc.stderr
    finally:
        rsyslog.resume()
    noop = write_play(shipping, token, [{"name": "nothing", "ansible.builtin.debug": {"msg": "x"}}], "noop.yml")
    assert shipping.playbook(noop).returncode == 0
    assert_shipped_once(shipping, rsyslog, postgres)


def test_audit_verify_compares_the_journal_with_the_acknowledged_copy(shipping, token, rsyslog, postgres):
    """audit_verify compare_store: the PostgreSQL copy matches; a deleted and an altered row are named by id."""
    path = write_play(shipping, token, [generate(token, "a"), generate(token, "b")], "two.yml")
    proc = shipping.playbook(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = assert_shipped_once(shipping, rsyslog, postgres)
    clean = shipping.task("audit_verify", {"compare_store": True, "fail_on_error": False}).task
    assert clean["ok"] is True, clean["problems"]
    comparison = clean["store_comparison"]
    assert comparison["compared"] == len(expected) and comparison["missing_count"] == 0, comparison
    assert postgres.dsn not in json.dumps(clean)  # the DSN (with its password) is never in the result

    deleted, altered = expected[1], expected[2]
    postgres.execute("DELETE FROM keylifecycle_audit WHERE record_id = %s", (deleted,))
    postgres.execute("UPDATE keylifecycle_audit SET line = replace(line, '\"outcome\":\"', '\"outcome\":\"x') "
                     "WHERE record_id = %s", (altered,))
    report = shipping.task("audit_verify", {"compare_store": True, "fail_on_error": False}).task
    assert report["ok"] is False
    comparison = report["store_comparison"]
    assert comparison["missing"] == [deleted] and comparison["altered"] == [altered], comparison
    assert any(deleted in problem and "missing" in problem for problem in report["problems"]), report["problems"]


def test_journal_rollover_during_an_outage_still_delivers_both_journals_once(shipping, token, rsyslog, postgres):
    """Records of the old journal that PostgreSQL had not acknowledged when the journal was rolled over arrive
    later; syslog, which had them, does not get them twice (the cursors follow the journal kept aside)."""
    first = write_play(shipping, token, [generate(token, "a")], "first.yml")
    assert shipping.playbook(first).returncode == 0
    old_journal_id = shipping.journal_records()[0]["journal_id"]
    postgres.stop()
    second = write_play(shipping, token, [generate(token, "b")], "second.yml")
    assert shipping.playbook(second).returncode == 0
    old_ids = journal_ids(shipping)
    rolled = shipping.task("audit_rollover", {"reason": "yearly archive"})
    assert rolled.rc == 0, rolled.task
    postgres.start()
    third = write_play(shipping, token, [generate(token, "c")], "third.yml")
    assert shipping.playbook(third).returncode == 0
    new_ids = journal_ids(shipping)
    new_journal_id = shipping.journal_records()[0]["journal_id"]
    assert new_journal_id != old_journal_id
    assert sorted(postgres_ids(postgres, old_journal_id)) == sorted(old_ids)
    assert sorted(postgres_ids(postgres, new_journal_id)) == sorted(new_ids)
    rsyslog.wait_for(len(new_ids), contains=new_journal_id)
    assert sorted(syslog_ids(rsyslog, old_journal_id)) == sorted(old_ids)
    assert sorted(syslog_ids(rsyslog, new_journal_id)) == sorted(new_ids)
