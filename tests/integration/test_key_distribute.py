"""Distribution over real ssh to two recipient hosts, each with its own SoftHSM2 token (playbooks/distribute.yml).

The HSM host is local; recipients r1 (service "billing", user kl<run>_r1) and r2 ("reports", kl<run>_r2)
are reached through their own sshd on loopback. What arrived is checked by independent paths:
the recipients' tokens read with python-pkcs11 (tests/helpers/read_token.py), AES-GCM across the
two tokens (tests/helpers/gcm.py run as the recipient's user), and a package unwrapped with
``cryptography`` using a transport key the test set up.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import shutil
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.conftest import GCM, PKCS11_MODULE, REPO
from tests.recipients import RECIPIENT_PYTHON

KEYS = [
    {"name": "shared", "distributable": True, "recipients": ["billing", "reports"], "retention_period": "30d",
     "usage": ["encrypt", "decrypt"]},
    {"name": "billing-only", "distributable": True, "recipients": ["billing"], "usage": ["encrypt", "decrypt"]},
    {"name": "local-only", "usage": ["encrypt", "decrypt"]},
]


def recap(output):
    """host -> {ok, changed, failed, ...} from the PLAY RECAP."""
    hosts = {}
    for line in output.split("PLAY RECAP")[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            hosts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return hosts


def hsm_kcv(token, label):
    return token.metadata()[label]["key_check_value"]


def recipient_gcm(host, operation, key_label, nonce, data):
    """AES-GCM with a key on a recipient's token, run as the recipient's service user."""
    helper = host.home / "gcm.py"
    shutil.copy(GCM, helper)
    os.chmod(helper, 0o644)
    proc = host.run_as([RECIPIENT_PYTHON, helper, PKCS11_MODULE, host.token.label, host.token.pin_file, operation,
                        key_label, nonce.hex(), data.hex()], env=host.token.env)
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    return proc.returncode == 0, proc.stdout.strip()


def approve(runner, token, *recipients, state="present"):
    """The Security Officer's step (SO PIN file): the recipients' transport keys become trusted keys in the HSM."""
    result = runner.task("recipient_approve", {"recipients": list(recipients), "state": state,
                                               "so_pin_file": str(token.so_pin_file)})
    assert not result.task.get("failed"), result.output
    return result


def events(runner, action):
    return [r["event"] for r in runner.journal_records() if r["event"]["event"]["action"] == action
            and r["event"]["keylifecycle"]["phase"] == "change"]


def test_distribute_rotate_destroy_reaches_every_recipient(runner, token, distribution):
    assert runner.task("key_generate", {"keys": KEYS}).task["changed"]

    first = distribution.playbook()
    assert first.returncode == 0, first.stdout + first.stderr
    meta_r1, keys_r1 = distribution.installed("r1")
    meta_r2, keys_r2 = distribution.installed("r2")
    assert keys_r1 == {"shared:v1", "billing-only:v1"}
    assert keys_r2 == {"shared:v1"}
    for label in ("shared:v1", "billing-only:v1"):
        assert meta_r1[label]["key_check_value"] == hsm_kcv(token, label)
        assert meta_r1[label]["id"] == token.metadata()[label]["id"]
    # the recipient's own token recomputes the check value of what it holds (independent reader)
    r1_objects = {o["label"]: o for o in distribution.recipient_objects("r1") if o["class"] == "SECRET_KEY"}
    assert r1_objects["shared:v1"]["kcv"] == hsm_kcv(token, "shared:v1")
    assert r1_objects["shared:v1"]["sensitive"] and not r1_objects["shared:v1"]["extractable"]
    transport = [o for o in distribution.recipient_objects("r2") if o["class"] == "PRIVATE_KEY"]
    assert len(transport) == 1 and transport[0]["sensitive"] and not transport[0]["extractable"]
    assert transport[0]["unwrap"] and not transport[0]["decrypt"] and not transport[0]["sign"]

    # encrypted in the HSM, decrypted at each recipient by its service user
    nonce, sample = secrets.token_bytes(12), b"cardholder record 4111"
    ok, ciphertext = token.gcm("encrypt", "shared:v1", nonce, sample)
    assert ok
    for alias in ("r1", "r2"):
        ok, plain = recipient_gcm(distribution.hosts[alias], "decrypt", "shared:v1", nonce, bytes.fromhex(ciphertext))
        assert ok and bytes.fromhex(plain) == sample

    distributed = events(runner, "key-distribute")
    assert sorted((e["key"]["recipient"], e["key"]["label"]) for e in distributed) == [
        ("billing", "billing-only:v1"), ("billing", "shared:v1"), ("reports", "shared:v1")]
    for event in distributed:
        assert event["key"]["trusted_wrapping"] is True
        assert event["key"]["trusted_key_label"].startswith("trusted-transport:%s@" % event["key"]["recipient"])
        assert event["key"]["mechanism"] == "CKM_RSA_PKCS_OAEP:sha1"
        assert event["key"]["check_value"] == hsm_kcv(token, event["key"]["label"])
        assert event["key"]["recipient_host"] in ("r1", "r2")
        assert event["key"]["transport_key_fingerprint"].startswith("sha256:")
    installs = events(runner, "key-install")
    assert sorted((e["host"]["name"], e["key"]["label"]) for e in installs) == [
        ("r1", "billing-only:v1"), ("r1", "shared:v1"), ("r2", "shared:v1")]

    # second run: nothing to wrap, nothing changes anywhere
    again = distribution.playbook()
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(counts["changed"] == 0 for counts in recap(again.stdout).values()), again.stdout
    assert len(events(runner, "key-distribute")) == 3

    # rotation reaches every recipient: v2 installed, v1 deactivated there too (decrypt only)
    assert runner.task("key_rotate", {"name": ["shared"], "force": True}).task["changed"]
    rotated = distribution.playbook()
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    for alias in ("r1", "r2"):
        meta, keys = distribution.installed(alias)
        assert {"shared:v1", "shared:v2"} <= keys
        assert meta["shared:v2"]["state"] == "active" and meta["shared:v1"]["state"] == "deactivated"
        assert meta["shared:v2"]["key_check_value"] == hsm_kcv(token, "shared:v2")
        host = distribution.hosts[alias]
        refused, _refusal = recipient_gcm(host, "encrypt", "shared:v1", nonce, sample)
        assert not refused
        ok, plain = recipient_gcm(host, "decrypt", "shared:v1", nonce, bytes.fromhex(ciphertext))
        assert ok and bytes.fromhex(plain) == sample

    # destruction reaches every recipient: the version is withdrawn and verified gone
    retain_until = datetime.fromisoformat(token.metadata()["shared:v1"]["retain_until"])
    runner.clock.advance(seconds=(retain_until - runner.clock.now()).total_seconds() + 60)
    destroyed = runner.task("key_destroy", {"name": "shared", "version": 1})
    assert destroyed.task["changed"], destroyed.output
    withdrawn = distribution.playbook()
    assert withdrawn.returncode == 0, withdrawn.stdout + withdrawn.stderr
    shared_v1_id = token.metadata()["shared:v1"]["id"]
    for alias in ("r1", "r2"):
        meta, keys = distribution.installed(alias)
        assert "shared:v1" not in keys and "shared:v2" in keys
        assert meta["shared:v1"]["state"] == "destroyed"
        assert not [o for o in distribution.recipient_objects(alias)
                    if o["class"] == "SECRET_KEY" and o["id"] == shared_v1_id]
        # a second reader (OpenSC pkcs11-tool): no key object under that label or id
        assert not [o for o in distribution.hosts[alias].token.pkcs11_tool_key_objects()
                    if o["label"] == "shared:v1" or o["id"] == shared_v1_id]
    withdraws = events(runner, "key-withdraw")
    assert sorted(e["host"]["name"] for e in withdraws) == ["r1", "r2"]
    assert all(e["keylifecycle"]["verified_absent"] and e["key"]["id"] == shared_v1_id for e in withdraws)
    final = distribution.playbook()
    assert final.returncode == 0 and all(c["changed"] == 0 for c in recap(final.stdout).values()), final.stdout


def seed_transport_key(host, tmp_path, bits):
    """Test-only: an RSA transport key the test knows, imported into the recipient's token (see the helper).

    Run as the recipient's user, so the token objects belong to it like everything else in its token.
    """
    helper = host.home / "seed_transport_key.py"
    shutil.copy(REPO / "tests" / "helpers" / "seed_transport_key.py", helper)
    os.chmod(helper, 0o644)
    out = host.home / "seeded-transport.pem"
    proc = host.run_as([RECIPIENT_PYTHON, helper, PKCS11_MODULE, host.token.label, host.token.pin_file,
                        "keylifecycle-transport", bits, out], env=host.token.env)
    assert proc.returncode == 0, proc.stderr
    kept = tmp_path / ("%s-transport-%d.pem" % (host.alias, bits))
    shutil.move(str(out), str(kept))
    os.unlink(helper)
    return serialization.load_pem_private_key(kept.read_bytes(), password=None)


def public_pem(private_key):
    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def fingerprint(private_key):
    der = private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def unwrap_independently(private_key, package):
    """RSA-OAEP (SHA-1, MGF1-SHA-1) with ``cryptography``: the key bytes, and their AES-ECB check value."""
    assert package["mechanism"] == "CKM_RSA_PKCS_OAEP:sha1"
    key = private_key.decrypt(base64.b64decode(package["wrapped"]),
                              padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 (check value only)
    return key, (encryptor.update(bytes(16)) + encryptor.finalize())[:3].hex()


def encodings(secret):
    """Every form in which the key's bytes could leak: raw, hex (both cases), base64 (standard, url-safe)."""
    forms = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for shift in range(3):  # base64 inside a longer blob depends on the byte offset: take the stable middle
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(bytes(shift) + secret)[4:-4]
            forms.append(text)
    return forms


