"""Benchmark secops.keylifecycle.key_generate on SoftHSM2 (see bench/README.md).

For each N, each method runs on its own fresh token:

* module: one ansible-playbook task ``key_generate`` with ``keys:`` N AES-256 specs. ``module_total`` is the
  whole ansible-playbook run; ``module_net`` subtracts the median of the same playbook with ``keys: []`` (same
  ansible start, module transfer, library load, login and enumeration, but no key). ``module_task`` is the task
  alone, from its start to its result (callback_plugins/bench_task_time.py).
* raw: python-pkcs11 in one process and one session, the same token calls per key as the collection
  (C_GenerateKey with its template, AES-ECB key check value, CKO_DATA metadata object, evidence read).
  ``raw`` is that loop; ``raw_session`` adds library load, login and close; ``raw_process`` is the wall time of
  the whole process (interpreter start and imports included).
* loop: one ``ansible.builtin.command: pkcs11-tool --keygen`` task with ``loop: range(N)``.

Timings are reported, never asserted. Internal modes ``_raw`` and ``_count`` run in a child process, because
SoftHSM2 reads SOFTHSM2_CONF once per process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable  # the venv python (run.sh)
PKCS11_MODULE = os.environ.get("KL_BENCH_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
TARGET_NET_VS_RAW = 1.3  # module_net / raw at most
TARGET_LOOP_VS_MODULE = 25  # loop / module_total at least
METADATA_APPLICATION = "secops.keylifecycle"
#: KL_BENCH_RETURN_RECORDS=false: the lifecycle tasks return a summary (return_records: false), not every record
RETURN_RECORDS = os.environ.get("KL_BENCH_RETURN_RECORDS", "true").lower() not in ("false", "0", "no")


def batch_options():
    """The lifecycle task's return_records option as the bench runs it (omitted when it is the default)."""
    return {} if RETURN_RECORDS else {"return_records": False}


def key_names(n):
    return ["bench-%04d" % i for i in range(1, n + 1)]


# ---- child process: raw python-pkcs11 and object counts ------------------------------------------------------

def open_session(label, pin_file):
    import pkcs11
    token = pkcs11.lib(PKCS11_MODULE).get_token(token_label=label)
    return token.open(rw=True, user_pin=Path(pin_file).read_text().rstrip("\n"))


def metadata(name, key_id, kcv, now):
    """The document the collection stores for a new AES-256 version (same fields, same encoding)."""
    doc = {
        "schema": 1, "revision": 1, "version": 1, "id": key_id.hex(), "state": "active", "created": now,
        "retain_until": None, "key_check_value": kcv, "public_key_fingerprint": None,
        "transitions": [{"state": "active", "at": now, "by": "bench", "reason": "generated"}],
        "name": name, "type": "aes", "size": 256, "curve": None, "usage": ["decrypt", "encrypt"],
        "distributable": False, "rotation_period": "365d", "retention_period": "90d", "recipients": [],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def raw_generate(label, pin_file, n):
    from pkcs11 import Attribute as A, KeyType, Mechanism, ObjectClass
    template = {  # _key_templates._generate_secret for usage [encrypt, decrypt]
        A.TOKEN: True, A.PRIVATE: True, A.MODIFIABLE: True, A.SENSITIVE: True, A.EXTRACTABLE: False,
        A.ENCRYPT: True, A.DECRYPT: True, A.WRAP: False, A.UNWRAP: False, A.SIGN: False, A.VERIFY: False,
        A.DERIVE: False,
    }
    evidence = [A.LOCAL, A.SENSITIVE, A.ALWAYS_SENSITIVE, A.NEVER_EXTRACTABLE, A.EXTRACTABLE]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    start = time.perf_counter()
    with open_session(label, pin_file) as session:
        loop_start = time.perf_counter()
        for name in key_names(n):
            key_id = os.urandom(16)
            key = session.generate_key(KeyType.AES, 256, id=key_id, label=name + ":v1", store=True,
                                       template=template)
            kcv = bytes(key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))[:3].hex()
            session.create_object({
                A.CLASS: ObjectClass.DATA, A.TOKEN: True, A.PRIVATE: True, A.MODIFIABLE: True,
                A.LABEL: name + ":v1", A.APPLICATION: METADATA_APPLICATION, A.VALUE: metadata(name, key_id, kcv, now),
            })
            key.get_attributes(evidence)
        loop_end = time.perf_counter()
    return {"raw": loop_end - loop_start, "raw_session": time.perf_counter() - start}


