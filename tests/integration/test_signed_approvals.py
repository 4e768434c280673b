"""Signed approvals, M of N, through ansible-playbook on a real SoftHSM2 token (issue 14, item 3 and 4).

The Security Officer installed a policy signer (policy_signer, SO PIN); the signed policy lists the approvers' EC
P-256 public keys and requires two approvals to destroy. The approvers' keys are made here, and their approvals
signed here with ``cryptography`` over the canonical JSON of {approver, format, request} (the rule of
docs/access-control.md, written out independently of the collection). Each lifecycle task is one journaled task
of its own (intent, outcome); several run in one playbook to keep the suite short.
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import timedelta

import pytest
import yaml

from tests.integration.test_signed_policy import _fingerprint, _signer, sign


def approve(key, name, token, action, keys, not_after, change_ref="CHG-7", nonce=None):
    """An approval document as approval_sign writes it, signed with ``key``, of key versions ``keys``."""
    return approve_subjects(key, name, token, action, [{"name": n, "version": v} for n, v in sorted(keys)], not_after,
                            change_ref, nonce)


def approve_subjects(key, name, token, action, subjects, not_after, change_ref="CHG-7", nonce=None):
    """An approval of ``subjects`` (key versions, recipients' transport keys or a policy), signed with ``key``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    request = {"action": action, "token": token, "change_ref": change_ref, "not_after": not_after,
               "nonce": nonce or secrets.token_hex(16), "keys": subjects}
    doc = {"format": 1, "request": request, "approver": _fingerprint(key)}
    payload = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    doc.update(approver_name=name, signature=base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode())
    return doc


def play(runner, tasks):
    """Run lifecycle ``tasks`` ([(module, args, task_keywords)]) in one playbook; return each registered result."""
    runner.count += 1
    out = runner.tmp_path / ("results-%d.json" % runner.count)
    body = []
    for index, (module, args, keywords) in enumerate(tasks):
        body.append(dict({"name": "task %d" % index,
                          "secops.keylifecycle.%s" % module: dict(runner.token.connection(), **args),
                          "register": "r%d" % index, "ignore_errors": True}, **keywords))
    body.append({"name": "save", "ansible.builtin.copy": {
        "content": "{{ [%s] | to_json }}" % ", ".join("r%d" % i for i in range(len(tasks))), "dest": str(out)},
        "check_mode": False, "diff": False})
    path = runner.tmp_path / ("play-%d.yml" % runner.count)
    path.write_text(yaml.safe_dump([{"name": "approvals", "hosts": "hsm", "gather_facts": False,
                                     "environment": dict(runner.token.env), "tasks": body}], sort_keys=False))
    proc = runner.playbook(path)
    assert out.exists(), proc.stdout + proc.stderr
    return json.loads(out.read_text())


class People:
    """The approvers' keys and the signed policy that lists them (the operator has a key of their own too)."""

    def __init__(self, runner, operator):
        self.runner = runner
        self.operator = operator
        self.keys = {name: _signer() for name in ("dana", "erin", operator)}
        self.officer, officer_pem = _signer()
        self.officer_pem = officer_pem
        self.serial = 0

    def policy(self, **settings):
        self.serial += 1
        policy = {"approvers": {name: pem for name, (_key, pem) in self.keys.items()},
                  "approvals_required": {"destroy": 2}}
        policy.update(settings)
        return sign(self.officer, policy, self.serial)

    def approve(self, name, keys, valid=timedelta(hours=6), **changes):
        not_after = (self.runner.clock.now() + valid).replace(microsecond=0).isoformat()
        return approve(self.keys[name][0], name, self.runner.token.label, "destroy", keys, not_after, **changes)