def files_under(*roots):
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and not path.is_symlink():
                yield path


def test_packages_unwrap_outside_the_hsm_and_no_key_bytes_leak(runner, token, distribution, tmp_path):
    r1 = distribution.hosts["r1"]
    transport_private = seed_transport_key(r1, tmp_path, 3072)
    assert runner.task("key_generate", {"keys": KEYS}).task["changed"]
    # an imported, exportable transport key is refused unless the set-up says it is a test set-up
    refused = distribution.recipient_task("r1", "recipient_enroll", {})
    assert refused.task["failed"] and "never-extractable" in refused.task["msg"], refused.task
    distribution.set_host_var("r1", "recipient_accept_exportable_transport_key", True)

    run = distribution.playbook("-vvvv", extra_env={"ANSIBLE_KEEP_REMOTE_FILES": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    # r1 kept the transport key the test set up (enrollment generates one only where there is none)
    assert [e["key"]["recipient_host"] for e in events(runner, "key-distribute")
            if e["key"]["transport_key_fingerprint"] == fingerprint(transport_private)]
    meta, keys = distribution.installed("r1")
    assert keys == {"shared:v1", "billing-only:v1"}

    # an independent path: wrap for r1's known transport key, unwrap with cryptography, compare check values; no
    # oaep_hash given: the probe finds the one hash SoftHSM2 wraps with, although its flags list four
    direct = runner.task("key_distribute", {"recipients": [
        {"name": "billing", "host": "r1", "public_key_pem": public_pem(transport_private)}]})
    assert not direct.task.get("failed"), direct.output
    assert direct.task["oaep_hash"] == "sha1"
    packages = direct.task["recipients"][0]["packages"]
    assert {p["mechanism"] for p in packages} == {"CKM_RSA_PKCS_OAEP:sha1"}
    assert sorted(p["label"] for p in packages) == ["billing-only:v1", "shared:v1"]
    secrets_seen = []
    for package in packages:
        key, kcv = unwrap_independently(transport_private, package)
        assert len(key) == 32
        assert kcv == package["key_check_value"] == hsm_kcv(token, package["label"]) == meta[package["label"]][
            "key_check_value"]
        secrets_seen.append(key)
    # and the recipient's copy is the same key: AES-GCM at r1 with the bytes known only to this test
    nonce = secrets.token_bytes(12)
    encryptor = Cipher(algorithms.AES(secrets_seen[[p["label"] for p in packages].index("shared:v1")]),
                       modes.GCM(nonce)).encryptor()
    ciphertext = encryptor.update(b"sample") + encryptor.finalize() + encryptor.tag
    ok, plain = recipient_gcm(r1, "decrypt", "shared:v1", nonce, ciphertext)
    assert ok and bytes.fromhex(plain) == b"sample"

    # no key byte anywhere: -vvvv output, journal, results, controller and HSM temp dirs (remote files kept),
    # both recipients' homes (their kept module files and ansible temp dirs, their tokens)
    haystacks = [("ansible-playbook -vvvv output", (run.stdout + run.stderr).encode())]
    roots = [runner.tmp_path] + [host.home for host in distribution.hosts.values()]
    for path in files_under(*roots):
        if path.suffix == ".pem" and "transport" in path.name:
            continue  # the test's own transport private key
        haystacks.append((str(path), path.read_bytes()))
    names = [name for name, _data in haystacks]
    assert any("AnsiballZ" in name for name in names), "the kept remote module files were not searched"
    assert any(name.endswith("journal.jsonl") for name in names)
    hits = [(name, form[:12]) for name, data in haystacks for secret in secrets_seen for form in encodings(secret)
            if form in data]
    assert hits == []
    # nor any PIN: the HSM's user and SO PINs (the officer's approval ran in this play), the recipients' PINs;
    # only the 0600 PIN files themselves hold them
    tokens = [token] + [host.token for host in distribution.hosts.values()]
    pin_files = {str(path) for t in tokens for path in (t.pin_file, t.so_pin_file)}
    assert "Install each recipient's transport public key in the HSM as CKA_TRUSTED" in run.stdout
    assert {str(token.pin_file), str(token.so_pin_file)} <= set(names)  # the search reached where PINs are
    pins = [pin.encode() for t in tokens for pin in (t.user_pin, t.so_pin)]
    pin_hits = [(name, pin[:3]) for name, data in haystacks if name not in pin_files and not name.endswith(".pin")
                for pin in pins if pin in data]
    assert pin_hits == []


def flip_a_byte(wrapped):
    blob = bytearray(base64.b64decode(wrapped))
    blob[len(blob) // 2] ^= 0x01
    return base64.b64encode(bytes(blob)).decode()


def test_bad_input_is_refused_and_changes_nothing(runner, token, distribution, tmp_path):
    r2 = distribution.hosts["r2"]
    assert runner.task("key_generate", {"keys": KEYS}).task["changed"]

    # weak transport key at a recipient: enrollment refuses it, and so does key_distribute
    weak = seed_transport_key(r2, tmp_path, 2048)
    refused = distribution.recipient_task("r2", "recipient_enroll", {})
    assert refused.task["failed"] and refused.task["error_kind"] == "policy_violation"
    assert "RSA 2048" in refused.task["msg"] and "3072" in refused.task["msg"]
    refused = runner.task("key_distribute", {"oaep_hash": "sha1", "recipients": [
        {"name": "reports", "public_key_pem": public_pem(weak)}]})
    assert refused.task["failed"] and "weak" in refused.task["msg"] and refused.task["error_option"] == "transport_key"

    enrolled = distribution.recipient_task("r1", "recipient_enroll", {})
    assert enrolled.task["changed"] and not enrolled.task.get("failed"), enrolled.output
    r1_pem = enrolled.task["transport_key"]["public_key_pem"]
    again = distribution.recipient_task("r1", "recipient_enroll", {})
    assert not again.task["changed"] and again.task["transport_key"]["fingerprint"] == enrolled.task[
        "transport_key"]["fingerprint"]

    def distribute(*recipients):
        return runner.task("key_distribute", {"oaep_hash": "sha1", "recipients": list(recipients)})

    # unknown recipient, non-distributable key, key not meant for this recipient, pinned fingerprint mismatch
    cases = [
        ({"name": "nobody", "public_key_pem": r1_pem}, "unknown recipient 'nobody'"),
        ({"name": "billing", "public_key_pem": r1_pem, "keys": ["local-only"]}, "'local-only' is not distributable"),
        ({"name": "reports", "public_key_pem": r1_pem, "keys": ["billing-only"]},
         "'reports' may not receive key 'billing-only'"),
        ({"name": "billing", "public_key_pem": r1_pem, "fingerprint": "sha256:" + "0" * 64},
         "does not match the pinned fingerprint"),
        ({"name": "billing", "public_key_pem": "not a key"}, "public_key_pem must be the PEM public key"),
    ]
    for recipient, message in cases:
        result = distribute(recipient)
        assert result.task["failed"] and message in result.task["msg"], (recipient, result.task["msg"])
        assert result.task["recipients"] == []
    assert events(runner, "key-distribute") == []

    # not approved by the Security Officer: refused before any wrap
    unapproved = distribute({"name": "billing", "host": "r1", "public_key_pem": r1_pem})
    assert unapproved.task["failed"] and "Ask the Security Officer" in unapproved.task["msg"], unapproved.task
    assert unapproved.task["recipients"] == [] and events(runner, "key-distribute") == []
    approve(runner, token, {"name": "billing", "host": "r1", "public_key_pem": r1_pem})
    good = distribute({"name": "billing", "host": "r1", "public_key_pem": r1_pem})
    assert not good.task.get("failed"), good.output
    packages = good.task["recipients"][0]["packages"]
    assert len(packages) == 2
    # r1 pins the HSM's package signer (key_install verifies every package with it); r2 cannot enroll (weak key)
    pinned = distribution.recipient_task("r1", "recipient_enroll", {"package_signer": {
        "public_key_pem": good.task["package_signer"]["public_key_pem"]}})
    assert not pinned.task.get("failed"), pinned.output

    def install(alias, recipient, pkgs):
        return distribution.recipient_task(alias, "key_install", {"recipient": recipient, "packages": pkgs})

    # tampered wrapped blob: the token refuses to unwrap; the good package in the same task is not stored either
    tampered = [dict(packages[0], wrapped=flip_a_byte(packages[0]["wrapped"])), packages[1]]
    result = install("r1", "billing", tampered)
    assert result.task["failed"] and result.task["error_kind"] == "package_rejected", result.task
    assert "Nothing was installed" in result.task["msg"]
    # altered check value: unwraps, but the recomputed check value differs
    altered = [dict(packages[0], key_check_value="000000" if packages[0]["key_check_value"] != "000000"
                    else "111111")]
    result = install("r1", "billing", altered)
    assert result.task["failed"] and result.task["error_kind"] == "package_rejected", result.task
    # wrong recipient: r2 serves "reports"; a package for "billing" is refused, even relabelled
    result = install("r2", "reports", packages)
    assert result.task["failed"], result.task
    enrolled_r2 = [o for o in distribution.recipient_objects("r2") if o["class"] == "SECRET_KEY"]
    relabelled = [dict(p, recipient="reports") for p in packages]
    result = install("r2", "reports", relabelled)
    assert result.task["failed"], result.task
    # nothing was installed anywhere
    for alias in ("r1", "r2"):
        meta, keys = distribution.installed(alias)
        assert meta == {} and keys == set()
    assert enrolled_r2 == []
    assert events(runner, "key-install") == []
    refusals = [r["event"] for r in runner.journal_records() if r["event"]["event"]["action"] == "key-install"
                and r["event"]["keylifecycle"]["phase"] == "outcome"]
    assert len(refusals) == 4 and all(e["event"]["outcome"] == "failure" for e in refusals)

    # the genuine packages install; check mode first changes nothing
    checked = distribution.recipient_task("r1", "key_install", {"recipient": "billing", "packages": packages},
                                          "--check")
    assert checked.task["changed"] and distribution.installed("r1") == ({}, set())
    result = install("r1", "billing", packages)
    assert result.task["changed"] and not result.task.get("failed"), result.task
    assert distribution.installed("r1")[1] == {"shared:v1", "billing-only:v1"}
    result = install("r1", "billing", packages)
    assert not result.task["changed"]
    # a genuine package relabelled as another key version: its check value is already held under its real label
    shared = next(p for p in packages if p["name"] == "shared")
    relabelled = dict(shared, name="billing-only", version=7, id="ab" * 16, label="billing-only:v7")
    result = install("r1", "billing", [relabelled])
    assert result.task["failed"] and result.task["error_kind"] == "package_rejected", result.task
    assert "billing-only:v7" not in distribution.installed("r1")[1]


def test_recipient_identity_pins_tombstones_and_retired_recipients(runner, token, distribution):
    """Planning rules of key_distribute, checked through the module on a real token (no ssh needed)."""
    assert runner.task("key_generate", {"keys": KEYS}).task["changed"]
    pem = distribution.recipient_task("r1", "recipient_enroll", {}).task["transport_key"]
    other = distribution.recipient_task("r2", "recipient_enroll", {}).task["transport_key"]
    approve(runner, token, {"name": "billing", "host": "r1", "public_key_pem": pem["public_key_pem"]},
            {"name": "billing", "host": "r2", "public_key_pem": other["public_key_pem"]})

    def distribute(*recipients, policy=None):
        args = {"oaep_hash": "sha1", "recipients": list(recipients)}
        if policy:
            args["policy"] = policy
        return runner.task("key_distribute", args, "--check")

    # two hosts of one service are two recipients (each its own transport key); one host listed twice is refused
    both = distribute({"name": "billing", "host": "r1", "public_key_pem": pem["public_key_pem"]},
                      {"name": "billing", "host": "r2", "public_key_pem": other["public_key_pem"]})
    assert not both.task.get("failed"), both.task
    assert [r["host"] for r in both.task["recipients"]] == ["r1", "r2"]
    assert all(len(r["packages"]) == 2 for r in both.task["recipients"])
    twice = distribute({"name": "billing", "host": "r1", "public_key_pem": pem["public_key_pem"]},
                       {"name": "reports", "host": "r1", "public_key_pem": pem["public_key_pem"]})
    assert twice.task["failed"] and "host 'r1' is listed twice" in twice.task["msg"]

    # a policy that requires pinned transport keys refuses an unpinned or malformed pin, accepts the right one
    strict = {"require_transport_key_pin": True}
    unpinned = distribute({"name": "billing", "host": "r1", "public_key_pem": pem["public_key_pem"]}, policy=strict)
    assert unpinned.task["failed"] and "no pinned transport key fingerprint" in unpinned.task["msg"]
    malformed = distribute({"name": "billing", "host": "r1", "public_key_pem": pem["public_key_pem"],
                            "fingerprint": pem["fingerprint"][len("sha256:"):]})
    assert malformed.task["failed"] and "must be sha256: followed by 64 hex digits" in malformed.task["msg"]
    pinned = distribute({"name": "billing", "host": "r1", "public_key_pem": pem["public_key_pem"],
                         "fingerprint": pem["fingerprint"]}, policy=strict)
    assert not pinned.task.get("failed"), pinned.task

    metadata = token.metadata()
    held = [{"name": "shared", "version": 1, "id": metadata["shared:v1"]["id"], "state": "active",
             "key_check_value": metadata["shared:v1"]["key_check_value"]}]
    # a recipient no key lists any more, but which still holds a version, gets it withdrawn (not an error)
    retired = distribute({"name": "old-service", "host": "r1", "public_key_pem": pem["public_key_pem"],
                          "installed": [dict(held[0])]})
    assert not retired.task.get("failed"), retired.task
    entry = retired.task["recipients"][0]
    assert entry["packages"] == [] and [(w["name"], w["why"]) for w in entry["withdrawn"]] == [
        ("shared", "no longer assigned to this recipient")]
    # a version the recipient withdrew earlier (a tombstone) is blocked, not offered again
    tomb = distribute({"name": "billing", "host": "r1", "public_key_pem": pem["public_key_pem"],
                       "installed": [dict(held[0], state="destroyed")]})
    entry = tomb.task["recipients"][0]
    assert [p["label"] for p in entry["packages"]] == ["billing-only:v1"]
    assert [b["name"] for b in entry["blocked"]] == ["shared"] and entry["withdrawn"] == []
