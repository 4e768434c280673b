"""The policy settings are declared once (_policy.SETTINGS): argspec, loader, Policy and the doc fragment agree."""

from __future__ import annotations

import pytest
import yaml


@pytest.fixture
def policy_mod():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _policy

    return _policy


@pytest.fixture
def fragment_option():
    from ansible_collections.secops.keylifecycle.plugins.doc_fragments.policy import ModuleDocFragment

    return yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]["policy"]


def _description(option):
    text = option["description"]
    return " ".join(text) if isinstance(text, list) else text


def test_fragment_lists_exactly_the_settings(policy_mod, fragment_option):
    assert sorted(fragment_option["suboptions"]) == sorted(s.name for s in policy_mod.SETTINGS)


def test_fragment_types_and_defaults_match_the_argspec(policy_mod, fragment_option):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import POLICY_ARGSPEC

    option = POLICY_ARGSPEC["policy"]
    assert (fragment_option["type"], fragment_option["default"]) == (option["type"], option["default"])
    for name, spec in option["options"].items():
        documented = fragment_option["suboptions"][name]
        assert documented["type"] == spec["type"], name
        assert documented.get("elements") == spec.get("elements"), name
        assert documented.get("default") == spec.get("default"), name  # unset: the baseline applies


def test_fragment_descriptions_start_with_the_doc_line(policy_mod, fragment_option):
    for setting in policy_mod.SETTINGS:
        assert _description(fragment_option["suboptions"][setting.name]).startswith(setting.doc), setting.name


def test_policy_fields_are_the_settings(policy_mod):
    from dataclasses import fields

    assert [f.name for f in fields(policy_mod.Policy)] == [s.name for s in policy_mod.SETTINGS]
    for setting in policy_mod.SETTINGS:
        assert getattr(policy_mod.BASELINE, setting.name) == setting.default


def test_argspec_comes_from_the_settings(policy_mod):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import POLICY_ARGSPEC

    assert POLICY_ARGSPEC["policy"]["options"] == policy_mod.policy_argspec()
    expected = {"type": "list", "elements": "str", "no_log": False}
    assert POLICY_ARGSPEC["policy"]["options"]["allowed_key_types"] == expected


def test_baseline_as_dict_loads_back_to_the_baseline(policy_mod):
    shown = policy_mod.BASELINE.as_dict()
    assert list(shown) == [s.name for s in policy_mod.SETTINGS]
    assert policy_mod.load_policy({k: v for k, v in shown.items() if v is not None}) == policy_mod.BASELINE


def test_tightened_policy_shows_its_settings(policy_mod):
    policy = policy_mod.load_policy({"max_rotation_period": "2w", "allowed_key_types": ["EC"],
                                     "authorization": {"destroy": ["group:ops"]}, "groups": {"ops": ["bob"]}})
    shown = policy.as_dict()
    assert (shown["max_rotation_period"], shown["allowed_key_types"]) == ("14d", ["ec"])
    assert shown["authorization"] == {"destroy": ["group:ops"]} and shown["groups"] == {"ops": ["bob"]}
    assert policy.allows("destroy", "bob") and not policy.allows("destroy", "carol")
    assert policy_mod.BASELINE.allows("destroy", "carol")


def test_baseline_defaults_are_not_shared(policy_mod):
    assert policy_mod.Policy().allowed_usages is not policy_mod.BASELINE.allowed_usages


@pytest.mark.parametrize("overrides,option,fragment", [
    ({"min_aes_bits": "many"}, "policy.min_aes_bits", "must be a number of bits"),
    ({"allowed_curves": "P-256"}, "policy.allowed_curves", "must be a list"),
    ({"allowed_curves": ["secp192r1"]}, "policy.allowed_curves", "not a supported curve"),
    ({"allowed_usages": {"des": ["encrypt"]}}, "policy.allowed_usages", "unknown key type"),
    ({"allowed_usages": {"aes": "wrap"}}, "policy.allowed_usages.aes", "must be a list"),
    ({"min_retention_period": "soon"}, "policy.min_retention_period", "must be a duration"),
    ({"destroy_requires_approval": "yes"}, "policy.destroy_requires_approval", "must be true or false"),
    ({"authorization": {"fly": ["alice"]}}, "policy.authorization", "unknown action"),
    ({"authorization": {"destroy": ["a b"]}}, "policy.authorization.destroy", "invalid entries"),
    ({"groups": {"ops": "bob"}}, "policy.groups", "list of operator names"),
    ({"default_retention_period": "1d", "min_retention_period": "2d"}, "policy.default_retention_period",
     "shorter than policy.min_retention_period"),
    ("strict", "policy", "must be a dict"),
])
def test_malformed_settings_are_refused(policy_mod, overrides, option, fragment):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption

    with pytest.raises(InvalidOption) as err:
        policy_mod.load_policy(overrides)
    assert err.value.option == option
    assert fragment in str(err.value)


def test_key_generate_type_choices_come_from_the_policy(policy_mod):
    from ansible_collections.secops.keylifecycle.plugins.modules.key_generate import KEY_SPEC_OPTIONS

    assert KEY_SPEC_OPTIONS["type"]["choices"] == list(policy_mod.KEY_TYPES)
    assert KEY_SPEC_OPTIONS["type"]["default"] in policy_mod.KEY_TYPES
