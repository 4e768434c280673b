# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The body of a Security Officer module's ``main()`` (recipient_approve).

PRIVATE: not part of the public interface.

The sibling of ``_lifecycle_module.run_lifecycle_module`` for work done in a Security
Officer session (the SO PIN): policy and audit context are read the same way, but the
session is CKU_SO, which sees only public objects and cannot use private keys, so it
takes no lease (the lease is a private object) and anchors no checkpoint (it cannot
sign); the next user task anchors the journal head that chains the officer's records.
A typed error becomes ``fail_json`` through ``_module_result.fail_with_error``, as
everywhere else.
"""

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import policy_overrides
from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import require_dependencies
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError, UnexpectedError
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import OfficerSettings, open_so_session
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._module_result import fail_with_error
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy
from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import verify_policy
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import TokenObjects


def run_officer_module(module, work, validate=None, empty_result=None, signed_policy=False):
    """Run ``work(session, token_label, policy, context, checked)`` in an SO session and exit with its result.

    ``validate(policy)`` checks options before the token is opened and returns ``checked`` (passed to ``work``).
    ``work`` returns ``(result, output)``: ``result`` has ``changed``, ``audit_events`` and ``diff``;
    ``output`` holds the module's own return values. ``empty_result`` are its return values on failure.

    ``signed_policy=True`` (recipient_approve): the task's policy is checked against the token's policy signers
    first, as in every lifecycle module (``_signed_policy.verify_policy``; the signed policies the token recorded,
    public objects, are the floor, since this session cannot read the journal pin), ``work`` gets the TokenObjects of
    the session as keyword ``objects`` (for the approvals' nonces), and a new signed policy is recorded after the
    work.
    """
    require_dependencies(module)
    params = module.params
    try:
        policy = load_policy(policy_overrides(params))
        checked = validate(policy) if validate is not None else None
        context = AuditContext.from_params(params["audit_context"])
        officer = OfficerSettings.from_params(params)
        with open_so_session(officer) as session:
            policy_in_force = acceptance = None
            extra = {}
            if signed_policy:
                objects = extra["objects"] = TokenObjects(session, officer.token_label).load()
                policy_in_force, acceptance = verify_policy(session, params, None, utc_now(), context=context,
                                                            objects=objects, check_mode=module.check_mode)
            result, output = work(session, officer.token_label, policy, context, checked, **extra)
            if acceptance is not None and not module.check_mode:
                result.audit_events.append(acceptance.record(extra["objects"], context, utc_now()))
                result.changed = True
            if policy_in_force is not None:
                output = dict(output, policy_in_force=policy_in_force)
    except KeyLifecycleError as exc:
        fail_with_error(module, exc, **(empty_result or {}))
    except Exception as exc:  # pylint: disable=broad-except
        fail_with_error(module, UnexpectedError.wrap(exc, module._name), **(empty_result or {}))
    output = dict(output, changed=result.changed, audit_events=result.audit_events, audit_checkpoint=None)
    if module._diff and getattr(result, "diff", None) is not None:
        output["diff"] = result.diff
    module.exit_json(**output)
