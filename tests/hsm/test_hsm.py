"""PKCS#11 core against a real SoftHSM2 token: sessions, PIN handling, error translation."""

from __future__ import annotations

import os

import pytest

from tests.conftest import PKCS11_MODULE


def _hsm():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _hsm

    return _hsm


def _errors():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _errors

    return _errors


def test_open_session_logs_in(settings):
    with _hsm().open_session(settings) as session:
        assert session.token.label == settings.token_label


def test_wrong_pin(hsm_token, tmp_path):
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("not-the-pin")
    wrong.chmod(0o600)
    settings = _hsm().ConnectionSettings(PKCS11_MODULE, hsm_token.label, user_pin_file=str(wrong))
    with pytest.raises(_errors().LoginFailed) as err:
        with _hsm().open_session(settings):
            pass
    assert "CKR_PIN_INCORRECT" in str(err.value)
    assert "not-the-pin" not in str(err.value)
    assert err.value.option == "user_pin"


def test_locked_pin_message():
    """SoftHSM2 does not lock PINs, so the mapping is checked with python-pkcs11's own exception."""
    from pkcs11.exceptions import PinLocked

    translated = _hsm().translate_pkcs11_error(PinLocked(), "C_Login", token_label="t")
    assert isinstance(translated, _errors().LoginFailed)
    assert "CKR_PIN_LOCKED" in str(translated) and "Security Officer" in str(translated)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_pin_file_too_open_is_refused(hsm_token, mode):
    os.chmod(hsm_token.pin_file, mode)
    settings = _hsm().ConnectionSettings(PKCS11_MODULE, hsm_token.label, user_pin_file=str(hsm_token.pin_file))
    with pytest.raises(_errors().PinUnavailable) as err:
        settings.read_pin()
    assert "chmod 600" in str(err.value)
    assert "%04o" % mode in str(err.value)
    assert hsm_token.user_pin not in str(err.value)


def test_pin_file_missing_and_empty(hsm_token, tmp_path):
    missing = _hsm().ConnectionSettings(PKCS11_MODULE, hsm_token.label, user_pin_file=str(tmp_path / "nope"))
    with pytest.raises(_errors().PinUnavailable, match="does not exist"):
        missing.read_pin()
    empty = tmp_path / "empty.pin"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(_errors().PinUnavailable, match="is empty"):
        _hsm().ConnectionSettings(PKCS11_MODULE, hsm_token.label, user_pin_file=str(empty)).read_pin()


def test_pin_file_is_read_and_stripped(hsm_token):
    settings = _hsm().ConnectionSettings(PKCS11_MODULE, hsm_token.label, user_pin_file=str(hsm_token.pin_file))
    assert settings.read_pin() == hsm_token.user_pin
    assert hsm_token.user_pin not in repr(settings)


def test_absent_library(hsm_token):
    settings = _hsm().ConnectionSettings("/usr/lib/no-such-pkcs11.so", hsm_token.label, user_pin="x")
    with pytest.raises(_errors().LibraryUnavailable) as err:
        with _hsm().open_session(settings):
            pass
    assert "pkcs11_module /usr/lib/no-such-pkcs11.so does not exist" in str(err.value)


def test_library_that_is_not_pkcs11(hsm_token):
    settings = _hsm().ConnectionSettings("/bin/true", hsm_token.label, user_pin="x")
    with pytest.raises(_errors().LibraryUnavailable, match="could not be loaded"):
        with _hsm().open_session(settings):
            pass


def test_absent_token(hsm_token):
    settings = _hsm().ConnectionSettings(PKCS11_MODULE, "no-such-token", user_pin_file=str(hsm_token.pin_file))
    with pytest.raises(_errors().TokenUnavailable) as err:
        with _hsm().open_session(settings):
            pass
    assert "No token labelled 'no-such-token'" in str(err.value)
    assert repr(hsm_token.label) in str(err.value)


def test_read_only_session_refuses_writes(settings):
    from pkcs11 import Attribute, ObjectClass

    with _hsm().open_session(settings, rw=False) as session:
        with pytest.raises(_errors().TokenOperationFailed, match="read-only session"):
            with _hsm().pkcs11_errors("C_CreateObject"):
                session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True,
                                       Attribute.LABEL: "x", Attribute.VALUE: b"x"})


def test_unmapped_ckr_0x68_is_named(settings):
    """A real CKR_KEY_FUNCTION_NOT_PERMITTED (0x68): encrypt with a key that may not encrypt."""
    from pkcs11 import Attribute, KeyType, Mechanism

    with _hsm().open_session(settings) as session:
        key = session.generate_key(KeyType.AES, 256, label="no-encrypt", template={
            Attribute.ENCRYPT: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
        key[Attribute.ENCRYPT] = False
        with pytest.raises(_errors().TokenOperationFailed) as err:
            with _hsm().pkcs11_errors("C_Encrypt"):
                key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)
    assert "CKR_KEY_FUNCTION_NOT_PERMITTED (0x68)" in str(err.value)


def test_unmapped_ckr_0x1b_is_named():
    from pkcs11.exceptions import PKCS11Error

    translated = _hsm().translate_pkcs11_error(PKCS11Error("Unmapped error code 0x1b"), "C_DestroyObject")
    assert "CKR_ACTION_PROHIBITED (0x1B)" in str(translated)
    unknown = _hsm().translate_pkcs11_error(PKCS11Error("Unmapped error code 0x8000001"), "C_X")
    assert "CKR code 0x8000001" in str(unknown)


def test_mechanism_unsupported(settings):
    from pkcs11 import KeyType, Mechanism

    with _hsm().open_session(settings) as session:
        with pytest.raises(_errors().MechanismUnsupported):
            with _hsm().pkcs11_errors("C_GenerateKey"):
                session.generate_key(KeyType.AES, 256, mechanism=Mechanism.SEED_KEY_GEN)
