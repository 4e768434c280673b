"""Signed approvals, M of N, on a real SoftHSM2 token (design 14b, ``_approvals``).

The token holds a policy signer (installed in a Security Officer session); the signed policy lists approvers (EC
P-256 keys made here with ``cryptography``) and how many approvals compromise rotation and retire need. Lifecycle
modules' main() run in this process with the intent the action plugin would journal first (operator ``alice``).
Every refusal leaves every object on the token, and its journal pin, as they were. Destruction (which needs an
expired retention, so the test clock of ansible-playbook runs) is proven in tests/integration/test_signed_approvals.py.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta, timezone

import pytest

from tests.hsm.journal_intents import MemoryJournal
from tests.hsm.test_journal_pin import pin_of
from tests.hsm.test_module_main import objects_of
from tests.hsm.test_signed_policy import Signer, install, run


class Approver:
    """An approver's private key (software, for the test), their name and fingerprint."""

    def __init__(self, name):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import spki_fingerprint

        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.fingerprint = spki_fingerprint(self.key.public_key())
        self.pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")

    def approve(self, token, action, keys, change_ref="CHG-1", valid=timedelta(hours=4), nonce=None, keys_override=None,
                **changes):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        from ansible_collections.secops.keylifecycle.plugins.module_utils import _approvals

        not_after = (datetime.now(timezone.utc).replace(microsecond=0) + valid).isoformat()
        subjects = keys_override or [{"name": n, "version": v} for n, v in keys]
        request = _approvals.make_request(action, token, subjects, change_ref, not_after, nonce or secrets.token_hex(16))
        doc = {"format": 1, "request": request, "approver": self.fingerprint, "approver_name": self.name}
        doc.update(changes)
        signature = self.key.sign(_approvals.approval_payload(doc), ec.ECDSA(hashes.SHA256()))
        doc["signature"] = base64.b64encode(signature).decode("ascii")
        return doc


@pytest.fixture
def journal():
    return MemoryJournal()


@pytest.fixture
def people():
    return {name: Approver(name) for name in ("alice", "erin", "frank", "mallory")}


@pytest.fixture
def signed(hsm_token, people):
    """Install the policy signer; return a function that signs a policy listing the approvers (not mallory)."""
    dana = Signer("dana")
    install(hsm_token, dana)
    serial = [0]

    def sign(**settings):
        serial[0] += 1
        policy = {"approvers": {name: people[name].pem for name in ("alice", "erin", "frank")},
                  "approvals_required": {"compromise_rotate": 2, "retire": 1}}
        policy.update(settings)
        return dana.sign(policy=policy, serial=serial[0])

    return sign


def _key(capsys, token, journal, policy):
    result = run(capsys, token, journal, signed=policy, name="payments", type="aes", size=256)
    assert not result.get("failed") and result["changed"], result
    return result


def _compromise(capsys, token, journal, policy, approvals, check_mode=False, **extra):
    args = dict(module="key_rotate", signed=policy, name=["payments"], version=[1], reason="compromise",
                change_ref="CHG-1", approvals=approvals, check_mode=check_mode)
    args.update(extra)
    return run(capsys, token, journal, **args)


def _refused(capsys, token, settings, journal, policy, approvals, kind, option="approvals", **extra):
    before, pin = objects_of(settings), pin_of(settings)
    result = _compromise(capsys, token, journal, policy, approvals, **extra)
    assert result.get("failed") is True, result
    assert (result["error_kind"], result["error_option"]) == (kind, option), result
    assert result["changed"] is False and result["audit_events"] == [], result
    assert "Traceback" not in result["msg"]
    assert objects_of(settings) == before and pin_of(settings) == pin
    return result["msg"]


