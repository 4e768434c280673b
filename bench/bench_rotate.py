"""Benchmark secops.keylifecycle.key_rotate on SoftHSM2 (see bench/README.md, "Rotation benchmark").

For each N, each method runs on its own fresh token, prepared the same way: one ``key_generate`` task creates N
AES-256 keys with ``rotation_period: 1s``, then the benchmark waits until every key is due.

* module: one ansible-playbook task ``key_rotate`` with ``all_due: true`` (audit journal in the work folder).
  ``module_total`` is the whole run, ``module_task`` the task alone (callback_plugins/bench_task_time.py),
  ``module_net`` subtracts the median ``baseline``: the same task on the same token just before the keys were
  generated (nothing due, nothing to enumerate; the fixed cost of a call).
* raw: python-pkcs11 in one process and one session doing the same token work by hand: find the due keys (one
  search for the metadata objects, one for the secret keys), then per key generate the new version (same
  template, AES-ECB key check value, CKO_DATA metadata object, evidence read), switch CKA_ENCRYPT off on the
  old key, and add the old version's new metadata revision (revisions are append-only, as in the collection).

After every method the token is checked (python-pkcs11, metadata JSON read directly): every key has exactly one
active version. Timings are reported, never asserted. Internal modes ``_raw`` and ``_check`` run in a child
process, because SoftHSM2 reads SOFTHSM2_CONF once per process.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench_audit import median_of, table
from bench_generate import (
    BENCH,
    METADATA_APPLICATION,
    PYTHON,
    Ansible,
    Token,
    batch_options,
    environment,
    generate_task,
    open_session,
    run,
)

TARGET_NET_VS_RAW = 1.5  # module_net / raw at most
ROTATION_PERIOD = 1  # seconds, given to key_generate as "1s"
# KeySpec fields of the metadata document: the new version copies them from the old one
SPEC_FIELDS = ("name", "type", "size", "curve", "usage", "distributable", "rotation_period", "retention_period",
               "recipients", "destroy_allowed")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
PROTECTING_USAGES = ("encrypt", "wrap", "sign", "derive")  # switched off on a deactivated version


# ---- child process: raw python-pkcs11 and the token check ---------------------------------------------------

def seconds(duration):
    """``1s``, ``90d`` ... (format_duration's output) in seconds."""
    return int(duration[:-1]) * UNIT_SECONDS[duration[-1]]


def encode(doc):
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def raw_rotate(label, pin_file):
    """Rotate every due bench-* key by hand, as key_rotate does; return the timings and the number rotated."""
    from pkcs11 import Attribute as A, KeyType, Mechanism, ObjectClass  # pylint: disable=import-outside-toplevel

    evidence = [A.LOCAL, A.SENSITIVE, A.ALWAYS_SENSITIVE, A.NEVER_EXTRACTABLE, A.EXTRACTABLE]
    operator = getpass.getuser()
    start = time.perf_counter()
    with open_session(label, pin_file) as session:
        find_start = time.perf_counter()
        now = datetime.now(timezone.utc).replace(microsecond=0)
        stamp = now.isoformat()
        due = []  # (metadata object, its document) of every due active bench-* version
        for obj in session.get_objects({A.CLASS: ObjectClass.DATA, A.APPLICATION: METADATA_APPLICATION}):
            if not obj[A.LABEL].startswith("bench-"):
                continue
            doc = json.loads(bytes(obj[A.VALUE]))
            created = datetime.fromisoformat(doc["created"])
            if doc["state"] == "active" and created + timedelta(seconds=seconds(doc["rotation_period"])) <= now:
                due.append((obj, doc))
        secret_keys = {obj[A.LABEL]: obj for obj in session.get_objects({A.CLASS: ObjectClass.SECRET_KEY})}
        loop_start = time.perf_counter()
        for old_metadata, old in sorted(due, key=lambda entry: entry[1]["name"]):
            name, number = old["name"], old["version"] + 1
            new_label, key_id = "%s:v%d" % (name, number), os.urandom(16)
            usage = set(old["usage"])
            template = {  # _key_templates._generate_secret
                A.TOKEN: True, A.PRIVATE: True, A.MODIFIABLE: True, A.SENSITIVE: True,
                A.EXTRACTABLE: old["distributable"], A.ENCRYPT: True, A.DECRYPT: "decrypt" in usage,
                A.WRAP: "wrap" in usage, A.UNWRAP: "unwrap" in usage, A.SIGN: "sign" in usage,
                A.VERIFY: "verify" in usage, A.DERIVE: "derive" in usage,
            }
            key = session.generate_key(KeyType.AES, old["size"], id=key_id, label=new_label, store=True,
                                       template=template)
            kcv = bytes(key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))[:3].hex()
            new = {field: old[field] for field in SPEC_FIELDS}
            new.update({"schema": 1, "revision": 1, "version": number, "id": key_id.hex(), "state": "active",
                        "created": stamp, "retain_until": None, "key_check_value": kcv,
                        "public_key_fingerprint": None,
                        "transitions": [{"state": "active", "at": stamp, "by": operator, "reason": "generated"}]})
            session.create_object({A.CLASS: ObjectClass.DATA, A.TOKEN: True, A.PRIVATE: True, A.MODIFIABLE: True,
                                   A.LABEL: new_label, A.APPLICATION: METADATA_APPLICATION, A.VALUE: encode(new)})
            key.get_attributes(evidence)

            old_key = secret_keys["%s:v%d" % (name, old["version"])]
            for use in PROTECTING_USAGES:
                if use in usage:
                    old_key[getattr(A, use.upper())] = False
            retired = dict(old, state="deactivated", revision=old["revision"] + 1,
                           retain_until=(now + timedelta(seconds=seconds(old["retention_period"]))).isoformat(),
                           transitions=old["transitions"] + [{"state": "deactivated", "at": stamp, "by": operator,
                                                              "reason": "scheduled"}])
            session.create_object({A.CLASS: ObjectClass.DATA, A.TOKEN: True, A.PRIVATE: True, A.MODIFIABLE: True,
                                   A.LABEL: old_metadata[A.LABEL], A.APPLICATION: METADATA_APPLICATION,
                                   A.VALUE: encode(retired)})
        end = time.perf_counter()
    return {"raw": end - find_start, "raw_find": loop_start - find_start, "raw_loop": end - loop_start,
            "raw_session": time.perf_counter() - start, "rotated": len(due)}


