# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Controller side of every state-changing lifecycle module: identity and fail-closed audit.

PRIVATE: not part of the public interface.

The action plugin runs on the controller, in the worker that runs the task, before
the module is sent to the HSM host, so it works the same for ``no_log`` tasks and
for ad-hoc ``ansible`` runs, and does not depend on any callback being loaded:

1. resolve who is acting (``resolve_operator``) and which run this is (``resolve_run_id``);
2. append an *intent* record to the journal and fsync it; if that fails, the task
   fails and the module is never run (nothing touches the HSM);
3. run the module with ``audit_context`` (operator, run id, intent record id);
4. append the module's change events and an *outcome* record (success or failure),
   fsync'ed; if that fails the task fails loudly, naming the intent record.

Check mode changes nothing and journals nothing. Steps 2-4 hold a controller-side lock
per token (``token_lock``), so concurrent tasks on one token run one after the other.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
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
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import (
    Journal,
    JournalError,
    register_journal,
    resolve_journal_path,
    state_dir,
)
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._pin_guard import check_pin_exposure

#: names the operator instead of the resolved identity, where policy.allow_operator_override permits it
OPERATOR_OVERRIDE_VARIABLE = "keylifecycle_operator"


def resolve_operator(task_vars, environ):
    """Return ``(operator, source)``: automation platform user, else CI actor, else controller OS user."""
    for var in ("awx_user_name", "tower_user_name"):
        if task_vars.get(var):
            return str(task_vars[var]), "awx_job"
    if environ.get("GITHUB_ACTIONS") == "true" and environ.get("GITHUB_ACTOR"):
        return environ["GITHUB_ACTOR"], "github_actions"
    if environ.get("GITLAB_CI") == "true" and environ.get("GITLAB_USER_LOGIN"):
        return environ["GITLAB_USER_LOGIN"], "gitlab_ci"
    return getpass.getuser(), "controller_os_user"


def resolve_run_id(task_vars, environ, task_uuid):
    """An identifier shared by every task of one run."""
    for var in ("awx_job_id", "tower_job_id"):
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
            overrides = policy_overrides(module_args)
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
            # check mode changes nothing, so authorization is not checked; an unpermitted override still is
            refusal = self._authorization_refusal(module_args, context)
            if refusal and refusal[0] == "override_not_permitted":
                raise AnsibleActionFail(refusal[1])
            module_args["audit_context"] = context
            result.update(self._execute_module(module_name=self._task.resolved_action,
                                               module_args=module_args, task_vars=task_vars))
            return result

        host = context["host"] if self.TOKEN_IS_PER_HOST else None
        with token_lock(module_args.get("pkcs11_module"), module_args.get("token_label"), host=host):
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
        token = (module_args.get("pkcs11_module"), module_args.get("token_label"))
        return Journal(resolve_journal_path({}, task_vars, self._templar, token=token))

    def _run_journaled(self, result, module_args, context, task_vars):
        journal = self.journal_for(module_args, task_vars)
        controller_context = AuditContext(**context)
        extra = {"module": self._task.resolved_action}
        try:
            journal, intent = self.write_intent(journal, controller_context, extra, module_args, task_vars)
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
        refusal = self._authorization_refusal(module_args, context)
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
        for event in module_result.get("audit_events") or ():
            try:
                events.append(validate_event(event))
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
            journal.append(events + [outcome], context=controller_context, create=False,
                           expect_journal_id=intent.journal_id)
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


#: error kinds of a module that refused because the journal is not the one the token names (_checkpoint)
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