def _nonces(settings):
    """The nonce records on the token, read with python-pkcs11 directly: {nonce: (private, modifiable, destroyable)}."""
    from pkcs11 import Attribute, ObjectClass

    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_session

    with open_session(settings, rw=False) as session:
        found = session.get_objects({Attribute.CLASS: ObjectClass.DATA,
                                     Attribute.APPLICATION: "secops.keylifecycle.approval-nonce"})
        return {str(o[Attribute.LABEL]).split(":", 1)[1]: (
            o[Attribute.PRIVATE], o[Attribute.MODIFIABLE], o[Attribute.DESTROYABLE]) for o in found}


def test_compromise_needs_m_signed_approvals(capsys, hsm_token, settings, journal, people, signed):
    policy = signed()
    _key(capsys, hsm_token, journal, policy)
    label = hsm_token.label
    # approvals may cover more versions than one task acts on: these two also cover v2, the successor
    erin = people["erin"].approve(label, "compromise_rotate", [("payments", 1), ("payments", 2)])
    frank = people["frank"].approve(label, "compromise_rotate", [("payments", 1), ("payments", 2)])
    msg = _refused(capsys, hsm_token, settings, journal, policy, [erin], "approval_missing")
    assert "requires 2 approvals" in msg and "has 1 valid (erin)" in msg and "payments v1" in msg, msg
    # the same approver twice counts once
    _refused(capsys, hsm_token, settings, journal, policy, [erin, dict(erin)], "approval_replayed")
    again = people["erin"].approve(label, "compromise_rotate", [("payments", 1)])
    _refused(capsys, hsm_token, settings, journal, policy, [erin, again], "approval_missing")
    assert _nonces(settings) == {}

    done = _compromise(capsys, hsm_token, journal, policy, [frank, erin])
    assert not done.get("failed") and done["changed"], done["msg"]
    approvals = done["approvals"]
    assert (approvals["required"], approvals["missing"], approvals["break_glass"]) == (2, 0, False)
    assert [(a["name"], a["fingerprint"]) for a in approvals["accepted"]] == [
        ("erin", people["erin"].fingerprint), ("frank", people["frank"].fingerprint)]
    marked = [e for e in done["audit_events"] if e["event"]["action"] == "key-rotate"]
    assert marked and all(e["keylifecycle"]["approved_by"] == ["erin", "frank"] for e in marked)
    assert all({a["fingerprint"] for a in e["keylifecycle"]["approvals"]}
               == {people["erin"].fingerprint, people["frank"].fingerprint} for e in marked)
    assert done["compromised"][0]["approved_by"] == ["erin", "frank"]
    assert set(_nonces(settings)) == {erin["request"]["nonce"], frank["request"]["nonce"]}

    # each approval is good for one task: the same documents again (they cover v2) are refused, token unchanged
    msg = _refused(capsys, hsm_token, settings, journal, policy, [erin, frank], "approval_replayed",
                   version=[2])
    assert "already used on token" in msg


