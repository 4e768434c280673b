"""Every bad input is a clear, early error: it names the option, shows no traceback, changes nothing on the token,
and (for the modules that journal) leaves a journal that ends in an outcome record.

The cases run as the tasks of ONE play (each task registers its result, ignore_errors), after one set-up task:
one ansible-playbook run for all of them. The parametrized test then checks each case's saved result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import yaml

from tests.conftest import ShiftedClock, make_token
from tests.integration.conftest import Runner

JOURNALING = {"key_generate", "key_rotate", "key_destroy", "key_distribute", "key_install", "recipient_enroll"}
PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"


@dataclass
class Case:
    id: str
    module: str
    args: dict
    option: str  # the option the message must name
    connection: bool = True
    fragment: str = ""  # more of the message, where it matters
    extra: dict = field(default_factory=dict)


CASES = [
    # key_generate: sizes, durations, types, the batch and the policy
    Case("generate-size-0", "key_generate", {"name": "n1", "size": 0}, "size", fragment="Request one of: 256"),
    Case("generate-size-128", "key_generate", {"name": "n1", "size": 128}, "size"),
    Case("generate-size-300", "key_generate", {"name": "n1", "size": 300}, "size", fragment="choose one of: 256"),
    Case("generate-size-negative", "key_generate", {"name": "n1", "size": -256}, "size"),
    Case("generate-size-word", "key_generate", {"name": "n1", "size": "big"}, "size"),
    Case("generate-rsa-2048", "key_generate", {"name": "n1", "type": "rsa", "size": 2048}, "size",
         fragment="3072, 4096"),
    Case("generate-rsa-5000", "key_generate", {"name": "n1", "type": "rsa", "size": 5000}, "size"),
    Case("generate-ec-size", "key_generate", {"name": "n1", "type": "ec", "size": 256}, "size"),
    Case("generate-ec-curve", "key_generate", {"name": "n1", "type": "ec", "curve": "P-1"}, "curve"),
    Case("generate-type", "key_generate", {"name": "n1", "type": "dsa"}, "type"),
    Case("generate-usage", "key_generate", {"name": "n1", "usage": ["teleport"]}, "usage"),
    Case("generate-name", "key_generate", {"name": "bad/name"}, "name"),
    Case("generate-managed-name", "key_generate", {"name": "package-signing", "type": "ec", "distributable": True},
         "name", fragment="own signing keys"),
    Case("generate-managed-name-batch", "key_generate", {"keys": [{"name": "ok-1"}, {"name": "restore-signing"}]},
         "keys", fragment="own signing keys"),
    Case("generate-recipients", "key_generate", {"name": "n1", "recipients": ["r1"]}, "recipients"),
    Case("generate-distributable", "key_generate", {"name": "n1", "distributable": "maybe"}, "distributable"),
    Case("generate-retention-99999999d", "key_generate", {"name": "n1", "retention_period": "99999999d"},
         "retention_period", fragment="100 years"),
    Case("generate-retention-huge-seconds", "key_generate", {"name": "n1", "retention_period": 10 ** 20},
         "retention_period"),
    Case("generate-retention-0", "key_generate", {"name": "n1", "retention_period": "0d"}, "retention_period"),
    Case("generate-retention-negative", "key_generate", {"name": "n1", "retention_period": "-5d"},
         "retention_period"),
    Case("generate-retention-word", "key_generate", {"name": "n1", "retention_period": "soon"}, "retention_period"),
    Case("generate-rotation-400d", "key_generate", {"name": "n1", "rotation_period": "400d"}, "rotation_period"),
    Case("generate-rotation-0", "key_generate", {"name": "n1", "rotation_period": "0s"}, "rotation_period"),
    Case("generate-keys-string", "key_generate", {"keys": "f15"}, "keys"),
    Case("generate-keys-list-of-strings", "key_generate", {"keys": ["f15"]}, "keys"),
    Case("generate-keys-without-name", "key_generate", {"keys": [{"size": 256}]}, "keys"),
    Case("generate-keys-and-name", "key_generate", {"name": "n1", "keys": [{"name": "n2"}]}, "keys"),
    Case("generate-policy-string", "key_generate", {"name": "n1", "policy": "strict"}, "policy"),
    Case("generate-policy-list", "key_generate", {"name": "n1", "policy": ["strict"]}, "policy"),
    Case("generate-policy-weaker", "key_generate", {"name": "n1", "policy": {"min_aes_bits": 128}},
         "policy.min_aes_bits"),
    Case("generate-policy-retention", "key_generate",
         {"name": "n1", "policy": {"default_retention_period": "99999999d"}}, "policy.default_retention_period"),
    Case("generate-policy-unknown", "key_generate", {"name": "n1", "policy": {"strictness": 11}}, "strictness"),
    Case("generate-pin-file-missing", "key_generate", {"name": "n1", "user_pin_file": "/nonexistent/pin"},
         "user_pin_file"),
    # key_rotate
    Case("rotate-reason", "key_rotate", {"name": ["k"], "reason": "whim"}, "reason"),
    Case("rotate-force", "key_rotate", {"name": ["k"], "force": "perhaps"}, "force"),
    Case("rotate-name", "key_rotate", {"name": ["bad/name"], "force": True}, "name"),
    Case("rotate-policy-string", "key_rotate", {"name": ["k"], "force": True, "policy": "strict"}, "policy"),
    Case("rotate-approved-by", "key_rotate", {"name": ["k"], "force": True, "approved_by": "bob smith"},
         "approved_by"),
    Case("rotate-change-ref", "key_rotate", {"name": ["k"], "force": True, "change_ref": "a b"}, "change_ref"),
    Case("rotate-retire-all-due", "key_rotate", {"retire": True, "all_due": True}, "all_due"),
    # key_destroy
    Case("destroy-version-word", "key_destroy", {"name": "k", "version": "one"}, "version"),
    Case("destroy-without-version", "key_destroy", {"name": "k"}, "version"),
    Case("destroy-all-expired", "key_destroy", {"all_expired": "yes please"}, "all_expired"),
    Case("destroy-policy-string", "key_destroy", {"all_expired": True, "policy": "strict"}, "policy"),
    Case("destroy-name", "key_destroy", {"name": "bad/name", "version": 1}, "name"),
    # key_info
    Case("info-state", "key_info", {"state": ["bogus"]}, "state"),
    Case("info-name", "key_info", {"name": ["bad/name"]}, "name"),
    Case("info-policy-string", "key_info", {"policy": "strict"}, "policy"),
    Case("info-policy-setting", "key_info", {"policy": {"min_rsa_bits": "lots"}}, "min_rsa_bits"),
    Case("info-token-label", "key_info", {"token_label": "no-such-token"}, "token_label"),
    # key_distribute
    Case("distribute-recipients-string", "key_distribute", {"recipients": "r1"}, "recipients"),
    Case("distribute-recipient-without-key", "key_distribute", {"recipients": [{"name": "r1"}]}, "public_key_pem"),
    Case("distribute-oaep-hash", "key_distribute",
         {"recipients": [{"name": "r1", "public_key_pem": PEM}], "oaep_hash": "md5"}, "oaep_hash"),
    # key_install
    Case("install-recipient", "key_install", {"recipient": "bad/name", "packages": [{"name": "k"}]}, "recipient"),
    Case("install-packages-string", "key_install", {"recipient": "r1", "packages": "p"}, "packages"),
    Case("install-state", "key_install", {"recipient": "r1", "state": "gone"}, "state"),
    # recipient_enroll
    Case("enroll-key-size-word", "recipient_enroll", {"key_size": "huge"}, "key_size"),
    Case("enroll-key-size-small", "recipient_enroll", {"key_size": 1024}, "key_size"),
    Case("enroll-policy-string", "recipient_enroll", {"policy": "strict"}, "policy"),
    # refused before the token is opened: no transport key is made first (the token is compared after every case)
    Case("enroll-package-signer-not-a-key", "recipient_enroll", {"package_signer": {"public_key_pem": "not a key"}},
         "package_signer"),
    # token_check
    Case("token-check-min-pin-length", "token_check", {"min_pin_length": "six"}, "min_pin_length"),
    Case("token-check-storage-paths", "token_check", {"storage_paths": {"a": 1}}, "storage_paths"),
    # audit_verify
    Case("audit-verify-fail-on-error", "audit_verify", {"fail_on_error": "sometimes"}, "fail_on_error"),
    Case("audit-verify-unknown-option", "audit_verify", {"fail_on_eror": True}, "fail_on_eror"),
    # compliance_report (controller only, no connection options)
    Case("report-key-info-string", "compliance_report", {"key_info": "x", "output_dir": "out"}, "key_info",
         connection=False),
    Case("report-key-info-not-registered", "compliance_report", {"key_info": {}, "output_dir": "out"}, "key_info",
         connection=False),
    Case("report-events", "compliance_report", {"key_info": {"key_versions": []}, "output_dir": "out", "events": 0},
         "events", connection=False),
    Case("report-output-dir", "compliance_report", {"key_info": {"key_versions": []}}, "output_dir",
         connection=False),
]
BY_ID = {case.id: case for case in CASES}
assert len(BY_ID) == len(CASES) >= 40


def _play(token, journal, out):
    """One play: a task per case, each followed by a set_fact that saves its result and the journal's last line."""
    tasks = []
    for index, case in enumerate(CASES):
        args = dict(token.connection()) if case.connection else {}
        args.update(case.args)
        tasks.append({"name": case.id, "secops.keylifecycle.%s" % case.module: args,
                      "register": "case_result", "ignore_errors": True})
        tasks.append({"name": "save %s" % case.id, "ansible.builtin.set_fact": {
            "saved": "{{ saved | default({}) | combine({%r: {'result': case_result, 'journal_last': "
                     "(lookup('ansible.builtin.file', %r, errors='ignore') or '').splitlines() | last "
                     "| default('')}}) }}" % (case.id, str(journal))}})
    tasks.append({"name": "save results", "ansible.builtin.copy": {"content": "{{ saved | to_json }}",
                                                                   "dest": str(out)},
                  "check_mode": False, "diff": False})
    return [{"name": "bad input", "hosts": "hsm", "gather_facts": False, "environment": token.env,
             "tasks": tasks}]


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory, collections_path):
    """Run every case once, in one play, on a token holding one key; return what the test checks."""
    tmp_path = tmp_path_factory.mktemp("bad-input")
    token = make_token(tmp_path / "hsm", "kl-bad-input")
    runner = Runner(tmp_path, collections_path, token, ShiftedClock())
    setup = runner.task("key_generate", {"name": "k"})
    assert setup.task["changed"] is True, setup.task
    before = token.objects()
    out = tmp_path / "bad-input-results.json"
    play = tmp_path / "bad-input.yml"
    play.write_text(yaml.safe_dump(_play(token, runner.journal, out), sort_keys=False))
    proc = runner.playbook(play)
    assert out.exists(), "the play did not reach its last task:\n%s\n%s" % (proc.stdout, proc.stderr)
    return {"results": json.loads(out.read_text()), "output": proc.stdout + proc.stderr,
            "before": before, "after": token.objects(), "journal": runner.journal_records()}


