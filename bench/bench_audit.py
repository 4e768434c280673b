"""Benchmark the audit trail of secops.keylifecycle on SoftHSM2 (see bench/README.md, "Audit benchmark").

1. Overhead on a batch rotation: one ``key_rotate`` task rotating N AES-256 keys (default 1000; ``name:`` the N
   keys, ``force: true``), in three variants, each on a fresh token, alternating, ``--repeat`` times, medians.
   Before the timed task, one untimed ``key_generate`` task (N specs) creates the keys with the same collection
   and, for b and c, the same journal, audit state dir and callbacks, so the timed task runs in the steady state
   (signing key on the token, earlier records already shipped):

   a. audit off: a copy of the collection without plugins/action/key_rotate.py and key_generate.py, so no
      journal is written and the module anchors no checkpoint (checked after every run);
   b. journal only: the collection as built (fail-closed journal and HSM-signed checkpoint);
   c. journal + both stores: as b, with the callback secops.keylifecycle.audit shipping to a real rsyslog (TLS)
      and a real PostgreSQL (TLS) on loopback (tests/servers.py); every journal record is checked to be in
      both stores afterwards.

   After every run the token is checked (N keys, v2 active, v1 deactivated with encrypt off) and, for b and c,
   the journal (a valid chain with the rotation's intent, N key-rotate changes, checkpoint and outcome). Plus an
   in-process breakdown of where the overhead comes from (the action plugin's journal work, and the module's
   checkpoint anchoring on a token that holds the rotated keys).

2. audit_verify throughput on a synthetic but valid journal of ``--records`` records written with the real
   ``Journal.append``: ``verify_chain`` and ``verify_journal`` in-process, and the ``audit_verify`` module
   through ansible-playbook on a token.

Timings are reported, never asserted; the correctness checks are (a failed check stops the run). Internal modes
``_token`` and ``_anchor`` run in a child process, because SoftHSM2 reads SOFTHSM2_CONF once per process.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from bench_generate import (
    BENCH,
    METADATA_APPLICATION,
    PKCS11_MODULE,
    PYTHON,
    Token,
    environment,
    generate_task,
    key_names,
    run,
)

REPO = BENCH.parent
COLLECTION = ("ansible_collections", "secops", "keylifecycle")
TARGET_JOURNAL_VS_OFF = 1.05  # journal only / audit off, at most
VARIANTS = ("audit_off", "journal", "stores")
VARIANT_TITLES = {"audit_off": "a. audit off", "journal": "b. journal only", "stores": "c. journal + both stores"}
GENERATE_MODULE = "secops.keylifecycle.key_generate"
ROTATE_MODULE = "secops.keylifecycle.key_rotate"
# removed from the "audit off" copy: the timed task's action plugin, and the untimed key_generate's
AUDIT_OFF_REMOVED = ("key_rotate.py", "key_generate.py")
PLAY_TIMED, PLAY_PREPARE = "rotate", "generate"  # file name prefixes of the two playbooks of a run
BENCH_FILES = ("-task-time.jsonl", "-phases.jsonl")  # the bench callbacks' own files


def import_collection(collections_path):
    """Make the installed collection importable (``ansible_collections.secops.keylifecycle...``)."""
    if str(collections_path) not in sys.path:
        sys.path.insert(0, str(collections_path))


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def median_of(runs, key):
    return statistics.median(run[key] for run in runs)


# ---- child processes on a token ------------------------------------------------------------------------------

def token_objects(collections_path, label, pin_file):
    """The benchmark's keys (versions and states) and the collection's audit objects on the token."""
    import_collection(collections_path)
    import pkcs11  # pylint: disable=import-outside-toplevel
    from pkcs11 import Attribute, ObjectClass  # pylint: disable=import-outside-toplevel
    from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import (  # pylint: disable=import-outside-toplevel
        CHECKPOINT_APPLICATION,
        SIGNING_KEY_NAME,
    )

    token = pkcs11.lib(PKCS11_MODULE).get_token(token_label=label)
    with token.open(rw=False, user_pin=Path(pin_file).read_text(encoding="ascii").rstrip("\n")) as session:
        def objects(template):
            return [obj for obj in session.get_objects(template) if obj[Attribute.LABEL].startswith("bench-")]

        secret_keys = {obj[Attribute.LABEL]: bool(obj[Attribute.ENCRYPT])
                       for obj in objects({Attribute.CLASS: ObjectClass.SECRET_KEY})}
        data = objects({Attribute.CLASS: ObjectClass.DATA})
        documents = [json.loads(bytes(obj[Attribute.VALUE])) for obj in data
                     if obj[Attribute.APPLICATION] == METADATA_APPLICATION]
        checkpoints = [json.loads(bytes(obj[Attribute.VALUE]).decode("ascii")) for obj in session.get_objects(
            {Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: CHECKPOINT_APPLICATION})]
        signing_keys = sum(1 for obj in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
                           if obj[Attribute.LABEL].startswith(SIGNING_KEY_NAME + ":"))
    newest = {}  # metadata revisions are append-only: the highest revision of each version counts
    for doc in documents:
        label = "%s:v%d" % (doc["name"], doc["version"])
        if label not in newest or doc["revision"] > newest[label]["revision"]:
            newest[label] = doc
    return {
        "bench_keys": len({doc["name"] for doc in documents}),
        # "v1 deactivated": N, "v2 active": N after a rotation of every key
        "bench_versions": dict(Counter("v%d %s" % (doc["version"], doc["state"]) for doc in newest.values())),
        "bench_secret_keys": len(secret_keys),
        # the token object of a deactivated version has CKA_ENCRYPT off: only the v2 objects keep it
        "bench_encrypt_on": dict(Counter(name.rsplit(":", 1)[1] for name, on in secret_keys.items() if on)),
        "bench_data_objects": len(data),
        "checkpoints": len(checkpoints),
        "checkpoint_seqs": sorted(doc["seq"] for doc in checkpoints),
        "signing_keys": signing_keys,
    }


def anchor_cost(collections_path, label, pin_file):
    """Time the module's checkpoint anchoring (CheckpointSigner.anchor) on this token, twice.

    The first anchor generates the audit-checkpoint signing key pair in the token (as on a fresh token), the
    second only signs and replaces the stored checkpoint (every later task).
    """
    import_collection(collections_path)
    # pylint: disable=import-outside-toplevel
    from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import CheckpointSigner
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import ConnectionSettings, open_session
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_store import TokenKeyStore

    settings = ConnectionSettings(pkcs11_module=PKCS11_MODULE, token_label=label, user_pin_file=pin_file)
    journal_id = str(uuid.uuid4())
    out = {}
    with open_session(settings) as session:
        store, out["store_load"] = timed(TokenKeyStore(session, label).load)
        signer = CheckpointSigner(session, store)
        for seq, key in ((1, "anchor_first"), (4, "anchor_next")):
            context = {"journal_id": journal_id, "intent_seq": seq, "intent_hash": hashlib.sha256(b"%d" % seq).hexdigest()}
            (checkpoint, version, created), out[key] = timed(signer.anchor, context, getpass.getuser())
            out[key + "_created_key"] = bool(created and version and checkpoint)
    return out


def child(token, mode, collections_path):
    return json.loads(run([PYTHON, __file__, mode, str(collections_path), token.label, str(token.pin_file)],
                          env=token.env))


# ---- ansible-playbook ----------------------------------------------------------------------------------------

class Playbooks:
    """Runs one-play playbooks on localhost (connection local, venv python) with a given collections path."""

    def __init__(self, work):
        self.work = work
        self.inventory = work / "inventory.json"
        self.inventory.write_text(json.dumps({"bench": {"hosts": {"localhost": {
            "ansible_connection": "local", "ansible_python_interpreter": PYTHON}}}}))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PKCS11_", "KEYLIFECYCLE_"))}
        self.env.update({
            "ANSIBLE_CONFIG": str(work / "no-ansible.cfg"),  # defaults only, not the repo's ansible.cfg
            "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
            "ANSIBLE_REMOTE_TMP": str(work / "ansible-remote-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_CALLBACK_PLUGINS": str(BENCH / "callback_plugins"),
            "PATH": "%s:%s" % (Path(PYTHON).parent, os.environ.get("PATH", "/usr/bin:/bin")),
        })

    def play(self, root, token, tasks, collections_path, journal, extra_env=None, callbacks=(), name="play"):
        """Run the tasks on ``token``; return wall times: total, task (bench_task_time) and phases (bench_phases).

        ``root`` holds the playbook ``<name>.yml``, its log and the callbacks' files (``<name>-*.jsonl``, see
        BENCH_FILES); the audit state dir is ``root/audit-state``, shared by every playbook run in ``root``.
        """
        root.mkdir(parents=True, exist_ok=True)
        path = root / (name + ".yml")
        path.write_text(json.dumps([{
            "hosts": "bench", "gather_facts": False, "environment": token.env,
            "vars": {"keylifecycle_audit_journal": str(journal)}, "tasks": tasks}]))
        task_times, phases = (root / (name + suffix) for suffix in BENCH_FILES)
        env = dict(self.env, **(extra_env or {}))
        env.update({
            "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
            "ANSIBLE_CALLBACKS_ENABLED": ",".join(("bench_task_time", "bench_phases") + tuple(callbacks)),
            "KEYLIFECYCLE_AUDIT_STATE_DIR": str(root / "audit-state"),
            "KL_BENCH_TASK_TIMES": str(task_times),
            "KL_BENCH_PHASES": str(phases),
        })
        cmd = [str(Path(PYTHON).parent / "ansible-playbook"), "-i", str(self.inventory), str(path)]
        launched, start = time.time(), time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=self.work, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, check=False)
        elapsed, ended = time.perf_counter() - start, time.time()
        path.with_suffix(".log").write_text(proc.stdout)
        if proc.returncode != 0:
            raise SystemExit("%s failed (rc %d):\n%s" % (path, proc.returncode, proc.stdout[-3000:]))
        events = [json.loads(line) for line in phases.read_text().splitlines()]
        at = {}
        for event in events:
            at.setdefault(event["event"], event)  # first task only: the one that is timed
        return {
            "total": elapsed,
            "task": json.loads(task_times.read_text().splitlines()[0])["seconds"],
            "startup": at["playbook_start"]["time"] - launched,
            "setup": at["task_start"]["time"] - at["playbook_start"]["time"],
            "after_task": at["stats"]["time"] - at["task_end"]["time"],
            "finish": ended - at["stats"]["time"],
            "result": at["task_end"]["result"],
            "log": proc.stdout,
        }


# ---- log stores ----------------------------------------------------------------------------------------------

class Stores:
    """rsyslog (TLS) and PostgreSQL (TLS) on loopback, from tests/servers.py."""

    def __init__(self, root):
        sys.path.insert(0, str(REPO))
        # pylint: disable-next=import-outside-toplevel
        from tests.servers import PostgresTls, RsyslogTls, make_ca

        tls = make_ca(root / "tls")
        self.rsyslog = RsyslogTls(root / "rsyslog", tls)
        self.postgres = PostgresTls(tls)

    def start(self):
        self.rsyslog.start()
        self.postgres.start()

    def cleanup(self):
        self.rsyslog.stop()
        self.postgres.cleanup()

    def callback_env(self):
        """The callback's options, as in tests/integration/test_audit_shipping.py (timeouts left at defaults)."""
        return {
            "KEYLIFECYCLE_AUDIT_SYSLOG_HOST": "localhost",
            "KEYLIFECYCLE_AUDIT_SYSLOG_PORT": str(self.rsyslog.port),
            "KEYLIFECYCLE_AUDIT_SYSLOG_CA_FILE": self.rsyslog.ca_file,
            "KEYLIFECYCLE_AUDIT_POSTGRESQL_DSN": self.postgres.dsn,
        }

    def received(self, journal_id, expected):
        """Record ids of ``journal_id`` in each store, once syslog has written at least ``expected`` of them."""
        try:
            messages = self.rsyslog.wait_for(expected, timeout=60.0, contains=journal_id)
        except RuntimeError as exc:  # ServerError: fewer arrived; the comparison below says how many
            print("warning: %s" % str(exc).split("\n", maxsplit=1)[0], file=sys.stderr)
            messages = [m for m in self.rsyslog.messages() if journal_id in m]
        syslog = [json.loads(message[message.index("{"):])["record_id"] for message in messages]
        rows = self.postgres.execute("SELECT record_id::text AS record_id FROM keylifecycle_audit "
                                     "WHERE journal_id = %s", (journal_id,))
        return {"syslog": syslog, "postgresql": [row["record_id"] for row in rows]}


