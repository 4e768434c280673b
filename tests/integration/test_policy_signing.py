"""policy_signer and policy_sign through ansible-playbook on real SoftHSM2 tokens.

The Security Officer installs a policy signer in the HSM token (SO session); the signer signs the environment's
policy with a passphrase-protected PEM or with the key in the officer's own token (a second SoftHSM2 token). The
token is read back, and the signature checked, by the test itself (python-pkcs11 in a subprocess, cryptography).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys

import pytest
import yaml

from tests.conftest import PKCS11_MODULE, make_token

PASSPHRASE = "policy signer passphrase 4711"
NOT_AFTER = "2099-06-30T00:00:00+00:00"

# Independent reader: every EC public key on the token (public objects: no login needed), with its attributes.
_READ_SIGNERS = r"""
import hashlib, json, sys
import pkcs11
from pkcs11 import Attribute as A, KeyType, ObjectClass
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
out = []
with token.open() as session:
    for obj in session.get_objects({A.CLASS: ObjectClass.PUBLIC_KEY, A.KEY_TYPE: KeyType.EC}):
        point = bytes(obj[A.EC_POINT])
        if point[0] == 4 and point[1] == len(point) - 2:
            point = point[2:]
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        out.append({"label": obj[A.LABEL], "trusted": bool(obj[A.TRUSTED]), "verify": bool(obj[A.VERIFY]),
                    "encrypt": bool(obj[A.ENCRYPT]), "wrap": bool(obj[A.WRAP]),
                    "modifiable": bool(obj[A.MODIFIABLE]), "destroyable": bool(obj[A.DESTROYABLE]),
                    "private": bool(obj[A.PRIVATE]), "fingerprint": "sha256:" + hashlib.sha256(der).hexdigest()})
json.dump(sorted(out, key=lambda o: o["label"]), sys.stdout)
"""

# C_DestroyObject of the object labelled argv[3], logged in as argv[4] ("user" or "so") with the PIN in argv[5].
_DESTROY = r"""
import json, sys
import pkcs11
from pkcs11 import Attribute as A, ObjectClass
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
pin = open(sys.argv[5]).read().strip()
login = {"so_pin": pin} if sys.argv[4] == "so" else {"user_pin": pin}
with token.open(rw=True, **login) as session:
    obj = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=sys.argv[3])
    try:
        obj.destroy()
        outcome = "destroyed"
    except pkcs11.exceptions.PKCS11Error as exc:
        outcome = "refused: %s %s" % (type(exc).__name__, exc)
