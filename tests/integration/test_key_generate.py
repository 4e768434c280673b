"""key_generate through ansible-playbook on a real SoftHSM2 token, checked by an independent reader."""

from __future__ import annotations

import re

import pytest

KEYS = [
    {"name": "payments-db", "type": "aes", "size": 256, "usage": ["encrypt", "decrypt"], "distributable": True,
     "recipients": ["app01"], "rotation_period": "90d", "retention_period": "30d"},
    {"name": "backup-kek", "type": "aes", "usage": ["wrap", "unwrap"]},
    {"name": "invoice-signing", "type": "rsa", "size": 3072, "usage": ["sign", "verify"]},
    {"name": "api-signing", "type": "ec", "curve": "P-384"},
]


def key_objects(token):
    return [o for o in token.key_objects() if o["class"] != "DATA"]


def test_check_apply_check_apply(runner, token):
    # 1. check mode: a plan, nothing on the token
    check = runner.task("key_generate", {"keys": KEYS}, "--check", "--diff")
    assert check.task["changed"] is True, check.output
    assert [p["action"] for p in check.task["plan"]] == ["create"] * 4
    assert check.task["generated"] == [] and check.task["audit_events"] == []
    assert token.objects() == []
    assert "payments-db" in check.stdout and "(known after generation)" in check.stdout

    # 2. apply
    apply = runner.task("key_generate", {"keys": KEYS}, "--diff")
    assert apply.rc == 0 and apply.task["changed"] is True, apply.output
    assert sorted(v["name"] for v in apply.task["generated"]) == sorted(k["name"] for k in KEYS)
    objects = token.key_objects()
    labels = sorted({o["label"] for o in objects})
    assert labels == ["api-signing:v1", "backup-kek:v1", "invoice-signing:v1", "payments-db:v1"]
    secrets = [o for o in objects if o["class"] in ("SECRET_KEY", "PRIVATE_KEY")]
    assert len(secrets) == 4
    assert all(o["sensitive"] and o["local"] and o["always_sensitive"] for o in secrets)
    extractable = {o["label"]: o["extractable"] for o in secrets}
    assert extractable == {"payments-db:v1": True, "backup-kek:v1": False, "invoice-signing:v1": False,
                           "api-signing:v1": False}
    # second independent reader: OpenSC's pkcs11-tool sees the same objects
    listing = token.pkcs11_tool_objects()
    for label in labels:
        assert "label:      %s" % label in listing
    # audit events: one per generated key, with ids matching the token
    events = [e for e in apply.task["audit_events"] if e["key"]["name"] not in ("audit-checkpoint", "package-signing")]
    assert len(events) == 4
    # the first distributable key brings the HSM's package-signing key (recipients pin it at enrollment)
    [signer] = [e for e in apply.task["audit_events"] if e["key"]["name"] == "package-signing"]
    assert signer["event"]["action"] == "key-generate" and signer["event"]["reason"] == "package signing key"
    ids = {o["label"]: o["id"] for o in secrets}
    for event in events:
        assert event["event"]["action"] == "key-generate" and event["event"]["outcome"] == "success"
        assert event["key"]["id"] == ids[event["key"]["label"]]
        assert event["user"]["name"] and event["labels"]["operator_source"] == "controller_os_user"
    assert len({e["labels"]["run_id"] for e in events}) == 1

    # 3. check again: nothing to do
    again = runner.task("key_generate", {"keys": KEYS}, "--check", "--diff")
    assert again.task["changed"] is False, again.output
    assert [p["action"] for p in again.task["plan"]] == ["none"] * 4

    # 4. apply again: unchanged, token unchanged
    final = runner.task("key_generate", {"keys": KEYS})
    assert final.task["changed"] is False and final.task["audit_events"] == []
    assert token.key_objects() == objects


def test_single_key_form_and_metadata_update(runner, token):
    first = runner.task("key_generate", {"name": "k1", "rotation_period": "90d"})
    assert first.task["changed"] is True
    key_id = first.task["key_versions"][0]["id"]
    check = runner.task("key_generate", {"name": "k1", "rotation_period": "30d"}, "--check", "--diff")
    assert check.task["changed"] is True and check.task["plan"][0] == {
        "name": "k1", "action": "update", "version": 1, "changes": ["rotation_period"]}
    assert [o["value"]["rotation_period"] for o in token.key_objects() if o["class"] == "DATA"] == ["90d"]
    update = runner.task("key_generate", {"name": "k1", "rotation_period": "30d"})
    assert update.task["changed"] is True
    assert update.task["audit_events"][0]["event"]["action"] == "key-update"
    assert token.metadata()["k1:v1"]["rotation_period"] == "30d"
    assert token.metadata()["k1:v1"]["id"] == key_id


