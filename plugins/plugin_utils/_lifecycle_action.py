# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Controller side of every state-changing lifecycle module.

PRIVATE: not part of the public interface.

The action plugin runs on the controller before the module is sent to the HSM
host. It resolves who is acting (``resolve_operator``) and which run this is
(``resolve_run_id``), and passes both to the module as ``audit_context``,
replacing anything a task set there, so an audit event names the controller-side
identity and not the remote account the module happens to run as.
"""

from __future__ import annotations

import getpass
import os
import re

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

_OPERATOR_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,128}\Z")


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


def audit_context(task_vars, environ, task_uuid):
    operator, source = resolve_operator(task_vars, environ)
    if not _OPERATOR_RE.match(operator):
        raise AnsibleActionFail(
            "The operator name %r (from %s) cannot be recorded in audit events: it may hold only letters, "
            "digits and . _ @ + -." % (operator, source))
    return {"operator": operator, "operator_source": source,
            "run_id": resolve_run_id(task_vars, environ, task_uuid)}


class LifecycleActionBase(ActionBase):
    """Runs the module of the same name with the controller-resolved audit context."""

    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        module_args = dict(self._task.args)
        module_args["audit_context"] = audit_context(task_vars, os.environ, self._task._uuid)
        result.update(self._execute_module(
            module_name=self._task.resolved_action,
            module_args=module_args,
            task_vars=task_vars,
        ))
        return result
