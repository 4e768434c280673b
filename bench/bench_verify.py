"""Benchmark audit_verify on large format 2 journals (see bench/README.md, "audit_verify at scale").

For each size in ``--sizes`` (default 100000 and 1000000 records) a realistic journal is written with
``_journal_chain.encode_record``: tasks of ``--batch`` records (an intent, ``batch - 3`` key-generate changes whose
events come from ``_audit_event.build_event``, an ``audit-checkpoint`` record signing the intent with a software
ECDSA P-256 key, the outcome). Then, ``--repeat`` times each, medians:

a. in-process: ``_audit_verification.verify_journal_file`` in a fresh child process (so its peak RSS,
   ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, belongs to that one verification), with the software key as the
   token's checkpoint key (every checkpoint signature is checked). A child that only imports the collection gives
   the RSS baseline;
b. through ansible-playbook: one ``secops.keylifecycle.audit_verify`` task on a fresh SoftHSM2 token
   (``fail_on_error: false``; the token's keys did not sign the synthetic checkpoints, so they count as other
   tokens' checkpoints and the journal verifies), run from a child process whose
   ``RUSAGE_CHILDREN`` peak RSS is the largest process of the run (the forked worker that runs the action plugin).
   The task time of the same task on a missing journal is the fixed cost.

Timings are reported, never asserted. The correctness checks stop the run: every verification must see all
records and report ok.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench_generate import BENCH, PYTHON, Token, environment


def import_collection(collections_path):
    if str(collections_path) not in sys.path:
        sys.path.insert(0, str(collections_path))


class SoftwareSigner:
    """Signs checkpoints as the token's audit-checkpoint key does (ECDSA P-256, SHA-256), with a software key."""

    def __init__(self, token_label):
        # pylint: disable=import-outside-toplevel
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        self._key = ec.generate_private_key(ec.SECP256R1())
        self._algorithm = ec.ECDSA(hashes.SHA256())
        public = self._key.public_key()
        self.key_id = os.urandom(16).hex()
        self.token_label = token_label
        self.pem = public.public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.fingerprint = "sha256:" + hashlib.sha256(der).hexdigest()

    def checkpoint(self, journal_id, seq, head_hash, signed_at):
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import checkpoint_payload

        payload = checkpoint_payload(journal_id, seq, head_hash, signed_at)
        return {"journal_id": journal_id, "seq": seq, "head_hash": head_hash, "signed_at": signed_at,
                "signature": base64.b64encode(self._key.sign(payload, self._algorithm)).decode("ascii"),
                "key_id": self.key_id, "key_version": 1, "public_key_fingerprint": self.fingerprint,
                "token_label": self.token_label}


def synthetic_key(name, token_label):
    """The key section of a key-generate event for a new AES-256 version (as _audit_event.key_section)."""
    return {"name": name, "version": 1, "id": os.urandom(16).hex(), "label": name + ":v1", "type": "aes",
            "size": 256, "state": "active", "token": token_label, "check_value": os.urandom(3).hex()}


