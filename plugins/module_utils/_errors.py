# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Typed errors of secops.keylifecycle.

PRIVATE: this file is not part of the collection's public interface and may change
without notice. Errors are raised deep in the shared code and turned into
``fail_json`` only in a module's ``main()`` (or ``AnsibleError`` in a plugin).

Every message says what was refused, why, and how to proceed. No message may ever
contain a PIN or key material: errors carry names, ids and option names only.
"""

from __future__ import annotations


class KeyLifecycleError(Exception):
    """Base class of every error this collection raises on purpose."""

    #: short machine-readable category, returned to the play as ``error_kind``
    kind = "error"

    def __init__(self, message, option=None):
        super().__init__(message)
        self.message = message
        self.option = option

    def __str__(self):
        return self.message


class InvalidOption(KeyLifecycleError):
    """An option value is malformed (name, duration, type, ...)."""

    kind = "invalid_option"


class PolicyViolation(KeyLifecycleError):
    """A request is well-formed but below or outside the policy."""

    kind = "policy_violation"


class KeyConflict(KeyLifecycleError):
    """A requested key spec conflicts with what the token already holds."""

    kind = "key_conflict"


class KeyNotFound(KeyLifecycleError):
    """A named key or version does not exist on the token."""

    kind = "key_not_found"


class PinUnavailable(KeyLifecycleError):
    """No PIN was given, or the PIN file is missing, unreadable or too open."""

    kind = "pin_unavailable"


class LibraryUnavailable(KeyLifecycleError):
    """The PKCS#11 library cannot be loaded."""

    kind = "library_unavailable"


class TokenUnavailable(KeyLifecycleError):
    """The token is absent, ambiguous or not usable."""

    kind = "token_unavailable"


class LoginFailed(KeyLifecycleError):
    """The token refused the login (wrong PIN, locked PIN, ...)."""

    kind = "login_failed"


class TokenOperationFailed(KeyLifecycleError):
    """A PKCS#11 call failed; the message names the call and the CKR code."""

    kind = "token_operation_failed"


class MechanismUnsupported(TokenOperationFailed):
    """The token does not support a mechanism the operation needs."""

    kind = "mechanism_unsupported"


class CapabilityMissing(MechanismUnsupported):
    """The token lacks an attribute the policy requires (CKA_WRAP_WITH_TRUSTED, CKA_TRUSTED: trusted wrapping)."""

    kind = "capability_missing"


class TokenBusy(KeyLifecycleError):
    """Another lifecycle run holds the token's lease (``_token_lease``) and did not release it in time."""

    kind = "token_busy"


class MetadataCorrupt(KeyLifecycleError):
    """A metadata object on the token cannot be decoded."""

    kind = "metadata_corrupt"


class MissingDependency(KeyLifecycleError):
    """A Python library the collection needs is not importable on the host."""

    kind = "missing_dependency"


class UnexpectedError(KeyLifecycleError):
    """A failure this collection did not foresee (a bug): reported as a typed failure, without a traceback."""

    kind = "unexpected_error"

    @classmethod
    def wrap(cls, exc, operation):
        """The typed failure of ``exc``, keeping the audit events and ``changed`` it carries."""
        error = cls("%s failed unexpectedly (%s: %s). This is a bug in secops.keylifecycle: run key_info to see "
                    "the token's state, and report it with the task's options (never the PIN)."
                    % (operation, type(exc).__name__, exc))
        error.audit_events = list(getattr(exc, "audit_events", ()))
        error.changed = bool(getattr(exc, "changed", False))
        return error


class PackageRejected(KeyLifecycleError):
    """A wrapped key package did not unwrap under this recipient's transport key, or its check value differs."""

    kind = "package_rejected"


class _Refusal(KeyLifecycleError):
    """A refusal whose ``kind`` says which of the subclass's ``KINDS`` was caught; ``option`` defaults to ``OPTION``."""

    KINDS = ()
    OPTION = None

    def __init__(self, message, kind, option=None):
        if kind not in self.KINDS:
            raise ValueError("unknown %s kind %r" % (type(self).__name__, kind))
        super().__init__(message, option=option or self.OPTION)
        self.kind = kind


class ApprovalRefused(_Refusal):
    """The signed approvals a high-risk action brought do not meet the signed policy (``_approvals``).

    ``kind`` is one of ``KINDS``; nothing was changed on the token.
    """

    kind = "approval_refused"
    #: approval_missing: fewer valid approvals than the policy requires (M of N, or two for a break-glass);
    #: approval_invalid: malformed, not signed by the approver key the policy lists, or altered after signing;
    #: approval_unknown_approver: signed by a key that is not among the policy's approvers;
    #: approval_expired: its not_after is past, or further ahead than policy.approval_max_validity;
    #: approval_replayed: its nonce was already used on this token (or twice in one task);
    #: approval_mismatch: it approves another action, token, key, version or change;
    #: approval_self: signed by the operator running the task
    KINDS = ("approval_missing", "approval_invalid", "approval_unknown_approver", "approval_expired",
             "approval_replayed", "approval_mismatch", "approval_self")

    OPTION = "approvals"


class JournalRefused(_Refusal):
    """The token names another journal, or a later head, than the one this task's intent is in (``_checkpoint``).

    ``kind`` is one of ``KINDS``: which tampering or accident was caught; nothing was changed on the token.
    """

    kind = "journal_refused"
    #: journal_required: no journaled intent (module run without its action plugin);
    #: journal_pin_missing: the token has signed checkpoints but names no journal;
    #: journal_mismatch: the token names another journal (deleted, replaced, diverted) and no valid rollover;
    #: journal_behind: the journal ends at or before the token's head (truncated, restored from an older copy);
    #: journal_rewritten: the journal does not extend the token's head (records removed, altered or re-hashed);
    #: checkpoint_key_replaced: the key that signed the token's head is gone and nothing certifies the current one
    KINDS = ("journal_required", "journal_pin_missing", "journal_mismatch", "journal_behind", "journal_rewritten",
             "checkpoint_key_replaced")

    OPTION = "audit_context"


class PolicyRefused(_Refusal):
    """The task's policy is not the environment's signed policy the token's policy signers vouch for
    (``_signed_policy.check_policy``).

    ``kind`` is one of ``KINDS``; nothing was changed on the token.
    """

    kind = "policy_refused"
    #: policy_signer_removed: a policy signer the token's pin remembers is no longer on the token;
    #: policy_unsigned: the token holds a policy signer and the task brought no (well-formed) signed_policy;
    #: policy_signature_invalid: signed by a key that is not one of the token's signers, or altered after signing;
    #: policy_expired: the signed policy's not_after is past;
    #: policy_rolled_back: its serial is lower than the highest the token accepted;
    #: policy_mismatch: the policy option differs from the signed policy;
    #: policy_environment_changed: signed for another environment than the policy in force on the token
    KINDS = ("policy_signer_removed", "policy_unsigned", "policy_signature_invalid", "policy_expired",
             "policy_rolled_back", "policy_mismatch", "policy_environment_changed")

    OPTION = "signed_policy"