def check_token(label, pin_file):
    """What the token holds for the bench-* keys, from the metadata JSON and the key objects themselves."""
    from pkcs11 import Attribute as A, ObjectClass  # pylint: disable=import-outside-toplevel

    with open_session(label, pin_file) as session:
        docs = [json.loads(bytes(obj[A.VALUE]))
                for obj in session.get_objects({A.CLASS: ObjectClass.DATA, A.APPLICATION: METADATA_APPLICATION})
                if obj[A.LABEL].startswith("bench-")]
        encrypt = {obj[A.LABEL]: bool(obj[A.ENCRYPT])
                   for obj in session.get_objects({A.CLASS: ObjectClass.SECRET_KEY})
                   if obj[A.LABEL].startswith("bench-")}
    revisions = ["%s:v%d/%d" % (doc["name"], doc["version"], doc["revision"]) for doc in docs]
    newest = {}  # metadata revisions are append-only: the highest revision of each version counts
    for doc in docs:
        label = "%s:v%d" % (doc["name"], doc["version"])
        if label not in newest or doc["revision"] > newest[label]["revision"]:
            newest[label] = doc
    metadata_objects = len(docs)
    docs = list(newest.values())
    keys = {}
    for doc in docs:
        keys.setdefault(doc["name"], []).append(doc)
    return {
        "keys": len(keys),
        "keys_with_one_active_version": sum(1 for versions in keys.values()
                                            if [d["state"] for d in versions].count("active") == 1),
        "metadata_objects": metadata_objects,
        "versions_with_duplicate_metadata": len(revisions) - len(set(revisions)),
        "states": {state: sum(1 for d in docs if d["state"] == state) for state in sorted({d["state"] for d in docs})},
        "secret_keys": len(encrypt),
        "secret_keys_encrypt_on": sum(encrypt.values()),
        "active_encrypt_on": sum(1 for d in docs if d["state"] == "active" and encrypt.get(
            "%s:v%d" % (d["name"], d["version"]))),
    }