def build_journal(path, records, batch, signer):
    """Write ``records`` format 2 records, ``records // batch`` tasks; returns the journal id."""
    # pylint: disable=import-outside-toplevel
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext, build_event
    from ansible_collections.secops.keylifecycle.plugins.module_utils._journal_chain import GENESIS_HASH, encode_record

    journal_id = str(uuid.uuid4())
    prev, seq = GENESIS_HASH, 0
    clock = datetime(2026, 1, 1, tzinfo=timezone.utc)
    extra = {"module": "secops.keylifecycle.key_generate"}
    with open(path, "w", encoding="ascii") as handle:
        def write(event, record_id=None):
            nonlocal prev, seq
            seq += 1
            line, prev, _digest = encode_record(prev, seq, journal_id, record_id or str(uuid.uuid4()),
                                                (clock + timedelta(microseconds=seq)).isoformat(), event)
            handle.write(line + "\n")
            return seq, prev
        for task in range(records // batch):
            context = AuditContext(operator=getpass.getuser(), operator_source="controller_os_user",
                                   run_id="bench-run-%d" % task, host="localhost")
            names = ["synthetic-%07d" % (task * batch + i) for i in range(batch - 3)]
            intent = build_event("key-generate", "unknown", context, phase="intent",
                                 extra=dict(extra, requested_keys=names[:20]))
            context.intent_id = str(uuid.uuid4())  # the intent record's record_id, as the action plugin does
            intent_seq, intent_hash = write(intent, context.intent_id)
            for name in names:
                write(build_event("key-generate", "success", context, key=synthetic_key(name, signer.token_label)))
            checkpoint = signer.checkpoint(journal_id, intent_seq, intent_hash, clock.isoformat())
            write(build_event("audit-checkpoint", "success", context, extra=dict(extra, checkpoint=checkpoint)))
            write(build_event("key-generate", "success", context, phase="outcome", extra=dict(extra, changed=True)))
    return journal_id


# ---- child processes -------------------------------------------------------------------------------------------

def child_verify(collections_path, path, token_json):
    """In a fresh process: verify the journal once; seconds, records/s and peak RSS (KiB)."""
    import_collection(collections_path)
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils._audit_verification import verify_journal_file

    token = json.loads(token_json)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if path == "-":
        return {"rss_kib": baseline, "baseline_kib": baseline}
    start = time.perf_counter()
    report = verify_journal_file(path, token)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "records": report["records"], "ok": report["ok"], "problems": report["problems"][:3],
            "checkpoints_verified": report["checkpoints_verified"], "records_per_s": report["records"] / seconds,
            "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "baseline_kib": baseline}


def child_play(args_json):
    """In a fresh process: one audit_verify playbook; task seconds and the peak RSS of its largest process."""
    # pylint: disable-next=import-outside-toplevel
    from bench_audit import Playbooks

    spec = json.loads(args_json)
    playbooks = Playbooks(Path(spec["work"]))
    token = Token.__new__(Token)
    token.label, token.pin_file, token.env = spec["label"], Path(spec["pin_file"]), spec["env"]
    task = {"name": "audit_verify", "secops.keylifecycle.audit_verify": dict(
        token.connection(), journal=spec["journal"], fail_on_error=False)}
    out = playbooks.play(Path(spec["root"]), token, [task], Path(spec["collections"]), Path(spec["journal"]))
    out.pop("log")
    out["rss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return out


def run_child(*argv, env=None):
    proc = subprocess.run([PYTHON, __file__, *map(str, argv)], capture_output=True, text=True, check=False,
                          env=dict(os.environ, **(env or {})), cwd=str(BENCH))
    if proc.returncode != 0:
        raise SystemExit("child %s failed (rc %d):\n%s%s" % (
            argv[0], proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- main -------------------------------------------------------------------------------------------------------

def bench_size(n, args, signer, token, root):
    path = root / ("journal-%d.jsonl" % n)
    print("audit_verify bench: writing %d records ..." % n, file=sys.stderr, flush=True)
    start = time.perf_counter()
    build_journal(path, n, args.batch, signer)
    built = time.perf_counter() - start
    token_json = json.dumps({"token_pin": None, "token_checkpoints": {}, "checkpoint_public_keys": {
        signer.key_id: signer.pem}, "checkpoint_certificates": [], "token_label": signer.token_label,
        "token_serial": None})
    runs = []
    for i in range(args.repeat):
        print("  in-process %d/%d ..." % (i + 1, args.repeat), file=sys.stderr, flush=True)
        got = run_child("_verify", args.collections_path, path, token_json)
        if got["records"] != n or not got["ok"] or got["checkpoints_verified"] != n // args.batch:
            raise SystemExit("in-process verification of %d records: %s" % (n, got))
        runs.append(got)
    out = {"records": n, "bytes": path.stat().st_size, "build_seconds": built, "in_process": {
        "runs": runs, "seconds": statistics.median(r["seconds"] for r in runs),
        "rss_kib": max(r["rss_kib"] for r in runs)}}
    out["in_process"]["records_per_s"] = n / out["in_process"]["seconds"]
    if not args.skip_module:
        plays = []
        for i in range(args.repeat):
            print("  ansible-playbook %d/%d ..." % (i + 1, args.repeat), file=sys.stderr, flush=True)
            got = run_child("_play", json.dumps({
                "work": str(args.work_dir), "root": str(root / ("play-%d-%d" % (n, i))), "label": token.label,
                "pin_file": str(token.pin_file), "env": token.env, "journal": str(path),
                "collections": str(args.collections_path)}))
            result = got["result"]
            if result.get("records") != n or result.get("ok") is not True:
                raise SystemExit("audit_verify through ansible-playbook on %d records: %s" % (
                    n, {k: result.get(k) for k in ("records", "ok", "problems", "msg")}))
            plays.append(got)
        out["module"] = {"runs": plays, "task": statistics.median(p["task"] for p in plays),
                         "total": statistics.median(p["total"] for p in plays),
                         "rss_kib": max(p["rss_kib"] for p in plays)}
    path.unlink()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--collections-path", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--sizes", default="100000,1000000", help="journal sizes in records (comma-separated)")
    parser.add_argument("--batch", type=int, default=1000, help="records per task (default 1000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-module", action="store_true", help="only the in-process measurement")
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "verify-latest.json")
    args = parser.parse_args()
    args.collections_path = args.collections_path.resolve()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.batch < 4 or any(n % args.batch for n in sizes):
        parser.error("every size must be a multiple of --batch, and --batch at least 4")
    output = dict(run_sizes(args, sizes), environment=environment(args.work_dir))
    report(output)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=2) + "\n")
    print("\nJSON: %s" % args.output)


