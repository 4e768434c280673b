"""The lifecycle smoke set on two PKCS#11 implementations: SoftHSM2 and openCryptoki's soft token (issue #16).

Each test runs once per token (ids ``[softhsm2]`` and ``[opencryptoki]``; ``-k opencryptoki`` selects one), through
ansible-playbook on the built collection, and checks the token with the independent reader (python-pkcs11 only).
The full suite runs on SoftHSM2; this file is what also runs on openCryptoki, with the differences between the two
asserted: openCryptoki 3.8 generates no EC keys and has no CKA_WRAP_WITH_TRUSTED, so the collection's own signing
keys are RSA-3072 there, EC key specs are refused, and so are distributable keys under the baseline policy
(require_trusted_wrapping); SoftHSM2 2.6 wraps with OAEP under SHA-1 only. Under a development policy
(require_trusted_wrapping off) openCryptoki distributes, with an RSA package signer, to a real ssh recipient.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.conftest import REPO
from tests.integration.conftest import DistributionSetup
from tests.integration.test_key_distribute import encodings, events, fingerprint, public_pem
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


# ---- distribution without trusted wrapping (policy.require_trusted_wrapping off), to a real ssh recipient ----

DEV_POLICY = {"require_trusted_wrapping": False}
SHARED = {"name": "shared", "type": "aes", "size": 256, "distributable": True, "recipients": ["billing"],
          "usage": ["encrypt", "decrypt"]}
OAEP_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def fingerprint_of(public_key):
    """sha256: and the SHA-256 of the public key's DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def package_payload(package):
    """The signed bytes as docs/distribution.md ("Signed packages") defines them, computed here without collection
    code: canonical JSON of every field but signature and wrapped, plus wrapped_sha256."""
    payload = {k: v for k, v in package.items() if k not in ("signature", "wrapped")}
    payload["wrapped_sha256"] = hashlib.sha256(package["wrapped"].encode("ascii")).hexdigest()
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


def pss_signed(public_key, package):
    """Whether ``package`` verifies with the RSA ``public_key`` (cryptography): RSASSA-PSS, SHA-256, MGF1-SHA-256,
    a 32-byte salt (docs/audit.md)."""
    try:
        public_key.verify(base64.b64decode(package["signature"]), package_payload(package),
                          padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def unwrap_with(private_key, package):
    """RSA-OAEP with the package's hash (MGF1 with the same hash), by ``cryptography``: the key bytes, and their
    AES-ECB check value."""
    algorithm = OAEP_HASHES[package["oaep_hash"]]()
    assert package["mechanism"] == "CKM_RSA_PKCS_OAEP:%s" % package["oaep_hash"]
    key = private_key.decrypt(base64.b64decode(package["wrapped"]),
                              padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None))
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 (check value only)
    return key, (encryptor.update(bytes(16)) + encryptor.finalize())[:3].hex()


