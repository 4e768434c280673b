"""approval_sign through ansible-playbook: the approver's side of signed approvals (3 playbook runs).

An approver signs with a passphrase-protected PEM (check mode first, then for real, then with the wrong key against
the signed policy) and with the key in their own token (a second SoftHSM2 token). The approvals are checked by the
test itself: the signature with cryptography over the bytes the design states, the shape with the lead's
``_approvals.parse_approval``.
"""

from __future__ import annotations

import base64
import json
import stat
from datetime import datetime, timedelta, timezone

import yaml

from tests.conftest import PKCS11_MODULE, make_token
from tests.integration.test_policy_signing import _GENERATE, _python, fingerprint, public_pem, write_pem

PASSPHRASE = "approver passphrase 4711"
KEYS = [{"name": "payments-dek", "version": 1}]
WORDS = ("dana approves: DESTROY (cryptographic erasure, irreversible) of payments-dek v1 on token 'prod-hsm', "
         "change CHG-2041, valid until ")


def assert_verifies(doc, public_key):
    """The signature, checked independently: ECDSA P-256 / SHA-256 over canonical JSON of approver/format/request."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from ansible_collections.secops.keylifecycle.plugins.module_utils._approvals import parse_approval

    assert parse_approval(doc) == doc
    payload = json.dumps({"approver": doc["approver"], "format": doc["format"], "request": doc["request"]},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    public_key.verify(base64.b64decode(doc["signature"]), payload, ec.ECDSA(hashes.SHA256()))


def signed_policy(tmp_path, approvers, serial=5, **settings):
    """The environment's signed policy listing ``approvers`` (name -> key), as policy_sign makes it."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._policy_signing import PemSigner, sign_policy

    key_path = write_pem(tmp_path / ("policy-signer-%d.pem" % serial), ec.generate_private_key(ec.SECP256R1()),
                         PASSPHRASE)
    policy = dict({"approvers": {name: public_pem(key.public_key()) for name, key in approvers.items()},
                   "approvals_required": {"destroy": 2}, "security_officers": sorted(approvers)}, **settings)
    return sign_policy(policy, "prod", serial, "2099-01-01T00:00:00+00:00", "dana.officer",
                       PemSigner(str(key_path), PASSPHRASE)).signed_policy


