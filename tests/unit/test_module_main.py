"""Modules' main() run in this process with patched arguments: each typed error that can arise before a token is
opened reaches the play as fail_json with its error_kind and the option it is about, and no traceback.

As community.hashi_vault's module unit tests do (patch the module arguments, run main(), read the JSON).
The errors that need a token (login, key not found, conflict, corrupt metadata, package rejected) are in
tests/hsm/test_module_main.py.
"""

from __future__ import annotations

import importlib
import json

import pytest

from tests.conftest import PKCS11_MODULE


def run_main(capsys, module, args):
    """Run ``plugins/modules/<module>.py``'s main() with ``args``; return its JSON result."""
    from ansible.module_utils.testing import patch_module_args

    mod = importlib.import_module("ansible_collections.secops.keylifecycle.plugins.modules.%s" % module)
    with patch_module_args(args), pytest.raises(SystemExit):
        mod.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def pin_file(tmp_path):
    path = tmp_path / "user.pin"
    path.write_text("12345678\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def connection(pin_file):
    """Connection options for a token that is never reached: every error here comes first."""
    return {"pkcs11_module": PKCS11_MODULE, "token_label": "never-opened", "user_pin_file": str(pin_file)}


def assert_failed(result, kind, option):
    assert result["failed"] is True, result
    assert result["error_kind"] == kind, result
    assert result["error_option"] == option, result
    assert "Traceback" not in result["msg"] and "exception" not in result
    assert result["changed"] is False and result["audit_events"] == []


@pytest.mark.parametrize("module,args,option", [
    ("key_generate", {"name": "Bad Name!"}, "name"),
    ("key_generate", {"name": "k", "rotation_period": "soon"}, "rotation_period"),
    ("key_generate", {"name": "k", "type": "ec", "curve": "P-999"}, "curve"),
    ("key_generate", {"name": "k", "usage": ["encrypt", "teleport"]}, "usage"),
    ("key_rotate", {"name": ["k"], "reason": "compromise", "change_ref": "x; rm -rf /"}, "change_ref"),
    ("key_destroy", {"name": "k", "version": 1, "approved_by": "not a name!"}, "approved_by"),
])
def test_invalid_option(capsys, connection, module, args, option):
    assert_failed(run_main(capsys, module, dict(connection, **args)), "invalid_option", option)


@pytest.mark.parametrize("args,option", [
    ({"name": "k", "size": 128}, "size"),
    ({"name": "k", "type": "rsa", "size": 2048}, "size"),
    ({"name": "k", "rotation_period": "400d"}, "rotation_period"),
])
def test_policy_violation(capsys, connection, args, option):
    assert_failed(run_main(capsys, "key_generate", dict(connection, **args)), "policy_violation", option)


def test_policy_that_would_weaken_the_baseline(capsys, connection):
    result = run_main(capsys, "key_generate", dict(connection, name="k", policy={"min_aes_bits": 128}))
    assert result["error_kind"] in ("policy_violation", "invalid_option") and "may only tighten" in result["msg"]


@pytest.mark.parametrize("module", ["key_generate", "key_info"])
def test_pin_file_readable_by_others(capsys, connection, pin_file, module):
    pin_file.chmod(0o644)
    args = dict(connection, name="k") if module == "key_generate" else dict(connection)
    result = run_main(capsys, module, args)
    assert_failed(result, "pin_unavailable", "user_pin_file")
    assert "chmod 600" in result["msg"] and "12345678" not in json.dumps(result)


def test_pin_file_missing(capsys, connection, tmp_path):
    result = run_main(capsys, "key_generate", dict(connection, name="k", user_pin_file=str(tmp_path / "absent")))
    assert_failed(result, "pin_unavailable", "user_pin_file")


def test_library_missing(capsys, connection, tmp_path):
    result = run_main(capsys, "key_generate", dict(connection, name="k", pkcs11_module=str(tmp_path / "no.so")))
    assert_failed(result, "library_unavailable", "pkcs11_module")


def test_library_that_is_not_pkcs11(capsys, connection, tmp_path):
    fake = tmp_path / "libfake.so"
    fake.write_bytes(b"\x7fELF not really")
    result = run_main(capsys, "key_generate", dict(connection, name="k", pkcs11_module=str(fake)))
    assert_failed(result, "library_unavailable", "pkcs11_module")


def test_missing_python_pkcs11_gets_install_advice(capsys, connection, monkeypatch):
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _dependencies

    monkeypatch.setattr(_dependencies, "HAS_PKCS11", False)
    monkeypatch.setattr(_dependencies, "PKCS11_IMPORT_ERROR", "ImportError: No module named 'pkcs11'")
    result = run_main(capsys, "key_generate", dict(connection, name="k"))
    assert result["failed"] is True and "python-pkcs11" in result["msg"]
