"""The Security Officer's options (so_pin / so_pin_file) and recipient_approve's recipients: checked without a token."""

from __future__ import annotations

import pytest


def _module(name):
    """A module of the collection's module_utils, imported from this checkout (after the autouse fixture)."""
    import importlib

    return importlib.import_module("ansible_collections.secops.keylifecycle.plugins.module_utils." + name)


def _argspec():
    return _module("_argspec")


def _hsm():
    return _module("_hsm")


def _errors():
    return _module("_errors")


def _tk():
    return _module("_trusted_keys")


def _policy(**overrides):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy

    return load_policy(overrides)


@pytest.fixture(scope="module")
def rsa_3072():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key()


def _pem(public_key):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import public_key_pem

    return public_key_pem(public_key)


def _fp(public_key):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import spki_fingerprint

    return spki_fingerprint(public_key)


CONNECTION = {"pkcs11_module": "/usr/lib/softhsm/libsofthsm2.so", "token_label": "t"}


def test_the_so_pin_is_declared_once_and_not_a_connection_option():
    argspec = _argspec()
    assert set(argspec.OFFICER_ARGSPEC) == {"so_pin", "so_pin_file"}
    assert not set(argspec.OFFICER_ARGSPEC) & set(argspec.CONNECTION_ARGSPEC)
    assert argspec.OFFICER_ARGSPEC["so_pin"]["no_log"] is True
    assert argspec.OFFICER_ARGSPEC["so_pin"]["fallback"][1] == ["PKCS11_SO_PIN"]
    assert ("so_pin", "so_pin_file") in argspec.OFFICER_MUTUALLY_EXCLUSIVE


def test_recipient_approve_takes_the_officer_options_mutually_exclusive():
    from ansible_collections.secops.keylifecycle.plugins.modules import recipient_approve

    exclusive = [list(pair) for pair in _argspec().OFFICER_MUTUALLY_EXCLUSIVE]
    kwargs = _argspec().hsm_module_kwargs(recipient_approve.ARGUMENT_SPEC, mutually_exclusive=exclusive)
    assert kwargs["argument_spec"]["so_pin"]["no_log"] is True
    assert ["so_pin", "so_pin_file"] in kwargs["mutually_exclusive"]
    assert ["user_pin", "user_pin_file"] in kwargs["mutually_exclusive"]
    # the key_recipient role's entry (with what the recipient holds) passes unchanged
    assert {"name", "host", "public_key_pem", "fingerprint", "installed", "keys"} <= set(
        recipient_approve.RECIPIENT_OPTIONS)


def test_an_empty_pkcs11_so_pin_counts_as_unset(monkeypatch):
    from ansible.module_utils.basic import AnsibleFallbackNotFound

    monkeypatch.setenv("PKCS11_SO_PIN", "")
    with pytest.raises(AnsibleFallbackNotFound):
        _argspec().set_env_fallback("PKCS11_SO_PIN")
    monkeypatch.setenv("PKCS11_SO_PIN", "so-secret")
    assert _argspec().set_env_fallback("PKCS11_SO_PIN") == "so-secret"


@pytest.mark.parametrize("given", [{}, {"so_pin": ""}, {"so_pin": None, "so_pin_file": ""}])
def test_a_missing_so_pin_is_refused_naming_both_options(given):
    with pytest.raises(_errors().PinUnavailable) as info:
        _hsm().OfficerSettings.from_params(dict(CONNECTION, user_pin="user-pin", **given))
    assert info.value.option == "so_pin"
    assert "so_pin or so_pin_file" in info.value.message and "PKCS11_SO_PIN" in info.value.message


def test_officer_settings_require_the_token_and_never_show_the_pin():
    with pytest.raises(_errors().InvalidOption) as info:
        _hsm().OfficerSettings.from_params({"pkcs11_module": "/x.so", "so_pin": "p"})
    assert info.value.option == "token_label"
    officer = _hsm().OfficerSettings.from_params(dict(CONNECTION, so_pin="so-secret-123"))
    assert "so-secret-123" not in repr(officer) and "<set>" in repr(officer)
    assert officer.read_pin() == "so-secret-123"


def test_so_pin_file_follows_the_pin_file_rules(tmp_path):
    path = tmp_path / "so.pin"
    path.write_text("so-secret\n")
    path.chmod(0o644)
    with pytest.raises(_errors().PinUnavailable, match="so_pin_file .* mode 0644") as info:
        _hsm().read_so_pin(so_pin_file=str(path))
    assert info.value.option == "so_pin_file" and "so-secret" not in info.value.message
    path.chmod(0o600)
    assert _hsm().read_so_pin(so_pin_file=str(path)) == "so-secret"
    with pytest.raises(_errors().PinUnavailable, match="so_pin_file .* does not exist") as info:
        _hsm().read_so_pin(so_pin_file=str(tmp_path / "missing"))
    assert "set user_pin" not in info.value.message
    empty = tmp_path / "empty.pin"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(_errors().PinUnavailable, match="empty"):
        _hsm().OfficerSettings.from_params(dict(CONNECTION, so_pin_file=str(empty))).read_pin()


