"""Identity (issue 14, item 5): the AWX job variables count only inside an AWX / Automation Platform job run, and
the policy every intent records. Pure: fake environments, no token, no ansible-playbook."""

from __future__ import annotations

import getpass

import pytest

#: what an AWX job run's environment holds (AWX RunJob.build_env + ansible-runner), as the tests fake it
AWX_ENV = {"JOB_ID": "4242", "AWX_HOST": "https://awx.example.org", "ANSIBLE_STDOUT_CALLBACK": "awx_display",
           "AWX_ISOLATED_DATA_DIR": "/runner/artifacts/4242", "INVENTORY_ID": "3"}
AWX_VARS = {"awx_user_name": "alice", "awx_job_id": 4242, "tower_user_name": "alice", "tower_job_id": 4242}
SIGNER = "sha256:" + "ab" * 32


def _action():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _lifecycle_action

    return _lifecycle_action


def test_inside_an_awx_job_the_job_variables_name_the_operator_and_the_run():
    action = _action()
    assert action.awx_job_environment(AWX_ENV) == []
    assert action.identity_refusal(AWX_VARS, AWX_ENV) is None
    assert action.resolve_operator(AWX_VARS, AWX_ENV) == ("alice", "awx_job")
    assert action.resolve_run_id(AWX_VARS, AWX_ENV, "a-b-c-d-1") == "awx-4242"
    context = action.audit_context(AWX_VARS, AWX_ENV, "a-b-c-d-1")
    assert (context["operator"], context["operator_source"], context["run_id"]) == ("alice", "awx_job", "awx-4242")


@pytest.mark.parametrize("variables", [
    {"awx_user_name": "alice"}, {"tower_user_name": "alice"}, {"awx_job_id": "4242"}, {"tower_job_id": 4242},
    {"awx_user_name": "alice", "awx_job_id": 4242},
])
def test_outside_awx_any_job_variable_is_refused_and_does_not_count(variables):
    action = _action()
    kind, message = action.identity_refusal(variables, {"HOME": "/root"})
    assert kind == "identity_not_permitted"
    for name in variables:
        assert "%s=%s" % (name, variables[name]) in message
    assert "not an AWX / Automation Platform job" in message and "JOB_ID" in message and "AWX_HOST" in message
    assert message.endswith("Nothing was changed on the HSM; the refusal is journaled.")
    # the record of the refusal names who really ran it, not the asserted user, and not the asserted job
    assert action.resolve_operator(variables, {}) == (getpass.getuser(), "controller_os_user")
    assert action.resolve_run_id(variables, {}, "n1-n2-r1-r2-7") == "n1-n2-r1-r2"


def test_ci_identity_is_used_when_the_awx_variables_do_not_count():
    env = {"GITHUB_ACTIONS": "true", "GITHUB_ACTOR": "octo", "GITHUB_RUN_ID": "9"}
    action = _action()
    assert action.resolve_operator({"awx_user_name": "alice"}, env) == ("octo", "github_actions")
    assert action.resolve_run_id({"awx_job_id": 1}, env, "x") == "gha-9-1"


@pytest.mark.parametrize("drop", ["JOB_ID", "AWX_HOST", "ANSIBLE_STDOUT_CALLBACK", "AWX_ISOLATED_DATA_DIR"])
def test_each_variable_of_the_job_environment_is_required(drop):
    env = {k: v for k, v in AWX_ENV.items() if k != drop}
    action = _action()
    assert len(action.awx_job_environment(env)) == 1
    assert action.identity_refusal(AWX_VARS, env)[0] == "identity_not_permitted"
    assert action.resolve_operator(AWX_VARS, env)[1] == "controller_os_user"


@pytest.mark.parametrize("env", [
    dict(AWX_ENV, JOB_ID="x42"),  # not a job number
    dict(AWX_ENV, ANSIBLE_STDOUT_CALLBACK="default"),  # ansible-runner always sets awx_display
    dict(AWX_ENV, AWX_HOST=""),
])
def test_a_partial_or_wrong_job_environment_does_not_count(env):
    assert _action().identity_refusal(AWX_VARS, env)[0] == "identity_not_permitted"


def test_the_job_number_must_be_this_jobs_and_the_user_names_must_agree():
    action = _action()
    kind, message = action.identity_refusal(dict(AWX_VARS, awx_job_id=1), AWX_ENV)
    assert kind == "identity_not_permitted" and "JOB_ID=4242" in message
    kind, message = action.identity_refusal(dict(AWX_VARS, tower_user_name="bob"), AWX_ENV)
    assert kind == "identity_not_permitted" and "different users" in message
    assert action.resolve_operator(dict(AWX_VARS, awx_job_id=1), AWX_ENV)[1] == "controller_os_user"


