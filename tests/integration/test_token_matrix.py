"""The lifecycle smoke set on two PKCS#11 implementations: SoftHSM2 and openCryptoki's soft token (issue #16).

Each test runs once per token (ids ``[softhsm2]`` and ``[opencryptoki]``; ``-k opencryptoki`` selects one), through
ansible-playbook on the built collection, and checks the token with the independent reader (python-pkcs11 only).
The full suite runs on SoftHSM2; this file is what also runs on openCryptoki, with the differences between the two
asserted: openCryptoki 3.8 generates no EC keys and has no CKA_WRAP_WITH_TRUSTED, so the collection's own signing
keys are RSA-3072 there, EC key specs are refused, and so are distributable keys under the baseline policy
(require_trusted_wrapping); SoftHSM2 2.6 wraps with OAEP under SHA-1 only.
"""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import REPO
from tests.integration.test_key_rotate import states

#: what token_info finds, per token
EXPECTED_CAPABILITIES = {
    "softhsm2": {"ec": ["P-256", "P-384"], "wrap_with_trusted": True, "best_oaep_hash": "sha1",
                 "oaep_hashes": ["sha1"], "aes_key_wrap": {"CKM_AES_KEY_WRAP": True, "CKM_AES_KEY_WRAP_PAD": True}},
    "opencryptoki": {"ec": [], "wrap_with_trusted": False, "best_oaep_hash": "sha512",
                     "oaep_hashes": ["sha512", "sha384", "sha256", "sha1"],
                     "aes_key_wrap": {"CKM_AES_KEY_WRAP": False, "CKM_AES_KEY_WRAP_PAD": False}},
}

KEYS = [
    {"name": "data-key", "type": "aes", "size": 256, "usage": ["encrypt", "decrypt"], "retention_period": "30d"},
    {"name": "sign-key", "type": "rsa", "size": 3072, "usage": ["sign", "verify"]},
]

only_opencryptoki = pytest.mark.parametrize("lifecycle_token", ["opencryptoki"], indirect=True)


def secrets_on(token):
    """label -> the secret or private key object, as the independent reader sees it."""
    return {o["label"]: o for o in token.objects() if o["class"] in ("SECRET_KEY", "PRIVATE_KEY")}


def public_keys_on(token):
    return {o["label"]: o for o in token.objects() if o["class"] == "PUBLIC_KEY"}


def keys_but_the_journals(token):
    """Key objects other than the audit journal's checkpoint key (which journaling a refusal may create): managed
    keys, and the package-signing key a distributable key brings."""
    return [(o["class"], o["label"]) for o in token.objects()
            if o["class"] != "DATA" and not o["label"].startswith("audit-checkpoint:")]


def report_inventory(runner, token, report_dir):
    inventory = runner.tmp_path / "report-inventory.yml"
    inventory.write_text(yaml.safe_dump({"hsm": {"hosts": {"test-hsm": {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "keylifecycle_audit_journal": str(runner.journal), "keylifecycle_report_dir": str(report_dir),
        "keylifecycle_environment_name": "matrix", "hsm_pkcs11_module": token.module,
        "hsm_token_label": token.label, "hsm_user_pin_file": str(token.pin_file), "hsm_environment": token.env}}}}))
    return inventory