@only_opencryptoki
def test_distribution_without_trusted_wrapping_reaches_an_ssh_recipient(lifecycle_runner, lifecycle_token,
                                                                        ssh_recipients):
    """Distribution where the token supports it: openCryptoki has no trusted wrapping, so only under a development
    policy (require_trusted_wrapping off). The HSM wraps for r1, reached over ssh with its own SoftHSM2 token, and
    for a transport key this test holds (the independent unwrap); it signs the packages with its RSA-3072 package
    signer (RSASSA-PSS), which r1 pins; r1 installs only what that signature confirms.

    SoftHSM2 is not run here: there the same flow is the trusted path of test_key_distribute.py (an EC signer, OAEP
    SHA-1), and the development policy does not bypass CKA_WRAP_WITH_TRUSTED (test_trusted_wrapping.py)."""
    runner, token = lifecycle_runner, lifecycle_token
    distribution = DistributionSetup(runner, ssh_recipients)
    r1 = distribution.hosts["r1"]
    outputs = []

    def ran(result):
        outputs.append(result.output)
        return result

    # 1. a distributable AES-256 key for one recipient, generated without CKA_WRAP_WITH_TRUSTED (the token has none;
    # the development policy allows it): sensitive, extractable only by wrapping
    generated = ran(runner.task("key_generate", {"policy": DEV_POLICY, "keys": [SHARED]}))
    assert generated.rc == 0 and generated.task["changed"] is True, generated.task.get("msg", generated.output)
    hsm_secret = secrets_on(token)["shared:v1"]
    assert hsm_secret["sensitive"] and hsm_secret["extractable"] and hsm_secret["local"], hsm_secret
    info = ran(runner.task("key_info", {}))
    assert info.rc == 0, info.task.get("msg")
    records = {r["label"]: r for r in info.task["key_versions"]}
    assert records["shared:v1"]["wrap_with_trusted"] is False and records["shared:v1"]["extractable"] is True
    assert records["shared:v1"]["key_check_value"] == hsm_secret["kcv"]
    # the package signer follows the token: RSA-3072 (no EC here), never extractable
    signing = records["package-signing:v1"]
    assert (signing["type"], signing["size"]) == ("rsa", 3072) and signing["evidence"]["never_extractable"], signing
    signer = info.task["package_signer"]
    signer_key = serialization.load_pem_public_key(signer["public_key_pem"].encode())
    assert isinstance(signer_key, rsa.RSAPublicKey) and signer_key.key_size == 3072
    assert signer["fingerprint"] == signing["public_key_fingerprint"] == fingerprint_of(signer_key)

    # 2. r1 enrolls (its transport key generated in its token) and pins the HSM's RSA signer, by fingerprint too;
    # it reports the OAEP hashes its token unwraps with: SoftHSM2 2.6, SHA-1 only
    enrolled = ran(distribution.recipient_task("r1", "recipient_enroll", {"package_signer": {
        "public_key_pem": signer["public_key_pem"], "fingerprint": signer["fingerprint"]}}))
    assert enrolled.task["changed"] and not enrolled.task.get("failed"), enrolled.task
    transport = enrolled.task["transport_key"]
    assert transport["oaep_hashes"] == ["sha1"], transport
    pinned = enrolled.task["package_signer"]
    assert (pinned["type"], pinned["curve"], pinned["fingerprint"]) == ("rsa", None, signer["fingerprint"]), pinned
    assert [(o["class"], o["verify"], o["wrap"], o["encrypt"]) for o in distribution.recipient_objects("r1")
            if o["label"] == pinned["label"]] == [("PUBLIC_KEY", True, False, False)]

    # 3. key_distribute with oaep_hash auto: the strongest hash both sides can use, per recipient (SHA-512 on this
    # HSM, SHA-1 for r1); untrusted wraps, each journaled and warned about; every package signed with RSA-PSS
    probe = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    recipients = [
        {"name": "billing", "host": "r1", "public_key_pem": transport["public_key_pem"],
         "fingerprint": transport["fingerprint"], "oaep_hashes": transport["oaep_hashes"]},
        {"name": "billing", "host": "probe", "public_key_pem": public_pem(probe), "fingerprint": fingerprint(probe)}]
    distributed = ran(runner.task("key_distribute", {"policy": DEV_POLICY, "recipients": recipients}, "-vvv"))
    assert distributed.rc == 0 and not distributed.task.get("failed"), distributed.task.get("msg")
    assert distributed.task["oaep_hash"] == "sha512"  # the strongest this token wraps with
    assert distributed.task["package_signer"]["fingerprint"] == signer["fingerprint"]
    hash_for = {"r1": "sha1", "probe": "sha512"}
    by_host = {entry["host"]: entry for entry in distributed.task["recipients"]}
    assert sorted(by_host) == ["probe", "r1"]
    for host, entry in by_host.items():
        [package] = entry["packages"]
        assert (package["label"], package["recipient_host"], package["action"]) == ("shared:v1", host, "install")
        assert entry["oaep_hash"] == package["oaep_hash"] == hash_for[host], entry
        assert package["key_check_value"] == hsm_secret["kcv"] and entry["trusted_key_label"] is None
        assert package["signer_fingerprint"] == signer["fingerprint"] and pss_signed(signer_key, package)
        assert [w for w in distributed.task["warnings"] if "'billing' on host %s" % host in w
                and "require_trusted_wrapping is off" in w], distributed.task["warnings"]
    wrapped_events = events(runner, "key-distribute")
    assert sorted((e["key"]["recipient_host"], e["key"]["mechanism"]) for e in wrapped_events) == [
        ("probe", "CKM_RSA_PKCS_OAEP:sha512"), ("r1", "CKM_RSA_PKCS_OAEP:sha1")]
    for event in wrapped_events:
        assert event["key"]["trusted_wrapping"] is False and "trusted_key_label" not in event["key"]
        assert event["key"]["package_signer_fingerprint"] == signer["fingerprint"]
        assert "require_trusted_wrapping is off" in event["keylifecycle"]["warning"], event
    # the wrap is what it says: OAEP-SHA-512 under the probe's key gives the HSM's key (the same check value)
    secret, kcv = unwrap_with(probe, by_host["probe"]["packages"][0])
    assert len(secret) == 32 and kcv == hsm_secret["kcv"]
    package = by_host["r1"]["packages"][0]

    # 5. one metadata field changed (the usage widened): the RSA signature no longer verifies, nothing is installed
    tampered = dict(package, usage=package["usage"] + ["wrap"])
    assert not pss_signed(signer_key, tampered)
    refused = ran(distribution.recipient_task("r1", "key_install", {"recipient": "billing", "packages": [tampered]}))
    assert refused.task.get("failed") and refused.task["error_kind"] == "package_rejected", refused.task
    assert "does not verify with the HSM's package signer %s" % signer["fingerprint"] in refused.task["msg"]
    assert distribution.installed("r1") == ({}, set())

    # 4. the genuine package installs, and a second run changes nothing; r1's token holds the key with the HSM's
    # check value (its own reader computes it), sensitive and not extractable
    install = {"recipient": "billing", "packages": [package]}
    first, again = [ran(r) for r in distribution.recipient_tasks("r1", "key_install", [install, install], "-vvv")]
    assert first.task["changed"] is True and not first.task.get("failed"), first.task
    assert again.task["changed"] is False and not again.task.get("failed"), again.task
    meta, keys = distribution.installed("r1")
    assert keys == {"shared:v1"} and meta["shared:v1"]["key_check_value"] == hsm_secret["kcv"]
    assert meta["shared:v1"]["mechanism"] == "CKM_RSA_PKCS_OAEP:sha1"
    held = {o["label"]: o for o in distribution.recipient_objects("r1") if o["class"] == "SECRET_KEY"}["shared:v1"]
    assert held["kcv"] == hsm_secret["kcv"] and held["id"] == hsm_secret["id"]  # (SoftHSM2: CKA_VALUE_LEN 0)
    assert held["sensitive"] and not held["extractable"]
    installs = events(runner, "key-install")
    assert [(e["host"]["name"], e["key"]["label"]) for e in installs] == [("r1", "shared:v1")]
    verified = ran(runner.task("audit_verify", {"fail_on_error": False}))
    assert verified.task["ok"] is True, verified.task.get("problems")

    # no PIN (the HSM's, r1's) and no byte of the key in any play's output (-vvv for the wrap and the install)
    played = "\n".join(outputs)
    assert "shared:v1" in played and "CKM_RSA_PKCS_OAEP:sha512" in played  # the plays' own output is searched
    pins = [pin for t in (token, r1.token) for pin in (t.user_pin, t.so_pin)]
    assert [pin[:2] for pin in pins if pin in played] == []
    assert [form[:6] for form in encodings(secret) if form in played.encode()] == []
