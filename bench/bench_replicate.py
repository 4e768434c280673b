"""Benchmark replication and restore (see bench/README.md, "Replication benchmark").

For each N, --repeat times, on fresh SoftHSM2 tokens (primary, replica, restored; each in a token folder and
``SOFTHSM2_CONF`` of its own, as separate HSMs are, and each task runs in its token's environment):
N AES-256 keys with ``backup: true`` are generated in the primary, the replica is enrolled (``recipient_enroll``)
and approved by the primary's Security Officer (``recipient_approve`` kind replica), the restored token likewise by
the replica's; none of this is timed. Then, timed:

* replicate: one play of three tasks: ``replica_install`` on the replica (what it holds), ``key_replicate`` on the
  primary and ``replica_install`` on the replica with the packages it returned (the N wraps, signing, and the N
  checked unwraps and stores). ``module_net`` is that play minus the same play on a token set prepared the same
  way with one key (same Ansible start, module transfers, logins, enumerations of the collection's own objects,
  documents and package signer; a baseline that holds the N keys would subtract their enumeration and metadata
  reads, which are part of the work).
* restore: the same the other way, ``key_replicate restore: true`` on the replica and ``replica_install restore:
  true`` on the restored token, with the same one-key baseline.
* raw: python-pkcs11, one process on each side (the source's HSM, then the target's), on a second set of tokens
  set up the same way: for each key C_WrapKey (CKM_RSA_PKCS_OAEP) under the same kind of trusted replica key in the
  source token, and C_UnwrapKey into the target token (a token object, sensitive, extractable only under trusted keys): the same wraps and unwraps, and
  nothing else (no signature, no check value, no metadata).

The ratio module_net / raw is reported (target 1.5), never asserted. After each run the target tokens are counted:
N secret keys each, or the run stops.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

from bench_generate import PKCS11_MODULE, PYTHON, Ansible, environment, key_names, run

TARGET_NET_VS_RAW = 1.5
LABELS = ("kl-primary", "kl-replica", "kl-restored")
#: the primary's policy: the collection's signing keys are backed up too, so the replica signs the restore with them
POLICY = {"require_backup": True}


class Tokens:
    """Three fresh SoftHSM2 tokens, each in a token folder of its own (one ``SOFTHSM2_CONF`` per token, as a primary
    and its replica are separate HSMs: SoftHSM2 reads every token of its folder at each C_Initialize), with 0600
    user and SO PIN files each."""

    def __init__(self, root):
        self.root = root
        self.env = {}  # the play's environment: each task names its own token's (``task``)
        for label in LABELS:
            folder = root / label
            (folder / "tokens").mkdir(parents=True)
            (folder / "softhsm2.conf").write_text("directories.tokendir = %s\nobjectstore.backend = file\n"
                                                  "log.level = ERROR\n" % (folder / "tokens"))
            for kind in ("user", "so"):
                path = root / ("%s.%s.pin" % (label, kind))
                path.write_text(secrets.token_hex(8) + "\n")
                path.chmod(0o600)
            run(["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", self.pin(label, "so"),
                 "--pin", self.pin(label, "user")], env=self.env_of(label))

    def env_of(self, label):
        return {"SOFTHSM2_CONF": str(self.root / label / "softhsm2.conf")}

    def pin(self, label, kind="user"):
        return (self.root / ("%s.%s.pin" % (label, kind))).read_text().strip()

    def connection(self, label):
        return {"pkcs11_module": PKCS11_MODULE, "token_label": label,
                "user_pin_file": str(self.root / ("%s.user.pin" % label))}

    def task(self, name, module, args, register=None):
        """A task of ``module`` on the token its ``token_label`` names, in that token's environment."""
        entry = task(name, module, args, register)
        entry["environment"] = self.env_of(args["token_label"])
        return entry

    def child(self, mode, label, *args):
        """This script in a child process on token ``label`` (its environment); returns its JSON and seconds."""
        start = time.perf_counter()
        out = run([PYTHON, __file__, mode, str(self.root), label, *map(str, args)], env=self.env_of(label))
        return json.loads(out), time.perf_counter() - start