def test_lifecycle_generate_info_rotate_destroy_verify_report(lifecycle_runner, lifecycle_token, tmp_path):
    runner, token = lifecycle_runner, lifecycle_token

    # generate: AES-256 and RSA-3072, in the token, sensitive and never extractable
    generated = runner.task("key_generate", {"keys": KEYS})
    assert generated.rc == 0 and generated.task["changed"] is True, generated.task.get("msg", generated.output)
    keys = secrets_on(token)
    assert {"data-key:v1", "sign-key:v1"} <= set(keys), sorted(keys)
    for label in ("data-key:v1", "sign-key:v1"):
        assert keys[label]["sensitive"] and keys[label]["local"] and keys[label]["never_extractable"], keys[label]
        assert keys[label]["extractable"] is False
    assert public_keys_on(token)["sign-key:v1"]["modulus_bits"] == 3072

    # the journal's checkpoint key follows the token: EC P-256 on SoftHSM2, RSA-3072 where there is no EC
    assert "audit-checkpoint:v1" in keys
    checkpoint_public = public_keys_on(token)["audit-checkpoint:v1"]
    info = runner.task("key_info", {}, "--check")
    assert info.rc == 0 and info.task["changed"] is False, info.task.get("msg")
    records = {r["label"]: r for r in info.task["key_versions"]}
    assert sorted(records) == ["audit-checkpoint:v1", "data-key:v1", "sign-key:v1"]
    checkpoint = records["audit-checkpoint:v1"]
    if token.kind == "opencryptoki":
        assert (checkpoint["type"], checkpoint["size"]) == ("rsa", 3072), checkpoint
        assert checkpoint_public["modulus_bits"] == 3072
    else:
        assert (checkpoint["type"], checkpoint["curve"]) == ("ec", "P-256"), checkpoint
        assert "modulus_bits" not in checkpoint_public
    assert checkpoint["evidence"]["never_extractable"] is True

    # key_info: what the token holds, the key check value as the reader computes it
    data = records["data-key:v1"]
    assert data["state"] == "active" and (data["type"], data["size"]) == ("aes", 256)
    assert data["key_check_value"] == keys["data-key:v1"]["kcv"]
    assert (records["sign-key:v1"]["type"], records["sign-key:v1"]["size"]) == ("rsa", 3072)
    assert records["sign-key:v1"]["public_key_fingerprint"].startswith("sha256:")

    # rotate: v2 active; v1 deactivated (decrypts, no longer encrypts), retained 30 days
    rotated = runner.task("key_rotate", {"name": ["data-key"], "force": True, "reason": "manual"})
    assert rotated.rc == 0 and rotated.task["changed"] is True, rotated.task.get("msg")
    keys = secrets_on(token)
    assert states(token) == {"data-key:v1": "deactivated", "data-key:v2": "active", "sign-key:v1": "active"}
    assert (keys["data-key:v1"]["encrypt"], keys["data-key:v1"]["decrypt"]) == (False, True)
    assert keys["data-key:v2"]["encrypt"] is True and keys["data-key:v2"]["never_extractable"] is True
    assert rotated.task["rotated"][0]["new_id"] == keys["data-key:v2"]["id"]

    # destroy: refused inside retention, done after it, verified absent by the reader
    before = token.objects()
    early = runner.task("key_destroy", {"name": "data-key", "version": 1})
    assert early.task.get("failed") and "retain_until is" in early.task["msg"], early.task
    assert token.objects() == before
    runner.clock.advance(days=30, minutes=1)
    destroyed = runner.task("key_destroy", {"all_expired": True})
    assert destroyed.rc == 0 and destroyed.task["changed"] is True, destroyed.task.get("msg")
    assert [(d["name"], d["version"], d["verified_absent"]) for d in destroyed.task["destroyed"]] == [
        ("data-key", 1, True)]
    keys = secrets_on(token)
    assert "data-key:v1" not in keys and "data-key:v2" in keys
    assert states(token)["data-key:v1"] == "destroyed"

    # the journal verifies, its checkpoints signed by the token's checkpoint key
    verified = runner.task("audit_verify", {"fail_on_error": False})
    assert verified.task["ok"] is True, verified.task.get("problems")
    assert verified.task["checkpoints_verified"] == 3 and verified.task["records"] == len(runner.journal_records())

    # the compliance report is written, with this token's capabilities
    report_dir = tmp_path / "reports"
    run = runner.playbook(REPO / "playbooks" / "report.yml", inventory=report_inventory(runner, token, report_dir))
    assert run.returncode == 0, run.stdout + run.stderr
    markdown = (report_dir / "report.md").read_text()
    page = (report_dir / "report.html").read_text()
    for label in ("data-key:v1", "data-key:v2", "sign-key:v1", "audit-checkpoint:v1"):
        assert label in markdown and label in page
    assert "Audit chain: **verifies**" in markdown
    assert "**%s**" % token.label in markdown  # the token capabilities section names the probed token
    assert ("| generates EC | **no** |" in markdown) is (token.kind == "opencryptoki")
    assert token.user_pin not in markdown + page and token.so_pin not in markdown + page