def count_objects(label, pin_file):
    """The benchmark's own objects (label bench-*): the collection may keep objects of its own (audit)."""
    from pkcs11 import Attribute, ObjectClass
    with open_session(label, pin_file) as session:
        return {name: sum(1 for obj in session.get_objects({Attribute.CLASS: cls})
                          if obj[Attribute.LABEL].startswith("bench-"))
                for name, cls in (("secret_keys", ObjectClass.SECRET_KEY), ("data_objects", ObjectClass.DATA))}


# ---- controller ----------------------------------------------------------------------------------------------

class Token:
    """A fresh SoftHSM2 token in its own folder, with its own SOFTHSM2_CONF and a 0600 PIN file."""

    def __init__(self, root, label="kl-bench"):
        self.root, self.label = root, label
        self.pin = secrets.token_hex(8)
        self.pin_file = root / "user.pin"
        self.env = {"SOFTHSM2_CONF": str(root / "softhsm2.conf")}
        (root / "tokens").mkdir(parents=True)
        (root / "softhsm2.conf").write_text("directories.tokendir = %s\nobjectstore.backend = file\n"
                                            "log.level = ERROR\n" % (root / "tokens"))
        self.pin_file.write_text(self.pin + "\n")
        self.pin_file.chmod(0o600)
        run(["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", secrets.token_hex(8),
             "--pin", self.pin], env=self.env)

    def connection(self):
        return {"pkcs11_module": PKCS11_MODULE, "token_label": self.label, "user_pin_file": str(self.pin_file)}

    def child(self, mode, *args):
        """Run this script in ``mode`` against the token; return (its JSON output, process wall time)."""
        start = time.perf_counter()
        out = run([PYTHON, __file__, mode, self.label, str(self.pin_file), *map(str, args)], env=self.env)
        return json.loads(out), time.perf_counter() - start


