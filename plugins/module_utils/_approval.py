# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Dual control: the approval rules of the lifecycle actions, in one place.

PRIVATE: not part of the public interface.

Where the environment's policy asks for it, a compromise rotation or a destruction
needs ``approved_by``: a second person, different from the operator and authorized
for the action by ``policy.authorization``. The modules only call ``check_approval``.
"""

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption, PolicyViolation
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import CHANGE_REF_RE, PERSON_RE

#: lifecycle action -> the policy setting that makes it require a second person's approval
APPROVAL_REQUIRED_BY = {
    "compromise_rotate": "compromise_requires_approval",
    "destroy": "destroy_requires_approval",
    "journal_rollover": "journal_rollover_requires_approval",
}


def validate_approval_options(approved_by, change_ref):
    """Check the approval options (of an approver, or of the approving Security Officer) before anything happens
    (they go into the audit record)."""
    if approved_by is not None and not (isinstance(approved_by, str) and PERSON_RE.match(approved_by)):
        raise InvalidOption("approved_by %r is not a valid person name: letters, digits and . _ @ + - only."
                            % approved_by, option="approved_by")
    if change_ref is not None and not (isinstance(change_ref, str) and CHANGE_REF_RE.match(change_ref)):
        raise InvalidOption("change_ref %r is not a valid change or ticket reference: letters, digits and "
                            ". _ : / # - only, up to 64 characters." % change_ref, option="change_ref")


def check_approval(policy, action, approved_by, operator):
    """Refuse ``action`` unless its approval is in order.

    An approver, when given, must differ from the operator and be authorized for the action; where the
    policy requires an approval (APPROVAL_REQUIRED_BY), one must be given.
    """
    if approved_by is not None and approved_by == operator:
        raise PolicyViolation("approved_by %r is the operator: an approval needs a second, different person."
                              % approved_by, option="approved_by")
    if approved_by is not None and not policy.allows(action, approved_by):
        raise PolicyViolation("approved_by %r is not authorized to %s: %s." % (
            approved_by, action.replace("_", " "), policy.describe_authorization(action)), option="approved_by")
    if getattr(policy, APPROVAL_REQUIRED_BY[action]) and not approved_by:
        raise PolicyViolation("The policy requires a second person's approval to %s: set approved_by (and "
                              "change_ref) to the approver, who must not be the operator." % action.replace("_", " "),
                              option="approved_by")
