"""Key recipient hosts for the tests: real sshd on loopback, one service user and one SoftHSM2 token per host.

Each recipient is a system user (``kl<run>_r1``, ``kl<run>_r2``..., ``<run>`` random per test session so that
two test sessions on one machine never share a user, a home or a token) with its own home, its own sshd on
127.0.0.1 (own port, host key and pid file, ``AllowUsers`` that user only) and its own SoftHSM2
token directory and config under its home. Ansible reaches it with the ssh connection and runs
modules with the recipient venv's python (``scripts/bootstrap.sh`` makes it readable by every
user). Needs root (to add users and start sshd), as in CI.

System packages: openssh-server openssh-client passwd softhsm2.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.servers import LOOPBACK, ServerError, _stop_process, _wait, free_port, is_listening, require

RECIPIENT_PYTHON = Path(os.environ.get("KL_RECIPIENT_VENV", "/opt/secops-keylifecycle/recipient-venv")) / "bin" / \
    "python"
SSH_ARGS = "-o ControlMaster=no -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR"


def _run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise ServerError("%s failed (%d): %s %s" % (" ".join(map(str, cmd[:3])), proc.returncode, proc.stdout,
                                                     proc.stderr))
    return proc


def _ensure_user(user):
    try:
        pwd.getpwnam(user)
    except KeyError:
        _run([require("useradd", "passwd"), "--create-home", "--shell", "/bin/sh", user])
    # no password, but not locked: sshd (UsePAM no) accepts public-key logins only for unlocked accounts
    _run([require("usermod", "passwd"), "-p", "*", user])
    return pwd.getpwnam(user)


def _chown_tree(path, uid, gid):
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


@dataclass
class RecipientHost:
    """One recipient: inventory alias, service user, sshd port, and its token (a tests.conftest.Token)."""

    alias: str
    user: str
    port: int
    home: Path
    uid: int
    gid: int
    token: object = None

    def inventory_vars(self, client_key, recipient_name):
        from tests.conftest import PKCS11_MODULE

        return {
            "ansible_host": LOOPBACK, "ansible_port": self.port, "ansible_user": self.user,
            "ansible_connection": "ssh", "ansible_ssh_private_key_file": str(client_key),
            "ansible_python_interpreter": str(RECIPIENT_PYTHON),
            "recipient_name": recipient_name,
            "recipient_pkcs11_module": PKCS11_MODULE,
            "recipient_token_label": self.token.label,
            "recipient_user_pin_file": str(self.token.pin_file),
            "recipient_environment": self.token.env,
        }

    def run_as(self, cmd, env=None):
        """Run a command as this recipient's user (for reading its token the way its services would)."""
        full_env = dict(os.environ, HOME=str(self.home), **(env or {}))
        return subprocess.run(["runuser", "-u", self.user, "--"] + [str(c) for c in cmd], capture_output=True,
                              text=True, check=False, env=full_env)

    def reset_token(self, label):
        """A fresh, empty SoftHSM2 token in this user's home, owned by the user (PIN file 0600)."""
        from tests.conftest import make_token

        root = self.home / "hsm"
        shutil.rmtree(root, ignore_errors=True)
        self.token = make_token(root, label)
        _chown_tree(root, self.uid, self.gid)
        os.chmod(root, 0o700)
        return self.token


class SshRecipients:
    """Starts one sshd per recipient user on loopback; stops them on exit."""

    def __init__(self, work_dir, users=None):
        if os.geteuid() != 0:
            raise ServerError("the recipient tests add users and start sshd: run them as root (as CI does)")
        if not os.access(str(RECIPIENT_PYTHON), os.X_OK):
            raise ServerError("%s is missing: run ./scripts/bootstrap.sh (it makes the recipient venv)"
                              % RECIPIENT_PYTHON)
        self.work_dir = Path(work_dir)
        run = secrets.token_hex(3)
        self.users = users or ("kl%s_r1" % run, "kl%s_r2" % run)
        self.hosts = []
        self.processes = []
        self.client_key = self.work_dir / "client_ed25519"

    def start(self):
        sshd = require("/usr/sbin/sshd", "openssh-server")
        keygen = require("ssh-keygen", "openssh-client")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        _run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key)])
        public = (self.work_dir / "client_ed25519.pub").read_text()
        for index, user in enumerate(self.users, start=1):
            entry = _ensure_user(user)
            home = Path(entry.pw_dir)
            ssh_dir = home / ".ssh"
            ssh_dir.mkdir(mode=0o700, exist_ok=True)
            (ssh_dir / "authorized_keys").write_text(public)
            os.chmod(ssh_dir / "authorized_keys", 0o600)
            _chown_tree(ssh_dir, entry.pw_uid, entry.pw_gid)
            os.chmod(home, 0o750)
            host_dir = self.work_dir / ("sshd-%s" % user)
            host_dir.mkdir()
            _run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(host_dir / "host_ed25519")])
            port = free_port()
            config = host_dir / "sshd_config"
            config.write_text("\n".join([
                "Port %d" % port, "ListenAddress %s" % LOOPBACK, "HostKey %s" % (host_dir / "host_ed25519"),
                "PidFile %s" % (host_dir / "sshd.pid"), "PasswordAuthentication no",
                "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "UsePAM no", "AllowUsers %s" % user,
                "AuthorizedKeysFile .ssh/authorized_keys", "StrictModes yes", "Subsystem sftp internal-sftp",
                "LogLevel ERROR", ""]))
            log = open(host_dir / "sshd.log", "w")  # pylint: disable=consider-using-with
            process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
            self.processes.append(process)
            _wait(lambda p=port: is_listening(p), 15, "sshd for %s on port %d" % (user, port),
                  log=host_dir / "sshd.log", process=process)
            self.hosts.append(RecipientHost(alias="r%d" % index, user=user, port=port, home=home, uid=entry.pw_uid,
                                            gid=entry.pw_gid))
        return self

    def stop(self):
        for process in self.processes:
            _stop_process(process)
        self.processes = []
        for host in self.hosts:  # this session's users and their homes (tokens included) go with it
            subprocess.run([require("userdel", "passwd"), "--remove", host.user], capture_output=True, check=False)
        self.hosts = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
