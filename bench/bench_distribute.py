"""Benchmark distribution (see bench/README.md, "Distribution benchmark").

Part 1 (bench_distribute_cost.py, in process on a real SoftHSM2 token): what trusted wrapping and package signing
cost per key, as a ratio to the path before them (a recipient key imported as a session object, C_WrapKey, no
signature). Part 2, below: playbooks/distribute.yml over real SSH.

For each K (keys) and R (recipients), on a fresh HSM token and fresh recipient tokens: one ``key_generate`` task
creates K distributable AES-256 keys that list the R recipients (not timed), then ``ansible-playbook
distribute.yml`` runs twice: the first run reads the HSM's package signer, enrolls every recipient (a transport key
pair in its token, the package signer pinned), approves their transport keys in the HSM as the Security Officer
(the inventory gives the bench token's SO PIN file, as the dev inventory does), wraps the K x R versions in the HSM
under those trusted keys, signs each package, and installs them at each recipient; the second run finds nothing to
do.

The recipients are real hosts as far as Ansible is concerned: one system user and one sshd on loopback each
(tests/recipients.py, with users of their own so that a test session running at the same time keeps its tokens),
each with its own SoftHSM2 token, modules run by the recipient venv's python. The HSM host is local.

Reported per (K, R): the wall time of both runs, the tasks executed (PLAY RECAP: ok, which counts changed ones
too, summed over the hosts), the key-distribute and key-install change events in the audit journal (K x R each),
the time of each task (callback_plugins/bench_task_time.py) and the ratios first run (R) / first run (smallest R)
and first run (K) / first run (smallest K). After every first run each recipient token is read with
tests/helpers/read_token.py: it must hold exactly the K versions, with the HSM's key check values; after every
second run nothing may have changed. Timings are reported, never asserted; the checks are (a failed one stops
the run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_audit import median_of, table
from bench_distribute_cost import report as report_cost, run_cost
from bench_generate import BENCH, PYTHON, environment, key_names

REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.recipients, tests.conftest

from tests.conftest import make_token  # noqa: E402  pylint: disable=wrong-import-position
from tests.recipients import SSH_ARGS, SshRecipients  # noqa: E402  pylint: disable=wrong-import-position

PLAYBOOK = REPO / "playbooks" / "distribute.yml"
# service users of the benchmark's own recipient hosts (the tests use kl_r1, kl_r2 and reset their tokens)
USERS = ("kl_bench_r1", "kl_bench_r2", "kl_bench_r3", "kl_bench_r4")
# task names of playbooks/distribute.yml, short
_SIGNER_TASK = "Read the HSM's package-signing public key (recipients pin it at enrollment; nothing is created here)"
_APPROVE_TASK = "Install each recipient's transport public key in the HSM as CKA_TRUSTED (Security Officer session)"
TASKS = {_SIGNER_TASK: "signer",
         "Make sure this recipient has a strong transport key and report what it holds": "enroll",
         _APPROVE_TASK: "approve",
         "Check the recipient's token protection (default PINs, SO PIN differs, token flags, storage permissions)":
             "token_check",
         "Describe this recipient for the HSM host": "set_fact",
         "Wrap every missing version under its recipient's transport key (one task for all recipients)": "distribute",
         "Install every version this recipient must hold (unwrapped in its token, check value compared)": "install",
         "Withdraw the versions destroyed or compromised upstream (verified gone)": "withdraw"}


def recipient_name(host):
    return "svc%d" % int(host.alias[1:])  # r1 -> svc1


def recap(output):
    """host -> {ok, changed, unreachable, failed, skipped, ...} from the PLAY RECAP."""
    hosts = {}
    for line in output.split("PLAY RECAP")[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            hosts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return hosts


def task_times(path):
    """Short task name -> seconds from its start to the last host's result (callback bench_task_time)."""
    times = {}
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            task = entry["task"].split(" : ", 1)[-1]  # without the "<role> : " prefix
            name = TASKS.get(task, task)
            times[name] = max(times.get(name, 0.0), entry["seconds"])
    return times


