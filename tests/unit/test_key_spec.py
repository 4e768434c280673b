"""Key names and key specs: validation and policy enforcement."""

from __future__ import annotations

import pytest


@pytest.fixture
def keys_mod():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _keys

    return _keys


@pytest.fixture
def baseline():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE

    return BASELINE


@pytest.mark.parametrize("name", ["payments-db", "a", "Key_1.v2", "x" * 63])
def test_valid_names(keys_mod, name):
    assert keys_mod.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a/b", "a:v1", "with space", "tab\there", "nl\n",
                                  "-leading", ".hidden", "x" * 64, "é", None, 5])
def test_invalid_names(keys_mod, name):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption

    with pytest.raises(InvalidOption) as err:
        keys_mod.validate_name(name)
    assert "not a valid key name" in str(err.value)


def test_defaults(keys_mod, baseline):
    spec = keys_mod.build_key_spec({"name": "k"}, baseline)
    assert (spec.type, spec.size, spec.usage, spec.distributable) == ("aes", 256, ("decrypt", "encrypt"), False)
    assert spec.rotation_period == baseline.max_rotation_period
    assert spec.retention_period == baseline.default_retention_period


@pytest.mark.parametrize("raw,option,fragment", [
    ({"name": "k", "type": "aes", "size": 128}, "size", "below the policy minimum for AES keys (256 bits)"),
    ({"name": "k", "type": "rsa", "size": 2048}, "size", "below the policy minimum for RSA keys (3072 bits)"),
    ({"name": "k", "type": "des"}, "type", "not supported"),
    ({"name": "k", "type": "ec", "curve": "secp192r1"}, "curve", "not a supported curve"),
    ({"name": "k", "type": "ec", "usage": ["encrypt"]}, "usage", "not allowed for ec keys"),
    ({"name": "k", "usage": ["fly"]}, "usage", "unknown usage fly"),
    ({"name": "k", "rotation_period": "400d"}, "rotation_period", "longer than the policy maximum 365d"),
    ({"name": "k", "rotation_period": "-1d"}, "rotation_period", "duration"),
    ({"name": "k", "recipients": ["app"]}, "recipients", "distributable is false"),
])
def test_spec_refusals_name_the_option(keys_mod, baseline, raw, option, fragment):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError

    with pytest.raises(KeyLifecycleError) as err:
        keys_mod.build_key_spec(raw, baseline)
    assert err.value.option == option
    assert fragment in str(err.value)


def test_tightened_policy_applies(keys_mod):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import PolicyViolation
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy

    policy = load_policy({"min_rsa_bits": 4096})
    with pytest.raises(PolicyViolation, match="4096"):
        keys_mod.build_key_spec({"name": "k", "type": "rsa", "size": 3072}, policy)


def test_duplicate_names_in_batch(keys_mod, baseline):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption

    with pytest.raises(InvalidOption, match="listed twice"):
        keys_mod.build_key_specs([{"name": "k"}, {"name": "k"}], baseline)


@pytest.mark.parametrize("name", ["audit-checkpoint", "package-signing", "restore-signing"])
def test_the_collections_own_signing_keys_cannot_be_declared(keys_mod, baseline, name):
    """An operator's key spec may not take a managed key's name: it would be used to sign packages or checkpoints
    (or to sign a restore) with whatever type, usage and distributability the operator gave it."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _managed_signing
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption

    assert name in (_managed_signing.CHECKPOINT_KEY_NAME, _managed_signing.PACKAGE_KEY_NAME,
                    _managed_signing.RESTORE_KEY_NAME)
    with pytest.raises(InvalidOption, match="own signing keys") as err:
        keys_mod.build_key_specs([{"name": "ok"}, {"name": name, "type": "ec", "distributable": True}], baseline)
    assert err.value.option == "keys"
    with pytest.raises(InvalidOption) as err:
        keys_mod.build_key_specs([{"name": name}], baseline, option="name")
    assert err.value.option == "name"


def test_label_round_trip(keys_mod):
    assert keys_mod.parse_label(keys_mod.version_label("payments-db", 12)) == ("payments-db", 12)
    assert keys_mod.parse_label("payments-db") is None
    assert keys_mod.parse_label("other:v0") is None


def test_backup_follows_the_spec_then_the_policy(keys_mod, baseline):
    """backup: as given; unset, policy.require_backup; false where the policy requires it is refused."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import PolicyViolation
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_templates import extractable
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy

    assert keys_mod.build_key_spec({"name": "k"}, baseline).backup is False
    spec = keys_mod.build_key_spec({"name": "k", "type": "ec", "backup": True}, baseline)
    assert spec.backup is True and extractable(spec) and spec.as_dict()["backup"] is True
    strict = load_policy({"require_backup": True})
    assert keys_mod.build_key_spec({"name": "k", "backup": None}, strict).backup is True
    with pytest.raises(PolicyViolation, match="policy.require_backup") as err:
        keys_mod.build_key_spec({"name": "k", "backup": False}, strict)
    assert err.value.option == "backup"
    assert not extractable(keys_mod.build_key_spec({"name": "k"}, baseline))
    assert "backup" in keys_mod.MUTABLE_FIELDS  # later versions follow a changed spec; older ones stay as made


def test_metadata_without_backup_reads_as_false(keys_mod, baseline):
    """Versions written before backup existed decode with backup false, and keep it through a round trip."""
    import json

    spec = keys_mod.build_key_spec({"name": "k", "backup": True}, baseline)
    version = keys_mod.KeyVersion(spec=spec, version=1, key_id="00" * 16, state="active", created=keys_mod.utc_now(),
                                  transitions=(), key_check_value="abcdef")
    doc = version.metadata()
    assert keys_mod.KeyVersion.decode("k:v1", version.encode()).spec.backup is True
    del doc["backup"]
    old = keys_mod.KeyVersion.decode("k:v1", json.dumps(doc).encode())
    assert old.spec.backup is False