def test_approval_refusals(capsys, hsm_token, settings, journal, people, signed):
    policy = signed()
    _key(capsys, hsm_token, journal, policy)
    label = hsm_token.label
    frank = people["frank"].approve(label, "compromise_rotate", [("payments", 1)])

    def refused(doc, kind, option="approvals", **extra):
        return _refused(capsys, hsm_token, settings, journal, policy, [doc, frank], kind, option=option, **extra)

    erin = people["erin"]
    assert "does not cover payments v1" in refused(
        erin.approve(label, "compromise_rotate", [("payments", 2)]), "approval_mismatch")
    assert "not compromise rotate" in refused(erin.approve(label, "retire", [("payments", 1)]), "approval_mismatch")
    assert "not token" in refused(erin.approve("other-token", "compromise_rotate", [("payments", 1)]),
                                  "approval_mismatch")
    assert "not change_ref CHG-1" in refused(
        erin.approve(label, "compromise_rotate", [("payments", 1)], change_ref="CHG-2"), "approval_mismatch")
    assert "the operator running this task" in refused(
        people["alice"].approve(label, "compromise_rotate", [("payments", 1)]), "approval_self")
    assert "expired at" in refused(
        erin.approve(label, "compromise_rotate", [("payments", 1)], valid=timedelta(seconds=-5)), "approval_expired")
    assert "approval_max_validity" in refused(
        erin.approve(label, "compromise_rotate", [("payments", 1)], valid=timedelta(days=8)), "approval_expired")
    assert "not an approver of the signed policy" in refused(
        people["mallory"].approve(label, "compromise_rotate", [("payments", 1)]), "approval_unknown_approver")
    # mallory signs with her key but claims to be erin: the fingerprint decides
    forged = people["mallory"].approve(label, "compromise_rotate", [("payments", 1)], approver=erin.fingerprint)
    assert "does not verify" in refused(forged, "approval_invalid")
    altered = erin.approve(label, "compromise_rotate", [("payments", 1)])
    altered["request"] = dict(altered["request"], change_ref="CHG-1", keys=[{"name": "payments", "version": 1}],
                              not_after=(datetime.now(timezone.utc) + timedelta(hours=5)).replace(
                                  microsecond=0).isoformat())
    assert "does not verify" in refused(altered, "approval_invalid")
    assert "not a valid approval" in refused({"format": 1, "request": {}}, "approval_invalid")
    # signed approvals replace the asserted name, and name the change they approve
    refused(erin.approve(label, "compromise_rotate", [("payments", 1)]), "invalid_option", option="approved_by",
            approved_by="erin")
    refused(erin.approve(label, "compromise_rotate", [("payments", 1)]), "invalid_option", option="change_ref",
            change_ref=None)
    assert _nonces(settings) == {}


def test_check_mode_lists_missing_approvals_and_changes_nothing(capsys, hsm_token, settings, journal, signed):
    policy = signed()
    _key(capsys, hsm_token, journal, policy)
    before, pin = objects_of(settings), pin_of(settings)
    checked = _compromise(capsys, hsm_token, journal, policy, [], check_mode=True)
    assert not checked.get("failed"), checked
    assert checked["approvals"]["missing"] == 2 and checked["approvals"]["request"] == {
        "action": "compromise_rotate", "token": hsm_token.label, "keys": [{"name": "payments", "version": 1}],
        "change_ref": "CHG-1"}
    assert objects_of(settings) == before and pin_of(settings) == pin


def test_break_glass_officer_needs_two_others(capsys, hsm_token, settings, journal, people, signed):
    # alice, who runs these tasks, is a Security Officer: retiring (M = 1) is break-glass and needs two
    policy = signed(security_officers=["alice"])
    _key(capsys, hsm_token, journal, policy)
    label = hsm_token.label
    erin = people["erin"].approve(label, "retire", [("payments", 1)])
    frank = people["frank"].approve(label, "retire", [("payments", 1)])

    def retire(approvals):
        return run(capsys, hsm_token, journal, module="key_rotate", signed=policy, name=["payments"], retire=True,
                   change_ref="CHG-1", approvals=approvals)

    before = objects_of(settings)
    one = retire([erin])
    assert one.get("failed") and one["error_kind"] == "approval_missing", one
    assert "break-glass" in one["msg"] and "2 approvals from other people" in one["msg"]
    assert objects_of(settings) == before
    done = retire([erin, frank])
    assert not done.get("failed") and done["approvals"]["break_glass"] is True, done
    event = [e for e in done["audit_events"] if e["event"]["action"] == "key-rotate"][0]
    assert event["keylifecycle"]["break_glass"] is True and event["keylifecycle"]["approved_by"] == ["erin", "frank"]


def test_scheduled_rotation_needs_no_approval(capsys, hsm_token, journal, signed):
    policy = signed()
    _key(capsys, hsm_token, journal, policy)
    rotated = run(capsys, hsm_token, journal, module="key_rotate", signed=policy, name=["payments"], force=True)
    assert not rotated.get("failed") and rotated["changed"] and "approvals" not in rotated, rotated


