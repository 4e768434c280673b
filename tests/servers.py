"""Real log stores on loopback for the tests: a throwaway CA, rsyslog with TLS, PostgreSQL 15 with TLS.

Plain classes and functions (wire them as fixtures): every server keeps its state in its own
directory, listens on 127.0.0.1 on a free port, and is stopped by its pid. ``stop()``/``start()``
(and ``pause()``/``resume()``, SIGSTOP/SIGCONT) simulate an outage in the middle of a test.

System packages: rsyslog rsyslog-gnutls rsyslog-openssl postgresql-15 iproute2 (``ss``).
PostgreSQL refuses to run as root: its directory is made in /tmp and owned by postgres.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PG_BIN = Path(os.environ.get("KL_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    """A test server could not be set up, started or stopped; the message says what to install or read."""


def require(path_or_name, package):
    """Path of a binary (absolute path or a name on PATH), else ServerError naming the apt package."""
    found = path_or_name if os.access(str(path_or_name), os.X_OK) else shutil.which(str(path_or_name))
    if not found:
        raise ServerError("%s is missing: apt-get install -y --no-install-recommends %s" % (path_or_name, package))
    return str(found)


def free_port():
    """A TCP port that was free on 127.0.0.1 a moment ago (bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def is_listening(port, address=LOOPBACK):
    """True if something listens on address:port, asked of ``ss -ltn`` (no connection is made)."""
    out = subprocess.run([require("ss", "iproute2"), "-H", "-ltn", "sport = :%d" % port],
                         capture_output=True, text=True, check=False).stdout
    return any(line.split()[3] == "%s:%d" % (address, port) for line in out.splitlines() if len(line.split()) > 3)


def _wait(predicate, timeout, what, log=None, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.02)
    detail = ""
    if log is not None and Path(log).exists():
        detail = "\n--- %s ---\n%s" % (log, Path(log).read_text(errors="replace")[-4000:])
    state = " (exited with %s)" % process.returncode if process is not None and process.poll() is not None else ""
    raise ServerError("%s%s after %g s%s" % (what, state, timeout, detail))


def _stop_process(process, sig=signal.SIGTERM, timeout=30):
    """Signal a child by its pid and reap it; SIGKILL if it does not exit in time."""
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
    os.kill(process.pid, sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


#: thread states (/proc/<pid>/task/<tid>/stat) of a thread that can no longer answer: stopped, or a process that
#: has exited (a zombie: a backend that exited just as its parent was stopped stays one until the parent runs again)
_NOT_RUNNING = ("T", "t", "Z", "X", "x")


def _all_threads_stopped(pids):
    """True once every thread of every process in ``pids`` is stopped or gone (``_NOT_RUNNING``)."""
    for pid in pids:
        for stat in glob.glob("/proc/%d/task/*/stat" % pid):
            try:
                state = Path(stat).read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):  # a thread or process that just exited
                continue
            if state not in _NOT_RUNNING:
                return False
    return True


def freeze(pids, what):
    """SIGSTOP ``pids`` and return once all their threads have stopped.

    kill() returns before the signal is acted on: a stop signal reaches one thread, which then stops the others,
    so on a busy machine another thread of the server can still answer for a while. Waiting for the state makes a
    test of a frozen server independent of how fast the machine is."""
    _signal_all(pids, signal.SIGSTOP)
    try:
        _wait(lambda: _all_threads_stopped(pids), 30, "%s did not stop on SIGSTOP" % what)
    except ServerError:
        _signal_all(pids, signal.SIGCONT)  # not left half-stopped for the tests after this one
        raise


def _signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:  # a backend that just exited
            pass


# ------------------------------------------------------------------------------------------------ TLS files


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: a CA (certificate and key) and one server certificate and key it signed."""

    ca_file: Path
    ca_key_file: Path
    cert_file: Path
    key_file: Path


def _write_key(path, key):
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_ca(tmp_dir, names=("localhost", LOOPBACK), common_name="keylifecycle test CA"):
    """A throwaway CA in ``tmp_dir`` and a server certificate from it for ``names`` (serverAuth)."""
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    ca_file, ca_key_file = tmp_dir / "ca.pem", tmp_dir / "ca.key"
    ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key_file, key)
    return issue_cert(TlsFiles(ca_file, ca_key_file, ca_file, ca_key_file), tmp_dir, names)


def issue_cert(ca, tmp_dir, names, stem="server"):
    """Another server certificate signed by ``ca``'s CA, for ``names`` (DNS names or IP addresses)."""
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    ca_cert = x509.load_pem_x509_certificate(Path(ca.ca_file).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(ca.ca_key_file).read_bytes(), password=None)
    alt_names = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = tmp_dir / ("%s.pem" % stem), tmp_dir / ("%s.key" % stem)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_file, key)
    return TlsFiles(Path(ca.ca_file), Path(ca.ca_key_file), cert_file, key_file)