def change_events(journal, action):
    if not journal.exists():
        return []
    records = [json.loads(line) for line in journal.read_text().splitlines() if line]
    return [r["event"] for r in records
            if r["event"]["event"]["action"] == action and r["event"]["keylifecycle"]["phase"] == "change"]


class Bench:
    """ansible-playbook runs on one inventory: the local HSM host and R of the ssh recipient hosts."""

    def __init__(self, work, collections_path, recipients, playbook, pipelining=False):
        self.work, self.recipients, self.playbook = work, recipients, playbook
        self.count = 0
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("ANSIBLE_", "PKCS11_", "KEYLIFECYCLE_"))}
        self.env.update({
            "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
            "ANSIBLE_CONFIG": str(work / "no-ansible.cfg"),  # defaults only, not the repo's ansible.cfg
            "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_SSH_ARGS": SSH_ARGS,
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PIPELINING": "True" if pipelining else "False",  # ansible's default: off
            "ANSIBLE_CALLBACK_PLUGINS": str(BENCH / "callback_plugins"),
            "ANSIBLE_CALLBACKS_ENABLED": "bench_task_time",
            "PATH": "%s:%s" % (Path(PYTHON).parent, os.environ.get("PATH", "/usr/bin:/bin")),
        })

    def setup(self, root, n_keys, n_recipients):
        """Fresh HSM token, fresh tokens on the first R recipients, inventory; K keys generated (not timed)."""
        root.mkdir(parents=True)
        hsm = make_token(root / "hsm", "kl-bench-hsm")
        hosts = self.recipients.hosts[:n_recipients]
        for host in hosts:
            host.reset_token("kl-bench-%s" % host.alias)
        journal = root / "audit" / "journal.jsonl"
        hsm_vars = {
            "ansible_connection": "local", "ansible_python_interpreter": PYTHON,
            "keylifecycle_audit_journal": str(journal),
            "hsm_pkcs11_module": hsm.connection()["pkcs11_module"], "hsm_token_label": hsm.label,
            "hsm_user_pin_file": str(hsm.pin_file), "hsm_environment": hsm.env,
            "key_distribution_oaep_hash": "sha1",  # SoftHSM2 2.6 implements OAEP with SHA-1 only
            "ansible_remote_tmp": str(root / "hsm-remote-tmp"),
            # the officer's credential, as in the dev inventory: distribute.yml approves the enrolled recipients
            "keylifecycle_officer": "bench-officer", "keylifecycle_officer_so_pin_file": str(hsm.so_pin_file),
        }
        recipient_hosts = {host.alias: dict(host.inventory_vars(self.recipients.client_key, recipient_name(host)),
                                            keylifecycle_audit_journal=str(journal)) for host in hosts}
        inventory = root / "inventory.json"
        inventory.write_text(json.dumps({"all": {"children": {
            "hsm": {"hosts": {"bench-hsm": hsm_vars}}, "key_recipients": {"hosts": recipient_hosts}}}}))
        run = {"root": root, "hsm": hsm, "hosts": hosts, "journal": journal, "inventory": inventory,
               "state_dir": root / "audit-state"}
        keys = [{"name": name, "type": "aes", "size": 256, "usage": ["encrypt", "decrypt"], "distributable": True,
                 "recipients": [recipient_name(host) for host in hosts]} for name in key_names(n_keys)]
        generate = root / "generate.json"
        generate.write_text(json.dumps([{
            "hosts": "hsm", "gather_facts": False, "environment": "{{ hsm_environment }}",
            "tasks": [{"name": "key_generate", "secops.keylifecycle.key_generate": dict(hsm.connection(), keys=keys)}],
        }]))
        self.play(run, generate, "generate")
        return run

    def play(self, run, playbook, what):
        """Run a playbook on the run's inventory; return (wall seconds, output, task times)."""
        self.count += 1
        times = run["root"] / ("%02d-%s.task-time.jsonl" % (self.count, what))
        env = dict(self.env, KL_BENCH_TASK_TIMES=str(times), KEYLIFECYCLE_AUDIT_STATE_DIR=str(run["state_dir"]))
        cmd = [str(Path(PYTHON).parent / "ansible-playbook"), "-i", str(run["inventory"]), str(playbook)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=self.work, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, check=False)
        elapsed = time.perf_counter() - start
        times.with_name("%02d-%s.log" % (self.count, what)).write_text(proc.stdout)
        if proc.returncode != 0:
            raise SystemExit("%s (%s) failed (rc %d):\n%s" % (playbook, what, proc.returncode, proc.stdout[-4000:]))
        return elapsed, proc.stdout, task_times(times)

    def distribute(self, run, what):
        return self.play(run, self.playbook, what)


