"""Profile one lifecycle task, controller and module side apart (see bench/README.md, "Where the time goes").

Runs ``key_generate`` (or ``key_rotate`` of keys generated just before) with N AES-256 keys on a fresh SoftHSM2
token, the way bench/run.sh does (connection local, venv python, the collection built from this checkout):

* controller: ansible-playbook under cProfile, its main process (strategy, result processing, callbacks) and its
  forked worker (the action plugin, the journal, the module's transfer and the wait for it, the result decode);
* module: the same task's AnsiballZ payload (kept with ANSIBLE_KEEP_REMOTE_FILES), exploded and run again under
  cProfile with the same arguments on a copy of the token taken just before the task, so it does the same work.

Prints the top functions of each by cumulative and by own time, and writes the .prof files to --output-dir.
Nothing is asserted. Run it through bench/profile.sh.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bench_generate import PYTHON, Ansible, Token, batch_options, generate_task, key_names  # noqa: E402  pylint: disable=wrong-import-position


def rotate_task(token, n):
    options = dict(token.connection(), name=key_names(n), force=True, **batch_options())
    return {"name": "key_rotate", "secops.keylifecycle.key_rotate": options}


def module_net(args, token, snapshot, debug, module_name, env):
    """The module alone, without the profiler: the payload replayed with its N keys and with none (medians of 3,
    each on the token as it was before the task), next to the raw python-pkcs11 loop on the same token."""
    def replay(args_file):
        shutil.rmtree(token.root / "tokens")
        shutil.copytree(snapshot, token.root / "tokens")
        script = ("import runpy,sys; sys.argv=['m', %r]; runpy.run_module("
                  "'ansible_collections.secops.keylifecycle.plugins.modules.%s', run_name='__main__')"
                  % (str(args_file), module_name))
        start = time.perf_counter()
        proc = subprocess.run([PYTHON, "-c", script], env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        if json.loads(proc.stdout).get("failed"):
            raise SystemExit("the module failed: %s" % proc.stdout[-2000:])
        return elapsed

    full = debug / "args"
    empty = debug / "args-empty"
    data = json.loads(full.read_text())
    data["ANSIBLE_MODULE_ARGS"]["keys"] = []
    empty.write_text(json.dumps(data))
    times, baselines, raws = [], [], []
    for _run in range(3):
        times.append(replay(full))
        baselines.append(replay(empty))
        shutil.rmtree(token.root / "tokens")
        shutil.copytree(snapshot, token.root / "tokens")
        raw = subprocess.run([PYTHON, str(BENCH / "bench_generate.py"), "_raw", token.label, str(token.pin_file),
                              str(args.keys)], env=env, capture_output=True, text=True, check=True)
        raws.append(json.loads(raw.stdout)["raw"])
    net, raw = statistics.median(times) - statistics.median(baselines), statistics.median(raws)
    print("module alone (no profiler, medians of 3): %d keys %.2f s, no keys %.2f s, net %.2f s; raw loop %.2f s; "
          "module net/raw %.2f" % (args.keys, statistics.median(times), statistics.median(baselines), net, raw,
                                   net / raw))


def print_stats(path, title, limit):
    print("\n==== %s (%s)" % (title, path))
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--collections-path", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--task", choices=["generate", "rotate", "info"], default="generate",
                        help="key_generate of N keys, key_rotate of N keys generated before, or key_info of them")
    parser.add_argument("--limit", type=int, default=30, help="rows per table")
    parser.add_argument("--output-dir", type=Path, default=None, help="where to keep the .prof files")
    args = parser.parse_args()
    work = args.work_dir
    out = args.output_dir or work
    out.mkdir(parents=True, exist_ok=True)
    ansible = Ansible(work, args.collections_path)
    token = Token(work / "token")
    if args.task in ("rotate", "info"):
        ansible.play(token, generate_task(token, args.keys))
        task = rotate_task(token, args.keys) if args.task == "rotate" else {
            "name": "key_info", "secops.keylifecycle.key_info": token.connection()}
    else:
        ansible.play(token, {"name": "empty", "secops.keylifecycle.key_generate": dict(token.connection(), keys=[])})
        task = generate_task(token, args.keys)
    snapshot = work / "token-before"
    shutil.copytree(token.root / "tokens", snapshot)

    # controller: ansible-playbook under cProfile, the module's payload kept
    remote_tmp = work / "ansible-remote-tmp"
    controller_prof = out / ("controller-%s-%d" % (args.task, args.keys))
    ansible.env["ANSIBLE_KEEP_REMOTE_FILES"] = "1"
    start = time.perf_counter()
    _elapsed, task_seconds = ansible.play(token, task, profile=controller_prof)
    print("task under the profiler: playbook %.2f s, task %.2f s" % (time.perf_counter() - start, task_seconds))

    # module: the kept payload, exploded, run again on the token as it was before the task
    payloads = sorted(glob.glob(str(remote_tmp / "**" / "AnsiballZ_key_*.py"), recursive=True))
    if not payloads:
        raise SystemExit("no AnsiballZ payload kept under %s" % remote_tmp)
    payload = Path(payloads[-1])
    subprocess.run([PYTHON, str(payload), "explode"], cwd=payload.parent, check=True, capture_output=True)
    debug = payload.parent / "debug_dir"
    shutil.rmtree(token.root / "tokens")
    shutil.copytree(snapshot, token.root / "tokens")
    module_name = payload.name[len("AnsiballZ_"):-len(".py")]
    module_prof = out / ("module-%s-%d.prof" % (args.task, args.keys))
    env = dict(os.environ, **token.env)
    env["PYTHONPATH"] = str(debug)
    script = ("import cProfile,runpy,sys; sys.argv=['m', %r];"
              "cProfile.run(\"runpy.run_module('ansible_collections.secops.keylifecycle.plugins.modules.%s',"
              " run_name='__main__')\", %r)" % (str(debug / "args"), module_name, str(module_prof)))
    proc = subprocess.run([PYTHON, "-c", script], env=env, capture_output=True, text=True, check=False)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise SystemExit("the module did not return JSON:\n%s%s" % (proc.stdout[-2000:], proc.stderr[-2000:]))
    if result.get("failed"):
        raise SystemExit("the module failed: %s" % result.get("msg"))
    print("module replay: changed=%s, %d audit events, result %d bytes"
          % (result.get("changed"), len(result.get("audit_events") or []), len(proc.stdout)))
    if args.task == "generate":
        module_net(args, token, snapshot, debug, module_name, env)
    print_stats("%s.main.prof" % controller_prof, "controller: the ansible-playbook process", args.limit)
    for worker in sorted(glob.glob("%s.worker-*.prof" % controller_prof)):
        print_stats(worker, "controller: a worker process (action plugin)", args.limit)
    print_stats(module_prof, "module", args.limit)


if __name__ == "__main__":
    main()