def test_approval_sign_with_a_pem(runner, tmp_path, source_collection):
    from cryptography.hazmat.primitives.asymmetric import ec

    from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import policy_digest

    dana, erin = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    dana_pem = write_pem(tmp_path / "dana.enc.pem", dana, PASSPHRASE)
    erin_pem = write_pem(tmp_path / "erin.enc.pem", erin, PASSPHRASE)
    (tmp_path / "approvals").mkdir()
    dest = tmp_path / "approvals" / "dana.json"
    wrong_dest = tmp_path / "approvals" / "wrong.json"
    args = {"action": "destroy", "token": "prod-hsm", "keys": KEYS, "change_ref": "CHG-2041", "not_after": "2d",
            "approver_name": "dana", "private_key_path": str(dana_pem), "private_key_passphrase": PASSPHRASE,
            "signed_policy": signed_policy(tmp_path, {"dana": dana, "erin": erin}), "dest": str(dest)}
    # a change of policy (serial 6 tightens max_rotation_period), approved on every token; a recipient approval
    new_policy = signed_policy(tmp_path, {"dana": dana, "erin": erin}, serial=6, max_rotation_period="90d",
                               approvals_required={"destroy": 2, "policy_change": 2})
    common = {name: args[name] for name in ("approver_name", "private_key_path", "private_key_passphrase",
                                            "signed_policy")}
    change_args = dict(common, action="policy_change", new_policy=new_policy, change_ref="CHG-2200",
                       dest=str(tmp_path / "approvals" / "dana-policy.json"))
    recipient = {"recipient": "partner-bank", "fingerprint": "sha256:" + "4f" * 32}
    recipient_args = dict(common, action="recipient_approve", token="prod-hsm", keys=[recipient],
                          change_ref="CHG-2150")
    tasks = [("checked", dict(args), {"check_mode": True, "diff": True}),
             ("signed", dict(args), {"diff": True}),
             ("wrong", dict(args, private_key_path=str(erin_pem), dest=str(wrong_dest)), {}),
             ("change", change_args, {}),
             ("recipient", recipient_args, {})]
    play = [{"name": "approver", "hosts": "hsm", "gather_facts": False, "tasks": [
        dict({"name": name, "secops.keylifecycle.approval_sign": task_args, "register": name,
              "ignore_errors": True}, **flags) for name, task_args, flags in tasks] + [
        {"name": "save", "ansible.builtin.copy": {
            "content": "{{ {'checked': checked, 'signed': signed, 'wrong': wrong, 'change': change, "
                       "'recipient': recipient} | to_json }}",
            "dest": str(tmp_path / "results.json")}, "check_mode": False, "diff": False}]}]
    (tmp_path / "approve.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    run = runner.playbook(tmp_path / "approve.yml")
    results = json.loads((tmp_path / "results.json").read_text())
    checked, signed, wrong = results["checked"], results["signed"], results["wrong"]

    # check mode: the request shown and returned; nothing signed, nothing written
    assert not checked.get("failed"), checked
    assert checked["changed"] is True and "approval" not in checked
    assert checked["request_text"].startswith(WORDS)
    assert checked["request"]["keys"] == KEYS and checked["request"]["action"] == "destroy"
    assert checked["diff"]["before"] == "" and '"signature": "<' in checked["diff"]["after"]
    assert ("approval_sign: " + checked["request_text"]) in run.stdout  # displayed before signing

    # signed with dana's key, the one the signed policy lists for dana; written 0644
    assert not signed.get("failed"), signed
    assert signed["changed"] is True and signed["dest"] == str(dest)
    assert ("approval_sign: " + signed["request_text"]) in run.stdout
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    doc = json.loads(dest.read_text())
    assert doc == signed["approval"] and doc["request"] == signed["request"]
    assert doc["approver"] == fingerprint(dana.public_key()) and doc["approver_name"] == "dana"
    assert doc["request"]["token"] == "prod-hsm" and doc["request"]["change_ref"] == "CHG-2041"
    not_after = datetime.fromisoformat(doc["request"]["not_after"])
    assert timedelta(hours=47) < not_after - datetime.now(timezone.utc) <= timedelta(days=2)
    assert doc["request"]["nonce"] != checked["request"]["nonce"]  # a new random nonce each run
    assert_verifies(doc, dana.public_key())

    # erin's key as dana: refused against the signed policy before it signs; nothing written
    assert wrong["failed"] is True and wrong["error_option"] == "private_key_path", wrong
    assert "not dana's approver key" in wrong["msg"] and fingerprint(dana.public_key()) in wrong["msg"]
    assert not wrong_dest.exists()
    assert PASSPHRASE not in run.stdout + run.stderr and PASSPHRASE not in dest.read_text()

    # the policy change: the new policy's digest, on every token; the words say what it changes
    change = results["change"]
    assert not change.get("failed"), change
    digest = policy_digest(new_policy)
    assert change["request"]["keys"] == [{"policy": digest}] and change["request"]["token"] == "*"
    assert change["request"]["action"] == "policy_change" and change["request"]["change_ref"] == "CHG-2200"
    assert change["request_text"].startswith(
        "dana approves: put in force the signed policy of SHA-256 %s (environment prod, serial 6, signed by "
        "dana.officer; it requires signed approvals for " % digest), change["request_text"]
    assert ("changes from the signed_policy given (its signature is checked on the HSM host, not here): "
            "approvals_required, max_rotation_period) on every token of the environment, change CHG-2200"
            in change["request_text"]), change["request_text"]
    assert ("approval_sign: " + change["request_text"]) in run.stdout
    assert change["new_policy"]["changes"] == ["approvals_required", "max_rotation_period"]
    doc = json.loads((tmp_path / "approvals" / "dana-policy.json").read_text())
    assert doc == change["approval"]
    assert_verifies(doc, dana.public_key())

    # the recipient approval names the recipient and its transport key's fingerprint
    approved = results["recipient"]
    assert not approved.get("failed"), approved
    assert approved["changed"] is False and "dest" not in approved  # returned only
    assert approved["request"]["keys"] == [recipient] and approved["request"]["token"] == "prod-hsm"
    assert "partner-bank" in approved["request_text"] and recipient["fingerprint"] in approved["request_text"]
    assert approved["request_text"].startswith("dana approves: APPROVE as a trusted recipient")
    assert_verifies(approved["approval"], dana.public_key())


def test_approval_sign_with_the_approvers_own_token(runner, tmp_path, source_collection):
    from cryptography.hazmat.primitives import serialization

    officer = make_token(tmp_path / "officer", "erin-officer")
    public_key = serialization.load_pem_public_key(
        _python(_GENERATE, officer, "approver", str(officer.pin_file)).encode())
    dest = tmp_path / "erin.json"
    not_after = (datetime.now(timezone.utc) + timedelta(days=1)).replace(microsecond=0).isoformat()
    args = {"action": "journal_rollover", "token": "prod-hsm", "change_ref": "CHG-2077", "not_after": not_after,
            "nonce": "5f" * 16, "approver_name": "erin", "pkcs11_module": PKCS11_MODULE,
            "token_label": officer.label, "user_pin_file": str(officer.pin_file), "key_label": "approver",
            "dest": str(dest)}
    environment = {"SOFTHSM2_CONF": str(officer.conf)}  # the controller's environment finds the approver's token

    signed = runner.task("approval_sign", args, connection=False, extra_env=environment)
    assert not signed.task.get("failed"), signed.task
    assert signed.task["changed"] is True
    assert "approval_sign: erin approves: start a NEW AUDIT JOURNAL for no key (the token itself) on token " \
           "'prod-hsm', change CHG-2077" in signed.stdout
    doc = json.loads(dest.read_text())
    assert doc["request"] == {"action": "journal_rollover", "token": "prod-hsm", "keys": [], "change_ref": "CHG-2077",
                              "not_after": not_after, "nonce": "5f" * 16}
    assert doc["approver"] == fingerprint(public_key) and doc["approver_name"] == "erin"
    assert_verifies(doc, public_key)
    assert officer.user_pin not in signed.output + dest.read_text()

    # the same request again (same nonce, same not_after): the valid approval at dest is kept, unchanged
    text = dest.read_text()
    again = runner.task("approval_sign", args, connection=False, extra_env=environment)
    assert not again.task.get("failed"), again.task
    assert again.task["changed"] is False and dest.read_text() == text and again.task["approval"] == doc