def check_recipients(run, n_keys):
    """Every recipient token holds exactly the K versions bench-*:v1, each with the HSM's key check value."""
    hsm_kcv = {label: doc["key_check_value"] for label, doc in run["hsm"].metadata().items()}
    expected = {"%s:v1" % name for name in key_names(n_keys)}
    found = {}
    for host in run["hosts"]:
        keys = {o["label"]: o.get("kcv") for o in host.token.objects() if o["class"] == "SECRET_KEY"}
        if set(keys) != expected:
            raise SystemExit("recipient %s holds %d secret keys (%s...), expected the %d versions bench-*:v1"
                             % (host.alias, len(keys), sorted(keys)[:3], n_keys))
        wrong = sorted(label for label, kcv in keys.items() if kcv != hsm_kcv.get(label))
        if wrong:
            raise SystemExit("recipient %s: check value differs from the HSM's for %s" % (host.alias, wrong[:5]))
        found[host.alias] = len(keys)
    return found


def measure(bench, root, n_keys, n_recipients):
    """One (K, R): fresh tokens, K keys generated, then distribute.yml twice; checks after each run."""
    loadavg_start = os.getloadavg()[0]
    run = bench.setup(root, n_keys, n_recipients)
    first, out, first_tasks = bench.distribute(run, "first")
    first_recap = recap(out)
    held = check_recipients(run, n_keys)
    distributed = change_events(run["journal"], "key-distribute")
    installed = change_events(run["journal"], "key-install")
    pairs = sorted((e["key"]["recipient"], e["key"]["label"]) for e in distributed)
    expected = sorted((recipient_name(host), "%s:v1" % name) for host in run["hosts"] for name in key_names(n_keys))
    if pairs != expected:
        raise SystemExit("key-distribute events: %d, expected one per key and recipient (%d)"
                         % (len(pairs), len(expected)))
    if len(installed) != n_keys * n_recipients:
        raise SystemExit("key-install events: %d, expected %d" % (len(installed), n_keys * n_recipients))

    second, out, second_tasks = bench.distribute(run, "second")
    second_recap = recap(out)
    if any(counts.get("changed") for counts in second_recap.values()):
        raise SystemExit("second run changed something: %s" % second_recap)
    if len(change_events(run["journal"], "key-distribute")) != len(distributed):
        raise SystemExit("second run wrapped again")
    check_recipients(run, n_keys)
    return {"first": first, "second": second,
            "first_tasks": sum(c.get("ok", 0) for c in first_recap.values()),
            "second_tasks": sum(c.get("ok", 0) for c in second_recap.values()),
            "first_recap": first_recap, "second_recap": second_recap,
            "first_task_times": first_tasks, "second_task_times": second_tasks,
            "distribute_events": len(distributed), "install_events": len(installed), "recipient_secret_keys": held,
            "loadavg_start": loadavg_start, "loadavg_end": os.getloadavg()[0]}


def summarize(runs, n_keys, n_recipients):
    """Medians over the repeats (the counts are the same in every run, checked by measure)."""
    result = {"keys": n_keys, "recipients": n_recipients, "runs": runs,
              "loadavg_start": runs[0]["loadavg_start"], "loadavg_end": runs[-1]["loadavg_end"]}
    for key in ("first", "second"):
        result[key] = median_of(runs, key)
    for key in ("first_tasks", "second_tasks", "distribute_events", "install_events"):
        values = {run[key] for run in runs}
        result[key] = values.pop() if len(values) == 1 else sorted(values)
    for key in ("first_task_times", "second_task_times"):
        names = sorted({name for run in runs for name in run[key]})
        result[key] = {name: median_of([run[key] for run in runs if name in run[key]], name) for name in names}
    return result


