"""The HSM's package signer rolls over at real ssh recipients: each new signer is certified by the one before it.

key_rotate makes a new version of ``package-signing`` and, while the old one is still active, has it sign a
certificate of the new one. key_distribute (and key_info) return the chain with the signer's record; a recipient
that pinned the old signer follows it, at install (key_install's package_signer) or at enrollment
(playbooks/distribute.yml), and pins the new signer. A forged chain is refused and the recipient's token is left as
it was.
"""

from __future__ import annotations

from tests.integration.test_package_signing import KEYS, SIGNER_LABEL, flip, snapshot


def changes(runner, action):
    return [r["event"] for r in runner.journal_records() if r["event"]["event"]["action"] == action
            and r["event"]["keylifecycle"]["phase"] == "change"]


def pinned(distribution, alias):
    return distribution.recipient_task(alias, "recipient_enroll", {}).task["package_signer"]["fingerprint"]


def test_recipients_follow_the_certified_rollover_and_refuse_a_forged_chain(runner, token, distribution):
    assert runner.task("key_generate", {"keys": KEYS}).task["changed"]
    first = distribution.playbook()
    assert first.returncode == 0, first.stdout + first.stderr
    old = runner.task("key_info", {"name": []}).task["package_signer"]
    assert old["version"] == 1 and old["certificates"] == []

    rotated = runner.task("key_rotate", {"name": ["package-signing", "reporting", "pay"], "force": True}).task
    assert rotated["changed"] and not rotated.get("failed"), rotated
    new = runner.task("key_info", {"name": []}).task["package_signer"]
    assert new["version"] == 2 and new["fingerprint"] != old["fingerprint"]
    [certificate] = new["certificates"]
    assert certificate["previous_fingerprint"] == old["fingerprint"]
    assert certificate["fingerprint"] == new["fingerprint"]
    [rotation] = [e for e in changes(runner, "key-rotate") if e["key"]["name"] == "package-signing"]
    assert rotation["key"]["certificate_label"] == "package-signer-certificate:" + new["key_id"]
    assert pinned(distribution, "r1") == pinned(distribution, "r2") == old["fingerprint"]

    # packages for r2 signed by the new signer (reporting v2 to install, v1 now deactivated)
    enrolled = distribution.recipient_task("r2", "recipient_enroll", {}).task
    r2 = {"name": "reports", "host": "r2", "public_key_pem": enrolled["transport_key"]["public_key_pem"],
          "installed": enrolled["installed"]}
    distributed = runner.task("key_distribute", {"oaep_hash": "sha1", "recipients": [r2]}).task
    assert not distributed.get("failed"), distributed
    assert distributed["package_signer"]["certificates"] == new["certificates"]
    packages = distributed["recipients"][0]["packages"]
    assert {p["signer_fingerprint"] for p in packages} == {new["fingerprint"]}

    def install(**extra):
        return distribution.recipient_task("r2", "key_install", dict(recipient="reports", packages=packages, **extra))

    before = snapshot(distribution, "r2")
    forged_chains = [
        ("no chain given", None, "names package signer"),
        ("certificate altered", dict(new, certificates=[dict(certificate, signature=flip(certificate["signature"]))]),
         "does not verify with the signer it names as previous"),
        ("no certificate", dict(new, certificates=[]), "starts at the signer this token pinned"),
    ]
    results = distribution.recipient_tasks("r2", "key_install", [
        dict({"recipient": "reports", "packages": packages}, **({"package_signer": chain} if chain else {}))
        for _case, chain, _message in forged_chains])
    for (case, _chain, message), result in zip(forged_chains, results):
        assert result.task.get("failed") and result.task["error_kind"] == "package_rejected", (case, result.task)
        assert message in result.task["msg"], (case, result.task["msg"])
    assert snapshot(distribution, "r2") == before
    # check mode says what would change, and changes nothing
    check = distribution.recipient_task("r2", "key_install", {"recipient": "reports", "packages": packages,
                                                              "package_signer": new}, "--check")
    assert check.task["changed"] and not check.task.get("failed"), check.task
    assert check.task["package_signer_rollover"] == {"previous_fingerprint": old["fingerprint"],
                                                     "fingerprint": new["fingerprint"]}
    assert snapshot(distribution, "r2") == before

    # the genuine chain: the packages install and the new signer is pinned in place of the old one
    good = install(package_signer=new)
    assert good.task["changed"] and not good.task.get("failed"), good.task
    assert good.task["package_signer"]["fingerprint"] == new["fingerprint"]
    _meta, keys = distribution.installed("r2")
    assert keys == {"reporting:v1", "reporting:v2"}
    assert len([o for o in distribution.recipient_objects("r2") if o["label"] == SIGNER_LABEL]) == 1
    assert not install(package_signer=new).task["changed"]

    # playbooks/distribute.yml again: r1 follows the chain at enrollment, then installs pay v2 signed by the new signer
    again = distribution.playbook()
    assert again.returncode == 0, again.stdout + again.stderr
    assert pinned(distribution, "r1") == pinned(distribution, "r2") == new["fingerprint"]
    meta, keys = distribution.installed("r1")
    assert keys == {"pay:v1", "pay:v2"} and meta["pay:v2"]["state"] == "active"
    rollovers = [e for e in changes(runner, "package-signer-pin")
                 if e["event"]["reason"] == "rollover certified by %s" % old["fingerprint"]]
    assert len(rollovers) == 2 and {e["key"]["package_signer_fingerprint"] for e in rollovers} == {new["fingerprint"]}