@pytest.fixture
def people(runner, token, clock):
    """Key k with v1 and v2 deactivated (retention 1d, expired) and v3 active; the officer's policy signer on the
    token; the people who approve."""
    setup = play(runner, [
        ("key_generate", {"keys": [{"name": "k", "type": "aes", "size": 256, "retention_period": "1d",
                                    "destroy_allowed": True}]}, {}),
        ("key_rotate", {"name": ["k"], "force": True}, {}),
        ("key_rotate", {"name": ["k"], "force": True}, {}),
    ])
    assert all(not r.get("failed") for r in setup), setup
    operator = [r for r in runner.journal_records() if r["event"]["event"]["action"] == "key-generate"][0][
        "event"]["user"]["name"]
    crew = People(runner, operator)
    installed = runner.task("policy_signer", {"name": "dana", "public_key_pem": crew.officer_pem,
                                              "so_pin_file": str(token.so_pin_file)})
    assert installed.rc == 0 and installed.task["changed"] is True, installed.task
    clock.advance(days=2)
    return crew


def destroy(signed, version, approvals, **args):
    return ("key_destroy", dict({"name": "k", "version": version, "change_ref": "CHG-7", "approvals": approvals,
                                 "policy": signed["policy"], "signed_policy": signed}, **args), {})


def outcomes(runner):
    return [r["event"] for r in runner.journal_records() if r["event"]["keylifecycle"].get("phase") == "outcome"]


def assert_refused(result, kind):
    assert result.get("failed") is True and result.get("error_kind") == kind, result
    assert "Nothing was changed on the token" in result["msg"]


def test_destroy_needs_m_signed_approvals(runner, token, people):
    signed = people.policy()
    dana = people.approve("dana", [("k", 1), ("k", 2)])
    erin = people.approve("erin", [("k", 1), ("k", 2)])
    before, journaled = token.objects(), len(outcomes(runner))
    refusals = play(runner, [
        destroy(signed, 1, [dana]),  # 1 of the 2 required
        destroy(signed, 1, [dana, people.approve("erin", [("k", 2)])]),  # erin approved another version
        destroy(signed, 1, [dana, people.approve(people.operator, [("k", 1)])]),  # signed by the operator
        destroy(signed, 1, [dana, people.approve("erin", [("k", 1)], valid=timedelta(minutes=-1))]),  # expired
        destroy(signed, 1, [dana, approve(_signer()[0], "erin", token.label, "destroy", [("k", 1)],
                                          dana["request"]["not_after"], change_ref="CHG-7")]),  # not an approver
        destroy(signed, 1, [dana, dict(erin, request=dict(erin["request"], change_ref="CHG-8"))]),  # altered
        destroy(signed, 1, [], approved_by="erin"),  # an asserted name instead of signatures
    ])
    kinds = ["approval_missing", "approval_mismatch", "approval_self", "approval_expired",
             "approval_unknown_approver", "approval_invalid", "invalid_option"]
    for result, kind in zip(refusals, kinds):
        if kind == "invalid_option":
            assert result.get("failed") and result["error_option"] == "approved_by", result
        else:
            assert_refused(result, kind)
    assert "requires 2 approvals" in refusals[0]["msg"] and "has 1 valid (dana)" in refusals[0]["msg"]
    # every refusal is journaled, and the token did not change
    refused = outcomes(runner)[journaled:]
    assert [o["error"]["type"] for o in refused] == kinds, refused
    assert token.objects() == before

    done = play(runner, [destroy(signed, 1, [erin, dana])])[0]
    assert not done.get("failed") and done["changed"] is True and done["destroyed"][0]["version"] == 1, done
    destroyed = [r["event"] for r in runner.journal_records() if r["event"]["event"]["action"] == "key-destroy"
                 and r["event"]["keylifecycle"].get("phase") == "change"]
    assert len(destroyed) == 1
    recorded = destroyed[0]["keylifecycle"]
    assert recorded["approved_by"] == ["dana", "erin"] and recorded["change_ref"] == "CHG-7"
    assert {a["fingerprint"] for a in recorded["approvals"]} == {_fingerprint(people.keys["dana"][0]),
                                                                 _fingerprint(people.keys["erin"][0])}
    assert {a["nonce"] for a in recorded["approvals"]} == {dana["request"]["nonce"], erin["request"]["nonce"]}
    assert "break_glass" not in recorded

    # the same two approvals (they cover v2 too) are used up: replayed
    replayed = play(runner, [destroy(signed, 2, [dana, erin])])[0]
    assert_refused(replayed, "approval_replayed")
    assert "already used on token" in replayed["msg"]