def run(cmd, env=None):
    proc = subprocess.run(cmd, env=dict(os.environ, **(env or {})), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit("%s failed (rc %d):\n%s%s" % (" ".join(cmd[:2]), proc.returncode, proc.stdout, proc.stderr))
    return proc.stdout


class Ansible:
    """Runs one-play playbooks on localhost (connection local, venv python) with the installed collection."""

    def __init__(self, work, collections_path):
        self.work = work
        self.count = 0
        self.inventory = work / "inventory.json"
        self.inventory.write_text(json.dumps({"bench": {"hosts": {"localhost": {
            "ansible_connection": "local", "ansible_python_interpreter": PYTHON}}}}))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PKCS11_"))}
        self.env.update({
            "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
            "ANSIBLE_CONFIG": str(work / "no-ansible.cfg"),  # defaults only, not the repo's ansible.cfg
            "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
            "ANSIBLE_REMOTE_TMP": str(work / "ansible-remote-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_CALLBACK_PLUGINS": str(BENCH / "callback_plugins"),
            "ANSIBLE_CALLBACKS_ENABLED": "bench_task_time",
            "KEYLIFECYCLE_AUDIT_STATE_DIR": str(work / "audit-state"),  # the collection's, not ~/.ansible
            "PATH": "%s:%s" % (Path(PYTHON).parent, os.environ.get("PATH", "/usr/bin:/bin")),
        })

    def play(self, token, task, profile=None):
        """Run a playbook with one task on ``token``: the wall time of the ansible-playbook process and that of
        the task (callback bench_task_time)."""
        elapsed, seconds = self.play_tasks(token, [task], profile)
        return elapsed, seconds[0]

    def play_tasks(self, token, tasks, profile=None):
        """Run a playbook of ``tasks`` on ``token`` (and its own audit journal).

        Return the wall time of the ansible-playbook process and the time of each task (callback bench_task_time).
        ``profile``: run ansible-playbook and its workers under cProfile, writing ``<profile>.main.prof`` and
        ``<profile>.worker-<pid>.prof`` (bench/profile_task.py, bench/_profiled_playbook.py).
        """
        self.count += 1
        path = self.work / ("play-%02d.yml" % self.count)
        path.write_text(json.dumps([{
            "hosts": "bench", "gather_facts": False, "environment": token.env,
            "vars": {"keylifecycle_audit_journal": str(token.root / "audit-journal.jsonl")}, "tasks": tasks}]))
        cmd = [str(Path(PYTHON).parent / "ansible-playbook"), "-i", str(self.inventory), str(path)]
        if profile:
            cmd = [PYTHON, str(BENCH / "_profiled_playbook.py"), str(profile)] + cmd[1:]
        start = time.perf_counter()
        times = path.with_suffix(".task-time.json")
        proc = subprocess.run(cmd, env=dict(self.env, KL_BENCH_TASK_TIMES=str(times)), cwd=self.work, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        elapsed = time.perf_counter() - start
        path.with_suffix(".log").write_text(proc.stdout)
        if proc.returncode != 0:
            raise SystemExit("%s failed (rc %d):\n%s" % (path, proc.returncode, proc.stdout[-3000:]))
        return elapsed, [json.loads(line)["seconds"] for line in times.read_text().splitlines() if line]


def generate_task(token, n):
    keys = [{"name": name, "type": "aes", "size": 256} for name in key_names(n)]
    return {"name": "key_generate", "secops.keylifecycle.key_generate": dict(token.connection(), keys=keys,
                                                                             **batch_options())}


def loop_task(token, n):
    cmd = ("pkcs11-tool --module %s --token-label %s --login --pin %s --keygen --key-type AES:32 --sensitive "
           "--label bench-{{ item }}" % (PKCS11_MODULE, token.label, token.pin))
    return {"name": "pkcs11-tool loop", "ansible.builtin.command": cmd, "loop": "{{ range(%d) | list }}" % n}


def check_counts(token, expected, what):
    counts = token.child("_count")[0]
    if counts != expected:
        raise SystemExit("%s left %s on the token, expected %s" % (what, counts, expected))


def bench_size(n, args, ansible):
    """All methods for one N. Module and raw alternate over --repeat runs (fresh tokens); medians are reported."""
    tokens = args.work_dir / ("tokens-%d" % n)
    result = {"n": n, "loadavg_start": os.getloadavg()[0], "module_runs": [], "raw_runs": []}
    for i in range(args.repeat):
        token = Token(tokens / ("module-%d" % i))
        baseline, baseline_task = ansible.play(token, generate_task(token, 0))  # no bench key, same per-call work
        total, task = ansible.play(token, generate_task(token, n))
        check_counts(token, {"secret_keys": n, "data_objects": n}, "key_generate")
        result["module_runs"].append({"baseline": baseline, "baseline_task": baseline_task, "total": total,
                                      "task": task})

        token = Token(tokens / ("raw-%d" % i))
        raw, process = token.child("_raw", n)
        check_counts(token, {"secret_keys": n, "data_objects": n}, "raw python-pkcs11")
        result["raw_runs"].append(dict(raw, raw_process=process))

    module = {key: median(result["module_runs"], key) for key in ("baseline", "baseline_task", "total", "task")}
    module["net"] = module["total"] - module["baseline"]
    result["module"] = module
    result["raw"] = {key: median(result["raw_runs"], key) for key in ("raw", "raw_session", "raw_process")}

    if args.skip_loop_above is not None and n > args.skip_loop_above:
        result["loop"] = {"skipped": "N > --skip-loop-above %d" % args.skip_loop_above}
    else:
        token = Token(tokens / "loop")
        total, task = ansible.play(token, loop_task(token, n))
        result["loop"] = {"total": total, "task": task}
        check_counts(token, {"secret_keys": n, "data_objects": 0}, "pkcs11-tool loop")

    result["loadavg_end"] = os.getloadavg()[0]
    result["net_vs_raw"] = module["net"] / result["raw"]["raw"]
    loop_total = result["loop"].get("total")
    result["loop_vs_module_total"] = loop_total / module["total"] if loop_total else None
    return result


def median(runs, key):
    return statistics.median(run[key] for run in runs)


def scaling(results):
    """t(largest N) / t(smallest N) for the module and raw, next to the ratio of the Ns (linear)."""
    if len(results) < 2:
        return None
    small, large = results[0], results[-1]
    ratios = {"module_" + key: large["module"][key] / small["module"][key] for key in ("net", "task", "total")}
    return dict(ratios, raw=large["raw"]["raw"] / small["raw"]["raw"],
                **{"from": small["n"], "to": large["n"], "n_ratio": large["n"] / small["n"]})


def fixed_costs(args, ansible):
    """The fixed cost of one task: an empty key_generate and key_info next to ansible.builtin.ping, in this run.

    Each repeat is one playbook on a fresh token: debug (the playbook's set-up, not counted), then ping, an empty
    key_generate (the first on the token: it also creates the audit-checkpoint key and the journal pin), ping, an
    empty key_generate again, key_info twice (no managed key on the token), ping. Task times come from the callback
    bench_task_time. A module's first task in a playbook also builds its AnsiballZ payload on the controller, which
    Ansible then keeps for the playbook's later tasks of that module: *cold* is that first task, *warm* a later one,
    and each is compared with ping in the same state (ping cold: its first task; warm: the median of its later two).
    """
    runs = []
    debug = {"name": "set-up", "ansible.builtin.debug": {"msg": "set-up"}}
    ping = {"name": "ping", "ansible.builtin.ping": {}}
    info = {"name": "key_info", "secops.keylifecycle.key_info": None}
    for i in range(args.repeat):
        token = Token(args.work_dir / "fixed" / ("token-%d" % i))
        info["secops.keylifecycle.key_info"] = token.connection()
        empty = generate_task(token, 0)
        _total, times = ansible.play_tasks(token, [debug, ping, empty, ping, empty, info, info, ping])
        runs.append({"ping_cold": times[1], "ping": statistics.median([times[3], times[7]]),
                     "key_generate_first": times[2], "key_generate": times[4], "key_info_cold": times[5],
                     "key_info": times[6]})
    fixed = {key: median(runs, key) for key in runs[0]}
    fixed["key_generate_vs_ping"] = fixed["key_generate"] / fixed["ping"]
    fixed["key_info_vs_ping"] = fixed["key_info"] / fixed["ping"]
    fixed["key_info_cold_vs_ping_cold"] = fixed["key_info_cold"] / fixed["ping_cold"]
    fixed["key_generate_first_vs_ping_cold"] = fixed["key_generate_first"] / fixed["ping_cold"]
    fixed["runs"] = runs
    return fixed


def report_fixed(fixed):
    print("\nFixed cost of a task (task times in one playbook, medians of %d runs, each on a fresh token):\n"
          "  warm (the module's payload already built in this playbook): ping %.2f s; empty key_generate %.2f s "
          "(%.1fx ping); key_info on a token without managed keys %.2f s (%.1fx ping)\n"
          "  cold (the module's first task in the playbook): ping %.2f s; key_generate %.2f s (%.1fx ping, and the "
          "first on the token: it creates the audit key); key_info %.2f s (%.1fx ping)\n"
          "  target <= 2x ping (warm): %s"
          % (len(fixed["runs"]), fixed["ping"], fixed["key_generate"], fixed["key_generate_vs_ping"],
             fixed["key_info"], fixed["key_info_vs_ping"], fixed["ping_cold"], fixed["key_generate_first"],
             fixed["key_generate_first_vs_ping_cold"], fixed["key_info_cold"], fixed["key_info_cold_vs_ping_cold"],
             verdict(max(fixed["key_generate_vs_ping"], fixed["key_info_vs_ping"]), lambda v: v <= 2)))


def verdict(value, ok):
    return "n/a" if value is None else ("met" if ok(value) else "NOT met")


def report(results, scale):
    def fmt(value, spec="%.2f"):
        return "-" if value is None else spec % value

    header = ("N", "module_net", "module_task", "module_total", "raw", "loop", "net/raw", "loop/total")
    rows = [(str(r["n"]), fmt(r["module"]["net"]), fmt(r["module"]["task"]), fmt(r["module"]["total"]),
             fmt(r["raw"]["raw"]), fmt(r["loop"]["total"]) if "total" in r["loop"] else "skipped",
             fmt(r["net_vs_raw"]), fmt(r["loop_vs_module_total"], "%.1f")) for r in results]
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
    print("\nSeconds, medians of --repeat runs, each on a fresh token. module_net = module_total - module_baseline "
          "(the same playbook with keys: []). module_task = the task alone (callback bench_task_time). raw = the "
          "python-pkcs11 loop, session already open.")
    for r in results:
        m, raw, n = r["module"], r["raw"], r["n"]
        print("N=%d (load average %.2f -> %.2f)" % (n, r["loadavg_start"], r["loadavg_end"]))
        print("  module_baseline %.2f (task %.2f); raw with load+login %.2f, raw whole process %.2f" % (
            m["baseline"], m["baseline_task"], raw["raw_session"], raw["raw_process"]))
        print("  per key: module_net %.2f ms, raw %.2f ms" % (1000 * m["net"] / n, 1000 * raw["raw"] / n))
        for runs, key in (("module_runs", "total"), ("module_runs", "task"), ("module_runs", "baseline"),
                          ("raw_runs", "raw")):
            print("  runs %s: %s" % (key, " ".join("%.2f" % run[key] for run in r[runs])))
        if "task" in r["loop"]:
            print("  loop: task %.2f of %.2f total, %.0f ms per item" % (
                r["loop"]["task"], r["loop"]["total"], 1000 * r["loop"]["task"] / n))
        print("  target module_net/raw <= %.1f: %s; target loop/module_total >= %d: %s%s" % (
            TARGET_NET_VS_RAW, verdict(r["net_vs_raw"], lambda v: v <= TARGET_NET_VS_RAW),
            TARGET_LOOP_VS_MODULE, verdict(r["loop_vs_module_total"], lambda v: v >= TARGET_LOOP_VS_MODULE),
            " (loop skipped: %s)" % r["loop"]["skipped"] if "skipped" in r["loop"] else ""))
    if scale:
        print("Scaling N=%(from)d -> N=%(to)d (N x%(n_ratio).0f): module_net x%(module_net).2f, module_task "
              "x%(module_task).2f, module_total x%(module_total).2f, raw x%(raw).2f" % scale)


def environment(work_dir):
    import ansible
    from importlib.metadata import version

    def output(*cmd):
        return subprocess.run(cmd, capture_output=True, text=True, cwd=BENCH.parent, check=False).stdout.strip()

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "git_commit": output("git", "rev-parse", "HEAD"),
            "git_dirty_files": len(output("git", "status", "--porcelain", "--", ":!bench").splitlines()),
            "platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "ansible_core": ansible.__version__, "python_pkcs11": version("python-pkcs11"),
            "softhsm2": output("softhsm2-util", "--version"), "pkcs11_module": PKCS11_MODULE,
            "work_dir": str(work_dir), "work_dir_fs": output("stat", "-f", "-c", "%T", str(work_dir)),
            "return_records": RETURN_RECORDS}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--collections-path", type=Path, required=True,
                        help="collections path where secops.keylifecycle is installed (run.sh does this)")
    parser.add_argument("--work-dir", type=Path, required=True, help="scratch folder for tokens and playbooks")
    parser.add_argument("--sizes", default="100,1000", help="comma-separated batch sizes (default 100,1000)")
    parser.add_argument("--skip-loop-above", type=int, metavar="N", help="skip the pkcs11-tool loop for sizes > N")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the module and raw methods per N (median)")
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "latest.json")
    parser.add_argument("--fixed-only", action="store_true", help="measure only the fixed cost of a task")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    env = environment(args.work_dir)  # before the run: the collection was built from this checkout just now

    ansible = Ansible(args.work_dir, args.collections_path)
    warmup = Token(args.work_dir / "warmup")
    ansible.play(warmup, generate_task(warmup, 0))  # discarded: first run compiles and caches
    results = []
    for n in ([] if args.fixed_only else sizes):
        print("N=%d ..." % n, file=sys.stderr, flush=True)
        results.append(bench_size(n, args, ansible))
    scale = scaling(results)
    if results:
        report(results, scale)
    print("fixed cost ...", file=sys.stderr, flush=True)
    fixed = fixed_costs(args, ansible)
    report_fixed(fixed)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "environment": env, "sizes": sizes, "repeat": args.repeat, "fixed_cost": fixed,
        "skip_loop_above": args.skip_loop_above,
        "targets": {"module_net_vs_raw_max": TARGET_NET_VS_RAW, "loop_vs_module_total_min": TARGET_LOOP_VS_MODULE},
        "results": results, "scaling": scale,
    }, indent=2) + "\n")
    print("\nJSON: %s" % args.output)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_raw":
        print(json.dumps(raw_generate(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "_count":
        print(json.dumps(count_objects(sys.argv[2], sys.argv[3])))
    else:
        main()