def test_nonce_store_on_token(capsys, hsm_token, settings, journal, people, signed):
    """Nonces are written to the token before the work, as public records nobody can change or delete."""
    from pkcs11 import Attribute, ObjectClass, UserType
    from pkcs11 import exceptions as p11_exc

    from tests.conftest import PKCS11_MODULE

    policy = signed()
    _key(capsys, hsm_token, journal, policy)
    label = hsm_token.label
    approvals = [people[n].approve(label, "compromise_rotate", [("payments", 1)]) for n in ("erin", "frank")]
    assert not _compromise(capsys, hsm_token, journal, policy, approvals).get("failed")
    assert _nonces(settings) == {a["request"]["nonce"]: (False, False, False) for a in approvals}
    # neither the user PIN nor the SO PIN removes or rewrites them
    import pkcs11

    token = pkcs11.lib(PKCS11_MODULE).get_token(token_label=label)
    for login in ({"user_pin": hsm_token.user_pin}, {"so_pin": hsm_token.so_pin, "user_type": UserType.SO}):
        with token.open(rw=True, **login) as session:
            for record in session.get_objects({Attribute.CLASS: ObjectClass.DATA,
                                               Attribute.APPLICATION: "secops.keylifecycle.approval-nonce"}):
                with pytest.raises(p11_exc.PKCS11Error):
                    record.destroy()
                with pytest.raises(p11_exc.PKCS11Error):
                    record[Attribute.VALUE] = b"{}"
    assert len(_nonces(settings)) == 2


def test_a_new_policy_needs_the_approvals_the_policy_in_force_requires(
        capsys, hsm_token, settings, journal, people, signed):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import policy_digest

    label = hsm_token.label
    first = signed(approvals_required={"policy_change": 2})
    _key(capsys, hsm_token, journal, first)  # the first signed policy on the token: recorded, nothing to approve
    # the officer alone signs a looser policy: no approvals of the change
    looser = signed(approvals_required={"policy_change": 0}, max_rotation_period="30d")
    before, pin = objects_of(settings), pin_of(settings)
    result = run(capsys, hsm_token, journal, signed=looser, name="other")
    assert result.get("failed") and result["error_kind"] == "approval_missing", result
    assert "requires 2 approvals for policy change" in result["msg"], result["msg"]
    assert objects_of(settings) == before and pin_of(settings) == pin

    def approval(name, digest=None, token="*"):
        return people[name].approve(token, "policy_change", [], keys_override=[{"policy": digest
                                                                                or policy_digest(looser)}])

    # approvals of another policy, or by someone the policy IN FORCE does not list (the new one cannot add them)
    wrong = dict(looser, approvals=[approval("erin", digest="0" * 64), approval("frank")])
    assert run(capsys, hsm_token, journal, signed=wrong, name="other")["error_kind"] == "approval_mismatch"
    crew = dict(looser, approvals=[approval("mallory"), approval("frank")])
    assert run(capsys, hsm_token, journal, signed=crew, name="other")["error_kind"] == "approval_unknown_approver"
    assert objects_of(settings) == before

    approved = dict(looser, approvals=[approval("erin"), approval("frank", token=label)])
    done = run(capsys, hsm_token, journal, signed=approved, name="other")
    assert not done.get("failed") and done["policy_in_force"]["serial"] == 2, done
    assert done["policy_in_force"]["approvals"]["accepted"][0]["name"] == "erin"
    accept = [e for e in done["audit_events"] if e["event"]["action"] == "policy-accept"]
    assert len(accept) == 1 and accept[0]["keylifecycle"]["approved_by"] == ["erin", "frank"]
    assert accept[0]["keylifecycle"]["policy"]["serial"] == 2
    assert len(_nonces(settings)) == 2
    # in force now: the same document again needs nothing more, and its approvals are not checked again
    again = run(capsys, hsm_token, journal, signed=looser, name="third")
    assert not again.get("failed") and not [e for e in again["audit_events"]
                                            if e["event"]["action"] == "policy-accept"], again
    # the policy now in force requires no approval of a change: the next one goes through on the signature alone
    assert not run(capsys, hsm_token, journal, signed=signed(), name="fourth").get("failed")


