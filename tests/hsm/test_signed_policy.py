"""The signed environment policy on a real SoftHSM2 token (design 14, section 2).

A policy signer is installed in a Security Officer session with ``_policy_signers.signer_template``; policies are
signed here with ``cryptography`` (ECDSA P-256, SHA-256) over ``_signed_policy.policy_payload``. Lifecycle modules'
main() run in this process with the intent the action plugin would journal first (``MemoryJournal``). Every
refusal leaves every object on the token, and its journal pin, as they were (read with python-pkcs11 directly).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import PKCS11_MODULE
from tests.hsm.journal_intents import MemoryJournal
from tests.hsm.test_journal_pin import pin_of
from tests.hsm.test_module_main import connection, objects_of
from tests.unit.test_module_main import run_main

POLICY = {"min_rsa_bits": 4096, "destroy_requires_approval": True, "allowed_curves": ["P-384"]}


def _sp():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _signed_policy

    return _signed_policy


def _ps():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _policy_signers

    return _policy_signers


def _officer(token):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import OfficerSettings

    return OfficerSettings(pkcs11_module=PKCS11_MODULE, token_label=token.label, so_pin_file=str(token.so_pin_file))


class Signer:
    """A policy signer's private key (software, for the test) and its fingerprint."""

    def __init__(self, name="dana"):
        from cryptography.hazmat.primitives.asymmetric import ec

        from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import spki_fingerprint

        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.fingerprint = spki_fingerprint(self.key.public_key())

    def sign(self, policy=None, serial=1, not_after=None, environment="prod"):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        not_after = not_after or datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=365)
        doc = {"format": 1, "environment": environment, "serial": serial,
               "not_after": not_after.astimezone(timezone.utc).isoformat(timespec="seconds"),
               "policy": dict(POLICY if policy is None else policy), "signer": self.fingerprint,
               "signer_name": self.name}
        signature = self.key.sign(_sp().policy_payload(doc), ec.ECDSA(hashes.SHA256()))
        doc["signature"] = base64.b64encode(signature).decode("ascii")
        return doc


def install(token, signer, destroyable=False):
    """The Security Officer installs ``signer`` on ``token`` (SO session, the lead's template)."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_so_session

    with open_so_session(_officer(token)) as so:
        so.create_object(_ps().signer_template(signer.name, signer.key.public_key(), destroyable=destroyable))


def signers_on(settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_session

    with open_session(settings, rw=False) as session:
        return [signer.as_dict() for signer in _ps().find_policy_signers(session)]


@pytest.fixture
def journal():
    return MemoryJournal()


@pytest.fixture
def dana(hsm_token):
    signer = Signer("dana")
    install(hsm_token, signer)
    return signer


def run(capsys, token, journal, module="key_generate", signed=None, policy=None, check_mode=False, **args):
    """One lifecycle task with its journaled intent; ``policy`` defaults to the signed one's settings."""
    args = args or {"name": "k%d" % (len(journal.records) + 1)}
    if signed is not None:
        args["signed_policy"] = signed
        if policy is None and isinstance(signed, dict) and isinstance(signed.get("policy"), dict):
            policy = signed["policy"]
    if policy is not None:
        args["policy"] = policy
    if check_mode:
        args["_ansible_check_mode"] = True
    else:
        args["audit_context"] = journal.intent(token.label)
    result = run_main(capsys, module, connection(token, **args))
    if not check_mode:
        journal.outcome(result)
    return result


def refused(capsys, token, settings, journal, kind, option="signed_policy", **task):
    """A task that must be refused with ``kind``; nothing on the token, nor its pin, may change."""
    before, pin = objects_of(settings), pin_of(settings)
    result = run(capsys, token, journal, **task)
    assert result.get("failed") is True, result
    assert (result["error_kind"], result["error_option"]) == (kind, option), result
    assert result["changed"] is False and result["audit_events"] == [], result
    assert result["msg"].endswith("Nothing was changed on the token.") and "Traceback" not in result["msg"]
    assert "policy_in_force" not in result
    assert objects_of(settings) == before
    assert pin_of(settings) == pin
    return result["msg"]


# ---- a token without a policy signer: today's behaviour ---------------------------------------------------


