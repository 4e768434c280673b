"""playbooks/rotate.yml run the way AWX runs it: ``ansible-runner run`` on a private data directory (issue #16).

An AWX execution node (process isolation off, as inside an execution environment) is handed a private data directory:
``project/`` (the checked-out repository: its playbooks and ansible.cfg), ``inventory/hosts``, ``env/envvars`` (the
environment AWX's RunJob.build_env gives the job, with the settings a deployment puts there) and ``env/extravars``
(the job's extra variables, AWX's ``awx_*`` / ``tower_*`` ones and what a custom credential injects, here the user
PIN). ``ansible-runner run <dir> -p playbooks/rotate.yml`` then runs ansible-playbook with the awx_display callback,
which writes every job event to ``artifacts/<ident>/job_events/``: what AWX stores and shows.

One test runs it twice on one real SoftHSM2 token, with the audit callback shipping to rsyslog (TLS) and
PostgreSQL (TLS) on loopback: first as AWX job 4242 launched by ``alice``, then as a plain ansible-runner run with
no AWX job around it. A second test checks that ``ansible-builder create`` makes the execution environment's build
context, and that the context's own introspection finds the collection's Python and system requirements.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, VENV_BIN

JOB_ID = "4242"


def _ensure_up(*servers):
    """The session's log stores may have been stopped by another test of this worker (outage tests)."""
    from tests.servers import is_listening

    for server in servers:
        if not is_listening(server.port):
            server.start()


def _write_private(path, data):
    """A file of the private data directory, 0600 (AWX writes them so; env/extravars holds the PIN here)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)


class PrivateDataDir:
    """ansible-runner's private data directory for playbooks/rotate.yml, laid out as AWX lays it out for a job."""

    def __init__(self, runner, token, rsyslog, postgres):
        self.runner = runner
        self.token = token
        self.root = runner.tmp_path / "runner"
        project = self.root / "project"
        # AWX checks the project (this repository) out into project/; the playbook path is relative to it
        shutil.copytree(REPO / "playbooks", project / "playbooks")
        shutil.copy(REPO / "ansible.cfg", project / "ansible.cfg")
        _write_private(self.root / "inventory" / "hosts", {"hsm": {"hosts": {"test-hsm": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "keylifecycle_audit_journal": str(runner.journal),
            "keylifecycle_environment_name": "test-env",
            "keylifecycle_report_dir": str(runner.tmp_path / "reports"),  # as every inventory sets it
            "hsm_pkcs11_module": token.connection()["pkcs11_module"], "hsm_token_label": token.label,
            "hsm_environment": token.env,
            "key_policy": {"max_rotation_period": "30d"}}}}})
        # The PostgreSQL password in a 0600 file, as an AWX credential type's file injector writes it: ansible-runner
        # copies the job's whole environment into artifacts/<ident>/command, so a password or PIN in env/envvars
        # would sit there (docs/examples/ansible-runner.md)
        pgpass = self.root / "pgpass"
        pgpass.write_text("*:%d:*:postgres:%s\n" % (postgres.port, postgres.password))
        pgpass.chmod(0o600)
        # the deployment's settings: the collection (AWX installs the project's collections and points
        # ANSIBLE_COLLECTIONS_PATHS at them), pipelining (the PIN comes as a variable), the audit callback and its
        # stores
        self.settings = {
            "ANSIBLE_COLLECTIONS_PATH": str(runner.collections_path),
            "ANSIBLE_LOCAL_TEMP": str(runner.tmp_path / "ansible-tmp"),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_NOCOLOR": "1",
            "KEYLIFECYCLE_AUDIT_STATE_DIR": str(runner.state_dir),
            "ANSIBLE_CALLBACKS_ENABLED": "secops.keylifecycle.audit",
            "KEYLIFECYCLE_AUDIT_SYSLOG_HOST": "localhost",
            "KEYLIFECYCLE_AUDIT_SYSLOG_PORT": str(rsyslog.port),
            "KEYLIFECYCLE_AUDIT_SYSLOG_CA_FILE": rsyslog.ca_file,
            "KEYLIFECYCLE_AUDIT_POSTGRESQL_DSN": postgres.dsn.replace("password=%s " % postgres.password, ""),
            "PGPASSFILE": str(pgpass),
            "KEYLIFECYCLE_AUDIT_TIMEOUT": "5",
        }
        assert postgres.password not in self.settings["KEYLIFECYCLE_AUDIT_POSTGRESQL_DSN"]

    def run(self, ident, envvars, extravars):
        """``ansible-runner run`` (process isolation off, as on an AWX execution node); the CompletedProcess."""
        _write_private(self.root / "env" / "envvars", dict(self.settings, **envvars))
        _write_private(self.root / "env" / "extravars", extravars)
        # the node's own environment: no Ansible settings, CI identities or audit settings of the caller (the
        # job's come from env/envvars); the test clock, so that a key is due without waiting for days
        env = {k: v for k, v in self.runner.env().items()
               if not k.startswith(("ANSIBLE_", "KEYLIFECYCLE_", "AWX_", "JOB_ID", "PG"))}
        return subprocess.run([str(VENV_BIN / "ansible-runner"), "run", str(self.root), "-p", "playbooks/rotate.yml",
                               "--ident", ident], capture_output=True, text=True, env=env, timeout=600, check=False)

    def artifacts(self, ident):
        return self.root / "artifacts" / ident

    def job_events(self, ident):
        """The job's events as the awx_display callback wrote them, in order."""
        events = [json.loads(path.read_text()) for path in (self.artifacts(ident) / "job_events").glob("*.json")]
        return sorted(events, key=lambda event: event["counter"])