def _forge_policy_record(settings, serial, document, sha256):
    """What any user session can do with raw PKCS#11: create a signed policy record (a public data object)."""
    import json

    from pkcs11 import Attribute, ObjectClass

    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_session

    with open_session(settings) as session:
        session.create_object({
            Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.PRIVATE: False,
            Attribute.MODIFIABLE: False, Attribute.LABEL: "signed-policy:%d" % serial,
            Attribute.APPLICATION: "secops.keylifecycle.signed-policy",
            Attribute.VALUE: json.dumps({"schema": 1, "serial": serial, "sha256": sha256, "document": document,
                                         "accepted_at": "2020-01-01T00:00:00+00:00"}).encode()})


def test_a_forged_policy_record_counts_for_nothing(capsys, hsm_token, settings, journal, people, signed):
    """A signed policy record written by a user session, not by an accepted change: the officer-signed draft of
    a looser policy recorded as if accepted, without the approvals the policy in force requires, and a record
    whose document is not the policy it names. Neither puts its policy in force; both are reported."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import policy_digest

    first = signed(approvals_required={"policy_change": 2, "compromise_rotate": 2})
    _key(capsys, hsm_token, journal, first)
    looser = signed(approvals_required={"policy_change": 0, "compromise_rotate": 0}, max_rotation_period="30d")
    _forge_policy_record(settings, 2, looser, policy_digest(looser))
    _forge_policy_record(settings, 3, looser, policy_digest(first))
    before, pin = objects_of(settings), pin_of(settings)
    refused = run(capsys, hsm_token, journal, signed=looser, name="other")
    assert refused.get("failed") and refused["error_kind"] == "approval_missing", refused
    assert objects_of(settings) == before and pin_of(settings) == pin
    # the policy in force is still the first: a compromise rotation needs its two approvals
    assert _compromise(capsys, hsm_token, journal, looser, [])["error_kind"] == "approval_missing"
    # the officer-signed draft still counts as the floor (a floor can refuse, never weaken): the first policy is now
    # refused as rolled back, and the draft takes effect only with the approvals the policy in force requires
    assert run(capsys, hsm_token, journal, signed=first, name="other")["error_kind"] == "policy_rolled_back"
    approvals = [people[name].approve("*", "policy_change", [], keys_override=[{"policy": policy_digest(looser)}])
                 for name in ("erin", "frank")]
    approved = run(capsys, hsm_token, journal, signed=dict(looser, approvals=approvals), name="other")
    assert not approved.get("failed") and approved["policy_in_force"]["serial"] == 2, approved
    assert sorted(approved["policy_in_force"]["rejected_records"]) == [
        "signed-policy:2 (it lacks the 2 approval(s) for a policy change that the policy before it requires)",
        "signed-policy:3 (its document is not the serial and digest it names)"]


def test_recipient_approval_needs_signed_approvals(capsys, hsm_token, settings, journal, people, signed):
    """recipient_approve (SO session): M approvals of other people over the recipient and its key fingerprint."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import spki_fingerprint
    from tests.hsm.test_module_main import connection
    from tests.unit.test_module_main import run_main

    policy = signed(approvals_required={"recipient_approve": 2})
    _key(capsys, hsm_token, journal, policy)
    transport = rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key()
    pem = transport.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    fingerprint = spki_fingerprint(transport)
    subject = [{"recipient": "billing", "fingerprint": fingerprint}]

    def approve(approvals, **extra):
        args = dict(so_pin_file=str(hsm_token.so_pin_file), user_pin_file=None,
                    recipients=[{"name": "billing", "host": "billing-1", "public_key_pem": pem}],
                    policy=policy["policy"], signed_policy=policy, change_ref="CHG-1", approvals=approvals,
                    approved_by="alice", audit_context=journal.intent(hsm_token.label, action="recipient-approve"))
        args.update(extra)
        return run_main(capsys, "recipient_approve", connection(hsm_token, **args))

    label = hsm_token.label
    before = objects_of(settings)
    # the officer (alice, who approves with the SO PIN) cannot count her own approval; frank alone is not two
    own = approve([people["alice"].approve(label, "recipient_approve", [], keys_override=subject),
                   people["frank"].approve(label, "recipient_approve", [], keys_override=subject)])
    assert own.get("failed") and own["error_kind"] == "approval_self", own
    one = approve([people["frank"].approve(label, "recipient_approve", [], keys_override=subject)])
    assert one.get("failed") and one["error_kind"] == "approval_missing", one
    other = [{"recipient": "billing", "fingerprint": "sha256:" + "0" * 64}]
    wrong = approve([people[n].approve(label, "recipient_approve", [], keys_override=other) for n in ("erin", "frank")])
    assert wrong.get("failed") and wrong["error_kind"] == "approval_mismatch", wrong
    unsigned = approve([], signed_policy=None, policy={})
    assert unsigned.get("failed") and unsigned["error_kind"] == "policy_unsigned", unsigned
    assert objects_of(settings) == before

    approvals = [people[n].approve(label, "recipient_approve", [], keys_override=subject) for n in ("erin", "frank")]
    done = approve(approvals)
    assert not done.get("failed") and done["changed"], done
    accepted = [a["name"] for a in done["approvals"]["accepted"]]
    assert done["approvals"]["required"] == 2 and accepted == ["erin", "frank"]
    event = [e for e in done["audit_events"] if e["event"]["action"] == "recipient-approve"][0]
    expected = {people["erin"].fingerprint, people["frank"].fingerprint}
    assert {a["fingerprint"] for a in event["keylifecycle"]["approvals"]} == expected
    assert set(_nonces(settings)) == {a["request"]["nonce"] for a in approvals}
    # revoking needs its own approvals (policy.approvals_required.recipient_revoke), of the same key
    policy = signed(approvals_required={"recipient_approve": 2, "recipient_revoke": 1})
    revoke = {"state": "absent", "policy": policy["policy"], "signed_policy": policy}
    reused = approve([people["erin"].approve(label, "recipient_approve", [], keys_override=subject)], **revoke)
    assert reused.get("failed") and reused["error_kind"] == "approval_mismatch", reused
    revoked = approve([people["erin"].approve(label, "recipient_revoke", [], keys_override=subject)], **revoke)
    assert not revoked.get("failed") and revoked["changed"] and revoked["approved"] == [], revoked