def task(name, module, args, register=None):
    entry = {"name": name, "secops.keylifecycle.%s" % module: args}
    if register:
        entry["register"] = register
    return entry


def _officer(tokens, label):
    """recipient_approve's connection: the token and its SO PIN file (no user PIN)."""
    return {"pkcs11_module": PKCS11_MODULE, "token_label": label,
            "so_pin_file": str(tokens.root / ("%s.so.pin" % label))}


def setup(ansible, tokens, n):
    """Keys in the primary; the replica enrolled and approved by the primary's officer, the restored token by the
    replica's (not timed)."""
    primary, replica, restored = (tokens.connection(label) for label in LABELS)
    keys = [{"name": name, "backup": True} for name in key_names(n)]
    ansible.play_tasks(tokens, [
        tokens.task("generate", "key_generate", dict(primary, keys=keys, return_records=False, policy=POLICY)),
        tokens.task("signer", "key_info", dict(primary, name=["package-signing"]), "info"),
        tokens.task("enroll replica", "recipient_enroll", dict(replica, package_signer="{{ info.package_signer }}"),
                    "replica_enrolled"),
        tokens.task("approve replica", "recipient_approve", dict(_officer(tokens, "kl-primary"), recipients=[{
            "name": "replica", "kind": "replica",
            "public_key_pem": "{{ replica_enrolled.transport_key.public_key_pem }}"}]))])
    save_enrollment(ansible, tokens, "kl-replica")


def setup_restore(ansible, tokens):
    """The restored token's officer pins the replica's restore signer (made by replica_install with the first
    copies), trusted; the token enrolled and approved by the replica's officer (not timed)."""
    replica, restored = tokens.connection("kl-replica"), tokens.connection("kl-restored")
    ansible.play_tasks(tokens, [
        tokens.task("signer of the replica", "key_info", dict(replica, name=["restore-signing"]), "rinfo"),
        tokens.task("officer pins it", "package_signer_approve", dict(_officer(tokens, "kl-restored"),
                                                                      package_signer="{{ rinfo.restore_signer }}",
                                                                      fingerprint="{{ rinfo.restore_signer.fingerprint }}")),
        tokens.task("enroll restored", "recipient_enroll", dict(restored, package_signer="{{ rinfo.restore_signer }}"),
                    "restored_enrolled"),
        tokens.task("approve restored", "recipient_approve", dict(_officer(tokens, "kl-replica"), recipients=[{
            "name": "restored", "kind": "replica",
            "public_key_pem": "{{ restored_enrolled.transport_key.public_key_pem }}"}]))])
    save_enrollment(ansible, tokens, "kl-restored")


def copy_tasks(tokens, source, target, name, restore):
    """key_replicate on ``source`` for ``target`` (enrolled as ``name``), then replica_install on ``target``."""
    src, dst = tokens.connection(source), tokens.connection(target)
    transport = "{{ (lookup('ansible.builtin.file', '%s') | from_json).transport_key.public_key_pem }}" % (
        tokens.root / ("%s.enrollment.json" % target))
    replica = {"name": name, "public_key_pem": transport, "held": "{{ held.held }}",
               "documents": "{{ held.documents }}"}
    return [tokens.task("held", "replica_install", dict(dst, restore=restore), "held"),
            tokens.task("replicate", "key_replicate", dict(src, restore=restore, policy=POLICY, package_format="jsonl",
                                                           return_records=False, replicas=[replica]), "made"),
            tokens.task("install", "replica_install", dict(dst, restore=restore, return_records=False,
                                                           packages="{{ made.replicas[0].packages }}",
                                                           kek="{{ made.replicas[0].kek }}",
                                                           documents="{{ made.replicas[0].documents }}"))]


