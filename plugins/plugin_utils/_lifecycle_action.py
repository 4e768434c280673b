# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Controller side of every state-changing lifecycle module: identity and fail-closed audit.

PRIVATE: not part of the public interface.

The action plugin runs on the controller, in the worker that runs the task, before
the module is sent to the HSM host, so it works the same for ``no_log`` tasks and
for ad-hoc ``ansible`` runs, and does not depend on any callback being loaded:

1. resolve who is acting (``resolve_operator``) and which run this is (``resolve_run_id``); the AWX job
   variables count only inside an AWX job run (``awx_job_environment``, docs/access-control.md, "Identity");
2. append an *intent* record to the journal and fsync it, with the policy the task brings
   (``policy_record``: keylifecycle.policy); if that fails, the task fails and the module is never run
   (nothing touches the HSM);
3. refuse, journaled, an AWX identity outside AWX (``identity_refusal``) or an operator the policy does not
   authorize (``_authorization_refusal``, against the signed policy when the task brings one); else run the
   module with ``audit_context`` (operator, run id, intent record id);
4. append the module's change events and an *outcome* record (success or failure),
   fsync'ed; if that fails the task fails loudly, naming the intent record.

Check mode changes nothing and journals nothing. Steps 2-4 hold a controller-side lock
per token (``token_lock``), so concurrent tasks on one token run one after the other.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
from contextlib import contextmanager

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import policy_overrides
from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import (
    AuditContext,
    build_event,
    validate_event,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import NAME_RE
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import PERSON_RE, load_policy
from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import (
    normalised_policy,
    parse_signed_policy,
    policy_digest,
)
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import (
    Journal,
    JournalError,
    register_journal,
    resolve_journal_path,
    state_dir,
    task_token,
)
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._pin_guard import check_pin_exposure

#: names the operator instead of the resolved identity, where policy.allow_operator_override permits it
OPERATOR_OVERRIDE_VARIABLE = "keylifecycle_operator"


#: the job variables AWX / Automation Platform passes as extra vars, that name who runs the job and which job it is;
#: counted only inside a job run (awx_job_environment), refused elsewhere (identity_refusal)
AWX_IDENTITY_VARIABLES = ("awx_user_name", "tower_user_name", "awx_job_id", "tower_job_id")
_AWX_USER_VARIABLES = ("awx_user_name", "tower_user_name")
_AWX_JOB_VARIABLES = ("awx_job_id", "tower_job_id")


def awx_job_environment(environ):
    """What is missing from ``environ`` for it to be the environment of an AWX / Automation Platform job run: a
    list of short reasons, empty inside such a job (docs/access-control.md, "Identity").

    AWX's job task (``RunJob.build_env``, awx/main/tasks/jobs.py) sets ``JOB_ID`` (the job's number) and ``AWX_HOST``
    (the controller's URL); ansible-runner, which runs every job, forces ``ANSIBLE_STDOUT_CALLBACK=awx_display`` (the
    callback that feeds the job's events back to AWX) and sets ``AWX_ISOLATED_DATA_DIR`` (its artifact directory)
    (``BaseConfig._prepare_env``, ansible_runner/config/_base.py). A run outside AWX has none of them unless its
    operator sets all four by hand.
    """
    missing = []
    if not str(environ.get("JOB_ID") or "").isdigit():
        missing.append("JOB_ID (the job's number)")
    if not environ.get("AWX_HOST"):
        missing.append("AWX_HOST")
    if environ.get("ANSIBLE_STDOUT_CALLBACK") != "awx_display":
        missing.append("ANSIBLE_STDOUT_CALLBACK=awx_display")
    if not environ.get("AWX_ISOLATED_DATA_DIR"):
        missing.append("AWX_ISOLATED_DATA_DIR")
    return missing


def _given(task_vars, names):
    """{name: value as text} of the variables among ``names`` that are set and not empty."""
    return {name: str(task_vars[name]) for name in names if task_vars.get(name) not in (None, "")}


def identity_refusal(task_vars, environ):
    """``(error kind, message)`` when the task sets an AWX job variable (AWX_IDENTITY_VARIABLES) that does not
    count here, else None.

    They count only inside an AWX / Automation Platform job run (``awx_job_environment``), where the job's number
    must be ``JOB_ID`` and the user names must agree. Anywhere else they are an identity typed by whoever runs the
    play (``-e awx_user_name=alice``), and the task is refused before the HSM is touched.
    """
    given = _given(task_vars, AWX_IDENTITY_VARIABLES)
    if not given:
        return None
    named = ", ".join("%s=%s" % item for item in sorted(given.items()))
    missing = awx_job_environment(environ)
    if missing:
        problem = ("this run is not an AWX / Automation Platform job (its environment lacks %s)"
                   % ", ".join(missing))
    elif len(set(_given(task_vars, _AWX_JOB_VARIABLES).values()) - {str(environ["JOB_ID"])}):
        problem = "the job number does not match this job's JOB_ID=%s" % environ["JOB_ID"]
    elif len(set(_given(task_vars, _AWX_USER_VARIABLES).values())) > 1:
        problem = "awx_user_name and tower_user_name name different users"
    else:
        return None
    return "identity_not_permitted", (
        "The variables %s name an AWX job and its user, but %s: they count only inside an AWX / Automation Platform "
        "job run, which sets them itself. Remove them; outside AWX the operator is resolved from the CI or the "
        "controller's OS user (docs/access-control.md, \"Identity\"). Nothing was changed on the HSM; the refusal is "
        "journaled." % (named, problem))


def _awx_job(task_vars, environ):
    """Whether the AWX job variables of the task count: set, and inside the AWX job they name."""
    return bool(_given(task_vars, AWX_IDENTITY_VARIABLES)) and identity_refusal(task_vars, environ) is None


def resolve_operator(task_vars, environ):
    """Return ``(operator, source)``: automation platform user (inside an AWX job only), else CI actor, else
    controller OS user."""
    if _awx_job(task_vars, environ):
        for var in _AWX_USER_VARIABLES:
            if task_vars.get(var):
                return str(task_vars[var]), "awx_job"
    if environ.get("GITHUB_ACTIONS") == "true" and environ.get("GITHUB_ACTOR"):
        return environ["GITHUB_ACTOR"], "github_actions"
    if environ.get("GITLAB_CI") == "true" and environ.get("GITLAB_USER_LOGIN"):
        return environ["GITLAB_USER_LOGIN"], "gitlab_ci"
    return getpass.getuser(), "controller_os_user"


def resolve_run_id(task_vars, environ, task_uuid):
    """An identifier shared by every task of one run."""
    if _awx_job(task_vars, environ):
        for var in _AWX_JOB_VARIABLES:
            if task_vars.get(var):
                return "awx-%s" % task_vars[var]
    if environ.get("GITHUB_ACTIONS") == "true" and environ.get("GITHUB_RUN_ID"):
        return "gha-%s-%s" % (environ["GITHUB_RUN_ID"], environ.get("GITHUB_RUN_ATTEMPT", "1"))
    if environ.get("GITLAB_CI") == "true" and environ.get("CI_JOB_ID"):
        return "gitlab-%s" % environ["CI_JOB_ID"]
    # ansible-core's unique ids are "<node>-<node>-<rand>-<rand>-<counter>"; the first four parts are
    # fixed for the whole ansible-playbook process, so they name the run.
    return "-".join(str(task_uuid).split("-")[:4])


def audit_context(task_vars, environ, task_uuid, override=None):
    """operator, operator_source, run_id and host, as passed to the module's ``audit_context``.

    With ``override`` (the ``keylifecycle_operator`` variable), the override is the operator, its source is
    ``override``, and the resolved identity is kept next to it; whether the policy permits it is checked later.
    """
    operator, source = resolve_operator(task_vars, environ)
    for name, where in ((operator, source), (override, OPERATOR_OVERRIDE_VARIABLE)):
        if name is not None and not PERSON_RE.match(name):
            raise AnsibleActionFail(
                "The operator name %r (from %s) cannot be recorded in audit events: it may hold only letters, "
                "digits and . _ @ + -." % (name, where))
    context = {"operator": operator, "operator_source": source,
               "run_id": resolve_run_id(task_vars, environ, task_uuid),
               "host": str(task_vars.get("inventory_hostname") or "localhost")}
    if override is not None and override != operator:
        context.update(operator=override, operator_source="override", resolved_operator=operator,
                       resolved_operator_source=source)
    return context


def _signed_document(module_args):
    """The task's ``signed_policy`` as a well-formed signed policy document, else None (absent or malformed: the
    module refuses a malformed one on a token with a policy signer; a token without one runs the ``policy``)."""
    raw = module_args.get("signed_policy")
    if raw in (None, "", {}):
        return None
    try:
        return parse_signed_policy(raw)
    except KeyLifecycleError:
        return None


def authorization_policy(module_args):
    """The policy settings the controller authorizes the task against: the ``policy`` of the task's signed policy
    when it gives a well-formed one (the module verifies that very document in the token before it acts, and
    refuses the task if its ``policy`` option differs), else the ``policy`` option, which is what a token without a
    policy signer runs with. InvalidOption when ``policy`` is not a dict (refused and journaled before the module is
    sent)."""
    overrides = policy_overrides(module_args)
    document = _signed_document(module_args)
    if document is not None:
        return {name: value for name, value in document["policy"].items() if value is not None}
    return overrides


def policy_record(module_args):
    """``keylifecycle.policy`` of the task's intent record: the policy the task brings.

    A well-formed signed policy: ``{sha256 (of its signed payload), signed: true, serial, signer (fingerprint),
    environment}``, as presented; the module verifies it in the token before it acts, and a refusal is the task's
    outcome. Otherwise the unsigned ``policy`` option: ``{sha256 (of its settings' canonical JSON, as the module
    digests them), signed: false}``. Never raises: whatever the task passed, something is recorded.
    """
    document = _signed_document(module_args)
    if document is not None:
        return {"sha256": policy_digest(document), "signed": True, "serial": document["serial"],
                "signer": document["signer"], "environment": document["environment"]}
    try:
        settings = normalised_policy(policy_overrides(module_args))
        return {"sha256": policy_digest(settings), "signed": False}
    except (KeyLifecycleError, TypeError, ValueError):  # not a dict, or not JSON: the digest of its text
        return {"sha256": hashlib.sha256(repr(module_args.get("policy")).encode("utf-8")).hexdigest(),
                "signed": False}


@contextmanager
def token_lock(pkcs11_module, token_label, environ=None, host=None):
    """Serialise lifecycle tasks on one token across forks and ansible-playbook runs of this controller.

    Two tasks that change the same token at once (two hosts sharing a network HSM, two
    scheduled runs) could otherwise both create the same key version. A recipient's token
    is local to its host, so recipient-side tasks lock per ``host`` as well.
    """
    directory = os.path.join(state_dir(environ), "locks")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    scope = "%s\0%s" % (pkcs11_module, token_label) + ("\0%s" % host if host else "")
    name = hashlib.sha256(scope.encode("utf-8")).hexdigest()[:32]
    fd = os.open(os.path.join(directory, name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class LifecycleActionBase(ActionBase):
    """Runs the module of the same name between a durable intent record and its outcome record."""

    TRANSFERS_FILES = False
    #: event.action of the records this module produces (set by each action plugin)
    AUDIT_ACTION = ""
    #: the policy.authorization action this module performs (see authorization_action); empty for a module whose own
    #: credential is the control (recipient_approve: the SO PIN), which policy.authorization does not restrict
    AUTHORIZATION_ACTION = ""
    #: True for modules that run on a recipient host against that host's own token
    TOKEN_IS_PER_HOST = False

    def authorization_action(self, args):
        """The lifecycle action the task performs, as named in policy.authorization."""
        return self.AUTHORIZATION_ACTION

    def requested_keys(self, args):
        """Names of the logical keys the task asks about, for the intent record."""
        names = [spec.get("name") for spec in args.get("keys") or () if isinstance(spec, dict)]
        if args.get("name"):
            names.append(args["name"])
        return [str(n) for n in names if n]

    def _authorization_refusal(self, module_args, context):
        """A refusal (error kind, message) when the policy does not let this operator act, else None."""
        try:
            overrides = authorization_policy(module_args)
        except KeyLifecycleError as exc:  # not a dict: refused here, journaled, before the module is sent
            return exc.kind, "%s Nothing was changed on the HSM; the refusal is journaled." % exc
        try:
            policy = load_policy(overrides)
        except KeyLifecycleError:
            return None  # the module refuses a malformed policy setting itself, before opening the token
        if context.get("resolved_operator") and not policy.allow_operator_override:
            return ("override_not_permitted",
                    "%s names the operator %r, but this environment's policy does not permit an operator override "
                    "(policy.allow_operator_override is false); the operator is %r (%s). Remove %s. Nothing was "
                    "changed on the HSM; the refusal is journaled."
                    % (OPERATOR_OVERRIDE_VARIABLE, context["operator"], context["resolved_operator"],
                       context["resolved_operator_source"], OPERATOR_OVERRIDE_VARIABLE))
        action = self.authorization_action(module_args)
        if not action:  # no policy.authorization action: the module's own credential decides
            return None
        resolved = context.get("resolved_operator")
        if resolved and not policy.allows(action, resolved):
            return "not_authorized", (
                "%s names the operator %r, but the identity running the task, %r (%s), is not itself authorized to "
                "%s: %s. An override only names on whose behalf an authorized identity acts. Nothing was changed on "
                "the HSM; the refusal is journaled."
                % (OPERATOR_OVERRIDE_VARIABLE, context["operator"], resolved, context["resolved_operator_source"],
                   action.replace("_", " "), policy.describe_authorization(action)))
        if resolved and module_args.get("approved_by") == resolved:
            return "not_authorized", (
                "approved_by %r is the identity running the task (the override names %r): an approval needs a "
                "second, different person. Nothing was changed on the HSM; the refusal is journaled."
                % (resolved, context["operator"]))
        if policy.allows(action, context["operator"]):
            return None
        return "not_authorized", (
            "Operator %r (%s) is not authorized to %s: %s. Nothing was changed on the HSM; the refusal is journaled."
            % (context["operator"], context["operator_source"], action.replace("_", " "),
               policy.describe_authorization(action)))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        check_pin_exposure(self)
        override = task_vars.get(OPERATOR_OVERRIDE_VARIABLE)
        override = self._templar.template(override) if override not in (None, "") else None
        override = str(override) if override not in (None, "") else None
        context = audit_context(task_vars, os.environ, self._task._uuid, override)
        module_args = dict(self._task.args)
        if self._task.check_mode:
            # check mode changes nothing, so authorization is not checked; an identity that does not count and an
            # unpermitted override still are
            refusal = identity_refusal(task_vars, os.environ) or self._authorization_refusal(module_args, context)
            if refusal and refusal[0] in ("identity_not_permitted", "override_not_permitted"):
                raise AnsibleActionFail(refusal[1], result={"error_kind": refusal[0], "changed": False})
            module_args["audit_context"] = context
            module_result = self._execute_module(module_name=self._task.resolved_action, module_args=module_args,
                                                 task_vars=task_vars)
            module_result.pop(EVENTS_TEXT, None)  # return_records false: nothing is journaled in check mode
            result.update(module_result)
            return result

        host = context["host"] if self.TOKEN_IS_PER_HOST else None
        with token_lock(*task_token(module_args), host=host):
            return self._run_journaled(result, module_args, context, task_vars)

    def _intent_names(self, module_args):
        """The well-formed key names the task asks about (a malformed one is refused by the module)."""
        try:
            return [n for n in self.requested_keys(module_args) if NAME_RE.match(n)]
        except (TypeError, ValueError, AttributeError):  # options of the wrong type: the module names them
            return []

    def journal_for(self, module_args, task_vars):
        """The journal this task writes: the host's ``keylifecycle_audit_journal``, else the token's default journal
        (lifecycle tasks have no journal option)."""
        return Journal(resolve_journal_path({}, task_vars, self._templar, token=task_token(module_args)))

    def _run_journaled(self, result, module_args, context, task_vars):
        journal = self.journal_for(module_args, task_vars)
        controller_context = AuditContext(**context)
        extra = {"module": self._task.resolved_action}
        try:
            journal, intent = self.write_intent(journal, controller_context,
                                                dict(extra, policy=policy_record(module_args)), module_args, task_vars)
            register_journal(journal.path)
        except (JournalError, OSError) as exc:
            raise AnsibleActionFail("%s Nothing was changed on the HSM." % exc) from None
        controller_context.intent_id = intent.record_id
        # From here on every path ends in an outcome record: the steps below mark it written (or tried), and
        # whatever else fails is journaled here as a failure with an error_kind.
        progress = {"outcome": False, "changed": False}
        try:
            return self._run_after_intent(journal, intent, result, module_args, context, controller_context, extra,
                                          task_vars, progress)
        except Exception as exc:  # pylint: disable=broad-except
            message = str(exc) if isinstance(exc, AnsibleError) else (
                "%s failed on the controller (%s: %s)." % (self._task.resolved_action, type(exc).__name__, exc))
            kind = "action_failed" if isinstance(exc, AnsibleError) else "unexpected_error"
            if not progress["outcome"]:
                try:
                    journal.append([build_event(self.AUDIT_ACTION, "failure", controller_context, phase="outcome",
                                                error_kind=kind, extra=dict(extra, changed=progress["changed"]))],
                                   context=controller_context, create=False, expect_journal_id=intent.journal_id)
                    message += " The failure is journaled."
                except (JournalError, OSError, ValueError, TypeError) as journal_exc:
                    message = "%s (and the failure could not be journaled: %s; the intent record %s (seq %d) " \
                              "stands)" % (message, journal_exc, intent.record_id, intent.seq)
            if isinstance(exc, AnsibleError) and progress["outcome"]:
                raise
            raise AnsibleActionFail(message, result={"error_kind": kind, "changed": progress["changed"]}) from None

    def _run_after_intent(self, journal, intent, result, module_args, context, controller_context, extra, task_vars,
                          progress):
        refusal = identity_refusal(task_vars, os.environ) or self._authorization_refusal(module_args, context)
        if refusal:
            kind, message = refusal
            progress["outcome"] = True
            try:
                journal.append([build_event(self.AUDIT_ACTION, "failure", controller_context, phase="outcome",
                                            error_kind=kind, extra=dict(extra, changed=False))],
                               context=controller_context, create=False, expect_journal_id=intent.journal_id)
            except JournalError as exc:
                message = "%s (and the refusal could not be journaled: %s)" % (message, exc)
            raise AnsibleActionFail(message, result={"error_kind": kind, "changed": False})

        module_args["audit_context"] = self.module_audit_context(journal, intent, context, module_args)
        module_result = self._execute_module(module_name=self._task.resolved_action, module_args=module_args,
                                             task_vars=task_vars)
        if module_result.get("error_kind") == "journal_behind" and self._journal_grew(journal, intent):
            # another controller's task on this token wrote its intent after ours and reached the token first: its
            # head is pinned now. Prove again, once, up to the journal's end as it is now (a refusal changed nothing).
            module_args["audit_context"]["journal_proof"] = journal.proof_since(
                module_args.get("token_label"), journal.tail()[1], cover_seq=intent.seq)
            module_result = self._execute_module(module_name=self._task.resolved_action, module_args=module_args,
                                                 task_vars=task_vars)
        journal = self.journal_after_module(journal, module_result)
        if module_result.get("error_kind") in JOURNAL_REFUSALS:
            module_result["msg"] = "%s %s" % (module_result.get("msg", ""), _journal_recovery(
                module_result["error_kind"], journal.path))
        progress["changed"] = bool(module_result.get("changed"))
        events, invalid = [], 0
        events_text = module_result.pop(EVENTS_TEXT, None)  # return_records false (_lifecycle_module)
        for event in module_result.get("audit_events") or () if events_text is None else str(events_text).splitlines():
            try:
                events.append(validate_event(json.loads(event) if isinstance(event, str) else event))
            except (ValueError, TypeError, AttributeError):
                invalid += 1
        failed = bool(module_result.get("failed")) or invalid > 0
        checkpoint = module_result.get("audit_checkpoint")
        if isinstance(checkpoint, dict):
            try:
                events.append(build_event("audit-checkpoint", "success", controller_context,
                                          extra=dict(extra, checkpoint=checkpoint)))
            except (ValueError, TypeError):
                invalid += 1
                failed = True
        outcome = build_event(
            self.AUDIT_ACTION, "failure" if failed else "success", controller_context, phase="outcome",
            error_kind=(module_result.get("error_kind") or ("invalid_audit_event" if invalid else "module_failure"))
            if failed else None,
            extra=dict(extra, changed=bool(module_result.get("changed"))))
        progress["outcome"] = True
        try:
            records = journal.append(events + [outcome], context=controller_context, create=False,
                                     expect_journal_id=intent.journal_id)
            if events_text is not None:
                module_result["audit_journal"] = {
                    "path": journal.path, "journal_id": intent.journal_id, "intent_seq": intent.seq,
                    "first_seq": records[0].seq, "last_seq": records[-1].seq, "records": len(records)}
        except JournalError as exc:
            module_result["failed"] = True
            module_result["msg"] = ("%s The module ran (changed=%s) but its outcome is not journaled; the intent "
                                    "record %s (seq %d) stands. Restore the journal and record the outcome before "
                                    "any further lifecycle action." % (exc, bool(module_result.get("changed")),
                                                                       intent.record_id, intent.seq))
        if invalid:
            module_result["failed"] = True
            module_result["msg"] = "The module returned %d audit event(s) outside the schema." % invalid
        result.update(module_result)
        return result

    # ---- the journal's side of the token's pin (docs/audit.md, "The token pins its journal") ---------------------

    def write_intent(self, journal, controller_context, extra, module_args, task_vars):
        """Append the task's intent record (durable before the HSM is touched); return the journal that holds it and
        the record."""
        event = build_event(self.AUDIT_ACTION, "unknown", controller_context, phase="intent",
                            extra=dict(extra, requested_keys=self._intent_names(module_args)))
        return journal, journal.append([event], context=controller_context)[-1]

    def journal_after_module(self, journal, module_result):
        """The journal the task's outcome goes to, once the module returned (audit_rollover moves journals here)."""
        return journal

    @staticmethod
    def _journal_grew(journal, intent):
        """Whether records were appended to the journal after ``intent`` (by concurrent tasks)."""
        try:
            tail = journal.tail()
        except (JournalError, OSError):
            return False
        return bool(tail) and tail[0] == intent.journal_id and tail[1] > intent.seq

    def module_audit_context(self, journal, intent, context, module_args):
        """What the module needs to anchor ``intent``: who acts, the intent, and the proof that the intent extends
        the head the token pinned (the digests of the records since this token's last checkpoint)."""
        proof = journal.proof_since(module_args.get("token_label"), intent.seq)
        return dict(context, intent_id=intent.record_id, journal_id=intent.journal_id, intent_seq=intent.seq,
                    intent_hash=intent.hash, journal_proof=proof)


#: the module result's key for its audit events as one JSON Lines text (return_records false, _lifecycle_module)
EVENTS_TEXT = "audit_events_jsonl"

#: error kinds of a module that refused because the journal is not the one the token names (_journal_pin)
JOURNAL_REFUSALS = ("journal_mismatch", "journal_behind", "journal_rewritten", "journal_pin_missing",
                    "checkpoint_key_replaced")


def _journal_recovery(kind, path):
    """The controller half of a journal refusal's message: which file, and how to recover."""
    if kind == "journal_behind":
        how = ("Restore the complete journal from the log store (audit_verify compare_store shows what is missing) "
               "to that path")
    elif kind == "journal_rewritten":
        how = ("Restore the journal as it was from the log store; audit_verify on this file shows the first record "
               "that differs")
    else:
        how = ("Restore the journal the token names from the log store to that path, or, if it is lost, start a new "
               "journal with playbooks/audit_rollover.yml (journaled, and approved where the policy says so)")
    return "The journal this task wrote is %s. %s." % (path, how)


class OfficerActionBase(LifecycleActionBase):
    """Controller side of the Security Officer modules (recipient_approve, policy_signer, package_signer_approve).

    The Security Officer's PIN is the control: policy.authorization names no action for them (AUTHORIZATION_ACTION
    empty), an operator override is still checked against policy.allow_operator_override, and the task names no
    logical keys. The SO PIN is guarded like the user PIN (plugin_utils/_pin_guard.py): so_pin only with
    pipelining, never PKCS11_SO_PIN in environment:.
    """

    AUTHORIZATION_ACTION = ""

    def requested_keys(self, args):
        return []
