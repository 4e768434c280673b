# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Refuse the two ways a PIN given to a task would leave the controller's memory in the clear.

PRIVATE: not part of the public interface.

1. ``user_pin`` (or the Security Officer's ``so_pin``) travels in the module's arguments. Without pipelining, Ansible writes the
   module and its arguments to a temporary file on the host (``AnsiballZ_<module>.py``,
   under ``remote_tmp``), so the PIN would sit in a file for the task's duration, or for
   good with ``ANSIBLE_KEEP_REMOTE_FILES``. With pipelining the module is fed through
   stdin and no file is written.
2. A variable named in the task's ``environment:`` is put on the remote command line
   (``/bin/sh -c 'PKCS11_USER_PIN=... python ...'``), where ``ps`` shows it to every user.

A PIN file (``user_pin_file``/``so_pin_file``, mode 0600) or a PKCS11_USER_PIN/PKCS11_SO_PIN set in
the host's own environment (for a local connection, the controller's) has neither problem.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

PIN_ENVIRONMENT_VARIABLES = ("PKCS11_USER_PIN", "PKCS11_SO_PIN")
#: PIN options and the file option to use instead
PIN_OPTIONS = (("user_pin", "user_pin_file"), ("so_pin", "so_pin_file"))


def _environment_names(environment):
    names = set()
    for entry in environment if isinstance(environment, list) else [environment]:
        if isinstance(entry, dict):
            names.update(str(name) for name in entry)
    return names


def check_pin_exposure(action):
    """Raise AnsibleActionFail before anything runs if this task would expose a PIN."""
    # pylint: disable=protected-access
    args = action._task.args
    try:
        environment = action._templar.template(action._task.environment or [])
    except Exception:  # pylint: disable=broad-except
        environment = action._task.environment or []  # Ansible reports the template error itself when it runs
    exposed = sorted(_environment_names(environment) & set(PIN_ENVIRONMENT_VARIABLES))
    if exposed:
        raise AnsibleActionFail(
            "%s is set through the task's environment:, which puts it on the host's command line, where any user can "
            "read it with ps. Use a PIN file (user_pin_file, so_pin_file: mode 0600), the PIN from Ansible Vault with "
            "pipelining, or set %s in the host's own environment. Nothing was run." % (", ".join(exposed), exposed[0]))
    for option, file_option in PIN_OPTIONS:
        if args.get(option) not in (None, "") and not action._is_pipelining_enabled("new"):
            raise AnsibleActionFail(
                "%s is given but pipelining is off for this host, so Ansible would write the PIN into the module's "
                "temporary file on the host. Enable pipelining (ANSIBLE_PIPELINING=True, or ansible_pipelining: true "
                "for the HSM hosts; not with ANSIBLE_KEEP_REMOTE_FILES), or use %s. Nothing was run."
                % (option, file_option))


class PinGuardedAction(ActionBase):
    """Action plugin of a read-only module: refuse a task that would expose the PIN, then run the module."""

    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        check_pin_exposure(self)
        result.update(self._execute_module(module_name=self._task.resolved_action, module_args=dict(self._task.args),
                                           task_vars=task_vars))
        return result