def test_token_without_signer_keeps_the_unsigned_policy(capsys, hsm_token, settings, journal):
    first = run(capsys, hsm_token, journal)
    assert not first.get("failed") and first["changed"] is True, first
    assert first["policy_in_force"] == {"signed": False, "sha256": hashlib.sha256(b"{}").hexdigest()}
    second = run(capsys, hsm_token, journal, policy={"min_rsa_bits": 4096})
    assert not second.get("failed"), second
    assert second["policy_in_force"] == {"signed": False,
                                         "sha256": hashlib.sha256(b'{"min_rsa_bits":4096}').hexdigest()}
    # a signed_policy is not checked where no signer can verify it: the policy option applies
    ignored = run(capsys, hsm_token, journal, signed={"anything": True}, policy={"min_rsa_bits": 4096})
    assert not ignored.get("failed") and ignored["policy_in_force"]["signed"] is False, ignored
    pin = pin_of(settings)
    assert "policy_serial" not in pin and "policy_signers" not in pin  # the pin as it was before signed policies
    assert signers_on(settings) == []
    info = run_main(capsys, "key_info", connection(hsm_token))
    assert info["policy_signers"] == []
    verify = run_main(capsys, "audit_verify", connection(hsm_token))
    assert verify["policy_signers"] == []


# ---- a token with a policy signer ------------------------------------------------------------------------


def test_signed_policy_accepted_and_in_force(capsys, hsm_token, settings, journal, dana):
    signed = dana.sign(serial=3)
    first = run(capsys, hsm_token, journal, signed=signed)
    assert not first.get("failed") and first["changed"] is True, first
    assert first["policy_in_force"] == {
        "signed": True, "sha256": hashlib.sha256(_sp().policy_payload(signed)).hexdigest(), "serial": 3,
        "signer": dana.fingerprint, "signer_name": "dana", "environment": "prod", "not_after": signed["not_after"]}
    assert first["policy_in_force"]["sha256"] == _sp().policy_digest(signed)
    pin = pin_of(settings)
    assert (pin["policy_serial"], pin["policy_signers"]) == (3, [dana.fingerprint])
    # the same document again (a rerun, another task): accepted, the pin's serial stays
    again = run(capsys, hsm_token, journal, signed=signed)
    assert not again.get("failed") and again["policy_in_force"]["serial"] == 3, again
    # the settings as the policy option takes them after AnsibleModule ("4096" is 4096): the same policy
    loose = run(capsys, hsm_token, journal, signed=signed, policy=dict(POLICY, min_rsa_bits="4096"))
    assert not loose.get("failed"), loose
    # the task ran with the signed settings: an EC key on a curve the signed policy does not allow is refused
    curve = run(capsys, hsm_token, journal, signed=signed, name="ec", type="ec", curve="P-256")
    assert curve.get("failed") is True and curve["error_kind"] == "policy_violation", curve
    info = run_main(capsys, "key_info", connection(hsm_token))
    assert info["policy_signers"] == [{"name": "dana", "label": "policy-signer:dana", "fingerprint": dana.fingerprint,
                                       "destroyable": False}]
    verify = run_main(capsys, "audit_verify", connection(hsm_token))
    assert verify["policy_signers"] == info["policy_signers"]
    assert verify["token_pin"]["policy_serial"] == 3


def test_check_mode_checks_the_policy_and_writes_nothing(capsys, hsm_token, settings, journal, dana):
    run(capsys, hsm_token, journal, signed=dana.sign(serial=1))
    before, pin = objects_of(settings), pin_of(settings)
    checked = run(capsys, hsm_token, journal, signed=dana.sign(serial=2), check_mode=True)
    assert not checked.get("failed") and checked["policy_in_force"]["serial"] == 2, checked
    assert objects_of(settings) == before and pin_of(settings) == pin
    result = run(capsys, hsm_token, journal, policy={}, check_mode=True)
    assert result.get("failed") is True and result["error_kind"] == "policy_unsigned", result


