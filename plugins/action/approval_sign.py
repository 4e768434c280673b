# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible.utils.display import Display

from ansible_collections.secops.keylifecycle.plugins.module_utils._approvals import verify_signature
from ansible_collections.secops.keylifecycle.plugins.modules import approval_sign
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._approval_signing import (
    approver_in_policy,
    build_request,
    check_approver_name,
    planned_text,
    read_existing,
    read_new_policy,
    request_text,
    same_request,
    sign_approval,
)
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._files import read_text
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._policy_signing import signer_from_options
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._signing_action import SigningAction

display = Display()


class ActionModule(SigningAction):
    """Signs one approval request on the controller (plugin_utils/_approval_signing.py); writes ``dest`` if given.

    The options are validated with the module's ARGUMENT_SPEC (declared once, in modules/approval_sign.py).
    Nothing is journaled and no HSM token of the environment is touched: the approval is checked, its nonce
    consumed and journaled when a lifecycle task brings it to the token it names.
    """

    MODULE = approval_sign

    def sign(self, args, result):
        check_mode = bool(self._task.check_mode)
        dest = self.dest_path(args["dest"]) if args.get("dest") else None
        name = args["approver_name"]
        check_approver_name(name)
        expected = approver_in_policy(args["signed_policy"], name) if args.get("signed_policy") else None
        new_policy = read_new_policy(args.get("new_policy"), args["action"], in_force=args.get("signed_policy"))
        request = build_request(args["action"], args.get("token"), args.get("keys"), args["change_ref"],
                                args.get("not_after"), args.get("nonce"),
                                max_validity=expected.max_validity if expected else None, new_policy=new_policy)
        text = request_text(name, request, new_policy)
        display.display("approval_sign: %s" % text)  # the request in words, before anything is signed
        before = read_text(dest) if dest else None
        existing = read_existing(dest) if dest else None
        signed = None
        if not check_mode:
            signed = sign_approval(request, name, signer_from_options(args), expected=expected, existing=existing)
        result.update(request=request, request_text=text)
        if new_policy is not None:
            result["new_policy"] = new_policy.as_dict()
        if dest:
            result["dest"] = dest
        if signed is None:  # check mode: nothing signed; the file would change unless it holds this very request
            kept = same_request(existing, request, name) and (expected is None or (
                existing["approver"] == expected.fingerprint and verify_signature(expected.public_key, existing)))
            after = before if kept else planned_text(
                request, name, expected.fingerprint if expected else None)
            changed = bool(dest) and after != before
        else:
            result["approval"] = signed.approval
            after = signed.text
            changed = bool(dest) and (not signed.unchanged or before != signed.text)
            display.display("approval_sign: signed by %s (%s)%s" % (
                name, signed.approval["approver"], ", written to %s" % dest if changed else ""))
        return self.conclude(result, dest, before, after, changed)
