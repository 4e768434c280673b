"""Drift (procedure 4.3.3): key_info, playbooks/check.yml and the report compare the token's attributes with the
recorded state; every finding and the token check are journaled. The token is changed behind the collection's back
with raw python-pkcs11, as a user session could."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.conftest import PKCS11_MODULE, REPO
from tests.integration.test_report import write_inventory

# Raw python-pkcs11, outside the collection: argv = module, token label, PIN file, operation, label[, more]
TAMPER = r"""
import sys
import pkcs11
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.exceptions import AttributeReadOnly

module, token_label, pin_file, operation, label = sys.argv[1:6]
tok = pkcs11.lib(module).get_token(token_label=token_label)
with tok.open(rw=True, user_pin=open(pin_file).read().strip()) as s:
    if operation == "encrypt-on":
        key = s.get_key(object_class=ObjectClass.SECRET_KEY, label=label)
        key[Attribute.ENCRYPT] = True
    elif operation == "new-key":  # a new AES key under the label, with the CKA_ID given (hex)
        s.generate_key(KeyType.AES, 256, label=label, id=bytes.fromhex(sys.argv[6]), store=True, template={
            Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
            Attribute.ENCRYPT: False, Attribute.DECRYPT: True, Attribute.WRAP: False, Attribute.UNWRAP: False,
            Attribute.SIGN: False, Attribute.VERIFY: False, Attribute.DERIVE: False})
    elif operation == "loosen":  # what the token lets a user session do to SENSITIVE and EXTRACTABLE
        key = s.get_key(object_class=ObjectClass.SECRET_KEY, label=label)
        for attribute, value in ((Attribute.EXTRACTABLE, True), (Attribute.SENSITIVE, False)):
            try:
                key[attribute] = value
                print("%s allowed" % attribute.name)
            except AttributeReadOnly:
                print("%s refused" % attribute.name)
    elif operation == "replace-loose":  # the key object swapped for a readable, extractable one (same label and id)
        key = s.get_key(object_class=ObjectClass.SECRET_KEY, label=label)
        key_id = key[Attribute.ID]
        key.destroy()
        s.generate_key(KeyType.AES, 256, label=label, id=key_id, store=True, template={
            Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True,
            Attribute.ENCRYPT: True, Attribute.DECRYPT: True, Attribute.WRAP: False, Attribute.UNWRAP: False,
            Attribute.SIGN: False, Attribute.VERIFY: False, Attribute.DERIVE: False})
    elif operation == "wipe":  # every object under the label, the key objects and their metadata alike
        for obj in list(s.get_objects({Attribute.LABEL: label})):
            obj.destroy()