def run_sizes(args, sizes):
    """Every size: in-process and (unless ``args.skip_module``) through ansible-playbook. Returns the results."""
    import_collection(args.collections_path)
    root = args.work_dir / "verify-scale"
    root.mkdir(parents=True, exist_ok=True)
    token = Token(root / "token") if not args.skip_module else None
    signer = SoftwareSigner(token.label if token else "kl-bench")
    output = {"batch": args.batch, "repeat": args.repeat,
              "rss_baseline_kib": run_child("_verify", args.collections_path, "-", "{}")["rss_kib"], "sizes": []}
    if token is not None:  # warm-up, discarded; then the fixed cost: the same task on a missing journal
        missing, empty = root / "missing.jsonl", []
        for name in ["warmup"] + ["empty-%d" % i for i in range(args.repeat)]:
            got = run_child("_play", json.dumps({
                "work": str(args.work_dir), "root": str(root / ("play-" + name)), "label": token.label,
                "pin_file": str(token.pin_file), "env": token.env, "journal": str(missing),
                "collections": str(args.collections_path)}))
            if name != "warmup":
                empty.append(got)
        output["module_empty"] = {key: statistics.median(got[key] for got in empty) for key in ("task", "total")}
        output["module_empty"]["rss_kib"] = max(got["rss_kib"] for got in empty)
    for n in sizes:
        output["sizes"].append(bench_size(n, args, signer, token, root))
    return output


def report(output):
    print("\naudit_verify at scale: format 2 journals, tasks of %d records, medians of %d runs; RSS baseline "
          "(the collection imported, nothing verified) %.0f MiB\n" % (
              output["batch"], output["repeat"], output["rss_baseline_kib"] / 1024))
    header = ("records", "MB", "in-process s", "records/s", "peak RSS MiB", "module task s", "task - empty s",
              "records/s (net)", "play peak RSS MiB")
    rows = []
    empty = output.get("module_empty", {}).get("task")
    for size in output["sizes"]:
        ip, mod = size["in_process"], size.get("module")
        row = ["%d" % size["records"], "%.0f" % (size["bytes"] / 1e6), "%.2f" % ip["seconds"],
               "%.0f" % ip["records_per_s"], "%.0f" % (ip["rss_kib"] / 1024)]
        if mod:
            net = mod["task"] - empty
            row += ["%.2f" % mod["task"], "%.2f" % net, "%.0f" % (size["records"] / net if net > 0 else 0),
                    "%.0f" % (mod["rss_kib"] / 1024)]
        else:
            row += ["-"] * 4
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [list(header)]) for i in range(len(header))]
    for row in [list(header)] + rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
    if empty is not None:
        print("\nThe same task on a missing journal (fixed cost: module transfer, token read): %.2f s, play peak "
              "RSS %.0f MiB" % (empty, output["module_empty"]["rss_kib"] / 1024))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_verify":
        print(json.dumps(child_verify(Path(sys.argv[2]), sys.argv[3], sys.argv[4])))
    elif len(sys.argv) > 1 and sys.argv[1] == "_play":
        print(json.dumps(child_play(sys.argv[2])))
    else:
        main()
