"""Benchmark the audit trail of secops.keylifecycle on SoftHSM2 (see bench/README.md, "Audit benchmark").

1. Overhead on a batch rotation: one ``key_rotate`` task rotating N AES-256 keys (default 1000; ``name:`` the N
   keys, ``force: true``), in three variants, each on a fresh token, alternating, ``--repeat`` times, medians.
   Before the timed task, one untimed ``key_generate`` task (N specs) creates the keys with the same collection
   and, for b and c, the same journal, audit state dir and callbacks, so the timed task runs in the steady state
   (signing key on the token, earlier records already shipped):

   a. audit off: a copy of the collection whose plugins/action/key_rotate.py and key_generate.py are replaced by
      the bench-only bench/audit_off/bench_action.py: it sends the module a fabricated intent that extends the
      token's pin (a first-pin intent on the fresh token), so the module does all its token-side work (pin check,
      checkpoint signed in the token, pin written) while no journal is written (checked after every run). A module
      run without any action plugin is refused now (a lifecycle module changes the token only with a journaled
      intent), so "audit off" measures the controller's journal and shipping, not the token's checkpoint;
   b. journal only: the collection as built (fail-closed journal and HSM-signed checkpoint);
   c. journal + both stores: as b, with the callback secops.keylifecycle.audit shipping to a real rsyslog (TLS)
      and a real PostgreSQL (TLS) on loopback (tests/servers.py); every journal record is checked to be in
      both stores afterwards.

   After every run the token is checked (N keys, v2 active, v1 deactivated with encrypt off) and, for b and c,
   the journal (a valid chain with the rotation's intent, N key-rotate changes, checkpoint and outcome). Plus an
   in-process breakdown of where the overhead comes from (the action plugin's journal work, and the module's
   checkpoint anchoring on a token that holds the rotated keys, which every variant pays).

2. audit_verify at scale (bench_verify.py): format 2 journals of ``--verify-sizes`` records (default 100,000 and
   1,000,000), records/s and peak RSS in-process and through ansible-playbook.

Timings are reported, never asserted; the correctness checks are (a failed check stops the run). Internal modes
``_token`` and ``_anchor`` run in a child process, because SoftHSM2 reads SOFTHSM2_CONF once per process.
"""

from __future__ import annotations

import argparse
import base64
import getpass
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
# replaced in the "audit off" copy by the bench-only action plugin: the timed task's, and the untimed key_generate's
AUDIT_OFF_REPLACED = ("key_rotate.py", "key_generate.py")
AUDIT_OFF_ACTION = BENCH / "audit_off" / "bench_action.py"
AUDIT_OFF_STATE = "audit-off-state.json"  # the bench action's in-memory chain head, between playbooks
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
        audit_docs = [json.loads(bytes(obj[Attribute.VALUE]).decode("ascii")) for obj in session.get_objects(
            {Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: CHECKPOINT_APPLICATION})]
        # the pin (and legacy per-journal checkpoints) name a journal's head; the key history does not
        checkpoints = [doc for doc in audit_docs if "journal_id" in doc and "seq" in doc]
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
        "checkpoint_journals": sorted(doc["journal_id"] for doc in checkpoints),
        "signing_keys": signing_keys,
    }


