# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The common body of every state-changing lifecycle module's ``main()``.

PRIVATE: not part of the public interface.

Policy, audit context and connection are read the same way for every lifecycle
module; the work runs in one logged-in session on one enumeration of the token; the
token's pin of its journal is checked first (``_journal_pin.JournalPin.check``: a task
without a journaled intent that extends the token's head is refused before anything on
the token changes), then the environment's signed policy against the token's policy
signers (``_signed_policy.check_policy``: the module result's ``policy_in_force``), and
the controller's intent record is anchored by a signed checkpoint in the same session
after the work;
a state-changing run holds the token's lease (``_token_lease``) from before the token
is read until after the checkpoint is written, so runs from several controllers take
turns; duplicate labels left by older versions are repaired first (``_version_repair``);
a typed error becomes ``fail_json`` here and nowhere else.
"""

from __future__ import annotations

import json
from collections import Counter

from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import policy_overrides
from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import require_dependencies
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError, UnexpectedError
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import ConnectionSettings, open_session
from ansible_collections.secops.keylifecycle.plugins.module_utils._journal_pin import (
    JournalPin,
    anchor_journal,
    as_returned,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._key_store import TokenKeyStore
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._module_result import fail_with_error
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy
from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import check_policy
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_lease import lifecycle_lease, module_action
from ansible_collections.secops.keylifecycle.plugins.module_utils._version_repair import repair_duplicates


def _module_name(module, work):
    """The module's short name (``key_generate``), for messages: from where ``work`` is defined, else its name."""
    source = str(getattr(work, "__module__", "") or "")
    if ".plugins.modules." in source:
        return source.rsplit(".", 1)[-1]
    return str(getattr(module, "_name", "") or "this module").rsplit(".", 1)[-1]


def run_lifecycle_module(module, work, validate=None, empty_result=None, open_store=None, anchor=True,
                         rollover=False, keep_records=()):
    """Run ``work(store, policy, context)`` and exit the module with its result.

    ``work`` returns ``(result, output)``: ``result`` has ``changed``, ``audit_events`` and
    optionally ``diff``; ``output`` holds the module's own return values. ``validate(policy)``
    checks options before the token is opened. ``empty_result`` are the module's return
    values on failure. ``open_store(session, token_label)`` returns the loaded store
    (default: the key store of an HSM token); ``anchor=False`` for modules that run on a
    recipient's token, which holds no audit checkpoint key. ``rollover=True`` (audit_rollover only) lets the
    intent start a new journal that continues the one the token names. ``keep_records``: the lists a summary
    (``return_records: false``) keeps, because they are the task's product (key_replicate's packages).
    """
    require_dependencies(module)
    params = module.params
    try:
        policy = load_policy(policy_overrides(params))
        if validate is not None:
            validate(policy)
        context = AuditContext.from_params(params["audit_context"])
        settings = ConnectionSettings.from_params(params)
        # the lease is taken before the session that reads the token is opened, so that its enumeration sees all
        # the last holder wrote; it is released after that session is closed
        with lifecycle_lease(settings, module, context) as lease, open_session(settings) as session:
            lease.attach(session)
            prelude = lease.takeover_events(context, module_action(module))
            journal_pin = policy_in_force = result = first_checkpoint = None
            try:
                if open_store is None:
                    store = TokenKeyStore(session, settings.token_label).load()
                    store.backup_managed_keys = policy.require_backup
                    if anchor:  # before any repair or work: a refused task changes nothing on the token
                        journal_pin = JournalPin(session, store)
                        journal_pin.check(params["audit_context"], module.check_mode,
                                          module_name=_module_name(module, work), allow_rollover=rollover)
                        # the signed policy, verified in the token, before the first pin or any repair or work
                        policy_in_force = check_policy(session, params, journal_pin, utc_now(), context=context,
                                                       objects=store.objects, check_mode=module.check_mode)
                        if not module.check_mode:  # an empty token's first task pins its journal before any work
                            first_checkpoint, version, created = journal_pin.pin_first(params["audit_context"],
                                                                                       context.operator)
                            if created:
                                prelude.append(journal_pin.signer.key.generated_event(version, context))
                    if lease.held:
                        store.lease = lease
                        prelude += repair_duplicates(store, context, module_action(module))
                else:
                    store = open_store(session, settings.token_label)
                result, output = work(store, policy, context)
                lease.check()
            except KeyLifecycleError as exc:
                # what changed the token before the refusal: a takeover or repair, or the whole work when the lease
                # ran out after it (lease.check)
                done = prelude + (list(result.audit_events) if result is not None else [])
                if done:
                    exc.audit_events = done + list(getattr(exc, "audit_events", ()))
                    exc.changed = True
                    exc.message = "%s %s" % (exc.message, changed_before_refusal(done))
                if first_checkpoint is not None:  # the token pinned this task's intent: the journal must say so
                    exc.audit_checkpoint = first_checkpoint
                raise
            if prelude:  # a takeover or a repair changed the token, whatever the work did
                result.audit_events[:0] = prelude
                result.changed = True
            acceptance = getattr(journal_pin, "policy_acceptance", None)
            if acceptance is not None and not module.check_mode:  # a new signed policy, recorded once the work is done
                result.audit_events.append(acceptance.record(store.objects, context, utc_now()))
                result.changed = True
            checkpoint, signing_key_created = None, False
            if anchor:
                checkpoint, signing_key_created = anchor_journal(session, store, params["audit_context"], context,
                                                                 result.audit_events, pin=journal_pin,
                                                                 hidden=module.no_log_values)
    except KeyLifecycleError as exc:
        fail_with_error(module, exc, **(empty_result or {}))
    except Exception as exc:  # pylint: disable=broad-except
        # a bug, not a refusal: still a typed failure with an error_kind, the audit events gathered so far, and no
        # traceback in the play's output
        fail_with_error(module, UnexpectedError.wrap(exc, module._name), **(empty_result or {}))
    output = dict(output, changed=result.changed or signing_key_created, audit_events=result.audit_events,
                  audit_checkpoint=checkpoint)
    if params.get("return_records") is False:
        output = summarise_output(output, params, keep_records, hidden=module.no_log_values)
    diffs = []
    if module._diff and getattr(result, "diff", None) is not None:  # build a batch's diff only with --diff
        diffs = list(result.diff) if isinstance(result.diff, (list, tuple)) else [result.diff]
    if policy_in_force is not None:
        output["policy_in_force"] = policy_in_force
        change = policy_change(journal_pin, policy_in_force)
        if change:
            output["policy_change"] = change
            if module._diff:
                diffs.append(policy_change_diff(change))
    if diffs:
        output["diff"] = diffs if len(diffs) > 1 else diffs[0]
    module.exit_json(**output)


#: how many of the changes made before a refusal its message names (the audit events carry all of them)
NAMED_CHANGES = 5


def changed_before_refusal(events):
    """The sentence a refusal's message gains when the task changed the token before it was refused (``events``):
    an empty token's audit-checkpoint key generated, a dead holder's lease taken over, a half-made version repaired,
    or the work itself when the lease ran out after it."""
    done = []
    for event in events:
        key, details = event.get("key") or {}, event["event"]
        what = " ".join(part for part in (details["action"], key.get("label") or key.get("name")) if part)
        if details.get("reason"):
            what += " (%s)" % details["reason"]
        if what not in done:
            done.append(what)
    named = "; ".join(done[:NAMED_CHANGES]) + ("; and %d more" % (len(done) - NAMED_CHANGES)
                                               if len(done) > NAMED_CHANGES else "")
    return ("Before that, this task still changed the token (%s), as its audit events record: that much was done "
            "and journaled." % named)


def summarise_output(output, params, keep=(), hidden=()):
    """A batch module's result with ``return_records: false``: every list of records replaced by its count in
    ``summary`` (the plan's entries counted by action too), and the audit events as one JSON Lines text
    (``audit_events_jsonl``), which the action plugin journals and replaces by ``audit_journal``. The result's
    ``invocation`` gives the options with each list of key specs or names as its length, instead of the batch again.

    One string instead of thousands of small dicts: Ansible copies, tags and scrubs a result node by node. Each
    event is masked as the list would be (``_journal_pin.as_returned``, ``hidden``: the module's no_log values), so
    the journal receives what the token's pin remembers of the task either way.
    """
    summary = {}
    for name in [name for name, value in output.items()
                 if isinstance(value, list) and name != "audit_events" and name not in keep]:
        records = output.pop(name)
        summary[name] = len(records)
        if name == "plan":
            summary["plan_actions"] = dict(sorted(Counter(entry.get("action") for entry in records).items()))
    events = output.pop("audit_events")
    summary["audit_events"] = len(events)
    output["summary"] = summary
    output["audit_events_jsonl"] = "".join(json.dumps(as_returned(event, hidden), separators=(",", ":")) + "\n"
                                           for event in events)
    # AnsibleModule adds the options as they are unless given (its no_log scrubbing covers this copy too)
    output["invocation"] = {"module_args": {
        name: "(%d entries)" % len(value) if isinstance(value, list) else value for name, value in params.items()}}
    return output


def _describe_policy(record):
    if record.get("signed"):
        return "signed policy serial %s (%s), sha256 %s" % (record.get("serial"), record.get("signer_name") or "?",
                                                            record["sha256"])
    return "unsigned policy, sha256 %s" % record["sha256"]


def policy_change(journal_pin, in_force):
    """``{"from", "to"}`` when the policy this task brings differs from the one the token's last anchored task ran
    under (the pin's ``policy``), else None: ``--check --diff`` shows a change of policy before it takes effect."""
    previous = ((journal_pin.pin if journal_pin is not None else None) or {}).get("policy")
    if not previous or previous.get("sha256") == in_force.get("sha256"):
        return None
    keep = ("sha256", "signed", "serial", "signer_name")
    return {"from": {k: previous[k] for k in keep if k in previous},
            "to": {k: in_force[k] for k in keep if k in in_force}}


def policy_change_diff(change):
    """The change of policy as one entry of the task's diff."""
    return {"before_header": "policy in force on the token", "after_header": "policy this task brings",
            "before": _describe_policy(change["from"]) + "\n", "after": _describe_policy(change["to"]) + "\n"}
