"""What trusted wrapping and package signing cost per key, in process on a real SoftHSM2 token (bench/README.md,
"Distribution benchmark", part 1).

One fresh token; one child process (SoftHSM2 reads SOFTHSM2_CONF once per process) does, with python-pkcs11:

- set-up, not timed: a recipient's RSA-3072 transport key pair made in software (``cryptography``), N AES-256 keys
  generated as the collection did before trusted wrapping (CKA_EXTRACTABLE true) and N generated as it does now
  (CKA_EXTRACTABLE and CKA_WRAP_WITH_TRUSTED true); once, timed separately: the Security Officer's approval (an SO
  session creates the recipient's public key with CKA_TRUSTED true, CKA_WRAP true, CKA_MODIFIABLE false) and the
  package-signing key (the collection's ``PackageSigner.prepare``, EC P-256 generated in the token);
- then, ``--repeat`` times, alternating, each over the N keys (RSA-OAEP with SHA-1, SoftHSM2 2.6's only OAEP hash):
  a. ``old``: the recipient's public key imported as a session object (C_CreateObject), per key C_WrapKey under it
     and the package built (base64 of the blob, the metadata fields); the session key destroyed. What
     ``key_distribute`` did before trusted wrapping, per recipient and run.
  b. ``trusted``: the trusted key found in the token (one C_FindObjects on CKA_TRUSTED and CKA_WRAP), per key
     C_WrapKey of a wrap-with-trusted key under it and the same package. Trusted wrapping without signing.
  c. ``new``: as b, and per key the package signed by the collection's ``PackageSigner.sign`` (canonical JSON of the
     metadata with the blob's SHA-256, SHA-256, C_Sign CKM_ECDSA in the token, DER, base64). What ``key_distribute``
     does now.

Checks (a failure stops the run): the token refuses to wrap a wrap-with-trusted key under the session key
(CKR_KEY_NOT_WRAPPABLE); the user session cannot create a CKA_TRUSTED key (CKR_ATTRIBUTE_READ_ONLY); a blob of b,
unwrapped with the software private key, has the token's key check value; a package of c verifies with the signer's
public key (``_package_signing.verify_package``). Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
PKCS11_MODULE = os.environ.get("KL_BENCH_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
LABEL = "kl-bench-cost"


# ---- child process: the token work ---------------------------------------------------------------------------

def _aes_template(trusted):
    from pkcs11 import Attribute as A

    template = {  # a distributable AES-256 key for [encrypt, decrypt], as _key_store generates it
        A.TOKEN: True, A.PRIVATE: True, A.MODIFIABLE: True, A.SENSITIVE: True, A.EXTRACTABLE: True,
        A.ENCRYPT: True, A.DECRYPT: True, A.WRAP: False, A.UNWRAP: False, A.SIGN: False, A.VERIFY: False,
        A.DERIVE: False,
    }
    if trusted:
        template[A.WRAP_WITH_TRUSTED] = True
    return template


def _package(index, key_id, kcv, blob, spki_fingerprint):
    """The metadata key_distribute puts in a package (the same for every path), with the wrapped blob."""
    return {"name": "bench-%04d" % index, "version": 1, "id": key_id, "type": "aes", "size": 256,
            "usage": ["decrypt", "encrypt"], "state": "active", "retain_until": None, "key_check_value": kcv,
            "recipient": "svc1", "recipient_host": "r1", "transport_key_fingerprint": spki_fingerprint,
            "mechanism": "CKM_RSA_PKCS_OAEP:sha1", "action": "install",
            "wrapped": base64.b64encode(blob).decode("ascii")}


def measure(collections_path, label, pin_file, so_pin_file, n_keys, repeat):
    """The token work of the three paths (see the module docstring); returns the timings as a dict."""
    # pylint: disable=import-outside-toplevel,too-many-locals,too-many-statements
    sys.path.insert(0, str(collections_path))
    import pkcs11
    import pkcs11.exceptions as p11_exc
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from pkcs11 import Attribute as A, KeyType, Mechanism, ObjectClass
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_store import TokenKeyStore
    from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import (
        PackageSigner,
        load_signer_public_key,
        verify_package,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import spki_fingerprint
    from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import oaep_parameters

    token = pkcs11.lib(PKCS11_MODULE).get_token(token_label=label)
    user_pin = Path(pin_file).read_text().rstrip("\n")
    so_pin = Path(so_pin_file).read_text().rstrip("\n")
    recipient = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    numbers = recipient.public_key().public_numbers()
    modulus, exponent = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"), numbers.e.to_bytes(3, "big")
    fingerprint = spki_fingerprint(recipient.public_key())

    def with_(template, extra):
        return {**template, **extra}

    public = {A.CLASS: ObjectClass.PUBLIC_KEY, A.KEY_TYPE: KeyType.RSA, A.PRIVATE: False, A.MODULUS: modulus,
              A.PUBLIC_EXPONENT: exponent, A.WRAP: True, A.ENCRYPT: False, A.VERIFY: False}
    params = oaep_parameters("sha1")
    result = {"keys": n_keys, "repeat": repeat, "checks": {}}

    start = time.perf_counter()  # the Security Officer's approval, once per recipient (an SO session sees and
    with token.open(rw=True, so_pin=so_pin) as so_session:  # creates public objects only)
        so_session.create_object(with_(public, {A.TOKEN: True, A.TRUSTED: True, A.MODIFIABLE: False,
                                                A.LABEL: "trusted-transport:svc1@r1:" + fingerprint,
                                                A.ID: bytes.fromhex(fingerprint[7:39])}))
    result["approve_s"] = time.perf_counter() - start

    with token.open(rw=True, user_pin=user_pin) as session:
        old_keys, new_keys = [], []
        for index in range(1, n_keys + 1):
            for trusted, keys in ((False, old_keys), (True, new_keys)):
                key_id = os.urandom(16)
                key = session.generate_key(KeyType.AES, 256, id=key_id, store=True, template=_aes_template(trusted),
                                           label="bench-%s-%04d:v1" % ("new" if trusted else "old", index))
                kcv = bytes(key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))[:3].hex()
                keys.append((index, key, key_id.hex(), kcv))
        try:
            session.create_object(with_(public, {A.TOKEN: False, A.TRUSTED: True}))
        except p11_exc.AttributeReadOnly:
            result["checks"]["user_cannot_create_trusted"] = True
        else:
            raise SystemExit("check failed: a user session created a CKA_TRUSTED key")

        store = TokenKeyStore(session, label).load()
        signer = PackageSigner(store)
        start = time.perf_counter()
        signer.prepare("bench")
        result["signer_prepare_s"] = time.perf_counter() - start

        def old_path():
            packages = []
            wrapping_key = session.create_object(with_(public, {A.TOKEN: False}))
            try:
                for index, key, key_id, kcv in old_keys:
                    blob = bytes(wrapping_key.wrap_key(key, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=params))
                    packages.append(_package(index, key_id, kcv, blob, fingerprint))
            finally:
                wrapping_key.destroy()
            return packages

        def trusted_path(sign):
            found = list(session.get_objects({A.CLASS: ObjectClass.PUBLIC_KEY, A.TRUSTED: True, A.WRAP: True}))
            if len(found) != 1:
                raise SystemExit("check failed: %d trusted wrapping keys on the token, expected 1" % len(found))
            packages = []
            for index, key, key_id, kcv in new_keys:
                blob = bytes(found[0].wrap_key(key, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=params))
                package = _package(index, key_id, kcv, blob, fingerprint)
                packages.append(signer.sign(package) if sign else package)
            return packages

        def sign_only(packages):
            return [signer.sign(package) for package in packages]

        runs = {"old": [], "trusted": [], "new": [], "sign_only": []}
        last = {}
        for _round in range(repeat):
            for name, function in (("old", old_path), ("trusted", lambda: trusted_path(False)),
                                   ("new", lambda: trusted_path(True))):
                start = time.perf_counter()
                last[name] = function()
                runs[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            sign_only(last["trusted"])
            runs["sign_only"].append(time.perf_counter() - start)
        result["runs"] = runs

        # what the measurement stands on: the token refuses the old path for a wrap-with-trusted key, ...
        wrapping_key = session.create_object(with_(public, {A.TOKEN: False}))
        try:
            wrapping_key.wrap_key(new_keys[0][1], mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=params)
        except p11_exc.KeyNotWrappable:
            result["checks"]["untrusted_wrap_refused"] = True
        else:
            raise SystemExit("check failed: the token wrapped a CKA_WRAP_WITH_TRUSTED key under an untrusted key")
        finally:
            wrapping_key.destroy()
        # ... a trusted wrap unwraps (outside any HSM) to the key with the token's check value, ...
        for package in (last["trusted"][0], last["new"][-1]):
            secret = recipient.decrypt(base64.b64decode(package["wrapped"]), padding.OAEP(
                mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))  # nosec: SoftHSM2 2.6
            encryptor = Cipher(algorithms.AES(secret), modes.ECB()).encryptor()  # nosec: the key check value
            if (encryptor.update(bytes(16)) + encryptor.finalize())[:3].hex() != package["key_check_value"]:
                raise SystemExit("check failed: %s unwraps to another key" % package["name"])
        result["checks"]["unwrapped_kcv_matches"] = True
        # ... and a signed package verifies with the signer's public key
        verify_package(last["new"][0], load_signer_public_key(signer.public_record()["public_key_pem"]))
        result["checks"]["package_signature_verifies"] = True
    return result


# ---- controller ----------------------------------------------------------------------------------------------

def summarize(result):
    """Medians, ms per key, and the ratios to the old path."""
    n_keys = result["keys"]
    med = {name: statistics.median(values) for name, values in result["runs"].items()}
    per_key = {name: 1000.0 * value / n_keys for name, value in med.items()}
    return dict(result, median_s=med, ms_per_key=per_key,
                ratio_trusted=med["trusted"] / med["old"], ratio_new=med["new"] / med["old"],
                sign_ms_per_key=per_key["new"] - per_key["trusted"])


def report(summary, fs):
    n_keys = summary["keys"]
    ms = summary["ms_per_key"]
    print("\nPer-key cost in process (python-pkcs11, one session), %d keys, medians of %d, token on %s\n"
          % (n_keys, summary["repeat"], fs))
    rows = [("a. old: session key imported, C_WrapKey, package", ms["old"], 1.0),
            ("b. trusted key found, C_WrapKey (wrap-with-trusted), package", ms["trusted"], summary["ratio_trusted"]),
            ("c. new: b + package signed in the token (ECDSA P-256)", ms["new"], summary["ratio_new"])]
    width = max(len(r[0]) for r in rows)
    print("%s  %9s  %8s" % ("path".ljust(width), "ms/key", "x old"))
    for name, value, ratio in rows:
        print("%s  %9.3f  %8.2f" % (name.ljust(width), value, ratio))
    print("\nsigning alone (PackageSigner.sign on b's packages): %.3f ms/key; c - b: %.3f ms/key"
          % (ms["sign_only"], summary["sign_ms_per_key"]))
    print("once: the Security Officer's approval (SO login, C_CreateObject CKA_TRUSTED, logout) %.1f ms; the "
          "package-signing key generated %.1f ms" % (1000 * summary["approve_s"], 1000 * summary["signer_prepare_s"]))
    print("runs (s): " + "; ".join("%s %s" % (name, " ".join("%.3f" % v for v in values))
                                   for name, values in summary["runs"].items()))
    print("checks: " + ", ".join(sorted(name for name, ok in summary["checks"].items() if ok)))


def run_cost(collections_path, work_dir, n_keys, repeat):
    """A fresh token in ``work_dir``; the measurement in a child process; returns the summary."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.conftest import make_token  # pylint: disable=import-outside-toplevel

    token = make_token(Path(work_dir) / "cost-token", LABEL)
    cmd = [PYTHON, str(Path(__file__).resolve()), "_measure", "--collections-path", str(collections_path),
           "--pin-file", str(token.pin_file), "--so-pin-file", str(token.so_pin_file), "--keys", str(n_keys),
           "--repeat", str(repeat)]
    proc = subprocess.run(cmd, env={**os.environ, **token.env}, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit("per-key cost measurement failed (rc %d):\n%s%s"
                         % (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
    return summarize(json.loads(proc.stdout.strip().splitlines()[-1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("mode", nargs="?", choices=["_measure"], help=argparse.SUPPRESS)
    parser.add_argument("--collections-path", type=Path, required=True,
                        help="collections path where secops.keylifecycle is installed")
    parser.add_argument("--work-dir", type=Path, help="scratch folder for the token (not with _measure)")
    parser.add_argument("--pin-file", help=argparse.SUPPRESS)
    parser.add_argument("--so-pin-file", help=argparse.SUPPRESS)
    parser.add_argument("--keys", type=int, default=200, help="keys per path (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each path, median (default 3)")
    args = parser.parse_args()
    if args.mode == "_measure":
        print(json.dumps(measure(args.collections_path, LABEL, args.pin_file, args.so_pin_file, args.keys,
                                 args.repeat)))
        return
    if args.work_dir is None:
        parser.error("--work-dir is required")
    summary = run_cost(args.collections_path, args.work_dir, args.keys, args.repeat)
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(args.work_dir)], capture_output=True, text=True,
                        check=False).stdout.strip()
    report(summary, fs)


if __name__ == "__main__":
    main()