def test_trusted_transport_label_and_its_parsing(rsa_3072):
    fingerprint = _fp(rsa_3072)
    label = _tk().trusted_transport_label("billing", "r1.example.com", fingerprint)
    assert label == "trusted-transport:billing@r1.example.com:" + fingerprint
    assert _tk()._parse_label(label, fingerprint) == ("billing", "r1.example.com", "recipient")
    assert _tk()._parse_label(label, "sha256:" + "0" * 64) == (None, None, None)  # names another key
    assert _tk()._parse_label("keylifecycle-transport", fingerprint) == (None, None, None)
    ipv6 = _tk().trusted_transport_label("billing", "fe80::1", fingerprint)
    assert _tk()._parse_label(ipv6, fingerprint) == ("billing", "fe80::1", "recipient")
    replica = _tk().trusted_transport_label("dr", "hsm-b", fingerprint, kind="replica")
    assert replica == "trusted-replica:dr@hsm-b:" + fingerprint
    assert _tk()._parse_label(replica, fingerprint) == ("dr", "hsm-b", "replica")
    assert _tk().replica_kek_label(replica) == "replica-kek:dr@hsm-b:" + fingerprint
    for recipient, host, fp in (("bad name", "r1", fingerprint), ("billing", "r 1", fingerprint),
                                ("billing", "", fingerprint), ("billing", "r1", "sha256:abc"),
                                ("billing", "h" * 129, fingerprint)):
        with pytest.raises(_errors().InvalidOption) as info:
            _tk().trusted_transport_label(recipient, host, fp)
        assert info.value.option == "recipients"


def test_parse_approvals_present(rsa_3072):
    pem, fingerprint = _pem(rsa_3072), _fp(rsa_3072)
    [approval] = _tk().parse_approvals([{"name": "billing", "public_key_pem": pem, "fingerprint": fingerprint,
                                         "installed": [], "keys": None}], "present", _policy())
    assert (approval.recipient, approval.host, approval.fingerprint) == ("billing", "billing", fingerprint)
    # unpinned is accepted unless the policy requires the pin
    assert _tk().parse_approvals([{"name": "billing", "host": "r1", "public_key_pem": pem}], "present", _policy())
    with pytest.raises(_errors().PolicyViolation, match="require_transport_key_pin"):
        _tk().parse_approvals([{"name": "billing", "host": "r1", "public_key_pem": pem}], "present",
                              _policy(require_transport_key_pin=True))


@pytest.mark.parametrize("entry, error, message", [
    ({"name": "billing", "host": "r1"}, "InvalidOption", "public_key_pem is required"),
    ({"name": "bad name", "public_key_pem": "x"}, "InvalidOption", "recipients\\[0\\].name"),
    ({"name": "billing", "public_key_pem": "not a pem"}, "InvalidOption", "public_key_pem must be the PEM"),
    ({"name": "billing", "public_key_pem": "PEM", "fingerprint": "md5:00"}, "InvalidOption", "sha256: followed"),
    ({"name": "billing", "public_key_pem": "PEM", "fingerprint": "sha256:" + "ab" * 32}, "PolicyViolation",
     "does not match the pinned fingerprint"),
    ({"name": "billing", "public_key_pem": "WEAK"}, "PolicyViolation", "RSA 2048"),
])
def test_parse_approvals_refusals(rsa_3072, entry, error, message):
    from cryptography.hazmat.primitives.asymmetric import rsa

    entry = dict(entry)
    if entry.get("public_key_pem") == "PEM":
        entry["public_key_pem"] = _pem(rsa_3072)
    elif entry.get("public_key_pem") == "WEAK":
        entry["public_key_pem"] = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
    with pytest.raises(getattr(_errors(), error), match=message) as info:
        _tk().parse_approvals([entry], "present", _policy())
    assert info.value.option == "recipients"


def test_parse_approvals_absent_and_duplicates(rsa_3072):
    pem, fingerprint = _pem(rsa_3072), _fp(rsa_3072)
    everything, one, by_key = _tk().parse_approvals(
        [{"name": "billing", "host": "r1"}, {"name": "billing", "host": "r2", "fingerprint": fingerprint.upper()
                                             .replace("SHA256", "sha256")},
         {"name": "reports", "host": "r1", "public_key_pem": pem}], "absent", _policy())
    assert everything.fingerprint is None and one.fingerprint == fingerprint and by_key.fingerprint == fingerprint
    with pytest.raises(_errors().InvalidOption, match="listed twice"):
        _tk().parse_approvals([{"name": "billing", "host": "r1"}, {"name": "billing", "host": "r1"}], "absent",
                              _policy())
    with pytest.raises(_errors().InvalidOption, match="at least one"):
        _tk().parse_approvals([], "absent", _policy())


@pytest.mark.parametrize("approved_by, change_ref, option", [
    ("alice officer", None, "approved_by"), ("", None, "approved_by"), (None, "CHG 1", "change_ref")])
def test_officer_name_and_change_ref_are_checked(approved_by, change_ref, option):
    with pytest.raises(_errors().InvalidOption) as info:
        _module("_approval").validate_approval_options(approved_by, change_ref)
    assert info.value.option == option
    _module("_approval").validate_approval_options("alice.officer@example.com", "CHG-1042")
    _module("_approval").validate_approval_options(None, None)