def test_token_info_reports_each_tokens_capabilities(lifecycle_runner, lifecycle_token):
    token = lifecycle_token
    before = token.objects()
    result = lifecycle_runner.task("token_info", {})
    assert result.rc == 0 and result.task["changed"] is False, result.task.get("msg")
    caps = result.task["capabilities"]
    expected = EXPECTED_CAPABILITIES[token.kind]
    assert caps["token"]["label"] == token.label
    assert caps["generates"]["ec"] == expected["ec"]
    assert caps["generates"]["aes"] == [128, 192, 256] and caps["generates"]["rsa"]["generated"] is True
    assert ("CKM_EC_KEY_PAIR_GEN" in caps["mechanisms"]) is bool(expected["ec"])
    assert caps["wrap_with_trusted"] is expected["wrap_with_trusted"]
    assert caps["oaep_hashes"] == expected["oaep_hashes"] and caps["best_oaep_hash"] == expected["best_oaep_hash"]
    assert caps["aes_key_wrap"] == expected["aes_key_wrap"]
    assert caps["modifiable"] == "honoured"
    if token.kind == "opencryptoki":
        assert caps["token"]["manufacturer"].startswith("IBM") and caps["token"]["pin_length"] == {"min": 4, "max": 8}
        assert "AttributeTypeInvalid" in str(caps["attempts"]["trusted_wrapping"])
    else:
        assert caps["token"]["manufacturer"].startswith("SoftHSM")
    assert token.objects() == before  # session objects only


@only_opencryptoki
def test_ec_key_is_refused_naming_the_token_and_the_mechanism(lifecycle_runner, lifecycle_token):
    token = lifecycle_token
    before = token.objects()
    result = lifecycle_runner.task("key_generate", {"keys": [{"name": "ec-key", "type": "ec", "curve": "P-256"},
                                                             {"name": "aes-key"}]})
    assert result.task.get("failed") is True, result.task
    assert "token %s cannot generate EC keys (CKM_EC_KEY_PAIR_GEN not offered)" % token.label in result.task["msg"]
    assert "ec-key" in result.task["msg"]
    # no key was generated, not even the AES key of the same batch (the journal's own checkpoint key may be: the
    # refusal is journaled and checkpointed like any task's outcome)
    assert before == [] and token.key_objects() == [] and keys_but_the_journals(token) == []
    refusals = [r["event"] for r in lifecycle_runner.journal_records() if r["event"]["event"]["outcome"] == "failure"]
    assert refusals and all(e["event"]["action"] == "key-generate" for e in refusals), refusals


def test_distributable_key_needs_trusted_wrapping_under_the_baseline_policy(lifecycle_runner, lifecycle_token):
    token = lifecycle_token
    before = token.objects()
    spec = {"keys": [{"name": "shared", "distributable": True, "recipients": ["svc1"]}]}
    result = lifecycle_runner.task("key_generate", spec)
    if token.kind == "opencryptoki":
        assert result.task.get("failed") is True, result.task
        assert "token %s" % token.label in result.task["msg"] and "CKA_WRAP_WITH_TRUSTED" in result.task["msg"]
        assert "shared" in result.task["msg"]
        assert before == [] and token.key_objects() == [] and keys_but_the_journals(token) == []
    else:
        assert result.rc == 0 and result.task["changed"] is True, result.task.get("msg")
        info = lifecycle_runner.task("key_info", {"name": ["shared"]})
        [record] = info.task["key_versions"]
        assert record["wrap_with_trusted"] is True and record["extractable"] is True
