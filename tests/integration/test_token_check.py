"""token_check: a default or shared PIN, loose storage permissions and token flags, on real SoftHSM2 tokens."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import make_token


def check(runner, token, *flags, **args):
    connection = dict(token.connection())
    return runner.task("token_check", dict(connection, **args), *flags, connection=False, environment=token.env)


def storage(token):
    return [str(token.root / "tokens"), str(token.conf)]


def test_a_well_protected_token_passes(runner, token):
    so_pin = token.root / "so.pin"
    so_pin.write_text(token.so_pin)
    so_pin.chmod(0o600)
    os.chmod(token.root / "tokens", 0o700)
    subprocess.run(["chmod", "-R", "go-rwx", str(token.root)], check=True)
    result = check(runner, token, so_pin_file=str(so_pin), storage_paths=storage(token))
    assert not result.task.get("failed"), result.task
    names = {c["name"]: c for c in result.task["checks"]}
    assert names["so_pin_differs"]["ok"] and names["user_pin_not_default"]["ok"] and names["user_login"]["ok"]
    assert names["storage:%s" % (token.root / "tokens")]["ok"] and names["login_required"]["ok"]
    assert token.user_pin not in result.output and token.so_pin not in result.output
    assert result.task["changed"] is False


def test_default_pin_shared_so_pin_and_loose_storage_are_reported(runner, tmp_path):
    weak = make_token(tmp_path / "weak", "kl-weak")
    # re-initialise with a default user PIN that is also the SO PIN
    subprocess.run(["rm", "-rf", str(weak.root / "tokens")], check=True)
    (weak.root / "tokens").mkdir()
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "kl-weak", "--so-pin", "12345678",
                    "--pin", "12345678"], check=True, capture_output=True, env=dict(os.environ, **weak.env))
    weak.pin_file.write_text("12345678\n")
    so_pin = weak.root / "so.pin"
    so_pin.write_text("12345678\n")
    so_pin.chmod(0o600)
    os.chmod(weak.root / "tokens", 0o755)
    result = check(runner, weak, so_pin_file=str(so_pin), storage_paths=storage(weak))
    assert result.task["failed"] is True
    failed = set(result.task["failed_checks"])
    assert {"user_pin_not_default", "so_pin_differs", "so_pin_not_default",
            "storage:%s" % (weak.root / "tokens")} <= failed, failed
    assert "chmod go-rwx" in result.task["msg"]
    assert "12345678" not in result.output  # no PIN in the output


def test_a_world_readable_so_pin_file_is_refused(runner, token):
    so_pin = token.root / "so.pin"
    so_pin.write_text(token.so_pin)
    so_pin.chmod(0o644)
    result = check(runner, token, so_pin_file=str(so_pin))
    assert result.task["failed"] and "so_pin_file" in result.task["msg"] and "chmod 600" in result.task["msg"]
    assert result.task["error_option"] == "so_pin_file"