json.dump(outcome, sys.stdout)
"""

# The officer's own token: an EC P-256 key pair (label argv[3]) generated in it; prints the public key's PEM.
_GENERATE = r"""
import json, sys
import pkcs11
from pkcs11 import Attribute as A, KeyType, Mechanism
from pkcs11.util.ec import encode_named_curve_parameters
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
with token.open(rw=True, user_pin=open(sys.argv[4]).read().strip()) as session:
    params = session.create_domain_parameters(KeyType.EC, {A.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                                              local=True)
    public, _private = params.generate_keypair(
        store=True, label=sys.argv[3], id=b"\x51\x01",
        public_template={A.VERIFY: True, A.TOKEN: True},
        private_template={A.SIGN: True, A.TOKEN: True, A.SENSITIVE: True, A.EXTRACTABLE: False})
    point = bytes(public[A.EC_POINT])
    if point[0] == 4 and point[1] == len(point) - 2:
        point = point[2:]
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
json.dump(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
          sys.stdout)
"""


def _python(script, token, *args):
    out = subprocess.run([sys.executable, "-c", script, PKCS11_MODULE, token.label, *args], capture_output=True,
                         text=True, check=False, env={**os.environ, **token.env})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def ec_public_keys(token):
    return _python(_READ_SIGNERS, token)


def fingerprint(public_key):
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def public_pem(public_key):
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="module")
def signer_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def write_pem(path, key, passphrase=PASSPHRASE, mode=0o600):
    from cryptography.hazmat.primitives import serialization

    encryption = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
                  else serialization.NoEncryption())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    path.chmod(mode)
    return path


def install(runner, token, name, pem, *flags, **args):
    args.setdefault("so_pin_file", str(token.so_pin_file))
    return runner.task("policy_signer", dict(args, name=name, public_key_pem=pem), *flags)


def payload(doc):
    """The signed bytes as the design states them (canonical JSON of the signed fields), computed here."""
    fields = {name: doc[name] for name in ("environment", "format", "not_after", "policy", "serial", "signer")}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def assert_verifies(doc, public_key):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import policy_payload

    assert policy_payload(doc) == payload(doc)
    public_key.verify(base64.b64decode(doc["signature"]), policy_payload(doc), ec.ECDSA(hashes.SHA256()))


def test_the_officer_installs_a_policy_signer(runner, token, signer_key, tmp_path):
    pem = public_pem(signer_key.public_key())
    fp = fingerprint(signer_key.public_key())
    label = "policy-signer:dana"

    # only the user PIN: as the SO PIN (the token refuses the login), or no SO PIN at all; nothing is created
    as_so = install(runner, token, "dana", pem, so_pin_file=str(token.pin_file))
    assert as_so.task["failed"] is True and as_so.task["error_kind"] == "login_failed", as_so.task
    assert "Security Officer PIN" in as_so.task["msg"]
    no_so = runner.task("policy_signer", {"name": "dana", "public_key_pem": pem})
    assert no_so.task["failed"] is True and no_so.task["error_kind"] == "pin_unavailable", no_so.task
    assert "so_pin or so_pin_file" in no_so.task["msg"]
    assert ec_public_keys(token) == []

    checked = install(runner, token, "dana", pem, "--check", "--diff", approved_by="dana.officer")
    assert not checked.task.get("failed"), checked.task
    assert checked.task["changed"] is True and checked.task["audit_events"] == []
    assert checked.task["policy_signers"] == [{"name": "dana", "label": label, "fingerprint": fp,
                                               "destroyable": False}]
    assert checked.task["diff"] == {"before": {"policy_signers": []}, "after": {"policy_signers": ["dana " + fp]}}
    assert ec_public_keys(token) == []

    applied = install(runner, token, "dana", pem, approved_by="dana.officer", change_ref="CHG-2001")
    assert not applied.task.get("failed"), applied.task
    assert applied.task["changed"] is True and applied.task["audit_checkpoint"] is None
    assert applied.task["policy_signers"] == [{"name": "dana", "label": label, "fingerprint": fp,
                                               "destroyable": False}]
    assert ec_public_keys(token) == [{"label": label, "trusted": True, "verify": True, "encrypt": False,
                                      "wrap": False, "modifiable": False, "destroyable": False, "private": False,
                                      "fingerprint": fp}]

    again = install(runner, token, "dana", pem, "--check", approved_by="dana.officer")
    assert again.task["changed"] is False and not again.task.get("failed"), again.task
    again = install(runner, token, "dana", pem, approved_by="dana.officer")
    assert again.task["changed"] is False and again.task["audit_events"] == [], again.task

    from cryptography.hazmat.primitives.asymmetric import ec

    other = public_pem(ec.generate_private_key(ec.SECP256R1()).public_key())
    taken = install(runner, token, "dana", other, approved_by="dana.officer")
    assert taken.task["failed"] is True and taken.task["error_kind"] == "invalid_option", taken.task
    assert taken.task["error_option"] == "name" and "cannot be replaced or removed" in taken.task["msg"]
    weak = install(runner, token, "erin", public_pem(ec.generate_private_key(ec.SECP384R1()).public_key()))
    assert weak.task["failed"] is True and weak.task["error_option"] == "public_key_pem", weak.task
    assert [key["label"] for key in ec_public_keys(token)] == [label]

    records = [r["event"] for r in runner.journal_records()]
    changes = [r for r in records if r["keylifecycle"]["phase"] == "change"]
    assert [r["event"]["action"] for r in changes] == ["policy-signer-approve"]
    assert changes[0]["keylifecycle"]["policy_signer"] == {"name": "dana", "fingerprint": fp, "destroyable": False}
    assert changes[0]["keylifecycle"]["approved_by"] == "dana.officer"
    assert changes[0]["keylifecycle"]["change_ref"] == "CHG-2001"
    assert changes[0]["key"]["token"] == token.label and changes[0]["key"]["public_key_fingerprint"] == fp
    outcomes = [(r["event"]["action"], r["event"]["outcome"], r.get("error", {}).get("type")) for r in records
                if r["keylifecycle"]["phase"] == "outcome"]
    # check mode journals nothing: two refused logins, the installation, the re-run, the name taken, the weak key
    assert outcomes == [("policy-signer-approve", "failure", "login_failed"),
                        ("policy-signer-approve", "failure", "pin_unavailable"),
                        ("policy-signer-approve", "success", None),
                        ("policy-signer-approve", "success", None),
                        ("policy-signer-approve", "failure", "invalid_option"),
                        ("policy-signer-approve", "failure", "invalid_option")]
    for text in (runner.journal.read_text(), applied.output):
        assert token.so_pin not in text

    # the token refuses C_DestroyObject of the signer to the user and to the Security Officer
    for role, pin_file in (("user", token.pin_file), ("so", token.so_pin_file)):
        outcome = _python(_DESTROY, token, label, role, str(pin_file))
        assert outcome.startswith("refused"), (role, outcome)
    assert [key["label"] for key in ec_public_keys(token)] == [label]


def test_policy_sign_with_a_passphrase_protected_pem(runner, signer_key, tmp_path, source_collection):
    key_path = write_pem(tmp_path / "signer.enc.pem", signer_key)
    dest = tmp_path / "policy.yml"
    policy = {"min_rsa_bits": 4096, "destroy_requires_approval": True, "max_rotation_period": "180d"}
    args = {"policy": policy, "environment": "prod", "serial": 3, "not_after": NOT_AFTER, "signer_name": "dana",
            "private_key_path": str(key_path), "private_key_passphrase": PASSPHRASE, "dest": str(dest)}

    checked = runner.task("policy_sign", args, "--check", "-vvvv", connection=False)
    assert not checked.task.get("failed"), checked.task
    assert checked.task["changed"] is True and not dest.exists()
    assert checked.task["signed_policy"]["policy"] == policy
    # no usable signature leaves check mode: the result shows where it would be
    assert checked.task["signed_policy"]["signature"] == "<made when run without check mode>"
    summary = "\n".join(checked.task["summary"])
    assert "serial 3" in summary and NOT_AFTER in summary and "policy.min_rsa_bits: 4096 (baseline 3072)" in summary
    assert "policy_sign: Signing the policy of environment prod" in checked.stdout  # shown before writing

    signed = runner.task("policy_sign", args, "--diff", connection=False)
    assert not signed.task.get("failed"), signed.task
    assert signed.task["changed"] is True and signed.task["dest"] == str(dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    text = dest.read_text()
    assert text.startswith("---\n# ") and PASSPHRASE not in text
    loaded = yaml.safe_load(text)
    assert set(loaded) == {"key_policy_signed", "key_policy"}
    assert loaded["key_policy"] == "{{ key_policy_signed.policy }}"
    doc = loaded["key_policy_signed"]
    assert doc == signed.task["signed_policy"]
    assert doc["format"] == 1 and doc["environment"] == "prod" and doc["serial"] == 3
    assert doc["not_after"] == NOT_AFTER and doc["policy"] == policy and doc["signer_name"] == "dana"
    assert doc["signer"] == fingerprint(signer_key.public_key())
    assert signed.task["sha256"] == hashlib.sha256(payload(doc)).hexdigest()
    assert_verifies(doc, signer_key.public_key())
    for output in (checked.output, signed.output, json.dumps(signed.task)):
        assert PASSPHRASE not in output

    again = runner.task("policy_sign", args, connection=False)
    assert again.task["changed"] is False and dest.read_text() == text, again.task

    # refused, dest untouched: an unencrypted key, a key others can read, a wrong passphrase, a weaker policy
    clear = write_pem(tmp_path / "clear.pem", signer_key, passphrase=None)
    refused = runner.task("policy_sign", dict(args, private_key_path=str(clear), serial=4), connection=False)
    assert refused.task["failed"] is True and refused.task["error_option"] == "private_key_path", refused.task
    assert "not encrypted" in refused.task["msg"]
    loose = write_pem(tmp_path / "loose.pem", signer_key, mode=0o644)
    refused = runner.task("policy_sign", dict(args, private_key_path=str(loose), serial=4), connection=False)
    assert refused.task["failed"] is True and refused.task["error_option"] == "private_key_path", refused.task
    assert "0644" in refused.task["msg"]
    refused = runner.task("policy_sign", dict(args, private_key_passphrase="wrong", serial=4), connection=False)
    assert refused.task["failed"] is True and refused.task["error_option"] == "private_key_passphrase"
    refused = runner.task("policy_sign", dict(args, policy=dict(policy, min_rsa_bits=2048), serial=4),
                          connection=False)
    assert refused.task["failed"] is True and refused.task["error_kind"] == "policy_violation", refused.task
    assert refused.task["error_option"] == "policy.min_rsa_bits" and "weaken" in refused.task["msg"]
    refused = runner.task("policy_sign", dict(args, not_after="2001-01-01T00:00:00+00:00", serial=4),
                          connection=False)
    assert refused.task["failed"] is True and refused.task["error_option"] == "not_after", refused.task
    assert dest.read_text() == text

    # the approvals of this policy as a change of the policy in force, embedded by a run with the same options:
    # the same signature, the approvals in the file (one given as a dict, one as the JSON text approval_sign wrote)
    from cryptography.hazmat.primitives.asymmetric import ec

    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _approval_signing as approving
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._policy_signing import PemSigner, sign_policy

    approvers = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("erin", "frank")}
    in_force = sign_policy({"approvers": {name: public_pem(key.public_key()) for name, key in approvers.items()},
                            "approvals_required": {"policy_change": 2}}, "prod", 2, NOT_AFTER, "dana",
                           PemSigner(str(key_path), PASSPHRASE)).signed_policy
    approvals = []
    for name, key in sorted(approvers.items()):
        request = approving.build_request("policy_change", None, None, "CHG-2200", "1d", None,
                                          new_policy=approving.read_new_policy(doc, "policy_change", in_force))
        signer = PemSigner(str(write_pem(tmp_path / ("%s.pem" % name), key)), PASSPHRASE)
        approvals.append(approving.sign_approval(request, name, signer).approval)
    embedded = runner.task("policy_sign", dict(args, approvals=[approvals[0], json.dumps(approvals[1])],
                                               in_force_policy=in_force), connection=False)
    assert not embedded.task.get("failed"), embedded.task
    assert embedded.task["changed"] is True and embedded.task["sha256"] == signed.task["sha256"]
    with_approvals = yaml.safe_load(dest.read_text())["key_policy_signed"]
    assert with_approvals["signature"] == doc["signature"]  # kept: the payload is the same
    assert {key: value for key, value in with_approvals.items() if key != "approvals"} == doc
    assert with_approvals["approvals"] == sorted(approvals, key=lambda item: item["approver"])
    assert_verifies(with_approvals, signer_key.public_key())
    summary = "\n".join(embedded.task["summary"])
    assert "Approval of this policy change by erin" in summary and "by frank" in summary
    assert "2 approver(s) of 2 required by the policy in force (serial 2" in summary


def test_policy_sign_with_the_officers_own_token(runner, token, tmp_path, source_collection):
    officer = make_token(tmp_path / "officer", "officer")
    pem = _python(_GENERATE, officer, "policy-signer", str(officer.pin_file))
    from cryptography.hazmat.primitives import serialization

    public_key = serialization.load_pem_public_key(pem.encode())
    dest = tmp_path / "staging-policy.yml"
    args = {"policy": {"min_aes_bits": "256", "compromise_requires_approval": "yes"}, "environment": "staging",
            "serial": 2, "not_after": "180d", "signer_name": "dana", "pkcs11_module": PKCS11_MODULE,
            "token_label": officer.label, "user_pin_file": str(officer.pin_file), "key_label": "policy-signer",
            "dest": str(dest)}
    environment = {"SOFTHSM2_CONF": str(officer.conf)}  # the controller's environment finds the officer's token

    checked = runner.task("policy_sign", args, "--check", connection=False, extra_env=environment)
    assert not checked.task.get("failed"), checked.task
    assert checked.task["changed"] is True and not dest.exists()

    signed = runner.task("policy_sign", args, connection=False, extra_env=environment)
    assert not signed.task.get("failed"), signed.task
    doc = yaml.safe_load(dest.read_text())["key_policy_signed"]
    # the settings as the policy option holds them once checked
    assert doc["policy"] == {"min_aes_bits": 256, "compromise_requires_approval": True}
    assert doc["signer"] == fingerprint(public_key) and doc["environment"] == "staging"
    assert doc["not_after"].endswith("+00:00")
    assert_verifies(doc, public_key)
    assert officer.user_pin not in signed.output and officer.user_pin not in dest.read_text()

    # the same public key, installed as the HSM's policy signer, names the same fingerprint
    installed = install(runner, token, "dana", pem)
    assert installed.task["policy_signers"][0]["fingerprint"] == doc["signer"], installed.task

    missing = runner.task("policy_sign", dict(args, key_label="no-such-key"), connection=False,
                          extra_env=environment)
    assert missing.task["failed"] is True and missing.task["error_option"] == "key_label", missing.task
    loose = tmp_path / "officer-loose.pin"
    loose.write_text(officer.user_pin + "\n")
    loose.chmod(0o644)
    refused = runner.task("policy_sign", dict(args, user_pin_file=str(loose)), connection=False,
                          extra_env=environment)
    assert refused.task["failed"] is True and refused.task["error_option"] == "user_pin_file", refused.task
    both = runner.task("policy_sign", dict(args, private_key_path=str(tmp_path / "x.pem"),
                                           private_key_passphrase="x"), connection=False, extra_env=environment)
    assert both.task["failed"] is True and "mutually exclusive" in both.task["msg"], both.task
