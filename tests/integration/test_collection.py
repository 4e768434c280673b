"""The collection as a user gets it: docs render, the main playbook runs twice cleanly."""

from __future__ import annotations

import re
import shutil
import subprocess

import yaml

from tests.conftest import REPO, VENV_BIN, make_token


def test_docs_render_with_attributes(runner):
    """Every module's documentation renders; the HSM action group's modules document the connection options."""
    modules = sorted(path.stem for path in (REPO / "plugins" / "modules").glob("*.py") if path.stem != "__init__")
    hsm_group = set(yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())["action_groups"]["hsm"])
    assert {"key_generate", "key_replicate", "replica_install"} <= set(modules) and hsm_group <= set(modules)
    for module in modules:
        proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "secops.keylifecycle.%s" % module],
                              capture_output=True, text=True, env=runner.env(), check=False)
        assert proc.returncode == 0, (module, proc.stderr)
        text = proc.stdout
        needles = ["ATTRIBUTES", "check_mode", "diff_mode", "EXAMPLES", "RETURN VALUES"]
        if module in hsm_group and module != "recipient_approve" and module != "policy_signer":
            needles += ["pkcs11_module", "user_pin_file"]
        for needle in needles:
            assert needle in text, (module, needle)
        assert "WARNING" not in proc.stderr, (module, proc.stderr)
    callback = subprocess.run([str(VENV_BIN / "ansible-doc"), "-t", "callback", "secops.keylifecycle.audit"],
                              capture_output=True, text=True, env=runner.env(), check=False)
    assert callback.returncode == 0 and "syslog_host" in callback.stdout and "postgresql_dsn" in callback.stdout


def recap_changed(output):
    """host -> changed count, from the PLAY RECAP."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.M)}


def test_site_playbook_on_dev_inventory(runner, repo, tmp_path):
    """playbooks/site.yml with the dev inventory, its tokens redirected to fresh ones: run twice, then check mode."""
    state = tmp_path / "dev-state"
    token = make_token(state, "kl-dev")
    shutil.copy(token.pin_file, state / "user.pin")
    (state / "so.pin").write_text(token.so_pin)
    recipient_state = tmp_path / "dev-app-state"  # the dev-app recipient's own token
    recipient_token = make_token(recipient_state, "kl-dev-app")
    shutil.copy(recipient_token.pin_file, recipient_state / "user.pin")
    (recipient_state / "so.pin").write_text(recipient_token.so_pin)
    for path in (state, recipient_state):  # as scripts/softhsm-token.sh leaves them
        subprocess.run(["chmod", "-R", "go-rwx", str(path)], check=True)
    inventory = repo / "inventories" / "dev"
    args = ["-e", "hsm_state_dir=%s" % state, "-e", "recipient_state_dir=%s" % recipient_state]
    (state / "softhsm2.conf").chmod(0o644)  # token storage others can read: the hsm_token role stops the play
    loose = runner.playbook(repo / "playbooks" / "site.yml", *args, inventory=inventory)
    assert loose.returncode != 0 and "chmod go-rwx" in loose.stdout, loose.stdout
    assert token.key_objects() == []
    (state / "softhsm2.conf").chmod(0o600)

    first = runner.playbook(repo / "playbooks" / "site.yml", *args, inventory=inventory)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Check the token's protection" in first.stdout  # the hsm_token role ran its checks first
    assert recap_changed(first.stdout)["dev-hsm"] >= 1 and recap_changed(first.stdout)["dev-app"] >= 1
    declared = yaml.safe_load((inventory / "group_vars" / "hsm" / "keys.yml").read_text())["key_inventory"]
    labels = sorted({o["label"] for o in token.key_objects()})
    assert labels == sorted("%s:v1" % k["name"] for k in declared)
    assert (state / "audit" / "journal.jsonl").exists()  # the environment's journal follows its state dir
    assert "payments-db:v1" in (state / "reports" / "report.md").read_text()  # site.yml ends with the report
    # the dev-app recipient (its own token) received the distributable key, check value equal to the HSM's
    shared = [k["name"] for k in declared if k.get("distributable") and "dev-app" in k.get("recipients", [])]
    held = {o["label"]: o for o in recipient_token.objects() if o["class"] == "SECRET_KEY"}
    assert sorted(held) == sorted("%s:v1" % name for name in shared) and shared
    for name in shared:
        assert held["%s:v1" % name]["kcv"] == token.metadata()["%s:v1" % name]["key_check_value"]

    second = runner.playbook(repo / "playbooks" / "site.yml", *args, inventory=inventory)
    assert second.returncode == 0 and set(recap_changed(second.stdout).values()) == {0}, second.stdout
    check = runner.playbook(repo / "playbooks" / "site.yml", "--check", "--diff", *args, inventory=inventory)
    assert check.returncode == 0 and set(recap_changed(check.stdout).values()) == {0}, check.stdout

    # a changed inventory under review: the plan names the new key and the changed period; the tokens are untouched
    changed = [dict(k, rotation_period="60d") if k["name"] == "payments-db" else k for k in declared]
    changed.append({"name": "reports-export", "type": "aes", "size": 256, "usage": ["encrypt", "decrypt"],
                    "distributable": True, "recipients": ["dev-app"]})
    extra = tmp_path / "changed-inventory.yml"
    extra.write_text(yaml.safe_dump({"key_inventory": changed}))
    before = (token.objects(), recipient_token.objects(), (state / "audit" / "journal.jsonl").read_text())
    review = runner.playbook(repo / "playbooks" / "site.yml", "--check", "--diff", *args, "-e", "@%s" % extra,
                             inventory=inventory)
    assert review.returncode == 0, review.stdout + review.stderr
    assert '+    "reports-export": {' in review.stdout and "(known after generation)" in review.stdout
    assert '-        "rotation_period": "90d",' in review.stdout and '+        "rotation_period": "60d",' in review.stdout
    assert recap_changed(review.stdout)["dev-hsm"] == 1
    assert (token.objects(), recipient_token.objects(), (state / "audit" / "journal.jsonl").read_text()) == before
    assert token.user_pin not in review.stdout
    audit = runner.playbook(repo / "playbooks" / "audit_verify.yml", *args, inventory=inventory)
    assert audit.returncode == 0 and "verifies" in audit.stdout, audit.stdout
