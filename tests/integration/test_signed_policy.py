"""A signed policy anchored in the HSM, through ansible-playbook on a real SoftHSM2 token (issue 14, increment A).

Once the Security Officer installed a policy signer in the token (policy_signer, SO PIN), every lifecycle task must
bring the environment's policy as the officer signed it: an unsigned, altered, weakened, rolled-back or expired
policy is refused before the token changes, and the refusal is journaled. Policies are signed here by the test
itself (``cryptography``, the payload rule of docs/access-control.md written out independently), and once through
policy_sign.
"""

from __future__ import annotations

import base64
import json

import pytest
import yaml


POLICY = {"max_rotation_period": "90d", "destroy_requires_approval": True,
          "authorization": {"generate": ["root", "alice"], "rotate": ["root", "alice"], "destroy": ["root"],
                            "compromise_rotate": ["root"], "distribute": ["root"]}}


def _signer():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return key, pem


def _fingerprint(key):
    import hashlib

    from cryptography.hazmat.primitives import serialization

    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def sign(key, policy, serial, not_after="2099-01-01T00:00:00+00:00", environment="test"):
    """A signed policy document: ECDSA P-256 / SHA-256 over the canonical JSON of the six signed fields."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    doc = {"format": 1, "environment": environment, "serial": serial, "not_after": not_after, "policy": policy,
           "signer": _fingerprint(key)}
    payload = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    doc.update(signer_name="dana", signature=base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode())
    return doc


@pytest.fixture
def signed_token(runner, token):
    """The token pinned to the runner's journal, with the officer's policy signer installed by policy_signer."""
    assert runner.task("key_generate", {"name": "k", "policy": POLICY}).rc == 0
    key, pem = _signer()
    installed = runner.task("policy_signer", {"name": "dana", "public_key_pem": pem,
                                              "so_pin_file": str(token.so_pin_file)})
    assert installed.rc == 0 and installed.task["changed"] is True, installed.task
    return key


def last_outcome(runner):
    return runner.journal_records()[-1]["event"]


def assert_refused(runner, token, result, kind):
    assert result.task.get("failed") is True and result.task.get("error_kind") == kind, result.task
    assert "Nothing was changed on the token" in result.task["msg"]
    outcome = last_outcome(runner)
    assert outcome["keylifecycle"]["phase"] == "outcome" and outcome["error"]["type"] == kind


def test_signed_policy_is_required_once_the_token_has_a_signer(runner, token, signed_token):
    before = token.objects()
    # the policy as the operator would have it, unsigned
    assert_refused(runner, token, runner.task("key_rotate", {"name": ["k"], "force": True, "policy": POLICY}),
                   "policy_unsigned")
    # -e key_policy={} next to the signed policy
    signed = sign(signed_token, POLICY, 1)
    assert_refused(runner, token, runner.task("key_rotate", {"name": ["k"], "force": True, "policy": {},
                                                             "signed_policy": signed}), "policy_mismatch")
    # one field weakened in the policy option
    weakened = dict(POLICY, destroy_requires_approval=False)
    assert_refused(runner, token, runner.task("key_rotate", {"name": ["k"], "force": True, "policy": weakened,
                                                             "signed_policy": signed}), "policy_mismatch")
    # one field weakened inside the signed document (the signature no longer holds)
    altered = dict(signed, policy=weakened)
    assert_refused(runner, token, runner.task("key_rotate", {"name": ["k"], "force": True, "policy": weakened,
                                                             "signed_policy": altered}), "policy_signature_invalid")
    # signed by someone else's key
    other, _pem = _signer()
    assert_refused(runner, token, runner.task("key_rotate", {
        "name": ["k"], "force": True, "policy": POLICY, "signed_policy": sign(other, POLICY, 1)}),
        "policy_signature_invalid")
    assert token.objects() == before

    # the signed policy works, and every intent record names it
    done = runner.task("key_rotate", {"name": ["k"], "force": True, "policy": POLICY, "signed_policy": signed})
    assert done.rc == 0 and done.task["changed"] is True, done.task
    assert done.task["policy_in_force"]["signed"] is True and done.task["policy_in_force"]["serial"] == 1
    intent = [r for r in runner.journal_records() if r["event"]["keylifecycle"].get("phase") == "intent"][-1]
    recorded = intent["event"]["keylifecycle"]["policy"]
    assert recorded["signed"] is True and recorded["serial"] == 1 and recorded["signer"] == _fingerprint(signed_token)


def test_a_policy_rolled_back_to_a_lower_serial_is_refused(runner, token, signed_token):
    newer = sign(signed_token, POLICY, 5)
    assert runner.task("key_generate", {"name": "k2", "policy": POLICY, "signed_policy": newer}).rc == 0
    before = token.objects()
    older = sign(signed_token, POLICY, 4)
    assert_refused(runner, token, runner.task("key_generate", {"name": "k3", "policy": POLICY,
                                                               "signed_policy": older}), "policy_rolled_back")
    assert token.objects() == before


def test_an_expired_policy_is_refused(runner, token, signed_token, clock):
    from datetime import timedelta

    not_after = (clock.now() + timedelta(days=10)).replace(microsecond=0).isoformat()
    signed = sign(signed_token, POLICY, 1, not_after=not_after)
    assert runner.task("key_generate", {"name": "k2", "policy": POLICY, "signed_policy": signed}).rc == 0
    clock.advance(days=11)
    before = token.objects()
    assert_refused(runner, token, runner.task("key_generate", {"name": "k3", "policy": POLICY,
                                                               "signed_policy": signed}), "policy_expired")
    assert token.objects() == before


def test_policy_sign_output_is_accepted_and_the_report_shows_the_signer(runner, token, signed_token, tmp_path):
    from cryptography.hazmat.primitives import serialization

    pem_path = tmp_path / "officer.pem"
    pem_path.write_bytes(signed_token.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"officer passphrase")))
    pem_path.chmod(0o600)
    dest = tmp_path / "policy.yml"
    signed = runner.task("policy_sign", {
        "policy": POLICY, "environment": "test", "serial": 2, "not_after": "30d", "signer_name": "dana",
        "private_key_path": str(pem_path), "private_key_passphrase": "officer passphrase", "dest": str(dest)},
        connection=False)
    assert signed.rc == 0, signed.task
    doc = yaml.safe_load(dest.read_text())["key_policy_signed"]
    assert runner.task("key_generate", {"name": "k2", "policy": POLICY, "signed_policy": doc}).rc == 0
    info = runner.task("key_info", {"name": []}).task
    assert [s["name"] for s in info["policy_signers"]] == ["dana"]
    assert info["policy_signers"][0]["destroyable"] is False


def test_check_diff_shows_a_change_of_policy_before_it_takes_effect(runner, token, signed_token):
    first = sign(signed_token, POLICY, 1)
    assert runner.task("key_generate", {"name": "k2", "policy": POLICY, "signed_policy": first}).rc == 0
    tighter = dict(POLICY, max_rotation_period="60d")
    second = sign(signed_token, tighter, 2)
    before = token.objects()
    planned = runner.task("key_generate", {"name": "k2", "policy": tighter, "signed_policy": second}, "--check",
                          "--diff")
    assert planned.rc == 0, planned.task
    change = planned.task["policy_change"]
    assert (change["from"]["serial"], change["to"]["serial"]) == (1, 2), change
    assert "policy this task brings" in planned.stdout and "signed policy serial 2" in planned.stdout
    assert token.objects() == before
    # once a task ran under the new policy, the same policy is no change
    assert runner.task("key_generate", {"name": "k2", "policy": tighter, "signed_policy": second}).rc == 0
    again = runner.task("key_generate", {"name": "k2", "policy": tighter, "signed_policy": second}, "--check")
    assert "policy_change" not in again.task