def save_enrollment(ansible, tokens, label):
    """The target's enrollment (its transport public key), read again with recipient_enroll (idempotent), for the
    copy play."""
    ansible.play_tasks(tokens, [
        tokens.task("enrollment of %s" % label, "recipient_enroll", tokens.connection(label), "enrollment"),
        {"name": "save %s" % label, "ansible.builtin.copy": {
            "content": "{{ enrollment | to_json }}", "dest": str(tokens.root / ("%s.enrollment.json" % label)),
            "mode": "0600"}}])


def timed_copy(ansible, tokens, source, target, name, restore):
    """Wall time of the copy play (ansible-playbook start to end) and of its three tasks (held, replicate,
    install)."""
    return ansible.play_tasks(tokens, copy_tasks(tokens, source, target, name, restore))


# ---- child process: raw python-pkcs11 -----------------------------------------------------------------------

def _session(root, label):
    import pkcs11
    token = pkcs11.lib(PKCS11_MODULE).get_token(token_label=label)
    pin = (Path(root) / ("%s.user.pin" % label)).read_text().strip()
    return token.open(rw=True, user_pin=pin)


def raw_wrap(root, source, out, with_metadata=False):
    """C_WrapKey of every bench key in ``source`` under its trusted replica key (this process: the source's HSM);
    the blobs go to the file ``out`` for ``raw_unwrap``. Returns the seconds of the wraps. ``with_metadata``: also
    read each key's metadata object (one search of the data objects), which ``raw_unwrap`` creates in the target,
    as a replica that is a key store of its own needs."""
    from pkcs11 import MGF, Attribute, Mechanism, ObjectClass

    oaep = (Mechanism.SHA_1, MGF.SHA1, None)
    with _session(root, source) as session:
        trusted = next(iter(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.TRUSTED: True})))
        keys = sorted(((obj[Attribute.LABEL], obj) for obj in session.get_objects({
            Attribute.CLASS: ObjectClass.SECRET_KEY}) if obj[Attribute.LABEL].startswith("bench-")),
            key=lambda pair: pair[0])
        start = time.perf_counter()
        metadata = {}
        if with_metadata:
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.DATA,
                                            Attribute.APPLICATION: "secops.keylifecycle"}):
                metadata[obj[Attribute.LABEL]] = bytes(obj[Attribute.VALUE])
        blobs = [(label, bytes(trusted.wrap_key(key, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=oaep)))
                 for label, key in keys]
        wraps = time.perf_counter() - start
    Path(out).write_text(json.dumps([[label, blob.hex(), metadata[label].hex() if with_metadata else None]
                                     for label, blob in blobs]))
    return {"wraps": wraps, "keys": len(blobs)}


def raw_unwrap(root, target, blobs_file):
    """C_UnwrapKey of each blob ``raw_wrap`` wrote into ``target`` (this process: the target's HSM) as a sensitive
    token object with the transport private key there, and its metadata object when ``raw_wrap`` read them.
    Returns the seconds of the unwraps."""
    from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass

    oaep = (Mechanism.SHA_1, MGF.SHA1, None)
    blobs = [(label, bytes.fromhex(blob), bytes.fromhex(meta) if meta else None)
             for label, blob, meta in json.loads(Path(blobs_file).read_text())]
    with _session(root, target) as session:
        transport = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="keylifecycle-transport")
        start = time.perf_counter()
        for label, blob, metadata in blobs:
            transport.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, blob, label=label, store=True,
                                 mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=oaep,
                                 template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True,
                                           Attribute.WRAP_WITH_TRUSTED: True, Attribute.PRIVATE: True})
            if metadata is not None:
                session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True,
                                       Attribute.PRIVATE: True, Attribute.LABEL: label,
                                       Attribute.APPLICATION: "secops.keylifecycle", Attribute.VALUE: metadata})
        unwraps = time.perf_counter() - start
    return {"unwraps": unwraps, "keys": len(blobs)}