def secret_forms(secret):
    """The forms a secret could leak in: as text, hex and base64 of it and of its PIN file's content (with the
    newline)."""
    forms = {secret}
    for raw in (secret.encode(), (secret + "\n").encode()):
        forms |= {raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode().rstrip("="),
                  base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    return forms


def leaks(text, secrets_):
    return sorted(name for name, forms in secrets_.items() if any(form in text for form in forms))


def assert_nothing_secret(pdd, ident, proc, secrets_):
    """Every file of the job's artifacts (job_events/, stdout, command, ...) and the runner's own output."""
    files = [path for path in pdd.artifacts(ident).rglob("*") if path.is_file()]
    assert len(list((pdd.artifacts(ident) / "job_events").glob("*.json"))) > 20, files  # there is something to scan
    for path in files:
        found = leaks(path.read_text(errors="replace"), secrets_)
        assert not found, "%s holds %s" % (path, found)
    assert not leaks(proc.stdout + proc.stderr, secrets_)


def journal_ids(runner):
    return [r["record_id"] for r in runner.journal_records()]


def assert_shipped_once(runner, rsyslog, postgres):
    """Every record of the token's journal (those of the set-up run before it too) reached both stores, once."""
    records = runner.journal_records()
    journal_id = records[0]["journal_id"]
    rsyslog.wait_for(len(records), contains=journal_id)
    syslog = [json.loads(m[m.index("{"):])["record_id"] for m in rsyslog.messages() if journal_id in m]
    postgres_ids = [str(row["record_id"]) for row in postgres.rows() if row["journal_id"] == journal_id]
    assert sorted(syslog) == sorted(journal_ids(runner))
    assert sorted(postgres_ids) == sorted(journal_ids(runner))


def states(token):
    return {label: value["state"] for label, value in token.metadata().items() if label.startswith("due:")}


def test_rotate_playbook_under_ansible_runner_as_awx_runs_it(runner, token, rsyslog, postgres):
    _ensure_up(rsyslog, postgres)
    runner.task("key_generate", {"keys": [{"name": "due", "rotation_period": "7d"}, {"name": "fresh"}]})
    pdd = PrivateDataDir(runner, token, rsyslog, postgres)
    secrets_ = {"user PIN": secret_forms(token.user_pin), "SO PIN": secret_forms(token.so_pin),
                "PostgreSQL password": secret_forms(postgres.password)}

    # 1. AWX job 4242, launched by alice: AWX's environment and extra variables; the PIN from a credential
    runner.clock.advance(days=8)
    before = len(runner.journal_records())
    awx_ident = "job-%s" % JOB_ID
    summary = pdd.artifacts(awx_ident) / "rotate-summary.json"
    job = pdd.run(awx_ident, envvars={"JOB_ID": JOB_ID, "INVENTORY_ID": "3", "PROJECT_REVISION": "main",
                                      "AWX_HOST": "https://awx.example.org", "MAX_EVENT_RES": "700000"},
                  extravars={"awx_job_id": int(JOB_ID), "tower_job_id": int(JOB_ID), "awx_user_name": "alice",
                             "tower_user_name": "alice", "awx_user_id": 7, "awx_job_template_name": "rotate prod",
                             "hsm_user_pin": token.user_pin, "keylifecycle_summary_file": str(summary)})
    artifacts = pdd.artifacts(awx_ident)
    assert job.returncode == 0, job.stdout[-6000:] + job.stderr
    assert (artifacts / "rc").read_text().strip() == "0" and (artifacts / "status").read_text() == "successful"
    assert states(token) == {"due:v1": "deactivated", "due:v2": "active"}
    assert "fresh:v2" not in token.metadata()
    assert [r["name"] for r in json.loads(summary.read_text())["rotated"]] == ["due"]
    # the job's events: the rotation's result is in them, the PIN passed to every task only as no_log's mask
    events = pdd.job_events(awx_ident)
    rotation = [e for e in events if e["event"] == "runner_on_ok"
                and e["event_data"]["task"] == "Rotate every key whose rotation is due (one batch)"]
    assert len(rotation) == 1, [e["event"] for e in events]
    result = rotation[0]["event_data"]["res"]
    assert [r["name"] for r in result["rotated"]] == ["due"]
    assert result["invocation"]["module_args"]["user_pin"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert events[-1]["event"] == "playbook_on_stats"
    # what ansible-runner ran (artifacts/<ident>/command: argv, cwd and the whole environment): the PIN in a file
    # (-e @env/extravars), not on the command line; the stdout callback and artifact directory runner itself set
    # (env/envvars has neither), with JOB_ID and AWX_HOST from env/envvars, make the environment of an AWX job
    command = json.loads((artifacts / "command").read_text())
    assert "@%s" % (pdd.root / "env" / "extravars") in command["command"]
    assert command["cwd"] == str(pdd.root / "project")
    expected = {"ANSIBLE_STDOUT_CALLBACK": "awx_display", "AWX_ISOLATED_DATA_DIR": str(artifacts), "JOB_ID": JOB_ID,
                "AWX_HOST": "https://awx.example.org"}
    assert {name: command["env"].get(name) for name in expected} == expected
    assert_nothing_secret(pdd, awx_ident, job, secrets_)
    # every record of the job names the AWX user and job: runner gave the environment of an AWX job run
    records = runner.journal_records()[before:]
    assert {r["event"]["event"]["action"] for r in records} >= {"key-rotate", "audit-checkpoint"}
    for record in records:
        labels = record["event"]["labels"]
        assert (record["event"]["user"]["name"], labels["operator_source"], labels["run_id"]) == \
            ("alice", "awx_job", "awx-%s" % JOB_ID), record
    # the audit callback shipped from inside runner: the set-up run's records (no callback then) and the job's
    assert_shipped_once(runner, rsyslog, postgres)

    # 2. the same directory run by hand with ansible-runner, no AWX job: the OS user acts, the PIN from its file
    runner.clock.advance(days=8)  # due:v2 is due now
    before = len(runner.journal_records())
    hosts = yaml.safe_load((pdd.root / "inventory" / "hosts").read_text())
    hosts["hsm"]["hosts"]["test-hsm"]["hsm_user_pin_file"] = str(token.pin_file)
    _write_private(pdd.root / "inventory" / "hosts", hosts)
    plain = pdd.run("plain", envvars={}, extravars={
        "keylifecycle_summary_file": str(pdd.artifacts("plain") / "rotate-summary.json")})
    assert plain.returncode == 0, plain.stdout[-6000:] + plain.stderr
    assert (pdd.artifacts("plain") / "rc").read_text().strip() == "0"
    assert states(token) == {"due:v1": "deactivated", "due:v2": "deactivated", "due:v3": "active"}
    assert_nothing_secret(pdd, "plain", plain, secrets_)
    records = runner.journal_records()[before:]
    assert "key-rotate" in {r["event"]["event"]["action"] for r in records}
    assert len({r["event"]["labels"]["run_id"] for r in records}) == 1
    for record in records:
        labels = record["event"]["labels"]
        assert (record["event"]["user"]["name"], labels["operator_source"]) == \
            (getpass.getuser(), "controller_os_user"), record
        assert not labels["run_id"].startswith("awx-"), record
    assert_shipped_once(runner, rsyslog, postgres)


@pytest.fixture(name="ee_context")
def fixture_ee_context(tmp_path):
    """``ansible-builder create`` on execution-environment.yml, with the collection built where the file expects
    it (no container engine needed); the build context's folder."""
    work = tmp_path / "ee"
    (work / ".state" / "build").mkdir(parents=True)
    shutil.copy(REPO / "execution-environment.yml", work)
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path",
                    str(work / ".state" / "build"), str(REPO)], check=True, capture_output=True, cwd=str(tmp_path))
    proc = subprocess.run([str(VENV_BIN / "ansible-builder"), "create", "-f", "execution-environment.yml",
                           "--context", str(work / "context")], capture_output=True, text=True, check=False,
                          cwd=str(work))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work / "context"