def snapshot(token):
    return token.key_objects()


@pytest.mark.parametrize("args,fragment,option", [
    ({"name": "k", "type": "des"}, "value of type must be one of: aes, rsa, ec", None),
    ({"name": "k", "size": 128}, "size 128 is below the policy minimum for AES keys (256 bits)", "size"),
    ({"name": "k", "type": "rsa", "size": 2048}, "below the policy minimum for RSA keys (3072 bits)", "size"),
    ({"name": "../etc/passwd"}, "is not a valid key name", "name"),
    ({"name": "k", "rotation_period": "-3d"}, "rotation_period must be a duration", "rotation_period"),
    ({"name": "k", "rotation_period": "400d"}, "longer than the policy maximum 365d", "rotation_period"),
    ({"name": "k", "policy": {"min_aes_bits": 128}}, "may only tighten", "policy.min_aes_bits"),
])
def test_bad_spec_is_refused_and_changes_nothing(runner, token, args, fragment, option):
    before = snapshot(token)
    result = runner.task("key_generate", args)
    assert result.task.get("failed") is True
    assert fragment in result.task["msg"], result.task["msg"]
    if option:
        assert result.task["error_option"] == option
    assert snapshot(token) == before


def test_conflicting_spec_refuses_whole_batch(runner, token):
    runner.task("key_generate", {"name": "k", "usage": ["encrypt", "decrypt"]})
    before = snapshot(token)
    result = runner.task("key_generate", {"keys": [{"name": "new-one"}, {"name": "k", "usage": ["wrap", "unwrap"]}]})
    assert result.task.get("failed") is True
    assert "conflicts with the request: usage is decrypt,encrypt on the token, requested unwrap,wrap" \
        in result.task["msg"]
    assert result.task["error_kind"] == "key_conflict"
    assert snapshot(token) == before  # new-one was not generated either


def test_pin_and_connection_errors(runner, token, tmp_path):
    before = snapshot(token)
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("000000")
    wrong.chmod(0o600)
    cases = [
        ({"user_pin_file": str(wrong)}, "refused the user PIN (CKR_PIN_INCORRECT)"),
        ({"user_pin_file": str(tmp_path / "absent.pin")}, "does not exist"),
        ({"pkcs11_module": "/usr/lib/absent/libpkcs11.so"}, "pkcs11_module /usr/lib/absent/libpkcs11.so does not exist"),
        ({"token_label": "absent-token"}, "No token labelled 'absent-token' is present"),
    ]
    for override, fragment in cases:
        result = runner.task("key_generate", dict({"name": "k"}, **override))
        assert result.task.get("failed") is True and fragment in result.task["msg"], (override, result.task)
    token.pin_file.chmod(0o644)
    result = runner.task("key_generate", {"name": "k"})
    assert "has mode 0644" in result.task["msg"] and "chmod 600" in result.task["msg"]
    token.pin_file.chmod(0o600)
    assert snapshot(token) == before


def test_pin_never_in_output(runner, token):
    args = {"pkcs11_module": token.connection()["pkcs11_module"], "token_label": token.label,
            "user_pin": token.user_pin, "name": "k"}
    # without pipelining the PIN would be written into the module's temporary file: refused, nothing run
    refused = runner.task("key_generate", args, connection=False)
    assert refused.task["failed"] and "pipelining is off" in refused.task["msg"], refused.task
    assert key_objects(token) == [] and runner.journal_records() == []
    result = runner.task("key_generate", args, "-vvvv", "--diff", connection=False,
                         extra_env={"ANSIBLE_PIPELINING": "1"})
    assert result.task["changed"] is True, result.output
    assert token.user_pin not in result.output
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in result.output or "********" in result.output
    # return_records false rebuilds the result's invocation from the module's parameters: the PIN stays masked
    batch = {k: v for k, v in args.items() if k != "name"}
    summary = runner.task("key_generate", dict(batch, keys=[{"name": "k2"}, {"name": "k3"}], return_records=False),
                          "-vvvv", "--diff", connection=False, extra_env={"ANSIBLE_PIPELINING": "1"})
    assert summary.task["changed"] is True and summary.task["summary"]["generated"] == 2, summary.output
    assert token.user_pin not in summary.output
    assert re.search(r'"user_pin": "(VALUE_SPECIFIED_IN_NO_LOG_PARAMETER|\*+)"', summary.output), summary.output
    assert '"keys": "(2 entries)"' in summary.output, summary.output  # the invocation gives a list's length


