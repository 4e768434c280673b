"""Replica tokens (docs/replication.md): backup keys copied to a second real SoftHSM2 token the Security Officer
approved, kept in step through rotation and destruction, and checked by independent paths: the replica token read
with python-pkcs11 (tests/helpers/read_token.py), AES-GCM across the two tokens, and packages unwrapped with
``cryptography`` (RSA-OAEP, then RFC 5649 key unwrap) under a transport key the test made.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

from tests.conftest import PKCS11_MODULE, make_token
from tests.integration.test_key_distribute import encodings, files_under

KEYS = [
    {"name": "vault", "backup": True, "usage": ["encrypt", "decrypt"], "retention_period": "1d"},
    {"name": "signer", "type": "ec", "backup": True},
    {"name": "archive", "type": "rsa", "backup": True, "usage": ["sign", "verify"]},
    {"name": "local-only"},
]


def replica_runner_args(replica):
    return {"token_label": replica.label, "user_pin_file": str(replica.pin_file)}


def enroll_and_approve(runner, token, replica):
    """The replica token enrolled (transport key generated in it, the source's package signer pinned) and approved
    by the source token's Security Officer as kind replica."""
    signer = runner.task("key_info", {}).task["package_signer"]
    assert signer and signer["fingerprint"].startswith("sha256:"), signer
    enrolled = runner.task("recipient_enroll", dict(replica_runner_args(replica), package_signer=signer))
    assert not enrolled.task.get("failed"), enrolled.output
    transport = enrolled.task["transport_key"]
    approved = runner.task("recipient_approve", {"so_pin_file": str(token.so_pin_file), "recipients": [
        {"name": "dr", "host": "hsm-b", "kind": "replica", "public_key_pem": transport["public_key_pem"],
         "fingerprint": transport["fingerprint"]}]})
    assert not approved.task.get("failed"), approved.output
    assert [entry["kind"] for entry in approved.task["approved"]] == ["replica"]
    return transport


def replicate(runner, replica, transport, compact=False):
    """replica_install (what it holds) -> key_replicate -> replica_install (store); returns both results.
    ``compact``: the packages as JSON Lines text and the events journaled, not returned (large batches)."""
    held = runner.task("replica_install", replica_runner_args(replica)).task
    assert not held.get("failed"), held
    batch = {"package_format": "jsonl", "return_records": False} if compact else {}
    made = runner.task("key_replicate", dict(batch, replicas=[{
        "name": "dr", "host": "hsm-b", "public_key_pem": transport["public_key_pem"],
        "fingerprint": transport["fingerprint"], "held": held["held"], "documents": held["documents"]}]))
    assert not made.task.get("failed"), made.output
    entry = made.task["replicas"][0]
    stored = runner.task("replica_install", dict(replica_runner_args(replica), packages=entry["packages"],
                                                 kek=entry["kek"], documents=entry["documents"],
                                                 return_records=not compact))
    assert not stored.task.get("failed"), stored.output
    return made.task, stored.task


# Raw python-pkcs11 on a replica, outside the collection: sign with a private key copy, then try to switch its
# CKA_SIGN on. argv = module, token label, PIN file, label. Prints one line per attempt.
TRY_SIGN_ON = r"""
import hashlib
import sys
import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11._pkcs11 import SignMixin
from pkcs11.exceptions import PKCS11Error

module, token_label, pin_file, label = sys.argv[1:5]
tok = pkcs11.lib(module).get_token(token_label=token_label)
with tok.open(rw=True, user_pin=open(pin_file).read().strip()) as s:
    key = s.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
    if not hasattr(key, "sign"):  # python-pkcs11 offers sign() only where CKA_SIGN is true: call C_Sign anyway
        key = type("AnyKey", (SignMixin, type(key)), {})(key.wrapper)
    try:
        if key.key_type == KeyType.EC:
            key.sign(hashlib.sha256(b"forged").digest(), mechanism=Mechanism.ECDSA)
        else:
            key.sign(b"forged", mechanism=Mechanism.SHA256_RSA_PKCS)
        print("signed")
    except PKCS11Error as exc:
        print("refused to sign %s" % type(exc).__name__)
    try:
        key[Attribute.SIGN] = True
        print("allowed")
    except PKCS11Error as exc:
        print("refused %s" % type(exc).__name__)
"""


def key_state(token):
    """label -> (id, revision, state) of the managed keys' newest metadata."""
    return {label: (doc["id"], doc["revision"], doc["state"]) for label, doc in token.metadata().items()
            if not label.startswith(("audit-checkpoint:", "package-signing:", "restore-signing:"))}


def test_replicate_rotate_destroy_reaches_the_replica(runner, token, clock):
    replica = make_token(token.root, "kl-replica")
    assert runner.task("key_generate", {"keys": KEYS}).task["changed"]
    transport = enroll_and_approve(runner, token, replica)

    # check mode: the plan and the diff, nothing wrapped or signed, nothing changed
    objects = token.objects()
    checked = runner.task("key_replicate", {"replicas": [{
        "name": "dr", "host": "hsm-b", "public_key_pem": transport["public_key_pem"]}]}, "--check", "--diff").task
    assert not checked.get("failed"), checked
    assert not checked["changed"] and checked["audit_events"] == []
    assert all(p["wrapped"] is None and "signature" not in p for p in checked["replicas"][0]["packages"])
    assert checked["diff"]["after"]["dr"] == ["archive:v1 active", "signer:v1 active", "vault:v1 active"]
    assert token.objects() == objects

    # replica_install in check mode: the diff shows the copies, the documents and the restore signer it would
    # make, and the replica's token is unchanged
    held = runner.task("replica_install", replica_runner_args(replica)).task
    planned = runner.task("key_replicate", {"replicas": [{
        "name": "dr", "host": "hsm-b", "public_key_pem": transport["public_key_pem"],
        "fingerprint": transport["fingerprint"], "held": held["held"], "documents": held["documents"]}]}).task
    entry = planned["replicas"][0]
    replica_objects = replica.objects()
    would = runner.task("replica_install", dict(replica_runner_args(replica), packages=entry["packages"],
                                                kek=entry["kek"], documents=entry["documents"]),
                        "--check", "--diff").task
    assert not would.get("failed") and would["changed"] is True, would
    assert replica.objects() == replica_objects
    diff = would["diff"]
    assert diff["after"]["held"] == ["archive:v1 active (revision 1)", "signer:v1 active (revision 1)",
                                     "vault:v1 active (revision 1)"] and diff["before"]["held"] == []
    assert diff["before"]["restore_signer"] == "none" and "generated" in diff["after"]["restore_signer"]
    assert len(diff["after"]["documents"]) == len(entry["documents"]) > 0
    assert all(line.endswith(" absent") for line in diff["before"]["documents"])

    made, stored = replicate(runner, replica, transport)
    labels = sorted(p["label"] if "label" in p else "%s:v%d" % (p["name"], p["version"])
                    for p in made["replicas"][0]["packages"])
    assert labels == ["archive:v1", "signer:v1", "vault:v1"]  # local-only is not a backup key
    assert made["replicas"][0]["kek"]["wrapped"] and made["replicas"][0]["blocked"] == []
    assert stored["changed"] and sorted(e["action"] for e in stored["installed"]) == ["install"] * 3
    # the replica holds the same versions, ids, revisions and states: its metadata is the source's
    assert key_state(replica) == {k: v for k, v in key_state(token).items() if not k.startswith("local-only")}
    objects = {(o["label"], o["class"]): o for o in replica.objects()}
    vault = objects[("vault:v1", "SECRET_KEY")]
    assert vault["sensitive"] and vault["extractable"] and vault["kcv"] == token.metadata()["vault:v1"][
        "key_check_value"]
    private = objects[("signer:v1", "PRIVATE_KEY")]
    assert private["sensitive"] and private["sign"] and not private["derive"]
    assert objects[("archive:v1", "PUBLIC_KEY")]["modulus_bits"] == 3072

    # key_info on the replica: the copies are what their metadata says (no drift, no anomaly)
    info = runner.task("key_info", replica_runner_args(replica)).task
    assert not info.get("failed"), info
    assert info["drift"] == [] and info["anomalies"] == [], (info["drift"], info["anomalies"])

    # data encrypted on the primary decrypts on the replica
    nonce, sample = secrets.token_bytes(12), b"patient record 1138"
    ok, ciphertext = token.gcm("encrypt", "vault:v1", nonce, sample)
    assert ok
    ok, plain = replica.gcm("decrypt", "vault:v1", nonce, bytes.fromhex(ciphertext))
    assert ok and bytes.fromhex(plain) == sample

    # nothing new: nothing wrapped, nothing stored
    again, stored_again = replicate(runner, replica, transport)
    assert again["replicas"][0]["packages"] == [] and not stored_again["changed"]

    # the first run's documents replayed after the checkpoint key rotated (its key history moved on): the replica
    # keeps the newer revision, and the replay changes nothing
    first_documents = made["replicas"][0]["documents"]
    assert runner.task("key_rotate", {"name": "audit-checkpoint", "force": True}).task["changed"]
    replicate(runner, replica, transport)
    kept = runner.task("replica_install", replica_runner_args(replica)).task["documents"]
    assert kept != stored_again["documents"]
    replayed = runner.task("replica_install", dict(replica_runner_args(replica), documents=first_documents)).task
    assert not replayed.get("failed") and not replayed["changed"], replayed
    assert runner.task("replica_install", replica_runner_args(replica)).task["documents"] == kept

    # rotation: the new version is installed, the old one updated to deactivated (decrypt-only on the replica too)
    assert runner.task("key_rotate", {"name": "vault", "force": True}).task["changed"]
    made, stored = replicate(runner, replica, transport)
    assert sorted((e["name"], e["version"], e["action"]) for e in stored["installed"]) == [
        ("vault", 1, "update"), ("vault", 2, "install")]
    assert key_state(replica)["vault:v1"][2] == "deactivated" and key_state(replica)["vault:v2"][2] == "active"
    objects = {(o["label"], o["class"]): o for o in replica.objects()}
    assert objects[("vault:v1", "SECRET_KEY")]["decrypt"] and not objects[("vault:v1", "SECRET_KEY")]["encrypt"]

    # destruction once retention has passed: the copy is destroyed and verified absent on the replica
    clock.advance(days=2)
    destroyed = runner.task("key_destroy", {"name": "vault", "version": 1})
    assert not destroyed.task.get("failed"), destroyed.output
    made, stored = replicate(runner, replica, transport, compact=True)
    assert isinstance(made["replicas"][0]["packages"], str) and made["summary"] == {"audit_events": 0}
    assert stored["summary"] == {"installed": 1, "audit_events": 1} and "installed" not in stored
    assert stored["audit_journal"]["records"] >= 2
    assert not [o for o in replica.objects() if o["label"] == "vault:v1" and o["class"] != "DATA"]
    assert key_state(replica)["vault:v1"][2] == "destroyed"

    changes = [r["event"] for r in runner.journal_records() if r["event"]["keylifecycle"]["phase"] == "change"]
    actions = [e["event"]["action"] for e in changes if "name" in e.get("key", {})]
    # 3 wraps for the check of replica_install above (never installed), then 3 + 1
    assert actions.count("key-replicate") == 3 + 4 and actions.count("replica-install") == 4
    assert actions.count("replica-update") == 1 and actions.count("replica-withdraw") == 1
    # the token's documents a restore needs went along (each stored once, when it changed)
    kept = {e["key"]["label"] for e in changes if e["event"]["action"] == "replica-install" and "name" not in e["key"]}
    assert {"audit-journal-pin", "audit-checkpoint-keys"} <= kept


def test_packages_unwrap_outside_the_hsm_and_no_key_bytes_leak(runner, token, tmp_path):
    """A replica whose transport key the test holds in software: the packages are standard RSA-OAEP and RFC 5649,
    and no form of any key's bytes is in the journal, the results or Ansible's files, even at -vvvv."""
    assert runner.task("key_generate", {"keys": KEYS[:2]}).task["changed"]
    transport = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    pem = transport.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    entry = {"name": "dr", "host": "hsm-b", "public_key_pem": pem}

    # not approved by the Security Officer: refused before any wrap
    refused = runner.task("key_replicate", {"replicas": [entry]})
    assert refused.task["failed"] and refused.task["error_kind"] == "policy_violation", refused.task
    assert "approve" in refused.task["msg"] and refused.task["error_option"] == "replicas"

    approved = runner.task("recipient_approve", {"so_pin_file": str(token.so_pin_file), "recipients": [
        dict(entry, kind="replica")]})
    assert not approved.task.get("failed"), approved.output
    made = runner.task("key_replicate", {"replicas": [entry]}, "-vvvv", extra_env={"ANSIBLE_KEEP_REMOTE_FILES": "1"})
    assert not made.task.get("failed"), made.output
    replica = made.task["replicas"][0]
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    kek = transport.decrypt(base64.b64decode(replica["kek"]["wrapped"]), oaep)
    packages = {p["name"]: p for p in replica["packages"]}
    aes = transport.decrypt(base64.b64decode(packages["vault"]["wrapped"]), oaep)
    assert len(aes) == 32 and packages["vault"]["mechanism"] == "CKM_RSA_PKCS_OAEP:sha1"
    pkcs8 = aes_key_unwrap_with_padding(kek, base64.b64decode(packages["signer"]["wrapped"]))
    # SoftHSM2 2.6 zero-pads the PKCS#8 to a multiple of 8 bytes before RFC 5649: the DER length says where it ends
    assert pkcs8[0] == 0x30 and pkcs8[1] < 0x80
    private = serialization.load_der_private_key(pkcs8[:2 + pkcs8[1]], password=None)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    assert public_pem.strip() == packages["signer"]["public_key_pem"].strip()
    scalar = private.private_numbers().private_value.to_bytes(32, "big")

    secrets_found = []
    for path in files_under(tmp_path):
        if path.suffix in (".pin",) or "tokens" in path.parts:
            continue
        data = path.read_bytes()
        for secret in (aes, kek, scalar):
            if any(form in data for form in encodings(secret)):
                secrets_found.append(str(path))
    assert secrets_found == [], secrets_found


POLICY = {"require_backup": True}


def wipe(token):
    """Re-initialise the token (same label, same PINs): every object is gone, as after the loss of the partition."""
    done = subprocess.run(["softhsm2-util", "--init-token", "--token", token.label, "--label", token.label,
                           "--so-pin", token.so_pin, "--pin", token.user_pin], capture_output=True, text=True,
                          check=False, env={**os.environ, **token.env})
    assert done.returncode == 0, done.stdout + done.stderr
    assert token.objects() == []


def test_a_wiped_primary_is_restored_from_its_replica_and_the_journal_continues(runner, token):
    """Generate and rotate (require_backup: the collection's signing keys are backed up too), replicate, wipe the
    primary, restore it from the replica: data encrypted under v1 and v2 before the wipe decrypts after it, the
    versions come back with their state, and the audit journal continues (the next task is anchored, audit_verify
    passes across the restore)."""
    replica = make_token(token.root, "kl-replica")
    keys = [dict(k, backup=None) if k["name"] != "local-only" else {"name": "local-only"} for k in KEYS[:2]]
    assert runner.task("key_generate", {"keys": keys, "policy": POLICY}).task["changed"]
    nonce, samples = secrets.token_bytes(12), {}
    ok, samples[1] = token.gcm("encrypt", "vault:v1", nonce, b"encrypted under v1")
    assert ok
    assert runner.task("key_rotate", {"name": "vault", "force": True, "policy": POLICY}).task["changed"]
    ok, samples[2] = token.gcm("encrypt", "vault:v2", nonce, b"encrypted under v2")
    assert ok
    transport = enroll_and_approve(runner, token, replica)
    made, stored = replicate(runner, replica, transport)
    assert {d["document_kind"] for d in made["replicas"][0]["documents"]} >= {
        "audit journal pin", "audit checkpoint key history"}
    # the replica keeps the primary's signing keys unable to sign (and unable to be switched to sign): whoever holds
    # the replica's user PIN can neither anchor the primary's journal nor sign packages the primary's recipients take
    objects = {(o["label"], o["class"]): o for o in replica.objects()}
    for label in ("audit-checkpoint:v1", "package-signing:v1"):
        copy = objects[(label, "PRIVATE_KEY")]
        assert not copy["sign"] and not copy["modifiable"] and copy["sensitive"] and copy["extractable"], copy
        tried = subprocess.run([sys.executable, "-c", TRY_SIGN_ON, PKCS11_MODULE, replica.label,
                                str(replica.pin_file), label], capture_output=True, text=True, check=False,
                               env={**os.environ, **replica.env})
        lines = tried.stdout.splitlines()
        assert tried.returncode == 0 and len(lines) == 2, tried.stdout + tried.stderr
        assert lines[0].startswith("refused to sign") and lines[1].startswith("refused "), lines
    # the replica signs a restore with a key of its own, made with the first copies and never backed up
    own = stored["restore_signer"]
    assert own["name"] == "restore-signing" and own["fingerprint"] != made["package_signer"]["fingerprint"], own
    assert not objects[("restore-signing:v1", "PRIVATE_KEY")]["extractable"]
    before = key_state(token)
    assert {"audit-checkpoint:v1", "package-signing:v1"} <= set(token.metadata())

    wipe(token)

    # the replacement primary: its transport key, the replica's restore signer pinned
    replica_signer = runner.task("key_info", replica_runner_args(replica)).task["restore_signer"]
    assert replica_signer["fingerprint"] == own["fingerprint"]
    enrolled = runner.task("recipient_enroll", {"package_signer": replica_signer}).task
    assert not enrolled.get("failed"), enrolled
    new_transport = enrolled["transport_key"]
    # the replica's Security Officer approves it; the replica wraps everything back to it
    approved = runner.task("recipient_approve", dict(replica_runner_args(replica), so_pin_file=str(replica.so_pin_file),
                                                     recipients=[{"name": "primary", "host": "hsm-a",
                                                                  "kind": "replica",
                                                                  "public_key_pem": new_transport["public_key_pem"],
                                                                  "fingerprint": new_transport["fingerprint"]}]))
    assert not approved.task.get("failed"), approved.output
    back = runner.task("key_replicate", dict(replica_runner_args(replica), restore=True, replicas=[{
        "name": "primary", "host": "hsm-a", "public_key_pem": new_transport["public_key_pem"],
        "fingerprint": new_transport["fingerprint"], "held": []}]))
    assert not back.task.get("failed"), back.output
    assert back.task["package_signer"]["fingerprint"] == own["fingerprint"]
    entry = back.task["replicas"][0]
    restore_args = {"restore": True, "packages": entry["packages"], "kek": entry["kek"],
                    "documents": entry["documents"]}
    # the signer recipient_enroll pinned is the operator's word: a restore needs the Security Officer's
    refused = runner.task("replica_install", restore_args).task
    assert refused["failed"] and refused["error_option"] == "restore", refused
    assert "package_signer_approve" in refused["msg"] and token.metadata() == {}
    approved = runner.task("package_signer_approve", {"so_pin_file": str(token.so_pin_file),
                                                      "package_signer": replica_signer,
                                                      "fingerprint": own["fingerprint"],  # recorded before the loss
                                                      "change_ref": "CHG-7"}).task
    assert approved["changed"] and approved["package_signer"]["trusted"] is True, approved
    again = runner.task("recipient_enroll", {"package_signer": replica_signer}).task  # leaves the trusted pin
    assert not again.get("failed") and again["package_signer"]["trusted"] is True, again
    restored = runner.task("replica_install", restore_args)
    assert not restored.task.get("failed"), restored.output
    assert key_state(token) == before
    assert not [label for label in token.metadata() if label.startswith("restore-signing:")]  # stays on the replica

    for number, ciphertext in samples.items():
        ok, plain = token.gcm("decrypt", "vault:v%d" % number, nonce, bytes.fromhex(ciphertext))
        assert ok and bytes.fromhex(plain) == b"encrypted under v%d" % number
    # the journal continues: the next lifecycle task is anchored by the restored checkpoint key
    after = runner.task("key_generate", {"name": "after-restore", "backup": True, "policy": POLICY})
    assert not after.task.get("failed"), after.output
    assert after.task["audit_checkpoint"]["key_id"] == made["audit_checkpoint"]["key_id"]
    verified = runner.task("audit_verify", {"fail_on_error": False}).task
    assert verified["ok"] is True, verified
    actions = [r["event"]["event"]["action"] for r in runner.journal_records()
               if r["event"]["keylifecycle"]["phase"] == "change"]
    assert actions.count("key-restore") >= 4


def test_restore_mode_is_refused_on_a_primary_and_onto_a_token_that_names_a_journal(runner, token):
    """restore: true anchors no checkpoint, so it runs only on a replica; and a restore writes records only onto a
    token that lost them."""
    replica = make_token(token.root, "kl-replica")
    assert runner.task("key_generate", {"keys": KEYS[:1], "policy": POLICY}).task["changed"]
    transport = enroll_and_approve(runner, token, replica)
    entry = {"name": "dr", "host": "hsm-b", "public_key_pem": transport["public_key_pem"]}
    refused = runner.task("key_replicate", {"restore": True, "replicas": [entry]}).task
    assert refused["failed"] and refused["error_option"] == "restore" and "is a primary" in refused["msg"], refused
    _made, stored = replicate(runner, replica, transport)
    # the replica's copies and records, offered back to the live primary (enrolled to the replica's restore signer)
    enrolled = runner.task("recipient_enroll", {"package_signer": stored["restore_signer"]}).task
    assert not enrolled.get("failed"), enrolled
    runner.task("recipient_approve", dict(replica_runner_args(replica), so_pin_file=str(replica.so_pin_file),
                                          recipients=[{"name": "primary", "kind": "replica",
                                                       "public_key_pem": enrolled["transport_key"]["public_key_pem"]}]))
    back = runner.task("key_replicate", dict(replica_runner_args(replica), restore=True, replicas=[{
        "name": "primary", "public_key_pem": enrolled["transport_key"]["public_key_pem"]}])).task
    assert not back.get("failed"), back
    assert runner.task("package_signer_approve", {"so_pin_file": str(token.so_pin_file),
                                                  "package_signer": stored["restore_signer"],
                                                  "fingerprint": stored["restore_signer"]["fingerprint"]}
                       ).task["changed"]
    before = token.objects()
    onto_live = runner.task("replica_install", {"restore": True, "packages": back["replicas"][0]["packages"],
                                                "kek": back["replicas"][0]["kek"],
                                                "documents": back["replicas"][0]["documents"]}).task
    assert onto_live["failed"] and "already names audit journal" in onto_live["msg"], onto_live
    # the same without the replica's pin among the documents, or without documents: still the live token's records
    copy = back["replicas"][0]
    without_pin = [document for document in copy["documents"] if document["document_kind"] != "audit journal pin"]
    assert len(without_pin) == len(copy["documents"]) - 1
    for documents in (without_pin, []):
        sneaked = runner.task("replica_install", {"restore": True, "packages": copy["packages"], "kek": copy["kek"],
                                                  "documents": documents}).task
        assert sneaked["failed"] and sneaked["error_option"] == "restore", sneaked
        assert "already names audit journal" in sneaked["msg"], sneaked
    assert token.objects() == before
