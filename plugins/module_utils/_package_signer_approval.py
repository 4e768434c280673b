# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The work of package_signer_approve: the Security Officer pins a source token's package signer, trusted.

PRIVATE: not part of the public interface. docs/replication.md ("Restore") explains why.

``recipient_enroll`` pins the HSM's package signer from a user session: the operator decides which signer the token
believes. That is enough for a recipient, whose packages only bring keys, but not for a restore, which brings back
what governs the token (the journal pin, the used approval nonces, the signed-policy floor, the checkpoint key
history). ``replica_install restore: true`` therefore accepts only a pinned signer with CKA_TRUSTED true, which only
a Security Officer session can create: this module, in one SO session (no lease, no checkpoint), creates the pin
``keylifecycle-package-signer`` with CKA_TRUSTED in place of whatever was pinned before, after the officer confirmed
its fingerprint out of band (option ``fingerprint``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ansible_collections.secops.keylifecycle.plugins.module_utils._approval import validate_approval_options
from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import CapabilityMissing, InvalidOption
from ansible_collections.secops.keylifecycle.plugins.module_utils._pinned_signer import (
    PACKAGE_SIGNER_LABEL,
    find_pinned_signer,
    load_signer_key,
    pin_signer,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import TokenObjects


@dataclass(frozen=True)
class SignerApproval:
    """package_signer_approve's options, checked before the token is opened."""

    public_key: object
    fingerprint: str


@dataclass
class SignerApprovalResult:
    changed: bool
    audit_events: list
    diff: dict
    package_signer: dict | None


def parse_signer_approval(package_signer, fingerprint, approved_by=None, change_ref=None):
    """Check the options; InvalidOption or PolicyViolation naming the option."""
    if not isinstance(package_signer, dict) or not isinstance(package_signer.get("public_key_pem"), str):
        raise InvalidOption("package_signer must be a dict with public_key_pem: the package_signer that key_info "
                            "(or key_replicate) returns on the source token's host.", option="package_signer")
    if not isinstance(fingerprint, str) or not fingerprint.strip():
        raise InvalidOption("fingerprint is required: the package signer's sha256:<hex> fingerprint, confirmed with "
                            "the source token's owner out of band (not copied from package_signer).",
                            option="fingerprint")
    public_key, computed = load_signer_key(package_signer["public_key_pem"], fingerprint, "package_signer",
                                           fingerprint_option="fingerprint")
    validate_approval_options(approved_by, change_ref)
    return SignerApproval(public_key=public_key, fingerprint=computed)


def _view(pinned):
    if pinned is None:
        return {"package_signer": None}
    return {"package_signer": "%s %s" % (pinned["fingerprint"], "trusted" if pinned["trusted"] else "untrusted")}


def _event(pinned, previous, token_label, context, approved_by, change_ref):
    key = {"label": pinned.label, "id": pinned.key_id, "type": pinned.type, "curve": pinned.curve,
           "token": token_label, "state": "active", "public_key_fingerprint": pinned.fingerprint,
           "package_signer_fingerprint": pinned.fingerprint}
    if previous is None:
        reason = "the Security Officer pinned the package signer trusted"
    else:  # at most 128 characters (event.reason)
        reason = "trusted pin in place of %s (%s)" % (
            previous.fingerprint, "trusted" if previous.trusted else "an operator's pin")
    extra = {"approved_by": approved_by}
    if change_ref:
        extra["change_ref"] = change_ref
    return build_event("package-signer-approve", "success", context, key=key, reason=reason, extra=extra)


def approve_package_signer(so_session, token_label, approval, context, approved_by=None, change_ref=None,
                           check_mode=False):
    """Pin ``approval`` (a SignerApproval) trusted in one Security Officer session; return a SignerApprovalResult.

    Unchanged when the same key is pinned trusted already. Anything else pinned (another key, or the same key pinned
    by an operator) is replaced: the trusted pin is created first, then the old one destroyed.
    """
    officer = approved_by or context.operator
    objects = TokenObjects(so_session, token_label).load()
    previous = find_pinned_signer(objects)
    before = previous.record() if previous else None
    if previous is not None and previous.trusted and previous.fingerprint == approval.fingerprint:
        return SignerApprovalResult(changed=False, audit_events=[], diff={"before": _view(before),
                                                                          "after": _view(before)},
                                    package_signer=before)
    if check_mode:
        after = {"label": PACKAGE_SIGNER_LABEL, "id": None, "type": "ec" if hasattr(approval.public_key, "curve")
                 else "rsa", "curve": getattr(getattr(approval.public_key, "curve", None), "name", None),
                 "fingerprint": approval.fingerprint, "trusted": True}
        return SignerApprovalResult(changed=True, audit_events=[], diff={"before": _view(before),
                                                                         "after": _view(after)},
                                    package_signer=after)
    key_id = bytes.fromhex(previous.key_id) if previous is not None and previous.key_id else os.urandom(16)
    pinned = pin_signer(objects, previous, approval.public_key, key_id, trusted=True)
    if pinned is None or not pinned.trusted:
        raise CapabilityMissing("Token %r did not keep CKA_TRUSTED on the pinned package signer: it cannot hold a "
                                "signer that a user session cannot forge, so nothing can be restored onto it. Use a "
                                "token that implements CKA_TRUSTED." % token_label, option="package_signer")
    after = pinned.record()
    return SignerApprovalResult(changed=True,
                                audit_events=[_event(pinned, previous, token_label, context, officer, change_ref)],
                                diff={"before": _view(before), "after": _view(after)}, package_signer=after)