def test_break_glass_officer_destroy(runner, token, people):
    # the operator holds the Security Officer role: executing a destroy is break-glass, two others must approve
    signed = people.policy(security_officers=[people.operator], approvals_required={"destroy": 1})
    results = play(runner, [
        destroy(signed, 1, [people.approve("dana", [("k", 1)])]),
        destroy(signed, 1, [people.approve("dana", [("k", 1)]), people.approve("erin", [("k", 1)])]),
    ])
    assert_refused(results[0], "approval_missing")
    assert "break-glass" in results[0]["msg"] and "2 approvals from other people" in results[0]["msg"]
    assert not results[1].get("failed") and results[1]["approvals"]["break_glass"] is True, results[1]
    event = [r["event"] for r in runner.journal_records() if r["event"]["event"]["action"] == "key-destroy"
             and r["event"]["keylifecycle"].get("phase") == "change"][-1]
    assert event["keylifecycle"]["break_glass"] is True and event["user"]["name"] == people.operator
    assert event["keylifecycle"]["approved_by"] == ["dana", "erin"]


def test_check_mode_lists_missing_approvals(runner, token, people):
    signed = people.policy()
    before = token.objects()
    checked = play(runner, [("key_destroy", {"name": "k", "version": 1, "change_ref": "CHG-7",
                                             "policy": signed["policy"], "signed_policy": signed},
                             {"check_mode": True})])[0]
    assert not checked.get("failed"), checked
    assert checked["approvals"]["missing"] == 2 and checked["approvals"]["request"] == {
        "action": "destroy", "token": token.label, "keys": [{"name": "k", "version": 1}], "change_ref": "CHG-7"}
    assert token.objects() == before


def test_a_new_policy_needs_the_approvals_of_the_policy_in_force(runner, token, people):
    """The officer alone cannot change the policy where the policy in force says so: the approvers it lists must
    approve the new document (its SHA-256), and they ride with it (``approvals``, outside the officer's signature)."""
    import hashlib

    first = people.policy(approvals_required={"destroy": 2, "policy_change": 2})
    looser = people.policy(approvals_required={"destroy": 1})
    payload = json.dumps({k: looser[k] for k in ("environment", "format", "not_after", "policy", "serial", "signer")},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    digest = hashlib.sha256(payload).hexdigest()
    not_after = (runner.clock.now() + timedelta(hours=6)).replace(microsecond=0).isoformat()

    def policy_approval(name):
        key = people.keys[name][0]
        return approve_subjects(key, name, "*", "policy_change", [{"policy": digest}], not_after)

    before = token.objects()
    results = play(runner, [
        ("key_generate", {"keys": [{"name": "k2", "type": "aes", "size": 256}], "policy": first["policy"],
                          "signed_policy": first}, {}),
        ("key_generate", {"keys": [{"name": "k3", "type": "aes", "size": 256}], "policy": looser["policy"],
                          "signed_policy": looser}, {}),
        ("key_generate", {"keys": [{"name": "k3", "type": "aes", "size": 256}], "policy": looser["policy"],
                          "signed_policy": dict(looser, approvals=[policy_approval("dana"),
                                                                   policy_approval("erin")])}, {}),
    ])
    assert not results[0].get("failed"), results[0]
    assert_refused(results[1], "approval_missing")
    assert "policy change" in results[1]["msg"]
    assert not results[2].get("failed") and results[2]["policy_in_force"]["serial"] == looser["serial"], results[2]
    accepted = [r["event"] for r in runner.journal_records() if r["event"]["event"]["action"] == "policy-accept"]
    assert [a["keylifecycle"]["policy"]["serial"] for a in accepted] == [first["serial"], looser["serial"]]
    assert accepted[-1]["keylifecycle"]["approved_by"] == ["dana", "erin"]
    recorded = {o["label"] for o in token.objects()} - {o["label"] for o in before}
    assert {"signed-policy:%d" % first["serial"], "signed-policy:%d" % looser["serial"]} <= recorded, recorded
