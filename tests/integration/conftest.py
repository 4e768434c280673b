"""Integration fixtures: run the built collection through ``ansible-playbook`` against a real token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, VENV_BIN


@dataclass
class PlayResult:
    rc: int
    stdout: str
    stderr: str
    task: dict  # the registered result of the task under test

    @property
    def output(self):
        return self.stdout + self.stderr


class Runner:
    """Writes a one-task playbook around a module call and runs it with ansible-playbook."""

    def __init__(self, tmp_path, collections_path, token, clock):
        self.tmp_path = tmp_path
        self.clock = clock  # every ansible-playbook run sees this test's (possibly shifted) clock
        self.collections_path = collections_path
        self.token = token
        self.count = 0
        inventory = tmp_path / "inventory.yml"
        self.journal = tmp_path / "audit" / "journal.jsonl"
        self.state_dir = tmp_path / "controller-state"
        inventory.write_text(yaml.safe_dump({"hsm": {"hosts": {"test-hsm": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "keylifecycle_audit_journal": str(self.journal)}}}}))
        self.inventory = inventory

    def env(self, extra=None):
        # hermetic: no Ansible settings, PKCS#11 defaults, CI identities or audit settings from the caller
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ANSIBLE_", "PKCS11_", "GITHUB_", "GITLAB_", "CI_", "KEYLIFECYCLE_"))}
        env.update({
            "ANSIBLE_COLLECTIONS_PATH": str(self.collections_path),
            "ANSIBLE_CONFIG": str(self.tmp_path / "no-ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_LOCAL_TEMP": str(self.tmp_path / "ansible-tmp"),
            "KEYLIFECYCLE_AUDIT_STATE_DIR": str(self.state_dir),
            "PATH": "%s:%s" % (VENV_BIN, os.environ.get("PATH", "/usr/bin:/bin")),
        })
        env.update(self.clock.env())
        env.update(extra or {})
        return env

    def playbook(self, path, *args, extra_env=None, inventory=None):
        """Run ansible-playbook on ``inventory`` (default: this runner's one-host inventory)."""
        inventory = str(inventory or self.inventory)
        result = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", inventory, str(path), *args],
                                capture_output=True, text=True, env=self.env(extra_env), cwd=str(self.tmp_path),
                                check=False)
        return result

    def task(self, module, args, *flags, connection=True, environment=None, extra_env=None):
        """Run ``secops.keylifecycle.<module>`` once; return its registered result."""
        self.count += 1
        out = self.tmp_path / ("result-%d.json" % self.count)
        module_args = dict(self.token.connection()) if connection else {}
        module_args.update(args)
        play = [{
            "name": "under test",
            "hosts": "hsm",
            "gather_facts": False,
            "environment": dict(self.token.env, **(environment or {})),
            "tasks": [
                {"name": "module under test", "secops.keylifecycle.%s" % module: module_args,
                 "register": "under_test", "ignore_errors": True},
                {"name": "save result", "ansible.builtin.copy": {"content": "{{ under_test | to_json }}",
                                                                 "dest": str(out)},
                 "check_mode": False, "diff": False},
            ],
        }]
        path = self.tmp_path / ("play-%d.yml" % self.count)
        path.write_text(yaml.safe_dump(play, sort_keys=False))
        proc = self.playbook(path, *flags, extra_env=extra_env)
        assert out.exists(), "playbook did not reach the save task:\n%s\n%s" % (proc.stdout, proc.stderr)
        task = json.loads(out.read_text())
        # the task under test runs with ignore_errors (so its result is saved): a failure of it leaves the play's
        # exit code at 0, so rc says 2 then, as ansible-playbook would without ignore_errors
        rc = proc.returncode or (2 if task.get("failed") else 0)
        return PlayResult(rc=rc, stdout=proc.stdout, stderr=proc.stderr, task=task)

    def journal_records(self):
        """The journal's records, parsed by the test itself (no collection code)."""
        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines() if line]


@pytest.fixture
def runner(tmp_path, collections_path, token, clock):
    return Runner(tmp_path, collections_path, token, clock)


@pytest.fixture
def lifecycle_runner(tmp_path, collections_path, lifecycle_token, clock):
    """A runner on ``lifecycle_token``: the test runs once on SoftHSM2 and once on openCryptoki."""
    return Runner(tmp_path, collections_path, lifecycle_token, clock)


