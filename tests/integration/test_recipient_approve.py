"""recipient_approve through ansible-playbook on a real SoftHSM2 token: the Security Officer approves and revokes.

The token is read back by an independent reader (python-pkcs11 in a subprocess, no collection code).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PKCS11_MODULE

# Independent reader: every trusted public key on the token (public objects: no login needed).
_READ_TRUSTED = r"""
import hashlib, json, sys
import pkcs11
from pkcs11 import Attribute as A, ObjectClass
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
out = []
with token.open() as session:
    for obj in session.get_objects({A.CLASS: ObjectClass.PUBLIC_KEY}):
        numbers = rsa.RSAPublicNumbers(int.from_bytes(obj[A.PUBLIC_EXPONENT], "big"),
                                       int.from_bytes(obj[A.MODULUS], "big"))
        der = numbers.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        out.append({"label": obj[A.LABEL], "trusted": bool(obj[A.TRUSTED]), "wrap": bool(obj[A.WRAP]),
                    "encrypt": bool(obj[A.ENCRYPT]), "verify": bool(obj[A.VERIFY]),
                    "modifiable": bool(obj[A.MODIFIABLE]), "private": bool(obj[A.PRIVATE]),
                    "fingerprint": "sha256:" + hashlib.sha256(der).hexdigest()})
json.dump(sorted(out, key=lambda o: o["label"]), sys.stdout)
"""


def trusted_keys(token):
    out = subprocess.run([sys.executable, "-c", _READ_TRUSTED, PKCS11_MODULE, token.label], capture_output=True,
                         text=True, check=True, env={**os.environ, **token.env})
    return [key for key in json.loads(out.stdout) if key["trusted"]]


@pytest.fixture(scope="module")
def recipient_key():
    """A recipient's RSA-3072 transport public key (what recipient_enroll returns), made with cryptography."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    public = rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return pem, "sha256:" + digest.finalize().hex()


def approve(runner, token, recipients, *flags, **args):
    args.setdefault("so_pin_file", str(token.so_pin_file))
    return runner.task("recipient_approve", dict(args, recipients=recipients), *flags)


def test_approve_check_apply_again_and_revoke(runner, token, recipient_key):
    pem, fingerprint = recipient_key
    recipients = [{"name": "billing", "host": "r1", "public_key_pem": pem, "fingerprint": fingerprint}]
    label = "trusted-transport:billing@r1:%s" % fingerprint

    checked = approve(runner, token, recipients, "--check", "--diff", approved_by="alice.officer")
    assert not checked.task.get("failed"), checked.task
    assert checked.task["changed"] is True and checked.task["audit_events"] == []
    assert checked.task["diff"] == {"before": {"approved": []}, "after": {"approved": ["billing@r1 " + fingerprint]}}
    assert trusted_keys(token) == []

    applied = approve(runner, token, recipients, approved_by="alice.officer", change_ref="CHG-1042")
    assert not applied.task.get("failed"), applied.task
    assert applied.task["changed"] is True
    assert applied.task["approved"] == [{"recipient": "billing", "host": "r1", "fingerprint": fingerprint,
                                         "label": label, "kind": "recipient"}]
    assert trusted_keys(token) == [{"label": label, "trusted": True, "wrap": True, "encrypt": False,
                                    "verify": False, "modifiable": False, "private": False,
                                    "fingerprint": fingerprint}]

    again = approve(runner, token, recipients, "--check", approved_by="alice.officer")
    assert again.task["changed"] is False, again.task
    again = approve(runner, token, recipients, approved_by="alice.officer")
    assert again.task["changed"] is False and again.task["audit_events"] == [], again.task

    revoke_checked = approve(runner, token, [{"name": "billing", "host": "r1"}], "--check", state="absent")
    assert revoke_checked.task["changed"] is True and revoke_checked.task["approved"] == []
    assert len(trusted_keys(token)) == 1
    revoked = approve(runner, token, [{"name": "billing", "host": "r1", "fingerprint": fingerprint}], "--diff",
                      state="absent", approved_by="alice.officer")
    assert revoked.task["changed"] is True and revoked.task["approved"] == [], revoked.task
    assert revoked.task["diff"]["after"] == {"approved": []}
    assert trusted_keys(token) == []
    assert approve(runner, token, [{"name": "billing", "host": "r1"}], state="absent").task["changed"] is False

    records = [r["event"] for r in runner.journal_records()]
    changes = [r for r in records if r["keylifecycle"]["phase"] == "change"]
    assert [r["event"]["action"] for r in changes] == ["recipient-approve", "recipient-revoke"]
    for record in changes:
        assert record["keylifecycle"]["approved_by"] == "alice.officer"
        assert record["key"]["recipient"] == "billing" and record["key"]["recipient_host"] == "r1"
        assert record["key"]["transport_key_fingerprint"] == fingerprint and record["key"]["label"] == label
        assert record["key"]["token"] == token.label
    assert changes[0]["keylifecycle"]["change_ref"] == "CHG-1042"
    outcomes = [(r["event"]["action"], r["event"]["outcome"]) for r in records
                if r["keylifecycle"]["phase"] == "outcome"]
    # check mode journals nothing: 2 approvals, 2 revocations
    assert outcomes == [("recipient-approve", "success")] * 2 + [("recipient-revoke", "success")] * 2
    assert not any(r["event"]["action"] == "audit-checkpoint" for r in records)  # the SO cannot sign


