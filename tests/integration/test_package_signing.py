"""HSM-signed packages at real ssh recipients: every forged package class is refused and changes nothing.

The HSM signs each package with its package-signing key; each recipient pinned that key's public half at
enrollment (playbooks/distribute.yml reads it with key_info on the HSM host). A package relabelled, with its usage
widened, its state altered, replayed, signed later than the recipient's time, meant for another recipient, or with a
bad signature is refused by key_install before anything is unwrapped, and the recipient's token (read by the
independent reader) is left as it was.
"""

from __future__ import annotations

import base64
import json

KEYS = [{"name": "pay", "distributable": True, "recipients": ["billing"], "retention_period": "30d",
         "usage": ["decrypt"]},
        {"name": "reporting", "distributable": True, "recipients": ["reports"], "usage": ["encrypt", "decrypt"]}]
SIGNER_LABEL = "keylifecycle-package-signer"


def snapshot(distribution, alias):
    return json.dumps(distribution.recipient_objects(alias), sort_keys=True)


def flip(text):
    raw = bytearray(base64.b64decode(text))
    raw[len(raw) // 2] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_forged_packages_are_refused_and_the_recipient_token_is_unchanged(runner, token, distribution):
    assert runner.task("key_generate", {"keys": KEYS}).task["changed"]
    first = distribution.playbook()
    assert first.returncode == 0, first.stdout + first.stderr
    _meta, keys = distribution.installed("r1")
    assert keys == {"pay:v1"}

    # the HSM's signer is pinned in each recipient's token: a public key that may only verify
    signer = runner.task("key_info", {"name": []}).task["package_signer"]
    for alias in ("r1", "r2"):
        [pinned] = [o for o in distribution.recipient_objects(alias) if o["label"] == SIGNER_LABEL]
        assert pinned["class"] == "PUBLIC_KEY" and pinned["verify"] and not pinned["encrypt"] and not pinned["wrap"]
        assert pinned["token"] and not pinned["private"]
    option = {"public_key_pem": signer["public_key_pem"], "fingerprint": signer["fingerprint"]}
    again = distribution.recipient_task("r1", "recipient_enroll", {"package_signer": option})
    assert not again.task.get("failed") and not again.task["changed"], again.task
    assert again.task["package_signer"]["fingerprint"] == signer["fingerprint"]

    enrolled = again.task
    r1 = {"name": "billing", "host": "r1", "public_key_pem": enrolled["transport_key"]["public_key_pem"]}

    def distribute(**extra):
        result = runner.task("key_distribute", {"oaep_hash": "sha1", "recipients": [dict(r1, **extra)]})
        assert not result.task.get("failed"), result.task
        assert result.task["package_signer"]["fingerprint"] == signer["fingerprint"]
        return result.task["recipients"][0]["packages"]

    # a package of v1 as it is now (active), signed now: applying it changes nothing
    [old_v1] = distribute(installed=[])
    assert old_v1["state"] == "active" and old_v1["signer_fingerprint"] == signer["fingerprint"]

    assert runner.task("key_rotate", {"name": ["pay"], "force": True}).task["changed"]
    current = distribution.recipient_task("r1", "recipient_enroll", {}).task["installed"]
    packages = {p["version"]: p for p in distribute(installed=current)}
    assert packages[1]["state"] == "deactivated" and packages[1]["wrapped"] is None
    assert packages[2]["state"] == "active" and packages[2]["wrapped"]
    v1, v2 = packages[1], packages[2]

    def install(alias, recipient, pkgs):
        return distribution.recipient_task(alias, "key_install", {"recipient": recipient, "packages": pkgs})

    def refused(alias, recipient, pkgs, message):
        before = snapshot(distribution, alias)
        result = install(alias, recipient, pkgs)
        assert result.task.get("failed") and result.task["error_kind"] == "package_rejected", result.task
        assert message in result.task["msg"] and "Nothing was installed" in result.task["msg"], result.task["msg"]
        assert snapshot(distribution, alias) == before
        return result

    forged = [
        ("relabelled name", [dict(v2, name="other", label="other:v2")], "does not verify"),
        ("relabelled version", [dict(v2, version=7, label="pay:v7")], "does not verify"),
        ("relabelled id", [dict(v2, id="ab" * 16)], "does not verify"),
        ("usage widened", [dict(v2, usage=["decrypt", "encrypt", "wrap", "sign"])], "does not verify"),
        ("state altered", [dict(v1, state="active"), v2], "does not verify"),
        ("other recipient, relabelled", [dict(v2, recipient="reports")], "addressed to recipient 'reports'"),
        ("transport key changed", [dict(v2, transport_key_fingerprint="sha256:" + "0" * 64)], "does not verify"),
        ("bad signature", [dict(v2, signature=flip(v2["signature"]))], "does not verify"),
        ("signature of another package", [dict(v2, signature=v1["signature"])], "does not verify"),
        ("wrapped key swapped", [dict(v2, wrapped=flip(v2["wrapped"]))], "does not verify"),
        ("unsigned", [{k: v for k, v in v2.items() if k != "signature"}], "not signed by the HSM"),
    ]
    # one play, one task per forged package: each refused, and the token the same after all of them
    before = snapshot(distribution, "r1")
    installs = [{"recipient": "billing", "packages": pkgs} for _case, pkgs, _message in forged]
    results = distribution.recipient_tasks("r1", "key_install", installs)
    for (case, _pkgs, message), result in zip(forged, results):
        assert result.task.get("failed") and result.task["error_kind"] == "package_rejected", (case, result.task)
        assert message in result.task["msg"] and "Nothing was installed" in result.task["msg"], (case, result.task)
    assert snapshot(distribution, "r1") == before
    # the package for billing given to r2 (service reports), as is or relabelled
    refused("r2", "reports", [v2], "addressed to recipient 'billing'")
    refused("r2", "reports", [dict(v2, recipient="reports")], "does not verify")

    # the genuine packages install; the recipient's copy is sensitive, not extractable, with its state's usages
    good = install("r1", "billing", [v1, v2])
    assert not good.task.get("failed") and good.task["changed"], good.task
    meta, keys = distribution.installed("r1")
    assert keys == {"pay:v1", "pay:v2"} and meta["pay:v1"]["state"] == "deactivated"
    assert meta["pay:v1"]["package_signed_at"] == v1["signed_at"]
    assert meta["pay:v2"]["package_signed_at"] == v2["signed_at"]
    copy = [o for o in distribution.recipient_objects("r1") if o["label"] == "pay:v2" and o["class"] == "SECRET_KEY"]
    assert copy[0]["sensitive"] and not copy[0]["extractable"] and copy[0]["decrypt"]
    assert not (copy[0]["encrypt"] or copy[0]["wrap"] or copy[0]["sign"] or copy[0]["derive"])
    # the same packages again: nothing to do
    repeat = install("r1", "billing", [v1, v2])
    assert not repeat.task.get("failed") and not repeat.task["changed"], repeat.task
    # the older v1 package (signed before the one applied), replayed
    refused("r1", "billing", [old_v1], "older package replayed")

    # another signer offered at enrollment: refused, the pinned one stays
    other = runner.task("key_info", {"name": ["pay"]}).task
    assert other["package_signer"]["fingerprint"] == signer["fingerprint"]
    before = snapshot(distribution, "r1")
    changed_signer = distribution.recipient_task("r1", "recipient_enroll", {"package_signer": {
        "public_key_pem": r1["public_key_pem"]}})  # not an EC key: refused as unreadable
    assert changed_signer.task.get("failed") and changed_signer.task["error_option"] == "package_signer"
    pinned_elsewhere = distribution.recipient_task("r1", "recipient_enroll", {"package_signer": dict(
        option, fingerprint="sha256:" + "1" * 64)})
    assert pinned_elsewhere.task.get("failed") and "does not match the pinned fingerprint" in \
        pinned_elsewhere.task["msg"]
    assert snapshot(distribution, "r1") == before

    # a recipient that pins no signer refuses every package
    distribution.hosts["r2"].reset_token("kl-r2")
    bare = distribution.recipient_task("r2", "recipient_enroll", {})
    assert bare.task["changed"] and bare.task["package_signer"] is None, bare.task
    refused("r2", "reports", [dict(v2, recipient="reports")], "pins no package signer")

    # a package signed later than the recipient's own time (the HSM host's clock a day ahead, or a forged time) is
    # refused: applied, it would make every genuine later package look like an older one replayed
    runner.clock.advance(days=1)
    assert runner.task("key_rotate", {"name": ["pay"], "force": True}).task["changed"]
    current = distribution.recipient_task("r1", "recipient_enroll", {}).task["installed"]
    ahead = distribute(installed=current)
    before = snapshot(distribution, "r1")
    late = distribution.recipient_task("r1", "key_install", {"recipient": "billing", "packages": ahead},
                                       real_clock=True)
    assert late.task.get("failed") and late.task["error_kind"] == "package_rejected", late.task
    assert "later than this host's time" in late.task["msg"] and "Nothing was installed" in late.task["msg"]
    assert snapshot(distribution, "r1") == before
    # --check --diff shows the new version and the state the rotation changed at the recipient, and changes nothing
    check = distribution.recipient_task("r1", "key_install", {"recipient": "billing", "packages": ahead},
                                        "--check", "--diff")
    assert not check.task.get("failed") and check.task["changed"], check.task
    assert "pay:v2 active" in check.task["diff"]["before"] and "pay:v3 active" not in check.task["diff"]["before"]
    assert {"pay:v2 deactivated", "pay:v3 active"} <= set(check.task["diff"]["after"]), check.task["diff"]
    assert snapshot(distribution, "r1") == before
    # the recipient on the same time as the HSM host installs them
    on_time = install("r1", "billing", ahead)
    assert not on_time.task.get("failed") and on_time.task["changed"], on_time.task
    assert distribution.installed("r1")[1] == {"pay:v1", "pay:v2", "pay:v3"}