def add_ratios(results):
    """first run / first run of the smallest R (same K), and of the smallest K (same R)."""
    by = {(r["keys"], r["recipients"]): r for r in results}
    min_k, min_r = min(r["keys"] for r in results), min(r["recipients"] for r in results)
    for r in results:
        base_r, base_k = by.get((r["keys"], min_r)), by.get((min_k, r["recipients"]))
        r["first_vs_min_r"] = r["first"] / base_r["first"] if base_r else None
        r["first_vs_min_k"] = r["first"] / base_k["first"] if base_k else None


def per_key(results, task, n_recipients):
    """(task time at the largest K - at the smallest K) / (K difference), for R recipients: seconds per key."""
    rows = sorted((r for r in results if r["recipients"] == n_recipients), key=lambda r: r["keys"])
    if len(rows) < 2 or task not in rows[0]["first_task_times"] or task not in rows[-1]["first_task_times"]:
        return None
    return (rows[-1]["first_task_times"][task] - rows[0]["first_task_times"][task]) / (rows[-1]["keys"] -
                                                                                       rows[0]["keys"])


def report(results, repeat, fs, pipelining):
    def fmt(value, spec="%.2f"):
        return "-" if value is None else spec % value

    print("\nplaybooks/distribute.yml over ssh (loopback sshd per recipient, pipelining %s), work folder on %s\n"
          % ("on" if pipelining else "off", fs))
    header = ("K", "R", "first_s", "second_s", "tasks_1st", "tasks_2nd", "distribute_events", "x_vs_R_min",
              "x_vs_K_min")
    rows = [(str(r["keys"]), str(r["recipients"]), fmt(r["first"]), fmt(r["second"]), str(r["first_tasks"]),
             str(r["second_tasks"]), str(r["distribute_events"]), fmt(r["first_vs_min_r"]), fmt(r["first_vs_min_k"]))
            for r in results]
    table(header, rows, left=())
    print("\nSeconds, medians of %d run(s), each on fresh tokens. tasks = PLAY RECAP ok (changed included) summed "
          "over the hosts; distribute_events = key-distribute changes in the journal (K x R). x_vs_R_min = "
          "first_s / first_s of the smallest R (same K); x_vs_K_min = first_s / first_s of the smallest K "
          "(same R)." % repeat)
    print("\nTask times of the first run (start to last host's result) and of the second run:\n")
    names = ("signer", "token_check", "enroll", "approve", "distribute", "install")
    header = ("K", "R") + tuple("1st_" + n for n in names) + ("2nd_enroll", "2nd_distribute")
    rows = [(str(r["keys"]), str(r["recipients"]))
            + tuple(fmt(r["first_task_times"].get(n)) for n in names)
            + (fmt(r["second_task_times"].get("enroll")), fmt(r["second_task_times"].get("distribute")))
            for r in results]
    table(header, rows, left=())
    for n_recipients in sorted({r["recipients"] for r in results}):
        wrap, unwrap = per_key(results, "distribute", n_recipients), per_key(results, "install", n_recipients)
        if wrap is not None:
            print("R=%d, per key (task time difference between the smallest and the largest K): distribute "
                  "%.1f ms (%.1f ms per wrapped version), install %.1f ms" % (
                      n_recipients, 1000 * wrap, 1000 * wrap / n_recipients, 1000 * unwrap))
    for r in results:
        print("K=%d R=%d runs first: %s; second: %s; load average %.2f -> %.2f" % (
            r["keys"], r["recipients"], " ".join("%.2f" % run["first"] for run in r["runs"]),
            " ".join("%.2f" % run["second"] for run in r["runs"]), r["loadavg_start"], r["loadavg_end"]))


