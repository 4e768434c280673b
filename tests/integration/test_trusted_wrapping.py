"""Trusted wrapping through ansible-playbook on a real SoftHSM2 token: key_distribute wraps only under transport keys
the Security Officer approved in the token (recipient_approve, SO PIN file), refuses any other recipient before any
wrap, journals every wrap's trust, and a rotation migrates keys made before trusted wrapping by sealing them.

No recipient host is needed: a recipient's transport key is an RSA key made here with ``cryptography``; the test
unwraps with it to check what the HSM returned."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.conftest import PKCS11_MODULE


def _transport():
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return key, pem


def _recipient(pem, name="app", host="app-host"):
    return {"name": name, "host": host, "public_key_pem": pem}


def _approve(runner, token, pem, state="present"):
    return runner.task("recipient_approve", {"recipients": [_recipient(pem)], "state": state,
                                             "so_pin_file": str(token.so_pin_file)})


def _distribute(runner, pem, *flags, policy=None):
    args = {"oaep_hash": "sha1", "recipients": [_recipient(pem)]}
    if policy:
        args["policy"] = policy
    return runner.task("key_distribute", args, *flags)


def _events(runner, action):
    return [r["event"] for r in runner.journal_records() if r["event"]["event"]["action"] == action
            and r["event"]["keylifecycle"]["phase"] == "change"]


def _check_value(private_key, package):
    raw = private_key.decrypt(base64.b64decode(package["wrapped"]),
                              padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
    encryptor = Cipher(algorithms.AES(raw), modes.ECB()).encryptor()  # noqa: S305 (check value only)
    return (encryptor.update(bytes(16)) + encryptor.finalize())[:3].hex()


def _assert_refused_unapproved(result):
    assert result.task["failed"] and result.task["error_kind"] == "policy_violation", result.task
    assert result.task["error_option"] == "recipients" and result.task["recipients"] == []
    msg = result.task["msg"]
    assert "recipient 'app' on host app-host" in msg and "sha256:" in msg
    assert "Ask the Security Officer" in msg and "recipient_approve" in msg


def test_only_approved_recipients_receive_keys(runner, token):
    assert runner.task("key_generate", {"name": "k", "distributable": True, "recipients": ["app"]}).task["changed"]
    assert token.metadata()["k:v1"]["wrap_with_trusted"] is True
    private_key, pem = _transport()

    # unapproved: refused before any wrap, in check mode too, nothing returned, nothing journaled as distributed
    for flags in (("--check",), ()):
        _assert_refused_unapproved(_distribute(runner, pem, *flags))
    assert _events(runner, "key-distribute") == []

    approved = _approve(runner, token, pem)
    assert approved.task["changed"] and not approved.task.get("failed"), approved.output
    result = _distribute(runner, pem)
    assert not result.task.get("failed"), result.output
    entry = result.task["recipients"][0]
    [package] = entry["packages"]
    assert entry["trusted_key_label"].startswith("trusted-transport:app@app-host:sha256:")
    assert _check_value(private_key, package) == token.metadata()["k:v1"]["key_check_value"].lower()
    assert package["signer_fingerprint"] == result.task["package_signer"]["fingerprint"] and package["signature"]
    [event] = _events(runner, "key-distribute")
    assert event["key"]["trusted_wrapping"] is True and event["key"]["trusted_key_label"] == entry["trusted_key_label"]
    assert "warning" not in event["keylifecycle"]

    # revoked: refused again
    revoked = _approve(runner, token, pem, state="absent")
    assert revoked.task["changed"] and not revoked.task.get("failed"), revoked.output
    _assert_refused_unapproved(_distribute(runner, pem))
    assert len(_events(runner, "key-distribute")) == 1


def _make_legacy_key(runner, token, collections_path, name="legacy"):
    """A distributable key made the way it was before trusted wrapping: no CKA_WRAP_WITH_TRUSTED, metadata false.

    The token pins the runner's journal first (a task with no keys), as a token in use before the upgrade would."""
    assert runner.task("key_generate", {"keys": []}).rc == 0
    code = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from ansible_collections.secops.keylifecycle.plugins.module_utils import _key_store\n"
        "from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import (\n"
        "    ConnectionSettings, open_session)\n"
        "from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import build_key_spec, utc_now\n"
        "from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE\n"
        "from ansible_collections.secops.keylifecycle.plugins.module_utils import _key_templates\n"
        "_key_store.generate_key_objects = lambda session, spec, label, key_id, required, token_label: (\n"
        "    _key_templates._generate_secret(session, spec, label, key_id, False), False)\n"
        "settings = ConnectionSettings(sys.argv[2], sys.argv[3], user_pin_file=sys.argv[4])\n"
        "spec = build_key_spec({'name': sys.argv[5], 'distributable': True, 'recipients': ['app']}, BASELINE)\n"
        "with open_session(settings) as session:\n"
        "    _key_store.TokenKeyStore(session, sys.argv[3]).load().generate(spec, 1, 'legacy', utc_now())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(collections_path), PKCS11_MODULE, token.label,
                           str(token.pin_file), name], env={**os.environ, **token.env}, check=False,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert token.metadata()["%s:v1" % name]["wrap_with_trusted"] is False


