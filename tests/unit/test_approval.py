"""Dual control: one rule for every action that may need a second person's approval."""

from __future__ import annotations

import pytest


@pytest.fixture
def approval():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _approval

    return _approval


def _policy(**settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy

    return load_policy(settings)


@pytest.mark.parametrize("action,setting", [("destroy", "destroy_requires_approval"),
                                            ("compromise_rotate", "compromise_requires_approval")])
def test_required_approval_is_missing(approval, action, setting):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import PolicyViolation

    approval.check_approval(_policy(), action, None, "alice")  # not required by the baseline
    with pytest.raises(PolicyViolation, match="requires a second person's approval to %s" % action.replace("_", " ")):
        approval.check_approval(_policy(**{setting: True}), action, None, "alice")
    approval.check_approval(_policy(**{setting: True}), action, "bob", "alice")


@pytest.mark.parametrize("action", ["destroy", "compromise_rotate"])
def test_approver_must_be_another_authorized_person(approval, action):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import PolicyViolation

    with pytest.raises(PolicyViolation, match="is the operator: an approval needs a second, different person") as err:
        approval.check_approval(_policy(), action, "alice", "alice")
    assert err.value.option == "approved_by"
    policy = _policy(authorization={action: ["alice", "group:ops"]}, groups={"ops": ["bob"]})
    approval.check_approval(policy, action, "bob", "alice")
    with pytest.raises(PolicyViolation, match="'carol' is not authorized to %s" % action.replace("_", " ")):
        approval.check_approval(policy, action, "carol", "alice")


@pytest.mark.parametrize("approved_by,change_ref,option", [("bob smith", None, "approved_by"),
                                                           ("bob", "INC 7", "change_ref")])
def test_approval_options_are_checked(approval, approved_by, change_ref, option):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption

    approval.validate_approval_options("bob", "INC-7")
    with pytest.raises(InvalidOption) as err:
        approval.validate_approval_options(approved_by, change_ref)
    assert err.value.option == option