def test_no_signed_policy_is_refused(capsys, hsm_token, settings, journal, dana):
    run(capsys, hsm_token, journal, signed=dana.sign())
    msg = refused(capsys, hsm_token, settings, journal, "policy_unsigned", policy={})
    assert "policy-signer" not in msg and "dana (%s)" % dana.fingerprint in msg and "no signed_policy" in msg
    refused(capsys, hsm_token, settings, journal, "policy_unsigned", signed={}, policy={})


def test_malformed_signed_policy_is_refused(capsys, hsm_token, settings, journal, dana):
    good = dana.sign()
    msg = refused(capsys, hsm_token, settings, journal, "policy_unsigned", signed=dict(good, serial=0))
    assert "serial 0 must be a whole number" in msg
    no_signature = {k: v for k, v in good.items() if k != "signature"}
    assert "missing field(s) signature" in refused(capsys, hsm_token, settings, journal, "policy_unsigned",
                                                   signed=no_signature)


def test_a_refused_first_task_writes_no_pin(capsys, hsm_token, settings, journal, dana):
    assert pin_of(settings) is None
    refused(capsys, hsm_token, settings, journal, "policy_mismatch", option="policy", signed=dana.sign(), policy={})
    assert pin_of(settings) is None
    accepted = run(capsys, hsm_token, journal, signed=dana.sign())
    assert not accepted.get("failed"), accepted
    assert pin_of(settings)["policy_signers"] == [dana.fingerprint]


def test_an_empty_policy_option_is_refused(capsys, hsm_token, settings, journal, dana):
    """The issue's ``-e '{"key_policy": {}}'``: the signed policy is passed, the policy option emptied."""
    signed = dana.sign()
    run(capsys, hsm_token, journal, signed=signed)
    msg = refused(capsys, hsm_token, settings, journal, "policy_mismatch", option="policy", signed=signed, policy={})
    assert "in: allowed_curves, destroy_requires_approval, min_rsa_bits." in msg


def test_a_weakened_policy_option_is_refused(capsys, hsm_token, settings, journal, dana):
    signed = dana.sign()
    run(capsys, hsm_token, journal, signed=signed)
    weaker = dict(POLICY, destroy_requires_approval=False)
    msg = refused(capsys, hsm_token, settings, journal, "policy_mismatch", option="policy", signed=signed,
                  policy=weaker)
    assert "in: destroy_requires_approval." in msg and "signed by dana" in msg
    extra = dict(POLICY, allow_operator_override=True)
    refused(capsys, hsm_token, settings, journal, "policy_mismatch", option="policy", signed=signed, policy=extra)


def test_an_altered_signed_policy_is_refused(capsys, hsm_token, settings, journal, dana):
    """One weakened field in the signed document itself (and the policy option to match): the signature fails."""
    signed = dana.sign(serial=2)
    run(capsys, hsm_token, journal, signed=signed)
    altered = dict(signed, policy=dict(POLICY, destroy_requires_approval=False))
    msg = refused(capsys, hsm_token, settings, journal, "policy_signature_invalid", signed=altered)
    assert "does not verify with policy signer dana" in msg
    for field, value in (("serial", 9), ("not_after", "2099-01-01T00:00:00+00:00"), ("environment", "dev")):
        refused(capsys, hsm_token, settings, journal, "policy_signature_invalid", signed=dict(signed, **{field: value}))
    # another signature of the right length, and a signature that is not DER
    other = dana.sign(policy={"min_rsa_bits": 4096})
    refused(capsys, hsm_token, settings, journal, "policy_signature_invalid",
            signed=dict(signed, signature=other["signature"]))
    refused(capsys, hsm_token, settings, journal, "policy_signature_invalid",
            signed=dict(signed, signature=base64.b64encode(b"\x00" * 64).decode()))


def test_a_policy_signed_by_another_key_is_refused(capsys, hsm_token, settings, journal, dana):
    run(capsys, hsm_token, journal, signed=dana.sign())
    mallory = Signer("dana")  # same name, another key, not on the token
    msg = refused(capsys, hsm_token, settings, journal, "policy_signature_invalid", signed=mallory.sign(serial=7))
    assert "not a policy signer on token" in msg and mallory.fingerprint in msg
    # naming the token's signer as the signer does not help: the signature is mallory's
    forged = mallory.sign(serial=7)
    forged["signer"] = dana.fingerprint
    refused(capsys, hsm_token, settings, journal, "policy_signature_invalid", signed=forged)