def test_no_job_variable_is_no_refusal_and_empty_ones_are_not_given():
    action = _action()
    assert action.identity_refusal({}, {}) is None
    assert action.identity_refusal({"awx_user_name": "", "awx_job_id": None}, {}) is None


def test_an_override_of_an_awx_identity_keeps_the_resolved_one_next_to_it():
    context = _action().audit_context(AWX_VARS, AWX_ENV, "u", override="bob")
    assert (context["operator"], context["resolved_operator"], context["resolved_operator_source"]) == (
        "bob", "alice", "awx_job")


# ---- the policy in every intent record, and the policy authorization uses ------------------------------------


def _signed(policy=None, serial=3):
    return {"format": 1, "environment": "prod", "serial": serial, "not_after": "2027-06-30T00:00:00+00:00",
            "policy": {"min_rsa_bits": 4096} if policy is None else policy, "signer": SIGNER,
            "signer_name": "dana", "signature": "MEUCIQ=="}


def test_a_signed_policy_is_recorded_with_its_serial_signer_and_environment():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import validate_event
    from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import policy_digest

    document = _signed()
    record = _action().policy_record({"signed_policy": document, "policy": {"min_rsa_bits": 4096}})
    assert record == {"sha256": policy_digest(document), "signed": True, "serial": 3, "signer": SIGNER,
                      "environment": "prod"}
    validate_event({"keylifecycle": {"policy": record}})


@pytest.mark.parametrize("args", [
    {}, {"policy": {}}, {"policy": None}, {"signed_policy": {}}, {"signed_policy": None, "policy": {}},
])
def test_no_policy_is_recorded_as_the_unsigned_empty_policy(args):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import unsigned_in_force

    record = _action().policy_record(args)
    assert record["signed"] is False and set(record) == {"sha256", "signed"}
    assert record == unsigned_in_force({"policy": {}})  # what the module reports as in force on such a token


def test_the_unsigned_digest_is_the_modules_one_whatever_types_the_task_gave():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import unsigned_in_force

    given = _action().policy_record({"policy": {"min_rsa_bits": "4096", "allow_operator_override": "no"}})
    assert given == unsigned_in_force({"policy": {"min_rsa_bits": 4096, "allow_operator_override": False}})
    assert given != _action().policy_record({"policy": {"min_rsa_bits": 3072}})


@pytest.mark.parametrize("malformed", [
    "not json", ["a list"], 7, dict(_signed(), serial=0), dict(_signed(), signer="dana"), dict(_signed(), extra=1),
    {k: v for k, v in _signed().items() if k != "signature"}, dict(_signed(), policy="all"),
    dict(_signed(), not_after="tomorrow"),
])
def test_a_malformed_signed_policy_does_not_crash_the_controller(malformed):
    action = _action()
    record = action.policy_record({"signed_policy": malformed, "policy": {"min_rsa_bits": 3072}})
    assert record == action.policy_record({"policy": {"min_rsa_bits": 3072}})  # what runs where no signer checks
    assert action.authorization_policy({"signed_policy": malformed, "policy": {"min_rsa_bits": 3072}}) == {
        "min_rsa_bits": 3072}


def test_a_policy_that_is_not_a_dict_is_still_recorded():
    record = _action().policy_record({"policy": "min_rsa_bits=1024"})
    assert record["signed"] is False and len(record["sha256"]) == 64


def test_authorization_uses_the_signed_policy_not_the_policy_option():
    action = _action()
    signed = _signed({"authorization": {"destroy": ["bob"]}})
    assert action.authorization_policy({"signed_policy": signed, "policy": {}}) == {
        "authorization": {"destroy": ["bob"]}}
    assert action.authorization_policy({"policy": {"min_rsa_bits": 4096, "max_rotation_period": None}}) == {
        "min_rsa_bits": 4096}


def _refusal(module_args, operator="mallory"):
    action = _action()
    plugin = action.LifecycleActionBase.__new__(action.LifecycleActionBase)
    plugin.AUTHORIZATION_ACTION = "destroy"
    context = {"operator": operator, "operator_source": "awx_job", "run_id": "r", "host": "h"}
    return plugin._authorization_refusal(module_args, context)  # pylint: disable=protected-access


def test_key_policy_emptied_with_e_does_not_lift_the_signed_authorization():
    """`-e key_policy={}` empties the policy option; the signed policy the task still brings decides."""
    signed = _signed({"authorization": {"destroy": ["bob"]}})
    kind, message = _refusal({"signed_policy": signed, "policy": {}})
    assert kind == "not_authorized" and "'mallory'" in message and "bob" in message
    assert _refusal({"signed_policy": signed, "policy": {}}, operator="bob") is None
    assert _refusal({"policy": {}}) is None  # unsigned and empty: today's behaviour (the module refuses on a
    # token with a policy signer: policy_unsigned)
