# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The work of policy_signer: the Security Officer installs a policy signer in the HSM token.

PRIVATE: not part of the public interface. docs/access-control.md ("Signed policy") explains the model;
``_policy_signers`` holds the signer's object layout (``signer_template``) and how it is found.

One Security Officer session (no lease, no checkpoint: the SO cannot sign; the next user task anchors the journal
head that chains the record). Installation is idempotent: a signer already on the token with the same key is left as
it is. A name already installed with another key is refused: a signer can be neither replaced nor removed (its
object is CKA_MODIFIABLE and CKA_DESTROYABLE false), so a new key is installed under a new name.
"""

from __future__ import annotations

from dataclasses import dataclass

from ansible_collections.secops.keylifecycle.plugins.module_utils._approval import validate_approval_options
from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import p11_exc
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import CapabilityMissing, InvalidOption
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import translate_pkcs11_error
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy_signers import (
    POLICY_SIGNER_PREFIX,
    check_signer_name,
    find_policy_signers,
    load_signer_public_key,
    refuse_user_session,
    signer_template,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    spki_fingerprint,
    trusted_key_id,
)


#: a token that does not implement CKA_DESTROYABLE: the signer is created without it (destroyable, with a warning)
DESTROYABLE_WARNING = (
    "The token refused CKA_DESTROYABLE=false (CKR_ATTRIBUTE_TYPE_INVALID): the policy signer %r was installed "
    "without it, so a Security Officer session can destroy it. The journal pin still remembers its fingerprint, "
    "and lifecycle modules refuse to act on a token whose pinned signer is gone (policy_signer_removed).")


@dataclass(frozen=True)
class SignerRequest:
    """policy_signer's options, checked before the token is opened."""

    name: str
    public_key: object
    fingerprint: str

    @property
    def label(self):
        return POLICY_SIGNER_PREFIX + self.name


@dataclass
class SignerResult:
    changed: bool
    audit_events: list
    diff: dict
    policy_signers: list
    warnings: list


def parse_signer_request(name, public_key_pem, approved_by=None, change_ref=None):
    """Check the options (name, public_key_pem, approved_by, change_ref); InvalidOption naming the option."""
    check_signer_name(name, option="name")
    if not isinstance(public_key_pem, str) or not public_key_pem.strip():
        raise InvalidOption("public_key_pem is required: the policy signer's EC P-256 public key in PEM "
                            "(-----BEGIN PUBLIC KEY-----).", option="public_key_pem")
    public_key = load_signer_public_key(public_key_pem, option="public_key_pem")
    validate_approval_options(approved_by, change_ref)
    return SignerRequest(name=name, public_key=public_key, fingerprint=spki_fingerprint(public_key))


def _view(signers):
    return {"policy_signers": sorted("%s %s" % (signer["name"], signer["fingerprint"]) for signer in signers)}


def _event(request, destroyable, token_label, context, approved_by, change_ref):
    key = {"label": request.label, "type": "ec", "curve": "P-256", "public_key_fingerprint": request.fingerprint,
           "id": trusted_key_id(request.public_key).hex(), "token": token_label}
    extra = {"approved_by": approved_by,
             "policy_signer": {"name": request.name, "fingerprint": request.fingerprint, "destroyable": destroyable}}
    if change_ref:
        extra["change_ref"] = change_ref
    return build_event("policy-signer-approve", "success", context, key=key, extra=extra)


def create_signer(so_session, request):
    """C_CreateObject of the signer (CKA_DESTROYABLE false; without it only where the token does not know it).

    Returns whether the token left the signer destroyable. A user session is refused by the token
    (CKR_ATTRIBUTE_READ_ONLY on CKA_TRUSTED): PolicyViolation naming so_pin.
    """
    for destroyable in (False, True):
        try:
            so_session.create_object(signer_template(request.name, request.public_key, destroyable=destroyable))
            return destroyable
        except p11_exc.AttributeReadOnly as exc:
            raise refuse_user_session(type(exc).__name__, request.label) from None
        except p11_exc.AttributeTypeInvalid:
            if destroyable:  # refused without CKA_DESTROYABLE too: the token does not know CKA_TRUSTED
                raise CapabilityMissing(
                    "The token does not support CKA_TRUSTED (CKR_ATTRIBUTE_TYPE_INVALID) while creating the policy "
                    "signer %r: it cannot hold a signer that a user session cannot forge. Use a token that "
                    "implements CKA_TRUSTED." % request.label, option="name") from None
        except p11_exc.PKCS11Error as exc:
            raise translate_pkcs11_error(exc, "C_CreateObject of policy signer %r" % request.label) from None
    raise AssertionError("unreachable")  # pragma: no cover


def install_policy_signer(so_session, token_label, request, context, approved_by=None, change_ref=None,
                          check_mode=False):
    """Install ``request`` (a SignerRequest) in one Security Officer session; return a SignerResult.

    Unchanged when a signer with the same key is on the token (a warning when it is under another name); refused
    (InvalidOption naming ``name``) when the name is taken by another key.
    """
    officer = approved_by or context.operator
    before = [signer.as_dict() for signer in find_policy_signers(so_session)]
    warnings = []
    same_key = [signer for signer in before if signer["fingerprint"] == request.fingerprint]
    if same_key:
        if all(signer["name"] != request.name for signer in same_key):
            warnings.append("The key %s is already installed as policy signer %r; it was not installed again as %r."
                            % (request.fingerprint, same_key[0]["name"], request.name))
        return SignerResult(changed=False, audit_events=[], diff={"before": _view(before), "after": _view(before)},
                            policy_signers=before, warnings=warnings)
    taken = [signer for signer in before if signer["name"] == request.name]
    if taken:
        raise InvalidOption(
            "name %r is already installed as a policy signer with another key (%s, not %s). A policy signer cannot "
            "be replaced or removed from the token: install the new key under another name." % (
                request.name, taken[0]["fingerprint"], request.fingerprint), option="name")
    events = []
    if check_mode:
        destroyable = False
        after = before + [{"name": request.name, "label": request.label, "fingerprint": request.fingerprint,
                           "destroyable": False}]
    else:
        destroyable = create_signer(so_session, request)
        if destroyable:
            warnings.append(DESTROYABLE_WARNING % request.label)
        after = [signer.as_dict() for signer in find_policy_signers(so_session)]
        installed = [signer for signer in after if signer["fingerprint"] == request.fingerprint]
        if installed:
            destroyable = installed[0]["destroyable"]
        events.append(_event(request, destroyable, token_label, context, officer, change_ref))
    after = sorted(after, key=lambda signer: signer["fingerprint"])
    return SignerResult(changed=True, audit_events=events, diff={"before": _view(before), "after": _view(after)},
                        policy_signers=after, warnings=warnings)
