"""Bad input refused early: duration bounds, sizes from the policy's list, empty environment fallbacks,
argument errors that name the option, and unexpected failures that stay typed."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def policy_mod():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _policy

    return _policy


def _invalid():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError

    return KeyLifecycleError


@pytest.mark.parametrize("text", ["99999999d", "36501d", str(36500 * 86400 + 1), "5300w"])
def test_durations_above_100_years_are_refused(policy_mod, text):
    with pytest.raises(_invalid()) as err:
        policy_mod.parse_duration(text, "retention_period")
    assert err.value.option == "retention_period" and "100 years" in str(err.value)


@pytest.mark.parametrize("text", ["0d", "0", "-1d", 0, -5, True])
def test_durations_must_be_positive(policy_mod, text):
    with pytest.raises(_invalid()) as err:
        policy_mod.parse_duration(text, "rotation_period")
    assert err.value.option == "rotation_period"


def test_100_years_is_the_longest_duration(policy_mod):
    assert policy_mod.parse_duration("36500d", "retention_period") == policy_mod.MAX_DURATION
    assert policy_mod.parse_duration("99999999d", "x", bounded=False) == 99999999 * 86400


@pytest.mark.parametrize("setting", ["default_retention_period", "min_retention_period", "max_rotation_period"])
def test_policy_durations_are_bounded(policy_mod, setting):
    with pytest.raises(_invalid()) as err:
        policy_mod.load_policy({setting: "99999999d"})
    assert err.value.option == "policy.%s" % setting


@pytest.mark.parametrize("raw,fragment", [
    ({"name": "k", "size": 0}, "size 0 is below the policy minimum for AES keys (256 bits). Request one of: 256."),
    ({"name": "k", "size": -256}, "Request one of: 256."),
    ({"name": "k", "size": 300}, "size 300 is not a size the policy allows for AES keys; choose one of: 256."),
    ({"name": "k", "size": 512}, "choose one of: 256."),
    ({"name": "k", "type": "rsa", "size": 2048}, "Request one of: 3072, 4096."),
    ({"name": "k", "type": "rsa", "size": 8192}, "choose one of: 3072, 4096."),
    ({"name": "k", "type": "rsa", "size": 0}, "Request one of: 3072, 4096."),
    ({"name": "k", "size": True}, "size must be a number of bits"),
    ({"name": "k", "retention_period": "99999999d"}, "retention_period '99999999d' is longer than 36500d"),
    ({"name": "k", "rotation_period": "0d"}, "rotation_period must be a positive duration"),
])
def test_key_spec_refusals_name_the_option(raw, fragment):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import build_key_spec
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE

    with pytest.raises(_invalid()) as err:
        build_key_spec(raw, BASELINE)
    assert fragment in str(err.value)
    assert err.value.option in str(err.value)


def test_sizes_follow_the_policy_minimum(policy_mod):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import build_key_spec

    policy = policy_mod.load_policy({"min_rsa_bits": 4096})
    assert policy_mod.allowed_sizes("rsa", policy) == (4096,)
    assert policy_mod.allowed_sizes("aes", policy_mod.BASELINE) == (256,)
    assert build_key_spec({"name": "k", "type": "rsa"}, policy_mod.BASELINE).size == 3072
    assert build_key_spec({"name": "k", "type": "rsa", "size": 4096}, policy).size == 4096
    with pytest.raises(_invalid()) as err:
        build_key_spec({"name": "k", "type": "rsa", "size": 3072}, policy)
    assert "Request one of: 4096." in str(err.value)


def test_metadata_written_before_the_bound_still_reads(policy_mod):
    """A retention stored by an older version (99999999d) is read as 100 years, so the key can still rotate."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import KeyVersion

    doc = {"schema": 1, "revision": 1, "version": 1, "id": "ab", "state": "active",
           "created": "2026-01-01T00:00:00+00:00", "retain_until": None, "key_check_value": None,
           "public_key_fingerprint": None, "transitions": [], "name": "k", "type": "aes", "size": 256,
           "curve": None, "usage": ["decrypt", "encrypt"], "distributable": False, "rotation_period": "365d",
           "retention_period": "99999999d", "recipients": [], "destroy_allowed": False}
    version = KeyVersion.decode("k:v1", json.dumps(doc).encode())
    assert version.spec.retention_period == policy_mod.MAX_DURATION


@pytest.mark.parametrize("value,expected", [("", None), ("1234", "1234")])
def test_empty_environment_variable_counts_as_unset(monkeypatch, value, expected):
    from ansible.module_utils.basic import AnsibleFallbackNotFound

    from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import CONNECTION_ARGSPEC

    monkeypatch.setenv("PKCS11_USER_PIN", value)
    fallback, names = CONNECTION_ARGSPEC["user_pin"]["fallback"]
    if expected is None:
        with pytest.raises(AnsibleFallbackNotFound):
            fallback(*names)
    else:
        assert fallback(*names) == expected


def test_empty_pin_is_no_pin():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import PinUnavailable
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import ConnectionSettings

    with pytest.raises(PinUnavailable):
        ConnectionSettings.from_params({"pkcs11_module": "/lib.so", "token_label": "t", "user_pin": "",
                                        "user_pin_file": ""})
    settings = ConnectionSettings.from_params({"pkcs11_module": "/lib.so", "token_label": "t", "user_pin": "",
                                               "user_pin_file": "/pin"})
    assert settings.user_pin is None and settings.user_pin_file == "/pin"


@pytest.mark.parametrize("policy", ["strict", ["a"], 5])
def test_policy_overrides_refuses_a_policy_that_is_not_a_dict(policy):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import policy_overrides

    with pytest.raises(_invalid()) as err:
        policy_overrides({"policy": policy})
    assert err.value.option == "policy" and "policy must be a dict" in str(err.value)
    assert policy_overrides({"policy": None}) == {}
    assert policy_overrides({"policy": {"min_rsa_bits": None, "min_aes_bits": 256}}) == {"min_aes_bits": 256}


def _run_module(monkeypatch, capsys, spec, args):
    from ansible.module_utils import basic
    from ansible.module_utils.common.text.converters import to_bytes

    from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import HsmModule, hsm_module_kwargs

    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    with pytest.raises(SystemExit):
        HsmModule(**hsm_module_kwargs(spec, env_fallbacks=False))
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("args,option", [
    ({"policy": "strict"}, "'policy'"),
    ({"keys": "f15"}, "'keys'"),
    ({"keys": ["f15"]}, "'keys'"),
    ({"keys": [{"size": 256}]}, "keys"),
])
def test_argument_errors_name_the_option(monkeypatch, capsys, args, option):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import POLICY_ARGSPEC

    spec = dict(POLICY_ARGSPEC, keys={"type": "list", "elements": "dict", "no_log": False,
                                      "options": {"name": {"type": "str", "required": True}}})
    result = _run_module(monkeypatch, capsys, spec, args)
    assert result["failed"] is True and result["error_kind"] == "invalid_option"
    assert option in result["msg"], result["msg"]
    assert "dictionary requested" not in result["msg"].split(":")[0]