def raw_copy(tokens, source, target, with_metadata=False):
    """The raw wraps in ``source`` and unwraps into ``target``, each side in a process of its own HSM (token
    folder); returns the seconds of the wraps and of the unwraps (the loops only)."""
    blobs = tokens.root / ("raw-%s-%s.json" % (source, target))
    wrapped = tokens.child("_raw_wrap", source, blobs, int(with_metadata))[0]
    unwrapped = tokens.child("_raw_unwrap", target, blobs)[0]
    blobs.unlink()
    if wrapped["keys"] != unwrapped["keys"]:
        raise SystemExit("raw copy: %d wrapped, %d unwrapped" % (wrapped["keys"], unwrapped["keys"]))
    return {"raw": wrapped["wraps"] + unwrapped["unwraps"], "wraps": wrapped["wraps"],
            "unwraps": unwrapped["unwraps"], "keys": unwrapped["keys"]}


def count_bench_keys(root, label):
    from pkcs11 import Attribute, ObjectClass
    with _session(root, label) as session:
        return {"secret_keys": sum(1 for obj in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})
                                   if obj[Attribute.LABEL].startswith("bench-"))}


# ---- controller ------------------------------------------------------------------------------------------------

def check(tokens, label, n, what):
    counts = tokens.child("_count", label)[0]
    if counts != {"secret_keys": n}:
        raise SystemExit("%s left %s on %s, expected %d bench keys" % (what, counts, label, n))


def _raw_restore_setup(ansible, tokens):
    """The raw set's restored token: enrolled and approved by the replica's officer (the raw replica holds bare
    copies, no package signer: the primary's signer is pinned)."""
    ansible.play_tasks(tokens, [
        tokens.task("signer", "key_info", dict(tokens.connection("kl-primary"), name=["package-signing"]), "info"),
        tokens.task("enroll restored", "recipient_enroll", dict(tokens.connection("kl-restored"),
                                                                package_signer="{{ info.package_signer }}"), "enrolled"),
        tokens.task("approve restored", "recipient_approve", dict(_officer(tokens, "kl-replica"), recipients=[{
            "name": "restored", "kind": "replica",
            "public_key_pem": "{{ enrolled.transport_key.public_key_pem }}"}]))])


def copy_both_ways(ansible, tokens, n):
    """(replicate, restore): wall time and task times on ``tokens`` holding ``n`` backup keys, each checked
    afterwards."""
    setup(ansible, tokens, n)
    replicate = timed_copy(ansible, tokens, "kl-primary", "kl-replica", "replica", False)
    check(tokens, "kl-replica", n, "replication")
    setup_restore(ansible, tokens)
    restore = timed_copy(ansible, tokens, "kl-replica", "kl-restored", "restored", True)
    check(tokens, "kl-restored", n, "restore")
    return replicate, restore


def bench_size(n, args, ansible):
    result = {"n": n, "loadavg_start": os.getloadavg()[0], "runs": []}
    for i in range(args.repeat):
        base_replicate, base_restore = copy_both_ways(ansible, Tokens(args.work_dir / ("base-%d-%d" % (n, i))), 1)
        replicate, restore = copy_both_ways(ansible, Tokens(args.work_dir / ("tokens-%d-%d" % (n, i))), n)

        raw_tokens = Tokens(args.work_dir / ("raw-%d-%d" % (n, i)))
        setup(ansible, raw_tokens, n)
        raw_replicate = raw_copy(raw_tokens, "kl-primary", "kl-replica")
        check(raw_tokens, "kl-replica", n, "raw replication")
        meta_tokens = Tokens(args.work_dir / ("raw-metadata-%d-%d" % (n, i)))
        setup(ansible, meta_tokens, n)
        raw_metadata = raw_copy(meta_tokens, "kl-primary", "kl-replica", with_metadata=True)
        check(meta_tokens, "kl-replica", n, "raw replication with metadata")
        _raw_restore_setup(ansible, raw_tokens)
        raw_restore = raw_copy(raw_tokens, "kl-replica", "kl-restored")
        check(raw_tokens, "kl-restored", n, "raw restore")
        result["runs"].append({
            "replicate": replicate[0], "replicate_baseline": base_replicate[0], "restore": restore[0],
            "restore_baseline": base_restore[0], "replicate_tasks": replicate[1], "restore_tasks": restore[1],
            "replicate_baseline_tasks": base_replicate[1], "restore_baseline_tasks": base_restore[1],
            "raw_replicate": raw_replicate["raw"], "raw_replicate_metadata": raw_metadata["raw"],
            "raw_restore": raw_restore["raw"], "raw_wraps": raw_replicate["wraps"],
            "raw_unwraps": raw_replicate["unwraps"]})
    med = {key: statistics.median(run_[key] for run_ in result["runs"]) for key in result["runs"][0]
           if not key.endswith("_tasks")}
    for key in [key for key in result["runs"][0] if key.endswith("_tasks")]:  # held, replicate, install
        med[key] = [statistics.median(run_[key][i] for run_ in result["runs"]) for i in range(3)]
    # the baseline copies one key: the net is for n - 1 keys, scaled to n
    med["replicate_net"] = (med["replicate"] - med["replicate_baseline"]) * n / max(n - 1, 1)
    med["restore_net"] = (med["restore"] - med["restore_baseline"]) * n / max(n - 1, 1)
    result["median"] = med
    result["replicate_net_vs_raw"] = med["replicate_net"] / med["raw_replicate"]
    result["replicate_net_vs_raw_metadata"] = med["replicate_net"] / med["raw_replicate_metadata"]
    result["restore_net_vs_raw"] = med["restore_net"] / med["raw_restore"]
    result["loadavg_end"] = os.getloadavg()[0]
    return result