# ------------------------------------------------------------------------------------------------ rsyslog

_RSYSLOG_CONF = """\
global(workDirectory="{work}" maxMessageSize="256k" net.enableDNS="off"
       parser.escapeControlCharactersOnReceive="off"
       defaultNetstreamDriver="{driver}" defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}" defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" streamDriver.name="{driver}" streamDriver.mode="1" streamDriver.authMode="anon")
template(name="rawjson" type="string" string="%rawmsg:::json%\\n")
ruleset(name="remote") {{
    action(type="omfile" file="{out}" template="rawjson")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" supportOctetCountedFraming="on" ruleset="remote")
"""


class RsyslogTls:
    """rsyslogd receiving RFC 5425 syslog over TLS on 127.0.0.1, writing each message's %rawmsg% to a file.

    ``messages()`` returns the received messages (without the octet-count framing), one per record,
    newlines and all: rsyslog's control-character escaping is off and the file holds one JSON string a line.
    """

    def __init__(self, work_dir, tls, port=None, driver="gtls"):
        self.rsyslogd = require("/usr/sbin/rsyslogd", "rsyslog")
        if not glob.glob("/usr/lib/*/rsyslog/lmnsd_%s.so" % driver):
            raise ServerError("rsyslog TLS driver %s is missing: apt-get install -y --no-install-recommends %s" % (
                driver, {"gtls": "rsyslog-gnutls", "ossl": "rsyslog-openssl"}.get(driver, "rsyslog")))
        require("ss", "iproute2")
        self.dir = Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "work").mkdir(exist_ok=True)
        self.tls = tls
        self.port = port or free_port()
        self.output = self.dir / "messages.jsonl"
        self.log = self.dir / "rsyslogd.log"
        self.conf = self.dir / "rsyslog.conf"
        self.conf.write_text(_RSYSLOG_CONF.format(work=self.dir / "work", driver=driver, ca=tls.ca_file,
                                                  cert=tls.cert_file, key=tls.key_file, out=self.output,
                                                  port=self.port))
        self.process = None
        check = subprocess.run([self.rsyslogd, "-N1", "-f", str(self.conf)], capture_output=True, text=True,
                               check=False)
        if check.returncode != 0:
            raise ServerError("rsyslogd -N1 refuses %s:\n%s%s" % (self.conf, check.stdout, check.stderr))

    @property
    def ca_file(self):
        return str(self.tls.ca_file)

    def start(self):
        if self.process is not None and self.process.poll() is None:
            return
        with open(self.log, "ab") as log:
            # pylint: disable-next=consider-using-with
            self.process = subprocess.Popen([self.rsyslogd, "-n", "-f", str(self.conf), "-i",
                                             str(self.dir / "rsyslogd.pid")],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: is_listening(self.port), 20, "rsyslogd is not listening on port %d" % self.port,
              log=self.log, process=self.process)

    def stop(self):
        _stop_process(self.process)

    def restart(self):
        self.stop()
        self.start()

    def pause(self):
        """SIGSTOP: the port still accepts TCP connections (kernel backlog) but nothing answers."""
        freeze([self.process.pid], "rsyslogd")

    def resume(self):
        os.kill(self.process.pid, signal.SIGCONT)

    def messages(self):
        """The messages rsyslog has written so far: complete lines only (it may be writing the last one)."""
        if not self.output.exists():
            return []
        complete = self.output.read_bytes().split(b"\n")[:-1]  # what follows the last newline is unfinished
        return [json.loads('"%s"' % line.decode("utf-8")) for line in complete if line]

    def wait_for(self, count, timeout=60.0, contains=None):
        """The messages (only those containing ``contains``, if given) once there are at least ``count``."""
        found = []

        def enough():
            found[:] = [msg for msg in self.messages() if contains is None or contains in msg]
            return len(found) >= count

        _wait(enough, timeout, "rsyslog got fewer than %d messages%s" % (
            count, " containing %r" % contains if contains else ""), log=self.log)
        return found

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()


# ------------------------------------------------------------------------------------------------ PostgreSQL

_PG_HBA = """\
local   all  all                 trust
hostssl all  all  127.0.0.1/32   scram-sha-256
"""