def numbers(text):
    return sorted({int(value) for value in text.split(",")})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--collections-path", type=Path, required=True,
                        help="collections path where secops.keylifecycle is installed (run_distribute.sh does this)")
    parser.add_argument("--work-dir", type=Path, required=True, help="scratch folder for tokens and playbooks")
    parser.add_argument("--keys", default="10,100", help="comma-separated numbers of keys K (default 10,100)")
    parser.add_argument("--recipients", default="1,2",
                        help="comma-separated numbers of recipient hosts R (default 1,2; at most %d)" % len(USERS))
    parser.add_argument("--repeat", type=int, default=1, help="runs per (K, R), median (default 1: ssh is slow)")
    parser.add_argument("--pipelining", action="store_true",
                        help="ANSIBLE_PIPELINING=True: one ssh connection per module task instead of five")
    parser.add_argument("--cost-keys", type=int, default=200,
                        help="part 1: keys per path of the in-process per-key measurement (default 200)")
    parser.add_argument("--cost-repeat", type=int, default=5, help="part 1: runs of each path, median (default 5)")
    parser.add_argument("--skip-cost", action="store_true", help="skip part 1 (the in-process per-key cost)")
    parser.add_argument("--skip-playbook", action="store_true",
                        help="skip part 2 (distribute.yml over ssh; needs root): part 1 only")
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "distribute-latest.json",
                        help="JSON results; a relative path is taken from the repository root (the script runs in "
                             "the work folder, which is removed at the end)")
    args = parser.parse_args()
    args.output = REPO / args.output  # an absolute --output stays as it is
    sizes, counts = numbers(args.keys), numbers(args.recipients)
    if counts[0] < 1 or counts[-1] > len(USERS):
        parser.error("--recipients: between 1 and %d" % len(USERS))
    env = environment(args.work_dir)  # before the run: the collection was built from this checkout just now
    cost = None
    if not args.skip_cost:
        print("part 1: per-key cost, %d keys x %d runs ..." % (args.cost_keys, args.cost_repeat), file=sys.stderr,
              flush=True)
        cost = run_cost(args.collections_path, args.work_dir / "cost", args.cost_keys, args.cost_repeat)
        report_cost(cost, env["work_dir_fs"])
    if args.skip_playbook:
        write_results(args, {"environment": env, "cost": cost})
        return
    for name in ("distribute.yml", "approve_recipients.yml"):  # the playbooks as they are now, for every run
        if (PLAYBOOK.parent / name).exists():
            shutil.copy(PLAYBOOK.parent / name, args.work_dir / name)
    playbook = args.work_dir / "distribute.yml"

    (args.work_dir / "recipients").mkdir()
    with SshRecipients(args.work_dir / "recipients", users=USERS[:counts[-1]]) as recipients:
        bench = Bench(args.work_dir, args.collections_path, recipients, playbook, args.pipelining)
        print("warm-up (discarded) ...", file=sys.stderr, flush=True)
        measure(bench, args.work_dir / "warmup", 1, counts[-1])  # first runs compile and cache
        runs = {(k, r): [] for k in sizes for r in counts}
        for i in range(args.repeat):
            for n_keys in sizes:
                for n_recipients in counts:
                    print("K=%d R=%d run %d/%d ..." % (n_keys, n_recipients, i + 1, args.repeat), file=sys.stderr,
                          flush=True)
                    runs[(n_keys, n_recipients)].append(measure(
                        bench, args.work_dir / ("k%d-r%d-%d" % (n_keys, n_recipients, i)), n_keys, n_recipients))
    results = [summarize(found, n_keys, n_recipients) for (n_keys, n_recipients), found in runs.items()]
    add_ratios(results)
    report(results, args.repeat, env["work_dir_fs"], args.pipelining)

    write_results(args, {"environment": env, "cost": cost, "keys": sizes, "recipients": counts, "repeat": args.repeat,
                         "pipelining": args.pipelining, "results": results})


def write_results(args, results):
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print("\nJSON: %s" % args.output)


if __name__ == "__main__":
    main()