# ---- controller ----------------------------------------------------------------------------------------------

def child(token, mode):
    return json.loads(run([PYTHON, __file__, mode, token.label, str(token.pin_file)], env=token.env))


def expected_state(n):
    """Every key rotated once: v1 deactivated (CKA_ENCRYPT off, two metadata revisions), v2 active (on, one)."""
    return {"keys": n, "keys_with_one_active_version": n, "metadata_objects": 3 * n,
            "versions_with_duplicate_metadata": 0, "states": {"active": n, "deactivated": n} if n else {},
            "secret_keys": 2 * n, "secret_keys_encrypt_on": n, "active_encrypt_on": n}


def rotate_task(token):
    options = dict(token.connection(), all_due=True, **batch_options())
    return {"name": "key_rotate", "secops.keylifecycle.key_rotate": options}


def prepare(ansible, token, n):
    """key_generate N keys with rotation_period 1s (one task), then wait until all of them are due."""
    task = generate_task(token, n)
    for spec in task["secops.keylifecycle.key_generate"]["keys"]:
        spec["rotation_period"] = "%ds" % ROTATION_PERIOD
    ansible.play(token, task)
    # created (whole seconds) is taken in the module, before the play ended: due at most ROTATION_PERIOD later
    time.sleep(ROTATION_PERIOD + 0.05)


def check(token, n, what):
    found = child(token, "_check")
    if found != expected_state(n):
        raise SystemExit("%s: the token holds %s, expected %s" % (what, found, expected_state(n)))
    return found


def bench_size(n, args, ansible):
    """Module and raw for one N, alternating over --repeat runs, each on a fresh token."""
    tokens = args.work_dir / ("tokens-%d" % n)
    result = {"n": n, "loadavg_start": os.getloadavg()[0], "module_runs": [], "raw_runs": []}
    for i in range(args.repeat):
        print("N=%d run %d/%d ..." % (n, i + 1, args.repeat), file=sys.stderr, flush=True)
        token = Token(tokens / ("module-%d" % i))
        baseline, baseline_task = ansible.play(token, rotate_task(token))  # nothing on the token yet
        prepare(ansible, token, n)
        total, task = ansible.play(token, rotate_task(token))
        check(token, n, "key_rotate")
        result["module_runs"].append({"baseline": baseline, "baseline_task": baseline_task, "total": total,
                                      "task": task})

        token = Token(tokens / ("raw-%d" % i))
        prepare(ansible, token, n)
        start = time.perf_counter()
        raw = child(token, "_raw")
        raw["raw_process"] = time.perf_counter() - start
        if raw["rotated"] != n:
            raise SystemExit("raw python-pkcs11 found %d due keys, expected %d" % (raw["rotated"], n))
        check(token, n, "raw python-pkcs11")
        result["raw_runs"].append(raw)
    result["loadavg_end"] = os.getloadavg()[0]

    module = {key: median_of(result["module_runs"], key) for key in ("baseline", "baseline_task", "total", "task")}
    module["net"] = module["total"] - module["baseline"]
    result["module"] = module
    result["raw"] = {key: median_of(result["raw_runs"], key)
                     for key in ("raw", "raw_find", "raw_loop", "raw_session", "raw_process")}
    result["net_vs_raw"] = module["net"] / result["raw"]["raw"]
    result["task_vs_raw"] = module["task"] / result["raw"]["raw"]
    return result


def scaling(results):
    """t(largest N) / t(smallest N), next to the ratio of the Ns (linear)."""
    if len(results) < 2:
        return None
    small, large = results[0], results[-1]
    ratios = {"module_" + key: large["module"][key] / small["module"][key] for key in ("net", "task", "total")}
    ratios.update({key: large["raw"][key] / small["raw"][key] for key in ("raw", "raw_find", "raw_loop")})
    return dict(ratios, **{"from": small["n"], "to": large["n"], "n_ratio": large["n"] / small["n"]})