class PostgresTls:
    """PostgreSQL 15 on 127.0.0.1 with ssl=on (certificate from ``tls``) and password (SCRAM) logins over TLS only.

    ``dsn`` is what a client uses (TLS, verify-full against the CA, superuser ``postgres`` with a password);
    ``admin_dsn`` goes over the Unix socket (trust) for the test's own reads and set-up. All state lives in
    a directory under /tmp owned by postgres; ``cleanup()`` stops the server and removes it.
    """

    def __init__(self, tls, port=None, base_dir=None):
        self.bin = {name: require(PG_BIN / name, "postgresql-15") for name in ("initdb", "postgres", "pg_isready")}
        require("ss", "iproute2")
        try:
            import pwd  # pylint: disable=import-outside-toplevel
            entry = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerError("user postgres is missing: apt-get install -y --no-install-recommends postgresql-15") \
                from None
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.dir = Path(tempfile.mkdtemp(prefix="kl-pg-", dir=base_dir or "/tmp"))
        self.data, self.socket_dir, self.log = self.dir / "data", self.dir / "sock", self.dir / "postgres.log"
        self.port = port or free_port()
        self.password = os.urandom(12).hex()
        self.tls = tls
        self.process = None
        self.socket_dir.mkdir()
        shutil.copy(tls.cert_file, self.dir / "server.crt")
        shutil.copy(tls.key_file, self.dir / "server.key")
        (self.dir / "pwfile").write_text(self.password + "\n")
        for path in (self.dir, self.socket_dir, self.dir / "server.crt", self.dir / "server.key", self.dir / "pwfile"):
            os.chown(path, self.uid, self.gid)
        os.chmod(self.dir / "server.key", 0o600)
        self._as_postgres([self.bin["initdb"], "-D", str(self.data), "-U", "postgres", "--pwfile",
                           str(self.dir / "pwfile"), "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        (self.data / "pg_hba.conf").write_text(_PG_HBA)

    def _as_postgres(self, cmd):
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.dir, env=self._env(),
                                user=self.uid, group=self.gid, extra_groups=[])
        if result.returncode != 0:
            raise ServerError("%s failed (%d):\n%s%s" % (cmd[0], result.returncode, result.stdout, result.stderr))
        return result

    def _env(self):
        return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(self.dir)}

    @property
    def ca_file(self):
        return str(self.tls.ca_file)

    @property
    def dsn(self):
        return ("host=%s port=%d dbname=postgres user=postgres password=%s sslmode=verify-full sslrootcert=%s"
                % (LOOPBACK, self.port, self.password, self.tls.ca_file))

    @property
    def admin_dsn(self):
        return "host=%s port=%d dbname=postgres user=postgres" % (self.socket_dir, self.port)

    def start(self):
        if self.process is not None and self.process.poll() is None:
            return
        with open(self.log, "ab") as log:
            # pylint: disable-next=consider-using-with
            self.process = subprocess.Popen(
                [self.bin["postgres"], "-D", str(self.data), "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                 "-c", "unix_socket_directories=%s" % self.socket_dir, "-c", "ssl=on",
                 "-c", "ssl_cert_file=%s" % (self.dir / "server.crt"),
                 "-c", "ssl_key_file=%s" % (self.dir / "server.key"),
                 "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, env=self._env(),
                user=self.uid, group=self.gid, extra_groups=[])
        ready = [self.bin["pg_isready"], "-q", "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres"]
        _wait(lambda: is_listening(self.port) and subprocess.run(ready, check=False).returncode == 0, 30,
              "PostgreSQL is not ready on port %d" % self.port, log=self.log, process=self.process)

    def stop(self):
        """Fast shutdown (SIGINT to the postmaster's pid), the whole cluster resumed first: a paused backend would
        keep the postmaster waiting for it."""
        if self.process is not None and self.process.poll() is None:
            self.resume()
        _stop_process(self.process, signal.SIGINT)

    def restart(self):
        self.stop()
        self.start()

    def _pids(self):
        """The postmaster and its children (backends, checkpointer, ...)."""
        pids = [self.process.pid]
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.process.pid:
                pids.append(int(stat.split("/")[2]))
        return pids

    def _signal_cluster(self, sig):
        _signal_all(self._pids(), sig)

    def pause(self):
        """SIGSTOP the whole cluster: connections are accepted by the kernel, nothing answers."""
        freeze(self._pids(), "PostgreSQL")

    def resume(self):
        self._signal_cluster(signal.SIGCONT)

    def execute(self, query, params=None):
        """Run one statement over the Unix socket as postgres (autocommit); rows as dicts, if any."""
        import psycopg  # pylint: disable=import-outside-toplevel
        from psycopg.rows import dict_row  # pylint: disable=import-outside-toplevel

        with psycopg.connect(self.admin_dsn, autocommit=True, row_factory=dict_row) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def rows(self, table="keylifecycle_audit"):
        from psycopg import sql  # pylint: disable=import-outside-toplevel

        return self.execute(sql.SQL("SELECT * FROM {} ORDER BY journal_id, seq").format(sql.Identifier(table)))

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.cleanup()
