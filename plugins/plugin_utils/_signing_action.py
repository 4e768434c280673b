# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the controller-side signing actions (policy_sign, approval_sign) share: their options validated with the
spec their stub module declares, typed errors turned into task failures, and the signed file written to ``dest``.

PRIVATE: not part of the public interface.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption, KeyLifecycleError
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._files import write_atomically

#: a signed policy or approval holds no secret: the operator reads it with lookup('file') or as group_vars
DEST_MODE = 0o644


class SigningAction(ActionBase):
    """An action that signs on the controller and writes the result to ``dest``; nothing is sent to a host.

    Subclasses set ``MODULE`` to their stub module (which declares ARGUMENT_SPEC and its rules once; unknown options
    are refused by ActionBase.run) and implement ``sign``; a typed error (KeyLifecycleError) it raises fails the task.
    """

    TRANSFERS_FILES = False
    MODULE = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._VALID_ARGS = frozenset(cls.MODULE.ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars or {})
        args = self.validated_args()
        try:
            return self.sign(args, result)
        except KeyLifecycleError as exc:
            raise self.task_failure(exc) from None

    def sign(self, args, result):
        """Sign what ``args`` ask for into ``result`` and return it (``conclude`` writes ``dest``)."""
        raise NotImplementedError

    def conclude(self, result, dest, before, after, changed):
        """Set ``changed`` and, with ``--diff``, the diff of ``dest``; write ``after`` to ``dest`` when it changes,
        except in check mode. Returns ``result``."""
        result["changed"] = changed
        if dest and self._task.diff:
            result["diff"] = {"before": before or "", "after": after, "before_header": dest, "after_header": dest}
        if changed and not self._task.check_mode:
            self.write_dest(dest, after)
        return result

    def validated_args(self):
        """The task's options, validated and defaulted with the stub module's spec (fails the task otherwise)."""
        module = self.MODULE
        _validation, args = self.validate_argument_spec(
            argument_spec=module.ARGUMENT_SPEC, mutually_exclusive=module.MUTUALLY_EXCLUSIVE,
            required_one_of=module.REQUIRED_ONE_OF, required_together=module.REQUIRED_TOGETHER,
            required_by=module.REQUIRED_BY)
        return args

    @staticmethod
    def dest_path(raw):
        """The absolute path of the ``dest`` option; InvalidOption when its directory does not exist."""
        dest = os.path.abspath(os.path.expanduser(str(raw)))
        if not os.path.isdir(os.path.dirname(dest)):
            raise InvalidOption("dest %s: its directory does not exist." % dest, option="dest")
        return dest

    @staticmethod
    def task_failure(exc):
        """The AnsibleActionFail of a typed error (KeyLifecycleError): its message, ``error_kind`` and option."""
        failure = {"error_kind": exc.kind, "changed": False}
        if exc.option:
            failure["error_option"] = exc.option
        return AnsibleActionFail(str(exc), result=failure)

    @staticmethod
    def write_dest(dest, text):
        """Write the signed file durably (fsync, then rename) with DEST_MODE whatever the umask; a task failure
        naming ``dest`` when it cannot be written."""
        try:
            write_atomically(dest, text, mode=DEST_MODE, durable=True)
        except OSError as exc:
            raise AnsibleActionFail("dest %s could not be written (%s)." % (dest, exc.strerror or exc),
                                    result={"error_kind": "error", "error_option": "dest", "changed": False}) \
                from None
