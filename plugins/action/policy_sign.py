# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption, KeyLifecycleError
from ansible_collections.secops.keylifecycle.plugins.modules.policy_sign import (
    ARGUMENT_SPEC,
    MUTUALLY_EXCLUSIVE,
    REQUIRED_BY,
    REQUIRED_ONE_OF,
    REQUIRED_TOGETHER,
)
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._files import read_text, write_atomically
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._policy_signing import (
    signer_from_options,
    read_existing,
    sign_policy,
)

display = Display()

#: the file policy_sign writes holds no secret: group_vars readable by whoever runs the plays
DEST_MODE = 0o644


class ActionModule(ActionBase):
    """Signs the environment's policy on the controller (plugin_utils/_policy_signing.py); writes ``dest``.

    The options are validated with the module's ARGUMENT_SPEC (declared once, in modules/policy_sign.py). Nothing
    is journaled: signing changes no token; the policy takes effect, and is journaled with every intent, when a
    lifecycle task brings it to a token that holds its signer.
    """

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)  # unknown options: refused by ActionBase.run, naming the task's action

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(
            argument_spec=ARGUMENT_SPEC, mutually_exclusive=MUTUALLY_EXCLUSIVE, required_one_of=REQUIRED_ONE_OF,
            required_together=REQUIRED_TOGETHER, required_by=REQUIRED_BY)
        dest = os.path.abspath(os.path.expanduser(str(args["dest"])))
        try:
            signer = signer_from_options(args)
            if not os.path.isdir(os.path.dirname(dest)):
                raise InvalidOption("dest %s: its directory does not exist." % dest, option="dest")
            before = read_text(dest)
            signed = sign_policy(args["policy"], args["environment"], args["serial"], args["not_after"],
                                 args["signer_name"], signer, existing=read_existing(dest),
                                 approvals=args.get("approvals"), in_force_policy=args.get("in_force_policy"))
        except KeyLifecycleError as exc:
            failure = {"error_kind": exc.kind, "changed": False}
            if exc.option:
                failure["error_option"] = exc.option
            raise AnsibleActionFail(str(exc), result=failure) from None
        for line in signed.summary:  # the policy in words, before anything is written
            display.display("policy_sign: %s" % line)
        changed = not signed.unchanged or before != signed.text
        result.update(changed=changed, signed_policy=signed.signed_policy, sha256=signed.sha256, dest=dest,
                      summary=signed.summary)
        if self._task.diff:
            result["diff"] = {"before": before or "", "after": signed.text, "before_header": dest,
                              "after_header": dest}
        if changed and not self._task.check_mode:
            try:
                write_atomically(dest, signed.text, mode=DEST_MODE, durable=True)
                os.chmod(dest, DEST_MODE)  # the umask applied at creation
            except OSError as exc:
                raise AnsibleActionFail("dest %s could not be written (%s)." % (dest, exc.strerror or exc),
                                        result={"error_kind": "error", "error_option": "dest", "changed": False}) \
                    from None
        return result