@pytest.mark.parametrize("case_id", list(BY_ID))
def test_bad_input_is_refused_clearly(bad_input_runs, case_id):
    case = BY_ID[case_id]
    saved = bad_input_runs["results"][case_id]
    result = saved["result"]
    assert result.get("failed") is True, result
    message = str(result.get("msg", ""))
    assert case.option in message, message
    assert case.fragment in message, message
    assert "Traceback" not in json.dumps(result) and "module_stderr" not in result, result
    if case.module in JOURNALING:
        assert result.get("error_kind"), result
        last = json.loads(saved["journal_last"])["event"]
        assert last["keylifecycle"]["phase"] == "outcome", last
        assert last["event"]["outcome"] == "failure" and last["error"]["type"], last


def test_no_traceback_no_token_change_and_every_intent_has_its_outcome(bad_input_runs):
    assert "Traceback" not in bad_input_runs["output"]
    assert bad_input_runs["after"] == bad_input_runs["before"]
    records = bad_input_runs["journal"]
    phases = [r["event"]["keylifecycle"]["phase"] for r in records if r["event"]["keylifecycle"].get("phase")]
    # read-only modules may journal observations (token_check); every intent is closed by its outcome
    assert [p for p in phases if p in ("intent", "outcome")][-1] == "outcome"
    assert phases.count("intent") == phases.count("outcome")
    # every journaling case wrote an intent and its outcome (the set-up task wrote one pair)
    assert phases.count("intent") == 1 + sum(case.module in JOURNALING for case in CASES)


def test_empty_pin_variable_counts_as_unset(runner, token):
    """An empty PKCS11_USER_PIN in the host's environment is no PIN: user_pin_file is used, no collision."""
    result = runner.task("key_generate", {"name": "k"}, extra_env={"PKCS11_USER_PIN": ""})
    assert result.task.get("failed") is not True, result.task
    assert result.task["changed"] is True
    info = runner.task("key_info", {}, extra_env={"PKCS11_USER_PIN": "", "PKCS11_MODULE": ""})
    assert info.task.get("failed") is not True, info.task