# ---- 1. overhead ---------------------------------------------------------------------------------------------

def make_audit_off_copy(collections_path, work):
    """A copy of the installed collection without the key_rotate (timed) and key_generate (untimed) action
    plugins, in its own collections path."""
    source = collections_path.joinpath(*COLLECTION)
    target_path = work / "collections-audit-off"
    target = target_path.joinpath(*COLLECTION)
    for name in AUDIT_OFF_REMOVED:
        if not (source / "plugins" / "action" / name).is_file():
            raise SystemExit("%s has no plugins/action/%s: not the collection this bench expects" % (source, name))
    shutil.rmtree(target_path, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    for name in AUDIT_OFF_REMOVED:
        (target / "plugins" / "action" / name).unlink()
    return target_path


def rotate_task(token, n):
    """The timed task: rotate the N bench keys, due or not."""
    return {"name": "key_rotate", ROTATE_MODULE: dict(token.connection(), name=key_names(n), force=True)}


def record_kind(record):
    event = record["event"]
    return "%s %s %s" % (event["keylifecycle"]["phase"], event["event"]["action"], event["event"]["outcome"])


def check_token(variant, token, n, collections_path):
    """Every key rotated once: v1 deactivated (encrypt off), v2 active; the audit objects only where audited."""
    objects = child(token, "_token", collections_path)
    audited = variant != "audit_off"
    expected = {"bench_keys": n, "bench_versions": {"v1 deactivated": n, "v2 active": n},
                "bench_secret_keys": 2 * n, "bench_encrypt_on": {"v2": n},
                "bench_data_objects": 3 * n,  # metadata revisions: v1 twice (append-only), v2 once
                "checkpoints": int(audited), "signing_keys": int(audited)}
    found = {key: value for key, value in objects.items() if key != "checkpoint_seqs"}
    if found != expected:
        raise SystemExit("%s: the token holds %s, expected %s" % (variant, found, expected))
    return objects


def check_journal(variant, journal, n, verify_chain, checkpoint_seqs):
    """The journal of the untimed key_generate then the timed key_rotate; returns (chain, rotation records)."""
    lines = journal.read_text(encoding="ascii").splitlines()
    chain = verify_chain(lines)
    counts = dict(Counter(record_kind(record) for record in chain.parsed))
    expected = {"intent key-generate unknown": 1, "change key-generate success": n + 1,  # + the signing key
                "outcome key-generate success": 1, "intent key-rotate unknown": 1, "change key-rotate success": n,
                "outcome key-rotate success": 1, "change audit-checkpoint success": 2}
    if not chain.ok or counts != expected:
        raise SystemExit("%s: journal %s: chain %s, records %s, expected %s" % (
            variant, journal, chain.first_bad, counts, expected))
    start = next(i for i, record in enumerate(chain.parsed) if record_kind(record) == "intent key-rotate unknown")
    rotation = chain.parsed[start:]
    shape = ["intent key-rotate unknown"] + ["change key-rotate success"] * n + [
        "change audit-checkpoint success", "outcome key-rotate success"]
    if [record_kind(record) for record in rotation] != shape:
        raise SystemExit("%s: journal %s: the rotation's records are not intent, %d changes, checkpoint, outcome"
                         % (variant, journal, n))
    rotated = sorted((key["name"], key["previous_version"], key["previous_state"], key["version"], key["state"])
                     for key in (record["event"]["key"] for record in rotation[1:n + 1]))
    if rotated != sorted((name, 1, "deactivated", 2, "active") for name in key_names(n)):
        raise SystemExit("%s: journal %s: the key-rotate changes do not name every key once, v1 deactivated -> "
                         "v2 active" % (variant, journal))
    intent_seq = rotation[0]["seq"]
    anchored = rotation[n + 1]["event"]["keylifecycle"]["checkpoint"]["seq"]
    if anchored != intent_seq or checkpoint_seqs != [intent_seq]:
        raise SystemExit("%s: the rotation's intent (seq %d) is not anchored: checkpoint record seq %s, on the "
                         "token %s" % (variant, intent_seq, anchored, checkpoint_seqs))
    return chain, rotation


def check_run(variant, root, token, journal, n, collections_path, stores, logs):
    """Check what the run left: keys on the token, journal and checkpoint (or none), records in the stores."""
    import_collection(collections_path)
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import verify_chain

    objects = check_token(variant, token, n, collections_path)
    if variant == "audit_off":
        state = root / "audit-state"
        left = [str(p) for p in list(root.rglob("*.jsonl*")) + list(state.rglob("*"))
                if not p.name.endswith(BENCH_FILES)]
        if journal.exists() or left:
            raise SystemExit("audit off: a journal or audit state was written: %s" % (left or journal))
        return {"journal_records": 0, "journal_total": 0, "token": objects}

    chain, rotation = check_journal(variant, journal, n, verify_chain, objects["checkpoint_seqs"])
    out = {"journal_records": len(rotation), "journal_total": chain.records, "token": objects}
    if variant == "stores":
        for log in logs:
            if "queued for" in log:
                raise SystemExit("%s: the callback queued records (a store did not acknowledge):\n%s" % (variant, log))
        ids = sorted(r["record_id"] for r in chain.parsed)
        got = stores.received(chain.journal_id, len(ids))
        out["received"] = {name: len(values) for name, values in got.items()}
        for name, values in got.items():
            if sorted(values) != ids:
                raise SystemExit("%s: %s received %d record(s) of journal %s, the journal has %d (%d missing)" % (
                    variant, name, len(values), chain.journal_id, len(ids), len(set(ids) - set(values))))
    return out


def overhead_run(variant, root, n, ctx):
    """On a fresh token: generate the N keys (not timed), then time one task rotating all of them.

    Both playbooks use the variant's collection, journal, audit state dir and callbacks, so in c the generated
    keys' records are shipped before the timed playbook starts.
    """
    token = Token(root / "token")
    journal = root / "audit-journal.jsonl"
    stores, playbooks, collections = ctx["stores"], ctx["playbooks"], ctx["paths"][variant]
    options = {"extra_env": stores.callback_env() if variant == "stores" else None,
               "callbacks": ("secops.keylifecycle.audit",) if variant == "stores" else ()}
    prepare = playbooks.play(root, token, [generate_task(token, n)], collections, journal, name=PLAY_PREPARE,
                             **options)
    timing = playbooks.play(root, token, [rotate_task(token, n)], collections, journal, name=PLAY_TIMED, **options)
    checks = check_run(variant, root, token, journal, n, ctx["collections"], stores,
                       (prepare["log"], timing.pop("log")))
    timing.pop("result")
    timing.update(prepare_total=prepare["total"], prepare_task=prepare["task"])
    if variant == "audit_off":  # the module-side cost of anchoring, on this token that now holds the rotated keys
        checks["anchor"] = child(token, "_anchor", ctx["collections"])
    return dict(timing, **checks)


def controller_journal_cost(root, n, collections_path):
    """The action plugin's journal work for an N-key rotation task, in-process, on the work folder's file system."""
    import_collection(collections_path)
    # pylint: disable=import-outside-toplevel
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import (
        AuditContext,
        build_event,
        validate_event,
    )
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import Journal, register_journal

    names = key_names(n)
    context = AuditContext(operator=getpass.getuser(), operator_source="controller_os_user", run_id="bench-run",
                           host="localhost")
    module_context = AuditContext(operator=getpass.getuser(), operator_source="controller_os_user",
                                  run_id="bench-run", host="localhost", intent_id=str(uuid.uuid4()))
    # built by the module in every variant (audit off too): not part of the overhead, returned as JSON
    module_events = json.loads(json.dumps([build_event("key-rotate", "success", module_context, reason="scheduled",
                                                       key=synthetic_rotation_key(name, "kl-bench"))
                                           for name in names]))
    root.mkdir(parents=True, exist_ok=True)
    journal = Journal(str(root / "audit-journal.jsonl"))
    extra = {"module": ROTATE_MODULE}
    out = {}
    start = time.perf_counter()
    intent = journal.append([build_event("key-rotate", "unknown", context, phase="intent",
                                         extra=dict(extra, requested_keys=names))])[0]
    register_journal(journal.path, {"KEYLIFECYCLE_AUDIT_STATE_DIR": str(root / "audit-state")})
    out["intent_append"] = time.perf_counter() - start
    events, out["validate_events"] = timed(lambda: [validate_event(event) for event in module_events])
    start = time.perf_counter()
    context.intent_id = intent.record_id
    events.append(build_event("audit-checkpoint", "success", context,
                              extra=dict(extra, checkpoint=fake_checkpoint(intent))))
    events.append(build_event("key-rotate", "success", context, phase="outcome", extra=dict(extra, changed=True)))
    journal.append(events)
    out["outcome_append"] = time.perf_counter() - start
    out["records"] = len(events) + 1
    return out


def fake_checkpoint(intent):
    """A checkpoint in the schema (its signature is random bytes: only for timing the journal)."""
    return {"journal_id": intent.journal_id, "seq": intent.seq, "head_hash": intent.hash,
            "signed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "signature": base64.b64encode(os.urandom(71)).decode("ascii"), "key_id": os.urandom(16).hex(),
            "key_version": 1, "public_key_fingerprint": "sha256:" + os.urandom(32).hex()}


def synthetic_key(name, token_label):
    """The key section of a key-generate event for a new AES-256 version (as _audit_event.key_section)."""
    return {"name": name, "version": 1, "id": os.urandom(16).hex(), "label": name + ":v1", "type": "aes",
            "size": 256, "state": "active", "token": token_label, "check_value": os.urandom(3).hex()}


def synthetic_rotation_key(name, token_label):
    """The key section of a key-rotate event: new version 2, version 1 deactivated (as _key_rotation._event)."""
    return dict(synthetic_key(name, token_label), version=2, label=name + ":v2", previous_version=1,
                previous_id=os.urandom(16).hex(), previous_state="deactivated",
                retain_until=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def bench_overhead(args, ctx):
    n = args.keys
    base = args.work_dir / "overhead"
    for variant in VARIANTS:  # discarded: compiles and caches each collection copy, checks the set-up
        overhead_run(variant, base / ("warmup-" + variant), 10, ctx)
    result = {"n": n, "loadavg_start": os.getloadavg()[0], "runs": {variant: [] for variant in VARIANTS},
              "controller_journal": []}
    for i in range(args.repeat):
        for variant in VARIANTS:
            print("overhead: run %d/%d %s ..." % (i + 1, args.repeat, VARIANT_TITLES[variant]), file=sys.stderr,
                  flush=True)
            result["runs"][variant].append(overhead_run(variant, base / ("%s-%d" % (variant, i)), n, ctx))
        result["controller_journal"].append(controller_journal_cost(base / ("controller-%d" % i), n,
                                                                    ctx["collections"]))
    result["loadavg_end"] = os.getloadavg()[0]
    keys = ("total", "task", "startup", "setup", "after_task", "finish", "prepare_total")
    result["medians"] = {variant: {key: median_of(runs, key) for key in keys}
                         for variant, runs in result["runs"].items()}
    off = result["medians"]["audit_off"]
    result["ratios"] = {variant: {key: result["medians"][variant][key] / off[key] for key in ("total", "task")}
                        for variant in ("journal", "stores")}
    result["per_key_ms"] = {variant: {key: 1000 * result["medians"][variant][key] / n for key in ("total", "task")}
                            for variant in VARIANTS}
    anchors = [run["anchor"] for run in result["runs"]["audit_off"]]
    result["anchor"] = {key: median_of(anchors, key) for key in ("store_load", "anchor_first", "anchor_next")}
    result["controller_journal_median"] = {
        key: median_of(result["controller_journal"], key)
        for key in ("intent_append", "validate_events", "outcome_append")}
    return result


def report_overhead(result):
    n, med, ratios, per_key = result["n"], result["medians"], result["ratios"], result["per_key_ms"]
    print("1. Audit overhead: one secops.keylifecycle.key_rotate task rotating %d AES-256 keys (name: the %d keys, "
          "force: true), each run after an untimed key_generate of the keys\n" % (n, n))
    header = ("variant", "total", "task", "startup", "setup", "after_task", "finish", "records", "total/a",
              "task/a", "task ms/key")
    rows = []
    for variant in VARIANTS:
        runs = result["runs"][variant]
        ratio = ratios.get(variant)
        rows.append((VARIANT_TITLES[variant],) + tuple("%.2f" % med[variant][key] for key in (
            "total", "task", "startup", "setup", "after_task", "finish")) + (
            str(runs[0]["journal_records"]),
            "%.3f" % ratio["total"] if ratio else "1", "%.3f" % ratio["task"] if ratio else "1",
            "%.2f" % per_key[variant]["task"]))
    table(header, rows)
    print("\nSeconds, medians of %d runs per variant (alternating, each on a fresh token). total = the whole "
          "ansible-playbook run of the rotation; task = the key_rotate task alone (callback bench_task_time); "
          "startup / setup / after_task / finish = process start to playbook start / to task start / task result "
          "to stats / stats to exit (callback bench_phases). records = journal records written by the rotation "
          "task. task ms/key = task / %d." % (len(result["runs"]["audit_off"]), n))
    print("Untimed key_generate of the %d keys before each run (whole playbook, medians): a %.2f s, b %.2f s, "
          "c %.2f s" % (n, med["audit_off"]["prepare_total"], med["journal"]["prepare_total"],
                        med["stores"]["prepare_total"]))
    print("Load average %.2f -> %.2f" % (result["loadavg_start"], result["loadavg_end"]))
    for variant in VARIANTS:
        runs = result["runs"][variant]
        print("  runs %-26s total %s | task %s" % (VARIANT_TITLES[variant], " ".join("%.2f" % r["total"] for r in runs),
                                                   " ".join("%.2f" % r["task"] for r in runs)))
    for key in ("total", "task"):
        value = ratios["journal"][key]
        print("b/a (%s) = %.3f: target <= %.2f %s; c/a (%s) = %.3f" % (
            key, value, TARGET_JOURNAL_VS_OFF, "met" if value <= TARGET_JOURNAL_VS_OFF else "NOT met", key,
            ratios["stores"][key]))
    print("Per key (task medians): a %.2f ms, b %.2f ms, c %.2f ms; b - a %.3f ms, c - a %.3f ms per key" % (
        per_key["audit_off"]["task"], per_key["journal"]["task"], per_key["stores"]["task"],
        per_key["journal"]["task"] - per_key["audit_off"]["task"],
        per_key["stores"]["task"] - per_key["audit_off"]["task"]))
    received = [r["received"] for r in result["runs"]["stores"]]
    totals = [r["journal_total"] for r in result["runs"]["stores"]]
    print("Checks: every run left %d keys with v2 active and v1 deactivated (CKA_ENCRYPT off on v1; %d key objects, "
          "%d metadata objects); a wrote no journal, no audit state, no checkpoint and no signing key; b and c "
          "journaled a valid chain whose rotation is intent, %d key-rotate changes (v1 deactivated -> v2 active), "
          "checkpoint, outcome (%d records after the key_generate's %d), with 1 checkpoint on the token anchoring "
          "the rotation's intent; c's stores received every record of the journal: %s" % (
              n, 2 * n, 3 * n, n, n + 3, n + 4, ", ".join(
                  "syslog %d/%d postgresql %d/%d" % (got["syslog"], want, got["postgresql"], want)
                  for got, want in zip(received, totals))))
    journal, anchor = result["controller_journal_median"], result["anchor"]
    print("Breakdown (in-process, medians): action plugin journal work for %d keys: intent record appended and "
          "fsync'ed %.1f ms, %d module events validated %.1f ms, checkpoint + outcome built and %d records "
          "appended and fsync'ed %.1f ms; module checkpoint anchoring on a token holding the %d rotated keys: "
          "with the signing key in place, as in b and c (sign, replace the stored checkpoint) %.1f ms; on a token "
          "without it (generates the signing key pair first) %.1f ms" % (
              n, 1000 * journal["intent_append"], n, 1000 * journal["validate_events"], n + 2,
              1000 * journal["outcome_append"], n, 1000 * anchor["anchor_next"], 1000 * anchor["anchor_first"]))
    estimate = journal["intent_append"] + journal["validate_events"] + journal["outcome_append"] + \
        anchor["anchor_next"]
    spread = {variant: max(r["task"] for r in runs) - min(r["task"] for r in runs)
              for variant, runs in result["runs"].items()}
    print("Sum of the breakdown: %.2f s = %.1f%% of a's task; measured b - a (task medians) %.2f s; spread (max - "
          "min) of the task times: a %.2f s, b %.2f s, c %.2f s. c - b after the task (the callback's shipping) "
          "%.2f s, at the end %.2f s" % (
              estimate, 100 * estimate / med["audit_off"]["task"], med["journal"]["task"] - med["audit_off"]["task"],
              spread["audit_off"], spread["journal"], spread["stores"],
              med["stores"]["after_task"] - med["journal"]["after_task"],
              med["stores"]["finish"] - med["journal"]["finish"]))


# ---- 2. audit_verify throughput --------------------------------------------------------------------------------

class SoftwareSigner:
    """Signs checkpoints like the token's audit-checkpoint key (ECDSA P-256, SHA-256), with a software key."""

    def __init__(self):
        # pylint: disable=import-outside-toplevel
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        self._key = ec.generate_private_key(ec.SECP256R1())
        self._algorithm = ec.ECDSA(hashes.SHA256())
        public = self._key.public_key()
        self.key_id = os.urandom(16).hex()
        self.pem = public.public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.fingerprint = "sha256:" + hashlib.sha256(der).hexdigest()

    def checkpoint(self, record):
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import checkpoint_payload

        signed_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        payload = checkpoint_payload(record.journal_id, record.seq, record.hash, signed_at)
        return {"journal_id": record.journal_id, "seq": record.seq, "head_hash": record.hash, "signed_at": signed_at,
                "signature": base64.b64encode(self._key.sign(payload, self._algorithm)).decode("ascii"),
                "key_id": self.key_id, "key_version": 1, "public_key_fingerprint": self.fingerprint}


def build_journal(path, records, batch, token_label):
    """Write ``records`` records as records // batch tasks of ``batch`` records, as the action plugin does.

    Each task: an intent record (its own append), then ``batch - 3`` key-generate changes, a checkpoint signing
    the intent (software key) and the outcome (one append). Returns the signer (its public key) and append count.
    """
    # pylint: disable=import-outside-toplevel
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext, build_event
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import Journal

    signer = SoftwareSigner()
    journal = Journal(str(path))
    extra = {"module": GENERATE_MODULE}
    appends = 0
    for task in range(records // batch):
        context = AuditContext(operator=getpass.getuser(), operator_source="controller_os_user",
                               run_id="bench-run-%d" % task, host="localhost")
        names = ["synthetic-%07d" % (task * batch + i) for i in range(batch - 3)]
        intent = journal.append([build_event("key-generate", "unknown", context, phase="intent",
                                             extra=dict(extra, requested_keys=names))])[0]
        context.intent_id = intent.record_id
        events = [build_event("key-generate", "success", context, key=synthetic_key(name, token_label))
                  for name in names]
        events.append(build_event("audit-checkpoint", "success", context,
                                  extra=dict(extra, checkpoint=signer.checkpoint(intent))))
        events.append(build_event("key-generate", "success", context, phase="outcome",
                                  extra=dict(extra, changed=True)))
        journal.append(events)
        appends += 2
    return signer, appends


def bench_verify(args, ctx):
    import_collection(ctx["collections"])
    # pylint: disable=import-outside-toplevel
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._audit_verification import verify_journal
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import Journal, verify_chain

    records, batch = args.records, args.batch
    root = args.work_dir / "verify"
    root.mkdir(parents=True)
    token = Token(root / "token")
    path = root / "audit-journal.jsonl"
    print("audit_verify: building a journal of %d records ..." % records, file=sys.stderr, flush=True)
    (signer, appends), build = timed(build_journal, path, records, batch, token.label)
    lines, read = timed(Journal(str(path)).read_lines)
    if len(lines) != records:
        raise SystemExit("the synthetic journal has %d lines, expected %d" % (len(lines), records))
    result = {"records": records, "batch": batch, "tasks": records // batch, "appends": appends,
              "journal_bytes": path.stat().st_size, "build": build, "read_lines": read,
              "loadavg_start": os.getloadavg()[0]}

    methods = {
        "verify_chain": lambda: verify_chain(lines),
        "verify_journal": lambda: verify_journal(lines, {}, {}),
        "verify_journal_keys": lambda: verify_journal(lines, {}, {signer.key_id: signer.pem}),
    }
    for name, method in methods.items():
        times = []
        for _i in range(args.repeat):
            report, seconds = timed(method)
            times.append(seconds)
        result[name] = {"runs": times, "seconds": statistics.median(times)}
        if name == "verify_chain":
            if not report.ok or report.records != records:
                raise SystemExit("verify_chain: the synthetic journal does not verify: %s" % report.first_bad)
        else:
            result[name].update(ok=report["ok"], problems=len(report["problems"]),
                                checkpoints_verified=report["checkpoints_verified"])
            if report["records"] != records or (name == "verify_journal_keys" and not report["ok"]):
                raise SystemExit("%s: %s" % (name, report["problems"][:3]))

    def verify_task(journal):
        return {"name": "audit_verify", "secops.keylifecycle.audit_verify": dict(
            token.connection(), journal=str(journal), fail_on_error=False)}

    playbooks, collections = ctx["playbooks"], ctx["collections"]
    missing = root / "no-journal.jsonl"
    playbooks.play(root / "play-warmup", token, [verify_task(missing)], collections, missing)  # discarded
    runs, baselines = [], []
    for i in range(args.repeat):
        print("audit_verify: module run %d/%d ..." % (i + 1, args.repeat), file=sys.stderr, flush=True)
        empty = playbooks.play(root / ("play-empty-%d" % i), token, [verify_task(missing)], collections, missing)
        one = playbooks.play(root / ("play-%d" % i), token, [verify_task(path)], collections, path)
        if one["result"].get("records") != records or empty["result"].get("records") != 0:
            raise SystemExit("audit_verify module checked %s and %s records, expected %d and 0" % (
                one["result"], empty["result"], records))
        for entry, target in ((one, runs), (empty, baselines)):
            entry.pop("log")
            target.append(entry)
    result["module"] = {"baseline_runs": baselines, "runs": runs, "total": median_of(runs, "total"),
                        "task": median_of(runs, "task"), "result": runs[0]["result"],
                        "baseline": {key: median_of(baselines, key) for key in ("total", "task")}}
    result["module"]["task_net"] = result["module"]["task"] - result["module"]["baseline"]["task"]
    result["loadavg_end"] = os.getloadavg()[0]
    return result


def report_verify(result):
    n, module = result["records"], result["module"]
    print("\n2. audit_verify throughput: synthetic journal of %d records (%.1f MB), %d tasks of %d records "
          "(intent, %d key changes, checkpoint, outcome) written with Journal.append (%d appends)\n" % (
              n, result["journal_bytes"] / 1e6, result["tasks"], result["batch"], result["batch"] - 3,
              result["appends"]))
    rows = []

    def row(name, seconds, note=""):
        rows.append((name, "%.3f" % seconds, "%.0f" % (n / seconds) if seconds > 0 else "-", note))

    row("build: Journal.append (build_event + fsync)", result["build"])
    row("read: Journal.read_lines", result["read_lines"])
    row("a. verify_chain(lines)", result["verify_chain"]["seconds"], "chain ok")
    for key, name in (("verify_journal", "b. verify_journal(lines, {}, {})"),
                      ("verify_journal_keys", "b'. verify_journal(lines, {}, {key: pem})")):
        entry = result[key]
        row(name, entry["seconds"], "ok=%s, %d problem(s), %d checkpoint(s) verified" % (
            entry["ok"], entry["problems"], entry["checkpoints_verified"]))
    got = module["result"]
    row("c. audit_verify module: task", module["task"], "ok=%s, %s problem(s), %s checkpoint(s) verified" % (
        got.get("ok"), got.get("problems"), got.get("checkpoints_verified")))
    row("c. audit_verify module: task - empty-journal task", module["task_net"],
        "empty-journal task %.2f s" % module["baseline"]["task"])
    row("c. audit_verify module: whole ansible-playbook", module["total"],
        "empty-journal run %.2f s" % module["baseline"]["total"])
    table(("what", "seconds", "records/s", "result"), rows, left=(0, 3))
    print("\nMedians of %d runs (build and read: one run). b: without public keys each checkpoint counts as a "
          "problem (nothing to verify it with); b': with the software key that signed them. c: the token holds no "
          "audit-checkpoint key, so the module reports the checkpoints as not verifying (fail_on_error: false)."
          % len(module["runs"]))
    print("Load average %.2f -> %.2f" % (result["loadavg_start"], result["loadavg_end"]))


# ---- main ------------------------------------------------------------------------------------------------------

def table(header, rows, left=(0,)):
    """Print rows under a header; columns in ``left`` are left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in list(rows) + [header]) for i in range(len(header))]
    for row in [header] + list(rows):
        print("  ".join(cell.ljust(width) if i in left else cell.rjust(width)
                        for i, (cell, width) in enumerate(zip(row, widths))).rstrip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--collections-path", type=Path, required=True,
                        help="collections path where secops.keylifecycle is installed (run_audit.sh does this)")
    parser.add_argument("--work-dir", type=Path, required=True, help="scratch folder for tokens and playbooks")
    parser.add_argument("--keys", type=int, default=1000,
                        help="keys generated, then rotated by the timed key_rotate task (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant / method (median, default 3)")
    parser.add_argument("--records", type=int, default=100000, help="records of the synthetic journal")
    parser.add_argument("--batch", type=int, default=1000, help="records per task in the synthetic journal")
    parser.add_argument("--skip-overhead", action="store_true", help="only part 2 (audit_verify throughput)")
    parser.add_argument("--skip-verify", action="store_true", help="only part 1 (overhead)")
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "audit-latest.json")
    args = parser.parse_args()
    if args.batch < 3 or args.records % args.batch:
        parser.error("--records must be a multiple of --batch, and --batch at least 3")
    env = environment(args.work_dir)
    collections = args.collections_path.resolve()
    ctx = {"collections": collections, "playbooks": Playbooks(args.work_dir), "stores": None}
    output = {"environment": env, "target_journal_vs_off_max": TARGET_JOURNAL_VS_OFF}
    if not args.skip_overhead:
        ctx["paths"] = {"audit_off": make_audit_off_copy(collections, args.work_dir), "journal": collections,
                        "stores": collections}
        ctx["stores"] = Stores(args.work_dir / "stores")
        try:
            ctx["stores"].start()
            output["overhead"] = bench_overhead(args, ctx)
        finally:
            ctx["stores"].cleanup()
    if not args.skip_verify:
        output["verify"] = bench_verify(args, ctx)
    if "overhead" in output:
        report_overhead(output["overhead"])
    if "verify" in output:
        report_verify(output["verify"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=2) + "\n")
    print("\nJSON: %s" % args.output)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_token":
        print(json.dumps(token_objects(Path(sys.argv[2]), sys.argv[3], sys.argv[4])))
    elif len(sys.argv) > 1 and sys.argv[1] == "_anchor":
        print(json.dumps(anchor_cost(Path(sys.argv[2]), sys.argv[3], sys.argv[4])))
    else:
        main()
