"""The collection as a user gets it: docs render, the main playbook runs twice cleanly."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from tests.conftest import VENV_BIN, make_token


def test_docs_render_with_attributes(runner):
    for module in ("key_generate", "key_rotate", "key_destroy", "key_info", "audit_verify"):
        proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "secops.keylifecycle.%s" % module],
                              capture_output=True, text=True, env=runner.env(), check=False)
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout
        for needle in ("ATTRIBUTES", "check_mode", "diff_mode", "pkcs11_module", "user_pin_file", "EXAMPLES",
                       "RETURN VALUES"):
            assert needle in text, (module, needle)
        assert "WARNING" not in proc.stderr, proc.stderr
    callback = subprocess.run([str(VENV_BIN / "ansible-doc"), "-t", "callback", "secops.keylifecycle.audit"],
                              capture_output=True, text=True, env=runner.env(), check=False)
    assert callback.returncode == 0 and "syslog_host" in callback.stdout and "postgresql_dsn" in callback.stdout


def test_site_playbook_on_dev_inventory(runner, repo, tmp_path):
    """playbooks/site.yml with the dev inventory, its token redirected to a fresh one: run twice."""
    state = tmp_path / "dev-state"
    token = make_token(state, "kl-dev")
    shutil.copy(token.pin_file, state / "user.pin")
    (state / "user.pin").chmod(0o600)
    inventory = repo / "inventories" / "dev"
    args = ["-e", "hsm_state_dir=%s" % state]
    first = runner.playbook(repo / "playbooks" / "site.yml", *args, inventory=inventory)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "changed=1" in first.stdout
    declared = yaml.safe_load((inventory / "group_vars" / "hsm" / "keys.yml").read_text())["key_inventory"]
    labels = sorted({o["label"] for o in token.key_objects()})
    assert labels == sorted("%s:v1" % k["name"] for k in declared)
    assert (state / "audit" / "journal.jsonl").exists()  # the environment's journal follows its state dir
    second = runner.playbook(repo / "playbooks" / "site.yml", *args, inventory=inventory)
    assert second.returncode == 0 and "changed=0" in second.stdout, second.stdout
    check = runner.playbook(repo / "playbooks" / "site.yml", "--check", "--diff", *args, inventory=inventory)
    assert check.returncode == 0 and "changed=0" in check.stdout, check.stdout
    audit = runner.playbook(repo / "playbooks" / "audit_verify.yml", *args, inventory=inventory)
    assert audit.returncode == 0 and "verifies" in audit.stdout, audit.stdout
