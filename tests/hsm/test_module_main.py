"""Modules' main() in this process with patched arguments, against real SoftHSM2 tokens: the typed errors that
only a token can raise reach the play as fail_json with their error_kind and option, and change nothing.

The errors that arise before a token is opened are in tests/unit/test_module_main.py.
"""

from __future__ import annotations

import base64
import json

import pytest

from tests.hsm.journal_intents import MemoryJournal
from tests.unit.test_module_main import run_main


def connection(token, **extra):
    return dict(token.connection(), **extra)


@pytest.fixture
def journal():
    """The controller's journal: each lifecycle run here carries a real journaled intent, as through its action."""
    return MemoryJournal()


def run_lifecycle(capsys, journal, module, args):
    """A lifecycle module's main() with the intent the action plugin would journal first; the outcome journaled."""
    result = run_main(capsys, module, dict(args, audit_context=journal.intent(args["token_label"])))
    journal.outcome(result)
    return result


def objects_of(settings):
    """(class, label) of every object on the token, read with python-pkcs11 directly."""
    from pkcs11 import Attribute

    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_session

    with open_session(settings, rw=False) as session:
        return sorted((str(o[Attribute.CLASS]), str(o[Attribute.LABEL])) for o in session.get_objects())


def assert_failed(result, kind, option=None):
    assert result["failed"] is True, result
    assert result["error_kind"] == kind, result
    if option is not None:
        assert result["error_option"] == option, result
    assert "Traceback" not in result["msg"] and "exception" not in result


def test_wrong_pin_is_login_failed(capsys, hsm_token, tmp_path):
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("00000000\n")
    wrong.chmod(0o600)
    result = run_main(capsys, "key_info", connection(hsm_token, user_pin_file=str(wrong)))
    assert_failed(result, "login_failed", "user_pin")
    assert "00000000" not in json.dumps(result)


def test_absent_token_is_token_unavailable(capsys, hsm_token):
    result = run_main(capsys, "key_generate", connection(hsm_token, token_label="no-such-token", name="k"))
    assert_failed(result, "token_unavailable", "token_label")
    assert "no-such-token" in result["msg"]


def test_unknown_key_is_key_not_found(capsys, hsm_token, settings, journal):
    # the token's first task pins its journal before its work, even when the work then fails: pin it first here
    assert run_lifecycle(capsys, journal, "key_generate", connection(hsm_token, name="k"))["changed"] is True
    before = objects_of(settings)
    result = run_lifecycle(capsys, journal, "key_rotate", connection(hsm_token, name=["ghost"], force=True))
    assert_failed(result, "key_not_found", "name")
    assert objects_of(settings) == before


def test_changed_spec_is_key_conflict(capsys, hsm_token, settings, journal):
    assert run_lifecycle(capsys, journal, "key_generate", connection(hsm_token, name="k"))["changed"] is True
    before = objects_of(settings)
    result = run_lifecycle(capsys, journal, "key_generate", connection(hsm_token, name="k", type="rsa"))
    assert_failed(result, "key_conflict")
    assert objects_of(settings) == before


def test_unreadable_metadata_is_metadata_corrupt(capsys, hsm_token, settings):
    from pkcs11 import Attribute, ObjectClass

    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_session
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import METADATA_APPLICATION

    with open_session(settings) as session:
        session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.PRIVATE: True,
                               Attribute.LABEL: "k:v1", Attribute.APPLICATION: METADATA_APPLICATION,
                               Attribute.VALUE: b"{not json"})
    result = run_main(capsys, "key_info", connection(hsm_token))
    assert_failed(result, "metadata_corrupt")
    assert "k:v1" in result["msg"]


@pytest.fixture
def distributed(capsys, hsm_token, unit_token_root, journal):
    """A distributable key on the HSM token, a recipient token enrolled, and one package for it."""
    from tests.conftest import make_token

    recipient = make_token(unit_token_root, hsm_token.label + "-recipient")
    import pkcs11

    from tests.conftest import PKCS11_MODULE

    pkcs11.lib(PKCS11_MODULE).reinitialize()
    generated = run_lifecycle(capsys, journal, "key_generate", connection(hsm_token, name="k", distributable=True,
                                                                          recipients=["svc"]))
    assert generated["changed"] is True, generated
    signer = run_main(capsys, "key_info", connection(hsm_token))["package_signer"]
    assert signer is not None  # generated in the HSM with the first distributable key
    enrolled = run_main(capsys, "recipient_enroll", connection(recipient, package_signer={
        "public_key_pem": signer["public_key_pem"], "fingerprint": signer["fingerprint"]}))
    assert enrolled["changed"] is True, enrolled
    recipients = [{"name": "svc", "public_key_pem": enrolled["transport_key"]["public_key_pem"]}]
    # the Security Officer approves the recipient's transport key in the HSM (SO PIN)
    approved = run_main(capsys, "recipient_approve", connection(hsm_token, recipients=recipients,
                                                                so_pin_file=str(hsm_token.so_pin_file)))
    assert approved["changed"] is True, approved
    return recipient, recipients


def test_tampered_package_is_package_rejected(capsys, hsm_token, distributed, unit_token_root, journal):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import ConnectionSettings

    recipient, recipients = distributed
    wrapped = run_lifecycle(capsys, journal, "key_distribute", connection(hsm_token, recipients=recipients,
                                                                          oaep_hash="sha1"))
    assert not wrapped.get("failed"), wrapped
    package = dict(wrapped["recipients"][0]["packages"][0])
    blob = bytearray(base64.b64decode(package["wrapped"]))
    blob[len(blob) // 2] ^= 0x01
    package["wrapped"] = base64.b64encode(bytes(blob)).decode("ascii")
    recipient_settings = ConnectionSettings(**recipient.connection())
    before = objects_of(recipient_settings)
    result = run_main(capsys, "key_install", connection(recipient, recipient="svc", packages=[package]))
    assert_failed(result, "package_rejected", "packages")
    assert objects_of(recipient_settings) == before


def test_mechanism_the_token_refuses_is_a_token_error(capsys, hsm_token, distributed, journal):
    """SoftHSM2 2.6.1 refuses RSA-OAEP with SHA-256 (CKR_ARGUMENTS_BAD): named, typed, nothing wrapped."""
    _recipient, recipients = distributed
    result = run_lifecycle(capsys, journal, "key_distribute", connection(hsm_token, recipients=recipients,
                                                                         oaep_hash="sha256"))
    assert result["failed"] is True, result
    assert result["error_kind"] in ("token_operation_failed", "mechanism_unsupported"), result
    assert "C_WrapKey" in result["msg"] or "wrap" in result["msg"].lower(), result["msg"]