def test_policy_off_wraps_legacy_keys_with_a_journaled_warning(runner, token, collections_path):
    _make_legacy_key(runner, token, collections_path)
    private_key, pem = _transport()
    _assert_refused_unapproved(_distribute(runner, pem))  # the baseline requires trusted wrapping
    result = _distribute(runner, pem, policy={"require_trusted_wrapping": False})
    assert not result.task.get("failed"), result.output
    [package] = result.task["recipients"][0]["packages"]
    assert _check_value(private_key, package) == token.metadata()["legacy:v1"]["key_check_value"].lower()
    assert any("require_trusted_wrapping is off" in w for w in result.task.get("warnings", [])), result.task
    [event] = _events(runner, "key-distribute")
    assert event["key"]["trusted_wrapping"] is False and "trusted_key_label" not in event["key"]
    assert "require_trusted_wrapping is off" in event["keylifecycle"]["warning"]

    # a wrap-with-trusted key is still refused by the token's rule, before any wrap
    runner.task("key_generate", {"name": "k", "distributable": True, "recipients": ["app"]})
    refused = _distribute(runner, pem, policy={"require_trusted_wrapping": False})
    assert refused.task["failed"] and "k:v1 can be wrapped only under a transport key" in refused.task["msg"]


def test_rotation_migrates_a_legacy_key_by_sealing_it(runner, token, collections_path):
    _make_legacy_key(runner, token, collections_path)
    checked = runner.task("key_rotate", {"name": ["legacy"], "force": True}, "--check")
    assert checked.task["plan"][0]["seal_versions"] == [1], checked.task
    assert [o["extractable"] for o in token.objects() if o["label"] == "legacy:v1" and o["class"] == "SECRET_KEY"] \
        == [True]

    rotated = runner.task("key_rotate", {"name": ["legacy"], "force": True})
    assert rotated.task["changed"] and rotated.task["rotated"][0]["sealed_versions"] == [1], rotated.output
    metadata = token.metadata()
    assert metadata["legacy:v1"]["sealed_at"] and metadata["legacy:v1"]["wrap_with_trusted"] is False
    assert metadata["legacy:v2"]["wrap_with_trusted"] is True and "sealed_at" not in metadata["legacy:v2"]
    secrets = {o["label"]: o for o in token.objects() if o["class"] == "SECRET_KEY"}
    assert secrets["legacy:v1"]["extractable"] is False and secrets["legacy:v2"]["extractable"] is True
    [seal] = _events(runner, "key-seal")
    assert seal["key"]["label"] == "legacy:v1" and seal["event"]["reason"] == "migration to trusted wrapping"
    again = runner.task("key_rotate", {"name": ["legacy"], "force": True}, "--check")
    assert "seal_versions" not in again.task["plan"][0]

    # a recipient enrolled after the migration receives only the wrap-with-trusted version
    _private_key, pem = _transport()
    _approve(runner, token, pem)
    result = _distribute(runner, pem)
    entry = result.task["recipients"][0]
    assert [p["label"] for p in entry["packages"]] == ["legacy:v2"]
    assert [(b["version"], b["why"]) for b in entry["blocked"]] == [
        (1, "not extractable: sealed at the migration to trusted wrapping")]