def report(results):
    print("\n| N | replicate (play) | one key | net | raw wraps + unwraps | net/raw | restore (play) | one key | "
          "net | raw | net/raw |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m = r["median"]
        print("| %d | %.2f s | %.2f s | %.2f s | %.2f s | **%.2f** | %.2f s | %.2f s | %.2f s | %.2f s | **%.2f** |" % (
            r["n"], m["replicate"], m["replicate_baseline"], m["replicate_net"], m["raw_replicate"],
            r["replicate_net_vs_raw"], m["restore"], m["restore_baseline"], m["restore_net"], m["raw_restore"],
            r["restore_net_vs_raw"]))
    print("target net/raw <= %.1f (reported, not asserted)" % TARGET_NET_VS_RAW)
    for r in results:
        print("N=%d: raw with the metadata objects copied too %.2f s, replicate net / that %.2f" % (
            r["n"], r["median"]["raw_replicate_metadata"], r["replicate_net_vs_raw_metadata"]))
    print("\nTasks (held, key_replicate, replica_install), seconds, N keys and one key:")
    for r in results:
        m = r["median"]
        for what in ("replicate", "restore"):
            tasks = " / ".join("%.2f" % t for t in m[what + "_tasks"])
            baseline = " / ".join("%.2f" % t for t in m[what + "_baseline_tasks"])
            print("  N=%d %s: %s  one key: %s" % (r["n"], what, tasks, baseline))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--collections-path", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results" / "replicate.json")
    args = parser.parse_args()
    env = environment(args.work_dir)
    ansible = Ansible(args.work_dir, args.collections_path)
    results = []
    for n in sorted(int(size) for size in args.sizes.split(",")):
        print("N=%d ..." % n, file=sys.stderr, flush=True)
        results.append(bench_size(n, args, ansible))
    report(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"environment": env, "repeat": args.repeat, "target_net_vs_raw":
                                       TARGET_NET_VS_RAW, "results": results}, indent=2) + "\n")
    print("\nJSON: %s" % args.output)


if __name__ == "__main__":
    # child processes (Tokens.child): MODE ROOT LABEL ARGS..., in the environment of token LABEL
    if len(sys.argv) > 1 and sys.argv[1] == "_raw_wrap":
        print(json.dumps(raw_wrap(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1")))
    elif len(sys.argv) > 1 and sys.argv[1] == "_raw_unwrap":
        print(json.dumps(raw_unwrap(sys.argv[2], sys.argv[3], sys.argv[4])))
    elif len(sys.argv) > 1 and sys.argv[1] == "_count":
        print(json.dumps(count_bench_keys(sys.argv[2], sys.argv[3])))
    else:
        main()
