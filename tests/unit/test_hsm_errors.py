"""translate_pkcs11_error's table: every python-pkcs11 exception maps to a typed error and an operator message.
Pure: python-pkcs11's exception classes only, no token, no build."""

from __future__ import annotations

import inspect

import pytest
from pkcs11 import exceptions as p11_exc


def _hsm():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _hsm

    return _hsm


def _errors():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _errors

    return _errors


def test_every_name_in_the_table_is_a_python_pkcs11_exception():
    for names, error, message, option in _hsm()._PKCS11_ERRORS:
        for name in names:
            assert issubclass(getattr(p11_exc, name), p11_exc.PKCS11Error), name
        assert issubclass(error, _errors().KeyLifecycleError)
        assert "%(where)s" in message or "initialise the token" in message
        assert option in (None, "user_pin", "token_label")


@pytest.mark.parametrize("name, error, option, text", [
    ("PinIncorrect", "LoginFailed", "user_pin", "The token refused the user PIN (CKR_PIN_INCORRECT) during "
                                                "C_Login on token 't'. Check user_pin / user_pin_file"),
    ("PinLenRange", "LoginFailed", "user_pin", "format or length during C_Login on token 't'"),
    ("UserPinNotInitialized", "TokenUnavailable", "token_label", "CKR_USER_PIN_NOT_INITIALIZED"),
    ("NoSuchToken", "TokenUnavailable", "token_label", "not present or not recognised during C_Login on token 't'"),
    ("SessionReadOnly", "TokenOperationFailed", None, "read-only session or write-protected token"),
    ("MechanismParamInvalid", "MechanismUnsupported", None, "used by C_Login on token 't' (MechanismParamInvalid)"),
    ("KeyUnextractable", "TokenOperationFailed", None, "only keys generated as distributable can be wrapped"),
    ("AttributeTypeInvalid", "TokenOperationFailed", None, "object template during C_Login on token 't' "
                                                           "(AttributeTypeInvalid)"),
    ("UserNotLoggedIn", "LoginFailed", "user_pin", "The session is not logged in during C_Login on token 't'."),
])
def test_mapped_exceptions(name, error, option, text):
    translated = _hsm().translate_pkcs11_error(getattr(p11_exc, name)(), "C_Login", token_label="t")
    assert type(translated).__name__ == error and translated.option == option
    assert text in str(translated)


def test_unmapped_and_unknown_errors():
    translate = _hsm().translate_pkcs11_error
    assert str(translate(p11_exc.PKCS11Error("Unmapped error code 0x6a"), "C_WrapKey")) == (
        "The token refused C_WrapKey with CKR_KEY_NOT_WRAPPABLE (0x6A): the key cannot be wrapped (it is not "
        "extractable).")
    assert str(translate(p11_exc.PKCS11Error("Unmapped error code 0x99"), "C_X")) == (
        "The token failed C_X with CKR code 0x99.")
    assert str(translate(p11_exc.GeneralError(), "C_X", token_label="t")) == "The token failed C_X on token 't' " \
        "(GeneralError)."


def test_every_python_pkcs11_exception_becomes_a_typed_error():
    for _name, cls in inspect.getmembers(p11_exc, inspect.isclass):
        if issubclass(cls, p11_exc.PKCS11Error):
            assert isinstance(_hsm().translate_pkcs11_error(cls(), "C_X"), _errors().KeyLifecycleError)
