"""Policy and durations: the baseline, tightening, and refusals that name the option."""

from __future__ import annotations

import pytest


@pytest.fixture
def policy_mod():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _policy

    return _policy


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("10m", 600), ("12h", 43200), ("90d", 7776000),
                                          ("365d", 31536000), ("2w", 1209600), ("45", 45), (" 7d ", 604800)])
def test_parse_duration(policy_mod, text, seconds):
    assert policy_mod.parse_duration(text, "rotation_period") == seconds


@pytest.mark.parametrize("text", ["-5d", "0s", "5y", "d", "1.5d", "", "12 hours", True])
def test_parse_duration_refuses_malformed(policy_mod, text):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption

    with pytest.raises(InvalidOption) as err:
        policy_mod.parse_duration(text, "retention_period")
    assert "retention_period" in str(err.value)
    assert err.value.option == "retention_period"


def test_format_duration_round_trip(policy_mod):
    for text in ("30s", "10m", "12h", "90d", "365d"):
        assert policy_mod.format_duration(policy_mod.parse_duration(text, "x")) == text
    assert policy_mod.format_duration(90) == "90s"


def test_baseline(policy_mod):
    policy = policy_mod.load_policy({})
    assert policy.min_aes_bits == 256
    assert policy.min_rsa_bits == 3072
    assert policy.max_rotation_period == 365 * 86400
    assert set(policy.allowed_curves) == {"P-256", "P-384", "P-521"}


def test_policy_can_tighten(policy_mod):
    policy = policy_mod.load_policy({"min_rsa_bits": 4096, "max_rotation_period": "90d",
                                     "allowed_curves": ["secp384r1"], "allowed_usages": {"aes": ["wrap", "unwrap"]}})
    assert policy.min_rsa_bits == 4096
    assert policy.max_rotation_period == 90 * 86400
    assert policy.allowed_curves == ("P-384",)
    assert policy.allowed_usages["aes"] == ("wrap", "unwrap")
    assert policy.allowed_usages["rsa"] == policy_mod.BASELINE.allowed_usages["rsa"]


@pytest.mark.parametrize("overrides,option", [
    ({"min_aes_bits": 128}, "policy.min_aes_bits"),
    ({"min_rsa_bits": 2048}, "policy.min_rsa_bits"),
    ({"max_rotation_period": "400d"}, "policy.max_rotation_period"),
    ({"allowed_key_types": ["aes", "des"]}, "policy.allowed_key_types"),
    ({"allowed_usages": {"ec": ["encrypt"]}}, "policy.allowed_usages.ec"),
])
def test_policy_cannot_weaken(policy_mod, overrides, option):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import PolicyViolation

    with pytest.raises(PolicyViolation) as err:
        policy_mod.load_policy(overrides)
    assert err.value.option == option
    assert "only tighten" in str(err.value)


def test_policy_unknown_setting(policy_mod):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption

    with pytest.raises(InvalidOption, match="unknown setting.*min_des_bits"):
        policy_mod.load_policy({"min_des_bits": 56})