def test_a_forged_older_record_does_not_lower_the_floor(capsys, hsm_token, settings, journal, people, signed):
    """A record forged for an older officer-signed policy that requires approvals of a change makes the genuine
    later record (accepted first, without approvals) fail its approval check. The genuine record still counts as
    the floor, so the older policy cannot be brought back: refused as rolled back, even without the pin's floor."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_session
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy_signers import find_policy_signers
    from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import (
        policy_digest,
        policy_records,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import TokenObjects

    older = signed(approvals_required={"policy_change": 2})  # serial 1: signed, never brought to this token
    genuine = signed(approvals_required={"policy_change": 0})  # serial 2: the first policy the token records
    _key(capsys, hsm_token, journal, genuine)
    _forge_policy_record(settings, 1, older, policy_digest(older))
    with open_session(settings) as session:
        signers = {signer.fingerprint: signer for signer in find_policy_signers(session)}
        records, signed_serials, rejected = policy_records(
            TokenObjects(session, settings.token_label).load(), signers, settings.token_label)
    assert sorted(records) == [1] and signed_serials == {1, 2}
    assert rejected == ["signed-policy:2 (it lacks the 2 approval(s) for a policy change that the policy before "
                        "it requires)"]
    refused = run(capsys, hsm_token, journal, signed=older, name="other")
    assert refused.get("failed") and refused["error_kind"] == "policy_rolled_back", refused