def test_an_expired_policy_is_refused(capsys, hsm_token, settings, journal, dana, monkeypatch):
    past = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
    run(capsys, hsm_token, journal, signed=dana.sign())
    msg = refused(capsys, hsm_token, settings, journal, "policy_expired", signed=dana.sign(not_after=past))
    assert "expired at %s" % past.isoformat() in msg
    # a policy valid today, on the day after its not_after (the module's clock moved, as the test clock does)
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _lifecycle_module

    signed = dana.sign(serial=2, not_after=datetime.now(timezone.utc) + timedelta(days=30))
    assert not run(capsys, hsm_token, journal, signed=signed).get("failed")
    later = datetime.now(timezone.utc) + timedelta(days=31)
    monkeypatch.setattr(_lifecycle_module, "utc_now", lambda: later)
    refused(capsys, hsm_token, settings, journal, "policy_expired", signed=signed)


def test_a_rolled_back_policy_is_refused(capsys, hsm_token, settings, journal, dana):
    run(capsys, hsm_token, journal, signed=dana.sign(serial=5))
    older = dana.sign(policy={"min_rsa_bits": 4096}, serial=4)  # validly signed, weaker, older
    msg = refused(capsys, hsm_token, settings, journal, "policy_rolled_back", signed=older)
    assert "already accepted (serial 5)" in msg and "serial of at least 5" in msg
    newer = dana.sign(policy={"min_rsa_bits": 4096}, serial=6)  # a newer signed policy may loosen it
    assert not run(capsys, hsm_token, journal, signed=newer).get("failed")
    assert pin_of(settings)["policy_serial"] == 6
    refused(capsys, hsm_token, settings, journal, "policy_rolled_back", signed=dana.sign(serial=5))


def test_the_policy_is_checked_before_the_work(capsys, hsm_token, settings, journal, dana):
    """key_destroy of a key that does not exist: the policy refusal comes first."""
    signed = dana.sign()
    run(capsys, hsm_token, journal, signed=signed)
    refused(capsys, hsm_token, settings, journal, "policy_mismatch", option="policy", module="key_destroy",
            signed=signed, policy={}, name="nothing", version=1, approved_by="bob")
    done = run(capsys, hsm_token, journal, module="key_rotate", signed=signed, name=["k1"])
    assert not done.get("failed") and done["policy_in_force"]["signed"] is True, done


def test_the_pin_remembers_serial_and_signers(capsys, hsm_token, settings, journal, dana):
    run(capsys, hsm_token, journal, signed=dana.sign(serial=3))
    erin = Signer("erin")
    install(hsm_token, erin)
    by_erin = erin.sign(serial=4)
    result = run(capsys, hsm_token, journal, signed=by_erin)
    assert not result.get("failed") and result["policy_in_force"]["signer"] == erin.fingerprint, result
    pin = pin_of(settings)
    assert pin["policy_serial"] == 4
    assert pin["policy_signers"] == sorted([dana.fingerprint, erin.fingerprint])
    # either signer's policy is accepted; the serial is the token's, whoever signed
    refused(capsys, hsm_token, settings, journal, "policy_rolled_back", signed=dana.sign(serial=3))
    # a serial names one policy: the same serial signed again by the other signer is another document
    msg = refused(capsys, hsm_token, settings, journal, "policy_rolled_back", signed=dana.sign(serial=4))
    assert "a serial is used once" in msg
    assert not run(capsys, hsm_token, journal, signed=dana.sign(serial=5)).get("failed")
    assert pin_of(settings)["policy_serial"] == 5
    assert [signer["name"] for signer in signers_on(settings)] == [
        signer.name for signer in sorted((dana, erin), key=lambda s: s.fingerprint)]


def test_a_signer_cannot_be_deleted(hsm_token, settings, dana):
    import pkcs11.exceptions as p11_exc

    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_session, open_so_session

    with open_session(settings) as session:
        (signer,) = _ps().find_policy_signers(session)
        assert signer.destroyable is False
        with pytest.raises(p11_exc.PKCS11Error):
            signer.obj.destroy()
    with open_so_session(_officer(hsm_token)) as so:
        (signer,) = _ps().find_policy_signers(so)
        with pytest.raises(p11_exc.PKCS11Error):
            signer.obj.destroy()
    assert [signer["fingerprint"] for signer in signers_on(settings)] == [dana.fingerprint]