def test_pin_from_environment(runner, token):
    args = {"pkcs11_module": token.connection()["pkcs11_module"], "token_label": token.label, "name": "k"}
    # through the task's environment: the PIN would be on the remote command line (ps): refused
    refused = runner.task("key_generate", args, connection=False, environment={"PKCS11_USER_PIN": token.user_pin})
    assert refused.task["failed"] and "command line" in refused.task["msg"], refused.task
    assert key_objects(token) == []
    # from the host's own environment (local connection: the controller's): read by the module, never on a
    # command line
    result = runner.task("key_generate", args, connection=False, extra_env={"PKCS11_USER_PIN": token.user_pin})
    assert result.task["changed"] is True, result.task
    assert [o["label"] for o in key_objects(token)] == ["k:v1"]


def test_summary_results_journal_every_record(runner, token):
    """return_records false (large batches): the result counts; every event is in the journal, which verifies."""
    keys = [{"name": "batch-%02d" % i, "type": "aes", "retention_period": "30d"} for i in range(5)]
    check = runner.task("key_generate", {"keys": keys, "return_records": False}, "--check")
    assert check.rc == 0 and check.task["summary"]["plan_actions"] == {"create": 5}, check.output
    assert not {"audit_events", "audit_events_jsonl", "audit_journal", "plan"} & set(check.task)
    assert token.key_objects() == []

    generate = runner.task("key_generate", {"keys": keys, "return_records": False})
    assert generate.rc == 0 and generate.task["changed"] is True, generate.output
    summary, where = generate.task["summary"], generate.task["audit_journal"]
    assert not {"audit_events", "audit_events_jsonl", "key_versions", "generated", "plan"} & set(generate.task)
    assert {k: summary[k] for k in ("key_versions", "generated", "plan", "plan_actions")} == {
        "key_versions": 5, "generated": 5, "plan": 5, "plan_actions": {"create": 5}}
    records = {r["seq"]: r for r in runner.journal_records()}
    assert where["path"] == str(runner.journal) and where["last_seq"] == max(records)
    written = [records[seq]["event"] for seq in range(where["first_seq"], where["last_seq"] + 1)]
    assert len(written) == where["records"] == summary["audit_events"] + 2  # + the checkpoint and the outcome
    generated = sorted(e["key"]["name"] for e in written if e["event"]["action"] == "key-generate"
                       and e["keylifecycle"]["phase"] == "change" and e["key"]["name"].startswith("batch-"))
    assert generated == sorted(k["name"] for k in keys)
    assert written[-1]["keylifecycle"]["phase"] == "outcome" and written[-1]["event"]["outcome"] == "success"
    assert written[-2]["event"]["action"] == "audit-checkpoint"
    assert len({o["label"] for o in token.key_objects() if o["label"].startswith("batch-")}) == 5

    rotate = runner.task("key_rotate", {"name": [k["name"] for k in keys], "force": True, "return_records": False})
    assert rotate.rc == 0 and rotate.task["changed"] is True, rotate.output
    assert rotate.task["summary"]["rotated"] == 5 and rotate.task["summary"]["plan_actions"] == {"rotate": 5}
    assert "audit_events" not in rotate.task and "rotated" not in rotate.task
    records = {r["seq"]: r for r in runner.journal_records()}
    where = rotate.task["audit_journal"]
    rotated = [records[seq]["event"] for seq in range(where["first_seq"], where["last_seq"] + 1)
               if records[seq]["event"]["event"]["action"] == "key-rotate"
               and records[seq]["event"]["keylifecycle"]["phase"] == "change"]
    assert sorted(e["key"]["name"] for e in rotated) == sorted(k["name"] for k in keys)

    report = runner.task("audit_verify", {"fail_on_error": False}).task
    assert report["ok"] is True and report["records"] == max(records), report