def test_so_pin_refusals(runner, token, recipient_key):
    pem, fingerprint = recipient_key
    recipients = [{"name": "billing", "host": "r1", "public_key_pem": pem, "fingerprint": fingerprint}]

    loose = token.root / "loose.so.pin"
    loose.write_text(token.so_pin + "\n")
    loose.chmod(0o644)
    result = approve(runner, token, recipients, so_pin_file=str(loose))
    assert result.task["failed"] is True and result.task["error_kind"] == "pin_unavailable"
    assert result.task["error_option"] == "so_pin_file" and "so_pin_file" in result.task["msg"]
    assert "0644" in result.task["msg"]

    wrong = token.root / "wrong.so.pin"
    wrong.write_text(token.user_pin + "\n")  # the user PIN is not the SO PIN
    wrong.chmod(0o600)
    result = approve(runner, token, recipients, so_pin_file=str(wrong))
    assert result.task["failed"] is True and result.task["error_kind"] == "login_failed", result.task
    assert "Security Officer PIN" in result.task["msg"] and "so_pin / so_pin_file" in result.task["msg"]

    # module_defaults / the connection options cannot stand in for the SO PIN
    result = runner.task("recipient_approve", {"recipients": recipients})
    assert result.task["failed"] is True and result.task["error_kind"] == "pin_unavailable", result.task
    assert "so_pin or so_pin_file" in result.task["msg"]

    result = runner.task("recipient_approve", {"recipients": recipients}, environment={"PKCS11_SO_PIN": "x" * 8})
    assert result.task["failed"] is True and "PKCS11_SO_PIN is set through the task's environment" in \
        result.task["msg"]
    result = runner.task("recipient_approve", {"recipients": recipients, "so_pin": token.so_pin})
    assert result.task["failed"] is True and "pipelining is off" in result.task["msg"]
    assert trusted_keys(token) == []
    assert token.so_pin not in result.output and token.so_pin not in runner.journal.read_text()


def test_the_so_pin_never_appears_in_output_or_journal(runner, token, recipient_key):
    pem, fingerprint = recipient_key
    recipients = [{"name": "billing", "host": "r1", "public_key_pem": pem, "fingerprint": fingerprint}]
    result = runner.task("recipient_approve", {"recipients": recipients, "so_pin": token.so_pin}, "-vvvv",
                         "--diff", extra_env={"ANSIBLE_PIPELINING": "True"})
    assert not result.task.get("failed"), result.task
    assert result.task["changed"] is True
    # the host's own environment (PKCS11_SO_PIN) serves as well, for a revocation
    revoked = runner.task("recipient_approve", {"recipients": [{"name": "billing", "host": "r1"}],
                                                "state": "absent"}, "-vvvv",
                          extra_env={"PKCS11_SO_PIN": token.so_pin})
    assert revoked.task["changed"] is True, revoked.task
    for text in (result.output, revoked.output, json.dumps(result.task), json.dumps(revoked.task),
                 runner.journal.read_text()):
        assert token.so_pin not in text
    assert trusted_keys(token) == []
