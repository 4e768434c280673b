# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible.utils.display import Display

from ansible_collections.secops.keylifecycle.plugins.modules import policy_sign
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._files import read_text
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._policy_signing import (
    CHECK_MODE_SIGNATURE,
    read_existing,
    render_file,
    sign_policy,
    signer_from_options,
)
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._signing_action import SigningAction

display = Display()


class ActionModule(SigningAction):
    """Signs the environment's policy on the controller (plugin_utils/_policy_signing.py); writes ``dest``.

    The options are validated with the module's ARGUMENT_SPEC (declared once, in modules/policy_sign.py). Nothing
    is journaled: signing changes no token; the policy takes effect, and is journaled with every intent, when a
    lifecycle task brings it to a token that holds its signer.
    """

    MODULE = policy_sign

    def sign(self, args, result):
        signer = signer_from_options(args)
        dest = self.dest_path(args["dest"])
        before, existing = read_text(dest), read_existing(dest)
        signed = sign_policy(args["policy"], args["environment"], args["serial"], args["not_after"],
                             args["signer_name"], signer, existing=existing,
                             approvals=args.get("approvals"), in_force_policy=args.get("in_force_policy"))
        for line in signed.summary:  # the policy in words, before anything is written
            display.display("policy_sign: %s" % line)
        changed = not signed.unchanged or before != signed.text
        doc, text = signed.signed_policy, signed.text
        if self._task.check_mode and doc["signature"] != (existing or {}).get("signature"):
            # a new signature never leaves check mode (a --check --diff in a CI log would hold a usable one)
            doc = dict(doc, signature=CHECK_MODE_SIGNATURE)
            text = render_file(doc, signed.sha256)
        result.update(signed_policy=doc, sha256=signed.sha256, dest=dest, summary=signed.summary)
        return self.conclude(result, dest, before, text, changed)