"""


def tamper(token, operation, label, *more):
    proc = subprocess.run([sys.executable, "-c", TAMPER, PKCS11_MODULE, token.label, str(token.pin_file), operation,
                           label, *more], capture_output=True, text=True, check=True,
                          env={**token.env, "PATH": "/usr/bin:/bin"})
    return proc.stdout


def check_inventory(runner, token, tmp_path):
    """report.yml's inventory, with the token's storage closed to others so token_check passes."""
    subprocess.run(["chmod", "-R", "go-rwx", str(token.root)], check=True)
    inventory = write_inventory(runner, token, tmp_path / "reports")
    data = yaml.safe_load(inventory.read_text())
    data["hsm"]["hosts"]["test-hsm"]["hsm_token_storage_paths"] = [str(token.root / "tokens"), str(token.conf)]
    inventory.write_text(yaml.safe_dump(data))
    return inventory


def drift_records(runner):
    return [r["event"] for r in runner.journal_records() if r["event"]["event"]["action"] == "key-drift"]


def findings(result):
    return {(d["label"], d["kind"], d["attribute"]) for d in result.task["drift"]}


def test_deactivated_version_with_encrypt_back_on_is_flagged_everywhere(runner, token, tmp_path):
    runner.task("key_generate", {"name": "payments-db", "retention_period": "30d"})
    runner.task("key_rotate", {"name": ["payments-db"], "force": True})
    inventory = check_inventory(runner, token, tmp_path)

    clean = runner.playbook(REPO / "playbooks" / "check.yml", inventory=inventory)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert drift_records(runner) == []
    checks = [r["event"] for r in runner.journal_records() if r["event"]["event"]["action"] == "token-check"]
    assert [(e["event"]["outcome"], e["keylifecycle"]["phase"]) for e in checks] == [("success", "observation")]

    tamper(token, "encrypt-on", "payments-db:v1")
    before = len(runner.journal_records())
    checked = runner.task("key_info", {}, "--check")  # check mode journals nothing, but reports
    assert findings(checked) == {("payments-db:v1", "usage_enabled", "CKA_ENCRYPT")}
    assert len(runner.journal_records()) == before

    info = runner.task("key_info", {})
    assert info.rc == 0 and not info.task.get("failed"), info.output
    [finding] = info.task["drift"]
    assert finding["label"] == "payments-db:v1" and finding["state"] == "deactivated"
    assert (finding["kind"], finding["attribute"], finding["expected"], finding["actual"]) == (
        "usage_enabled", "CKA_ENCRYPT", "false", "true")
    assert finding["id"] == token.metadata()["payments-db:v1"]["id"]
    [record] = drift_records(runner)
    assert record["event"]["outcome"] == "failure" and record["error"]["type"] == "usage_enabled"
    assert record["key"]["label"] == "payments-db:v1" and record["key"]["state"] == "deactivated"
    assert record["keylifecycle"]["drift"] == {"kind": "usage_enabled", "attribute": "CKA_ENCRYPT",
                                               "object_class": "SECRET_KEY", "expected": "false", "actual": "true"}

    flagged = runner.playbook(REPO / "playbooks" / "check.yml", inventory=inventory)
    assert flagged.returncode != 0, flagged.stdout
    assert "payments-db:v1 (deactivated): SECRET_KEY CKA_ENCRYPT: true, expected false" in flagged.stdout
    assert len(drift_records(runner)) == 2  # the check's key_info journaled it again
    assert len([r for r in runner.journal_records() if r["event"]["event"]["action"] == "token-check"]) == 2

    report = runner.playbook(REPO / "playbooks" / "report.yml", inventory=inventory)
    assert report.returncode == 0, report.stdout + report.stderr
    markdown = (tmp_path / "reports" / "report.md").read_text()
    page = (tmp_path / "reports" / "report.html").read_text()
    assert "- Drift: payments-db:v1 (deactivated): SECRET_KEY CKA_ENCRYPT: true, expected false" in markdown
    assert "| payments-db:v1 | usage_enabled | SECRET_KEY | CKA_ENCRYPT | false | true | deactivated |" in markdown
    assert "<td>usage_enabled</td>" in page and "CKA_ENCRYPT" in page

    # the journal with its new records still verifies
    audit = runner.playbook(REPO / "playbooks" / "audit_verify.yml", inventory=inventory)
    assert audit.returncode == 0 and "verifies" in audit.stdout, audit.stdout


def test_destroyed_unexplained_and_loosened_keys_are_flagged(runner, token):
    runner.task("key_generate", {"keys": [{"name": "gone", "retention_period": "7d"}, {"name": "plain"},
                                          {"name": "loose"}]})
    runner.task("key_rotate", {"name": ["gone"], "force": True})
    runner.clock.advance(days=8)
    destroyed = runner.task("key_destroy", {"name": "gone", "version": 1})
    assert not destroyed.task.get("failed"), destroyed.task
    metadata = token.metadata()

    tamper(token, "new-key", "gone:v1", metadata["gone:v1"]["id"])  # a "destroyed" version's key is back
    tamper(token, "new-key", "plain:v1", "0bad")  # a second key under plain:v1, another CKA_ID
    tamper(token, "new-key", "stray:v1", "0bad")  # a key under one of our labels, no metadata at all
    # SoftHSM2 refuses to make a sensitive key readable or a non-extractable key extractable (PKCS#11 allows
    # only SENSITIVE false->true and EXTRACTABLE true->false): a loosened key can only be a replaced one.
    assert tamper(token, "loosen", "loose:v1").split() == ["EXTRACTABLE", "refused", "SENSITIVE", "refused"]
    tamper(token, "replace-loose", "loose:v1")

    info = runner.task("key_info", {})
    assert not info.task.get("failed"), info.output
    assert findings(info) == {
        ("gone:v1", "destroyed_present", None),
        ("plain:v1", "unexplained_object", None),
        ("stray:v1", "unexplained_object", None),
        ("loose:v1", "lost_sensitive", "CKA_SENSITIVE"),
        ("loose:v1", "lost_sensitive", "CKA_ALWAYS_SENSITIVE"),
        ("loose:v1", "gained_extractable", "CKA_EXTRACTABLE"),
        ("loose:v1", "gained_extractable", "CKA_NEVER_EXTRACTABLE"),
    }
    by_label = {d["label"]: d for d in info.task["drift"]}
    assert by_label["plain:v1"]["id"] == "0bad" and by_label["stray:v1"]["state"] is None
    assert by_label["gone:v1"]["state"] == "destroyed"
    journaled = {(e["key"]["label"], e["keylifecycle"]["drift"]["kind"]) for e in drift_records(runner)}
    assert journaled == {(label, kind) for label, kind, _attribute in findings(info)}
    assert len(drift_records(runner)) == len(info.task["drift"])

    only = runner.task("key_info", {"name": ["plain"]})
    assert findings(only) == {("plain:v1", "unexplained_object", None)}
    # fail-closed: a finding that cannot be journaled fails the task
    unjournaled = runner.task("key_info", {"name": ["plain"]}, "-e", "keylifecycle_audit_journal=/proc/none/j.jsonl")
    assert unjournaled.task["failed"] and "1 observation(s) of this task are not journaled" in unjournaled.task["msg"]


def test_a_version_wiped_with_its_metadata_is_named_by_the_report_from_the_journal(runner, token, tmp_path):
    """Key objects and metadata of a retained version destroyed with raw PKCS#11: nothing on the token records it,
    so key_info has no drift to report; the journal does, and the compliance report names it."""
    runner.task("key_generate", {"keys": [{"name": "wiped", "retention_period": "30d"}, {"name": "kept"}]})
    runner.task("key_rotate", {"name": ["wiped"], "force": True})
    v1_id = token.metadata()["wiped:v1"]["id"]
    tamper(token, "wipe", "wiped:v1")
    assert not [o for o in token.objects() if o["label"] == "wiped:v1"]

    info = runner.task("key_info", {})
    assert not info.task.get("failed") and info.task["drift"] == [], info.task
    assert info.task["all_keys"] is True and info.task["token_label"] == token.label
    assert "wiped:v1" not in [v["label"] for v in info.task["key_versions"]]

    report = runner.playbook(REPO / "playbooks" / "report.yml", inventory=check_inventory(runner, token, tmp_path))
    assert report.returncode == 0, report.stdout + report.stderr
    assert "Gone from the token without a destruction record: wiped:v1" in report.stdout
    markdown = (tmp_path / "reports" / "report.md").read_text()
    assert "- Gone from the token, no destruction recorded: wiped:v1 (id %s, key-generate at " % v1_id in markdown
    assert "wiped:v2" not in markdown.split("## Attention")[1].split("##")[0] and "kept:v1" not in markdown.split(
        "## Attention")[1].split("##")[0]
