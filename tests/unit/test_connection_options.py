"""The HSM connection options: not required by the argspec (module_defaults), required at run time, one spec."""

from __future__ import annotations

import pytest


def _argspec():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _argspec

    return _argspec


def _hsm():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _hsm

    return _hsm


def _errors():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _errors

    return _errors


CONNECTION = {"pkcs11_module": "/usr/lib/softhsm/libsofthsm2.so", "token_label": "t", "user_pin": None,
              "user_pin_file": "/etc/keylifecycle/user.pin"}


def test_no_connection_option_is_required_by_the_argspec():
    """ansible-lint's args rule does not see module_defaults (ansible/ansible-lint#2953)."""
    kwargs = _argspec().hsm_module_kwargs({"name": {"type": "str"}})
    assert not any(option.get("required") for option in _argspec().CONNECTION_ARGSPEC.values())
    assert "required_one_of" not in kwargs
    assert ["user_pin", "user_pin_file"] in kwargs["mutually_exclusive"]
    assert kwargs["argument_spec"]["user_pin"]["fallback"][1] == ["PKCS11_USER_PIN"]


def test_controller_spec_has_no_environment_fallbacks():
    kwargs = _argspec().hsm_module_kwargs({}, env_fallbacks=False)
    assert not any("fallback" in option for option in kwargs["argument_spec"].values())
    assert "fallback" in _argspec().CONNECTION_ARGSPEC["pkcs11_module"]  # the shared spec is not changed


@pytest.mark.parametrize("option, variable", [("pkcs11_module", "PKCS11_MODULE"),
                                              ("token_label", "PKCS11_TOKEN_LABEL")])
def test_missing_option_is_named_with_its_fix(option, variable):
    with pytest.raises(_errors().InvalidOption) as err:
        _hsm().ConnectionSettings.from_params(dict(CONNECTION, **{option: None}))
    assert err.value.option == option
    message = str(err.value)
    assert message.startswith("%s is required" % option)
    assert "group/secops.keylifecycle.hsm" in message and variable in message


def test_missing_pin_is_refused_before_the_token_is_opened():
    with pytest.raises(_errors().PinUnavailable) as err:
        _hsm().ConnectionSettings.from_params(dict(CONNECTION, user_pin_file=None))
    assert err.value.option == "user_pin"
    assert "user_pin_file" in str(err.value) and "module_defaults" in str(err.value)


def test_complete_settings():
    settings = _hsm().ConnectionSettings.from_params(dict(CONNECTION, user_pin_file=None, user_pin="secret"))
    assert settings.token_label == "t" and "secret" not in repr(settings)