def _requirement_lines(path):
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def test_execution_environment_context_names_the_collections_requirements(ee_context, tmp_path):
    """The build context installs ansible-core and ansible-runner, the collection, and what the build's
    introspection (the context's own scripts/introspect.py, run here as its Containerfile runs it) finds: the
    collection's requirements.txt and bindep.txt, and the EE file's own lists."""
    build = ee_context / "_build"
    containerfile = (ee_context / "Dockerfile").read_text()
    assert 'ANSIBLE_INSTALL_REFS="ansible-core==2.19.14 ansible-runner' in containerfile
    assert "introspect.py introspect --user-pip=requirements.txt --user-bindep=bindep.txt" in containerfile
    requirements = yaml.safe_load((build / "requirements.yml").read_text())
    assert [c["name"] for c in requirements["collections"]] == ["collections/secops-keylifecycle-0.1.0.tar.gz"]
    tarball = build / "collections" / "secops-keylifecycle-0.1.0.tar.gz"
    # the galaxy stage: install the collection from the context as the build does, into an empty collections
    # path (as in the image: a copy already installed on this machine must not make galaxy skip the install)
    installed = tmp_path / "ee-collections"
    galaxy_env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed))
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "-p", str(installed), str(tarball)],
                   check=True, capture_output=True, cwd=str(build), env=galaxy_env)
    assert (installed / "ansible_collections" / "secops" / "keylifecycle" / "MANIFEST.json").is_file()
    # the builder stage's introspection, with the context's script
    pip, bindep = tmp_path / "pip.txt", tmp_path / "bindep.txt"
    proc = subprocess.run([sys.executable, str(build / "scripts" / "introspect.py"), "introspect",
                           "--user-pip=%s" % (build / "requirements.txt"), "--user-bindep=%s" % (build / "bindep.txt"),
                           "--write-pip=%s" % pip, "--write-bindep=%s" % bindep, str(installed)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found_pip, found_bindep = pip.read_text(), bindep.read_text()
    for line in _requirement_lines(REPO / "requirements.txt"):
        if line.startswith("ansible-core"):
            assert line not in found_pip  # the base stage installs it (ANSIBLE_INSTALL_REFS), not the collection's
        else:
            assert "%s  # from collection secops.keylifecycle" % line in found_pip, found_pip
    for line in _requirement_lines(REPO / "requirements-target.txt"):
        assert line in found_pip
    for line in _requirement_lines(REPO / "bindep.txt"):
        assert "%s  # from collection secops.keylifecycle" % line in found_bindep, found_bindep
    ee = yaml.safe_load((REPO / "execution-environment.yml").read_text())
    for line in ee["dependencies"]["system"]:
        assert "%s  # from collection user" % line in found_bindep, found_bindep
    # the EE's own Python list pins what the collection pins (one version of each in the image)
    assert sorted(ee["dependencies"]["python"]) == sorted(
        line for line in _requirement_lines(REPO / "requirements.txt") if not line.startswith("ansible-core"))