@pytest.fixture
def repo():
    return Path(REPO)


class DistributionSetup:
    """The HSM host (local) plus the ssh recipient hosts, in one inventory, for playbooks/distribute.yml."""

    RECIPIENT_NAMES = {"r1": "billing", "r2": "reports"}

    def __init__(self, runner, recipients, oaep_hash=None):
        self.runner = runner
        self.recipients = recipients
        self.hosts = {host.alias: host for host in recipients.hosts}
        for host in recipients.hosts:
            host.reset_token("kl-%s" % host.alias)
        token = runner.token
        self.inventory = runner.tmp_path / "distribution-inventory.yml"
        hsm_vars = {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "keylifecycle_audit_journal": str(runner.journal),
            "hsm_pkcs11_module": token.connection()["pkcs11_module"], "hsm_token_label": token.label,
            "hsm_user_pin_file": str(token.pin_file), "hsm_environment": token.env,
            "ansible_remote_tmp": str(runner.tmp_path / "hsm-remote-tmp"),
            # the officer's credential: distribute.yml then approves the enrolled recipients (approve_recipients.yml)
            "keylifecycle_officer": "test-officer",
            "keylifecycle_officer_so_pin_file": str(token.so_pin_file),
        }
        if oaep_hash:  # else key_distribute's default, auto: the strongest hash the token wraps with (sha1 here)
            hsm_vars["key_distribution_oaep_hash"] = oaep_hash
        recipient_hosts = {
            host.alias: dict(host.inventory_vars(recipients.client_key, self.RECIPIENT_NAMES[host.alias]),
                             keylifecycle_audit_journal=str(runner.journal))
            for host in recipients.hosts}
        self.inventory.write_text(yaml.safe_dump({"all": {"children": {
            "hsm": {"hosts": {"test-hsm": hsm_vars}},
            "key_recipients": {"hosts": recipient_hosts}}}}))

    def set_host_var(self, alias, name, value):
        """Change one recipient host's variable in the inventory."""
        inventory = yaml.safe_load(self.inventory.read_text())
        inventory["all"]["children"]["key_recipients"]["hosts"][alias][name] = value
        self.inventory.write_text(yaml.safe_dump(inventory))

    def set_hsm_var(self, name, value):
        """Change (or, with None, remove) one variable of the HSM host, e.g. the officer's SO PIN file."""
        inventory = yaml.safe_load(self.inventory.read_text())
        hsm = inventory["all"]["children"]["hsm"]["hosts"]["test-hsm"]
        if value is None:
            hsm.pop(name, None)
        else:
            hsm[name] = value
        self.inventory.write_text(yaml.safe_dump(inventory))

    def env(self, extra=None):
        from tests.recipients import SSH_ARGS

        # pipelining, as the staging and prod inventories set for recipients: one ssh connection per task instead of
        # five (put, chmod, exec, remove), so the module never sits in a file on the recipient. A test that keeps the
        # remote files (ANSIBLE_KEEP_REMOTE_FILES) gets the file transfer back: Ansible turns pipelining off for it.
        return dict({"ANSIBLE_SSH_ARGS": SSH_ARGS, "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_PIPELINING": "True"},
                    **(extra or {}))

    def recipient_environment(self, alias):
        """What a module on the recipient host runs with: its token's library settings, on this test's clock (as
        hosts kept on one time by NTP would be: a recipient refuses a package signed after its own time)."""
        return dict(self.hosts[alias].token.env, **self.runner.clock.env())

    def _follow_clock(self):
        """The recipients' environment in the inventory, on the test's clock as it is now."""
        inventory = yaml.safe_load(self.inventory.read_text())
        hosts = inventory["all"]["children"]["key_recipients"]["hosts"]
        wanted = {alias: self.recipient_environment(alias) for alias in hosts if alias in self.hosts}
        if any(hosts[alias].get("recipient_environment") != env for alias, env in wanted.items()):
            for alias, env in wanted.items():
                hosts[alias]["recipient_environment"] = env
            self.inventory.write_text(yaml.safe_dump(inventory))

    def playbook(self, *args, extra_env=None):
        """Run playbooks/distribute.yml on the whole inventory."""
        self._follow_clock()
        return self.runner.playbook(Path(REPO) / "playbooks" / "distribute.yml", *args, inventory=self.inventory,
                                    extra_env=self.env(extra_env))

    def recipient_task(self, alias, module, args, *flags, real_clock=False):
        """Run one module on a recipient host over ssh; return its registered result."""
        return self.recipient_tasks(alias, module, [args], *flags, real_clock=real_clock)[0]

    def recipient_tasks(self, alias, module, args_list, *flags, real_clock=False):
        """Run the module once per entry of ``args_list`` on a recipient host, in one play over one ssh connection
        (each task's failure is kept, the next still runs); return their registered results in order.
        ``real_clock``: the recipient's module runs on the real time, not on the test's (shifted) clock."""
        self.runner.count += 1
        out = self.runner.tmp_path / ("recipient-result-%d.json" % self.runner.count)
        tasks = []
        for index, args in enumerate(args_list):
            module_args = {"pkcs11_module": "{{ recipient_pkcs11_module }}",
                           "token_label": "{{ recipient_token_label }}",
                           "user_pin_file": "{{ recipient_user_pin_file }}"}
            module_args.update(args)
            tasks.append({"name": "module under test %d" % index, "secops.keylifecycle.%s" % module: module_args,
                          "register": "under_test_%d" % index, "ignore_errors": True})
        results = "[%s]" % ", ".join("under_test_%d" % index for index in range(len(args_list)))
        tasks.append({"name": "save results", "ansible.builtin.copy": {"content": "{{ %s | to_json }}" % results,
                                                                       "dest": str(out)},
                      "delegate_to": "localhost", "check_mode": False, "diff": False,
                      "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}})
        environment = self.hosts[alias].token.env if real_clock else self.recipient_environment(alias)
        play = [{"name": "recipient task", "hosts": alias, "gather_facts": False, "environment": environment,
                 "tasks": tasks}]
        path = self.runner.tmp_path / ("recipient-play-%d.yml" % self.runner.count)
        path.write_text(yaml.safe_dump(play, sort_keys=False))
        proc = self.runner.playbook(path, *flags, inventory=self.inventory, extra_env=self.env())
        assert out.exists(), "playbook did not reach the save task:\n%s\n%s" % (proc.stdout, proc.stderr)
        return [PlayResult(rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr, task=task)
                for task in json.loads(out.read_text())]

    def recipient_objects(self, alias):
        """Objects on a recipient's token, read by the independent reader (python-pkcs11 only)."""
        return self.hosts[alias].token.objects()

    def installed(self, alias):
        """label -> newest recipient metadata, and the set of secret key labels, on a recipient's token."""
        newest, keys = {}, set()
        for obj in self.recipient_objects(alias):
            if obj.get("application") == "secops.keylifecycle.recipient":
                current = newest.get(obj["label"])
                if current is None or obj["value"]["revision"] > current["revision"]:
                    newest[obj["label"]] = obj["value"]
            elif obj.get("class") == "SECRET_KEY":
                keys.add(obj["label"])
        return newest, keys


@pytest.fixture
def distribution(runner, ssh_recipients):
    return DistributionSetup(runner, ssh_recipients)


# A stand-in for ansible-runner's awx_display stdout callback, for tests that run ansible-playbook directly (the
# real runner: tests/integration/test_ansible_runner.py), so that ansible-playbook can start with the environment
# of an AWX job (docs/access-control.md, "Identity").
AWX_CALLBACK = '''
DOCUMENTATION = """
name: awx_display
type: stdout
short_description: test stand-in for ansible-runner's awx_display callback
description: [One line per task result.]
"""
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "awx_display"

    def v2_runner_on_ok(self, result):
        self._display.display("ok: %s" % result._task.get_name())

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._display.display("failed: %s: %s" % (result._task.get_name(), result._result.get("msg")))
'''


@pytest.fixture
def awx_env(tmp_path):
    """The environment of AWX job 4242 (as AWX's RunJob.build_env and ansible-runner set it)."""
    callbacks = tmp_path / "awx-callbacks"
    callbacks.mkdir()
    (callbacks / "awx_display.py").write_text(AWX_CALLBACK)
    return {"JOB_ID": "4242", "INVENTORY_ID": "3", "AWX_HOST": "https://awx.example.org",
            "ANSIBLE_STDOUT_CALLBACK": "awx_display", "ANSIBLE_CALLBACK_PLUGINS": str(callbacks),
            "AWX_ISOLATED_DATA_DIR": str(tmp_path / "artifacts" / "4242")}