def anchor_cost(collections_path, label, pin_file):
    """Time the module's journal pin work on this token (audit-off token after its rotation), twice each.

    ``check``: the pin read and the proof that the intent extends it (JournalPin.check); ``anchor``: the checkpoint
    signed in the token and the pin rewritten (JournalPin.anchor). Each intent extends the pin by one fabricated
    record, as the bench-only action plugin does. The signing key is in place (every variant pays this).
    """
    import_collection(collections_path)
    sys.path.insert(0, str(AUDIT_OFF_ACTION.parent))
    # pylint: disable=import-outside-toplevel
    from bench_action import fabricated_intent
    from ansible_collections.secops.keylifecycle.plugins.module_utils._journal_pin import JournalPin
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import ConnectionSettings, open_session
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_store import TokenKeyStore

    settings = ConnectionSettings(pkcs11_module=PKCS11_MODULE, token_label=label, user_pin_file=pin_file)
    out = {}
    with open_session(settings) as session:
        store, out["store_load"] = timed(TokenKeyStore(session, label).load)
        pin = JournalPin(session, store)
        for key in ("anchor_first", "anchor_next"):
            head = pin.pin
            params = dict(fabricated_intent({"journal_id": head["journal_id"], "seq": head["seq"],
                                             "hash": head["head_hash"]}), intent_id=str(uuid.uuid4()))
            _accepted, out[key + "_check"] = timed(pin.check, params, False)
            (checkpoint, version, created), out[key] = timed(pin.anchor, params, getpass.getuser())
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
    """A copy of the installed collection, in its own collections path, whose key_rotate (timed) and key_generate
    (untimed) action plugins are the bench-only bench/audit_off/bench_action.py (fabricated intents, no journal)."""
    source = collections_path.joinpath(*COLLECTION)
    target_path = work / "collections-audit-off"
    target = target_path.joinpath(*COLLECTION)
    for name in AUDIT_OFF_REPLACED:
        if not (source / "plugins" / "action" / name).is_file():
            raise SystemExit("%s has no plugins/action/%s: not the collection this bench expects" % (source, name))
    shutil.rmtree(target_path, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    for name in AUDIT_OFF_REPLACED:
        shutil.copyfile(AUDIT_OFF_ACTION, target / "plugins" / "action" / name)
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
    # every variant: the token's pin of its journal and one audit-checkpoint key (the module anchors in a too)
    expected = {"bench_keys": n, "bench_versions": {"v1 deactivated": n, "v2 active": n},
                "bench_secret_keys": 2 * n, "bench_encrypt_on": {"v2": n},
                "bench_data_objects": 3 * n,  # metadata revisions: v1 twice (append-only), v2 once
                "checkpoints": 1, "signing_keys": 1}
    found = {key: value for key, value in objects.items() if key not in ("checkpoint_seqs", "checkpoint_journals")}
    if found != expected:
        raise SystemExit("%s: the token holds %s, expected %s" % (variant, found, expected))
    return objects


class Chain:
    """A journal checked with audit_verify's verifier (no token), and its records decoded (both formats)."""

    def __init__(self, path, verify_journal_file):
        report = verify_journal_file(str(path))
        self.ok, self.first_bad, self.records = report["ok"], report["first_bad"], report["records"]
        self.journal_id = report["journal_id"]
        with open(path, encoding="ascii") as handle:
            self.parsed = [json.loads(line) for line in handle if line.strip()]


def check_journal(variant, journal, n, verify_journal_file, checkpoint_seqs):
    """The journal of the untimed key_generate then the timed key_rotate; returns (chain, rotation records)."""
    chain = Chain(journal, verify_journal_file)
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
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._audit_verification import verify_journal_file

    objects = check_token(variant, token, n, collections_path)
    if variant == "audit_off":
        state = root / "audit-state"
        left = [str(p) for p in list(root.rglob("*.jsonl*")) + list(state.rglob("*"))
                if not p.name.endswith(BENCH_FILES)]
        if journal.exists() or left:
            raise SystemExit("audit off: a journal or audit state was written: %s" % (left or journal))
        head = json.loads((root / AUDIT_OFF_STATE).read_text())
        if objects["checkpoint_journals"] != [head["journal_id"]] or objects["checkpoint_seqs"] != [head["seq"]]:
            raise SystemExit("audit off: the token's pin %s %s is not the bench action's head %s" % (
                objects["checkpoint_journals"], objects["checkpoint_seqs"], head))
        return {"journal_records": 0, "journal_total": 0, "token": objects}

    chain, rotation = check_journal(variant, journal, n, verify_journal_file, objects["checkpoint_seqs"])
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
    extra_env = {"KL_BENCH_AUDIT_OFF_STATE": str(root / AUDIT_OFF_STATE)} if variant == "audit_off" else None
    options = {"extra_env": stores.callback_env() if variant == "stores" else extra_env,
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
    result["anchor"] = {key: median_of(anchors, key) for key in (
        "store_load", "anchor_first", "anchor_next", "anchor_first_check", "anchor_next_check")}
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
          "%d metadata objects) and the token's pin with one signing key; a wrote no journal and no audit state, "
          "and its pin is the bench action's fabricated head; b and c "
          "journaled a valid chain whose rotation is intent, %d key-rotate changes (v1 deactivated -> v2 active), "
          "checkpoint, outcome (%d records after the key_generate's %d), with 1 checkpoint on the token anchoring "
          "the rotation's intent; c's stores received every record of the journal: %s" % (
              n, 2 * n, 3 * n, n, n + 3, n + 4, ", ".join(
                  "syslog %d/%d postgresql %d/%d" % (got["syslog"], want, got["postgresql"], want)
                  for got, want in zip(received, totals))))
    journal, anchor = result["controller_journal_median"], result["anchor"]
    print("Breakdown (in-process, medians): action plugin journal work for %d keys: intent record appended and "
          "fsync'ed %.1f ms, %d module events validated %.1f ms, checkpoint + outcome built and %d records "
          "appended and fsync'ed %.1f ms; the module's pin work on a token holding the %d rotated keys, paid by "
          "every variant (a too): check the intent extends the pin %.1f ms, sign the checkpoint and rewrite the pin "
          "%.1f ms" % (
              n, 1000 * journal["intent_append"], n, 1000 * journal["validate_events"], n + 2,
              1000 * journal["outcome_append"], n, 1000 * anchor["anchor_next_check"], 1000 * anchor["anchor_next"]))
    estimate = journal["intent_append"] + journal["validate_events"] + journal["outcome_append"]
    spread = {variant: max(r["task"] for r in runs) - min(r["task"] for r in runs)
              for variant, runs in result["runs"].items()}
    print("Sum of the breakdown: %.2f s = %.1f%% of a's task; measured b - a (task medians) %.2f s; spread (max - "
          "min) of the task times: a %.2f s, b %.2f s, c %.2f s. c - b after the task (the callback's shipping) "
          "%.2f s, at the end %.2f s" % (
              estimate, 100 * estimate / med["audit_off"]["task"], med["journal"]["task"] - med["audit_off"]["task"],
              spread["audit_off"], spread["journal"], spread["stores"],
              med["stores"]["after_task"] - med["journal"]["after_task"],
              med["stores"]["finish"] - med["journal"]["finish"]))


# ---- 2. audit_verify at scale: bench_verify.py ------------------------------------------------------------------

def bench_verify_sizes(args, ctx):
    """bench_verify.py's measurement (format 2 journals, in-process and through ansible-playbook)."""
    # pylint: disable-next=import-outside-toplevel
    import bench_verify

    verify_args = argparse.Namespace(batch=args.batch, repeat=args.repeat, skip_module=False,
                                     collections_path=ctx["collections"], work_dir=args.work_dir)
    return bench_verify.run_sizes(verify_args, [int(n) for n in args.verify_sizes.split(",")])


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
    parser.add_argument("--verify-sizes", default="100000,1000000",
                        help="records of the synthetic journals audit_verify checks (comma-separated)")
    parser.add_argument("--batch", type=int, default=1000, help="records per task in the synthetic journals")
    parser.add_argument("--skip-overhead", action="store_true", help="only part 2 (audit_verify throughput)")
    parser.add_argument("--skip-verify", action="store_true", help="only part 1 (overhead)")
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "audit-latest.json")
    args = parser.parse_args()
    if args.batch < 4 or any(int(n) % args.batch for n in args.verify_sizes.split(",")):
        parser.error("--verify-sizes must be multiples of --batch, and --batch at least 4")
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
        output["verify"] = bench_verify_sizes(args, ctx)
    if "overhead" in output:
        report_overhead(output["overhead"])
    if "verify" in output:
        # pylint: disable-next=import-outside-toplevel
        from bench_verify import report as report_verify

        print("\n2. (bench_verify.py)")
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