def report(results, scale, fs):
    header = ("N", "module_net", "module_task", "module_total", "baseline", "raw", "net/raw", "task/raw")
    rows = []
    for r in results:
        values = (r["module"]["net"], r["module"]["task"], r["module"]["total"], r["module"]["baseline"],
                  r["raw"]["raw"], r["net_vs_raw"], r["task_vs_raw"])
        rows.append((str(r["n"]),) + tuple("%.2f" % value for value in values))
    print("\nkey_rotate all_due vs raw python-pkcs11, work folder on %s\n" % fs)
    table(header, rows)
    print("\nSeconds, medians of %d runs, each on a fresh token. module_net = module_total - baseline (the same "
          "key_rotate task on the same token before its keys were generated: ansible-playbook, module, login, "
          "checkpoint; no key). module_task = the task alone (callback bench_task_time). raw = python-pkcs11, "
          "session open: find the due keys + the rotation loop. Target net/raw <= %.1f." % (
              len(results[0]["module_runs"]), TARGET_NET_VS_RAW))
    for r in results:
        m, raw, n = r["module"], r["raw"], r["n"]
        print("N=%d (load average %.2f -> %.2f): net/raw %.2f, target %s" % (
            n, r["loadavg_start"], r["loadavg_end"], r["net_vs_raw"],
            "met" if r["net_vs_raw"] <= TARGET_NET_VS_RAW else "NOT met"))
        print("  baseline task %.2f; raw = find %.3f + loop %.2f; with load+login %.2f, whole process %.2f" % (
            m["baseline_task"], raw["raw_find"], raw["raw_loop"], raw["raw_session"], raw["raw_process"]))
        print("  per key: module_net %.2f ms, module_task %.2f ms, raw %.2f ms" % (
            1000 * m["net"] / n, 1000 * m["task"] / n, 1000 * raw["raw"] / n))
        for runs, key in (("module_runs", "total"), ("module_runs", "task"), ("module_runs", "baseline"),
                          ("raw_runs", "raw")):
            print("  runs %s: %s" % (key, " ".join("%.2f" % run[key] for run in r[runs])))
    if scale:
        print("Scaling N=%(from)d -> N=%(to)d (N x%(n_ratio).0f, linear = x%(n_ratio).0f): module_net "
              "x%(module_net).2f, module_task x%(module_task).2f, module_total x%(module_total).2f, raw x%(raw).2f "
              "(find x%(raw_find).2f, loop x%(raw_loop).2f)" % scale)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--collections-path", type=Path, required=True,
                        help="collections path where secops.keylifecycle is installed (run_rotate.sh does this)")
    parser.add_argument("--work-dir", type=Path, required=True, help="scratch folder for tokens and playbooks")
    parser.add_argument("--sizes", default="100,1000", help="comma-separated numbers of keys (default 100,1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each method per N (median, default 3)")
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "rotate-latest.json")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    env = environment(args.work_dir)  # before the run: the collection was built from this checkout just now

    ansible = Ansible(args.work_dir, args.collections_path)
    warmup = Token(args.work_dir / "warmup")
    ansible.play(warmup, rotate_task(warmup))  # discarded: first run compiles and caches
    results = [bench_size(n, args, ansible) for n in sizes]
    scale = scaling(results)
    report(results, scale, env["work_dir_fs"])

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "environment": env, "sizes": sizes, "repeat": args.repeat, "rotation_period_s": ROTATION_PERIOD,
        "targets": {"module_net_vs_raw_max": TARGET_NET_VS_RAW}, "results": results, "scaling": scale,
    }, indent=2) + "\n")
    print("\nJSON: %s" % args.output)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_raw":
        print(json.dumps(raw_rotate(sys.argv[2], sys.argv[3])))
    elif len(sys.argv) > 1 and sys.argv[1] == "_check":
        print(json.dumps(check_token(sys.argv[2], sys.argv[3])))
    else:
        main()