def test_a_user_session_cannot_install_a_signer(hsm_token, settings):
    import pkcs11.exceptions as p11_exc

    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_session

    with open_session(settings) as session:
        with pytest.raises(p11_exc.AttributeReadOnly):
            session.create_object(_ps().signer_template("eve", Signer("eve").key.public_key()))
    assert signers_on(settings) == []


def test_a_removed_signer_is_refused(capsys, hsm_token, settings, journal):
    """A token that lets the signer go (here: one installed destroyable): the pin remembers it."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_so_session

    signer = Signer("frank")
    install(hsm_token, signer, destroyable=True)
    run(capsys, hsm_token, journal, signed=signer.sign())
    assert pin_of(settings)["policy_signers"] == [signer.fingerprint]
    with open_so_session(_officer(hsm_token)) as so:
        (found,) = _ps().find_policy_signers(so)
        assert found.destroyable is True
        found.obj.destroy()
    # without a signer the unsigned policy would apply: refused, because the token once had one
    msg = refused(capsys, hsm_token, settings, journal, "policy_signer_removed", policy={})
    assert signer.fingerprint in msg
    refused(capsys, hsm_token, settings, journal, "policy_signer_removed", signed=signer.sign(serial=2))


def test_a_rotation_the_policy_in_force_no_longer_allows_is_refused(capsys, hsm_token, settings, journal, dana):
    """Rotation generates the next version with the key's recorded spec: after the officer tightens the policy, a
    key it no longer allows cannot rotate (check mode says so too), and nothing changes; retiring it still works."""
    first = dana.sign(policy={}, serial=1)
    made = run(capsys, hsm_token, journal, signed=first, name="legacy", type="rsa", size=3072, usage=["sign", "verify"])
    assert not made.get("failed"), made
    assert not run(capsys, hsm_token, journal, signed=first, name="fine").get("failed")
    strict = dana.sign(policy={"min_rsa_bits": 4096}, serial=2)
    assert run(capsys, hsm_token, journal, signed=strict, name="fresh", type="rsa", size=3072)["error_kind"] == \
        "policy_violation"
    before, pin = objects_of(settings), pin_of(settings)
    for check_mode in (True, False):
        refused = run(capsys, hsm_token, journal, module="key_rotate", signed=strict, name=["fine", "legacy"],
                      force=True, check_mode=check_mode)
        assert refused.get("failed") and (refused["error_kind"], refused["error_option"]) == (
            "policy_violation", "name"), refused
        assert "key 'legacy': size 3072 is below the policy minimum for RSA keys (4096 bits)" in refused["msg"]
        assert "retire" in refused["msg"] and "fine" not in refused["msg"].split(":", 2)[-1]
        assert objects_of(settings) == before and pin_of(settings) == pin
    assert not run(capsys, hsm_token, journal, module="key_rotate", signed=strict, name=["fine"], force=True).get(
        "failed")
    retired = run(capsys, hsm_token, journal, module="key_rotate", signed=strict, name=["legacy"], retire=True)
    assert not retired.get("failed") and retired["changed"], retired


def test_a_policy_of_another_environment_is_refused(capsys, hsm_token, settings, journal, dana):
    """A token belongs to the environment of its first policy: a later policy signed for staging (a looser one,
    or one whose change approvals were made for every token, token: *) does not apply to a prod token."""
    assert not run(capsys, hsm_token, journal, signed=dana.sign(serial=1)).get("failed")
    looser = dana.sign(policy={}, serial=2, environment="staging")
    msg = refused(capsys, hsm_token, settings, journal, "policy_environment_changed", signed=looser)
    assert "environment 'staging'" in msg and "environment 'prod''s" in msg
    done = run(capsys, hsm_token, journal, signed=dana.sign(policy={}, serial=2))
    assert not done.get("failed") and done["policy_in_force"]["serial"] == 2, done
