# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Key policy: minimum strengths, allowed usages, rotation and retention periods.

PRIVATE: not part of the public interface.

``BASELINE`` is the collection's floor (AES-256, RSA >= 3072, EC P-256 or stronger,
rotation at least every 365 days). An environment's ``policy`` dict may only
tighten it: a value that would weaken the baseline is refused, so no inventory
can quietly lower the bar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption, PolicyViolation

_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*\Z")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

KEY_TYPES = ("aes", "rsa", "ec")

# Curve aliases -> canonical name (NIST names are what auditors read).
CURVES = {
    "p-256": "P-256", "secp256r1": "P-256", "prime256v1": "P-256",
    "p-384": "P-384", "secp384r1": "P-384",
    "p-521": "P-521", "secp521r1": "P-521",
}
CURVE_BITS = {"P-256": 256, "P-384": 384, "P-521": 521}

USAGES = ("encrypt", "decrypt", "wrap", "unwrap", "sign", "verify", "derive")
USAGES_BY_TYPE = {
    "aes": ("encrypt", "decrypt", "wrap", "unwrap", "sign", "verify"),
    "rsa": ("encrypt", "decrypt", "wrap", "unwrap", "sign", "verify"),
    "ec": ("sign", "verify", "derive"),
}
DEFAULT_USAGE = {
    "aes": ("encrypt", "decrypt"),
    "rsa": ("sign", "verify"),
    "ec": ("sign", "verify"),
}
DEFAULT_SIZE = {"aes": 256, "rsa": 3072}


def parse_duration(value, option):
    """Parse ``30s``, ``10m``, ``12h``, ``90d``, ``2w`` (or plain seconds) into seconds."""
    if isinstance(value, bool):
        raise InvalidOption("%s must be a duration like 30s, 10m, 12h, 90d or 365d, got %r." % (option, value),
                            option=option)
    if isinstance(value, int):
        seconds = value
    else:
        text = str(value)
        match = _DURATION_RE.match(text)
        if match:
            seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        elif text.strip().isdigit():
            seconds = int(text.strip())
        else:
            raise InvalidOption(
                "%s must be a duration like 30s, 10m, 12h, 90d or 365d, got %r." % (option, value), option=option)
    if seconds <= 0:
        raise InvalidOption("%s must be a positive duration, got %r." % (option, value), option=option)
    return seconds


def format_duration(seconds):
    """Render seconds in the largest unit that divides them exactly (``31536000`` -> ``365d``)."""
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds % size == 0:
            return "%d%s" % (seconds // size, unit)
    return "%ds" % seconds


def canonical_curve(curve, option="curve"):
    canonical = CURVES.get(str(curve).lower())
    if canonical is None:
        raise InvalidOption("%s %r is not a supported curve: use P-256, P-384 or P-521." % (option, curve),
                            option=option)
    return canonical


@dataclass(frozen=True)
class Policy:
    """The effective policy of one environment."""

    min_aes_bits: int = 256
    min_rsa_bits: int = 3072
    allowed_key_types: tuple = KEY_TYPES
    allowed_curves: tuple = ("P-256", "P-384", "P-521")
    allowed_usages: dict = field(default_factory=lambda: {t: tuple(u) for t, u in USAGES_BY_TYPE.items()})
    max_rotation_period: int = 365 * 86400
    default_retention_period: int = 90 * 86400
    min_retention_period: int = 1
    compromise_disables_decrypt: bool = False
    destroy_requires_opt_in: bool = False
    destroy_requires_approval: bool = False
    compromise_requires_approval: bool = False
    # whether the task variable keylifecycle_operator may name the operator instead of the resolved identity
    allow_operator_override: bool = False
    # whether key_distribute refuses a recipient whose transport key fingerprint is not pinned
    require_transport_key_pin: bool = False
    # action -> principals (operator names, or "group:<name>"); None: every operator who can open the token
    authorization: dict = None
    groups: dict = field(default_factory=dict)

    def allows(self, action, operator):
        """Whether ``operator`` may perform a lifecycle ``action`` (see AUTHORIZED_ACTIONS)."""
        if self.authorization is None:
            return True
        for principal in self.authorization.get(action, ()):
            if principal == operator:
                return True
            if principal.startswith("group:") and operator in self.groups.get(principal[len("group:"):], ()):
                return True
        return False

    def describe_authorization(self, action):
        """The policy entry for an action, in words, for refusal messages."""
        principals = (self.authorization or {}).get(action, ())
        return "policy.authorization.%s allows %s" % (action, ", ".join(principals) if principals else "nobody")

    def as_dict(self):
        return {
            "min_aes_bits": self.min_aes_bits,
            "min_rsa_bits": self.min_rsa_bits,
            "allowed_key_types": list(self.allowed_key_types),
            "allowed_curves": list(self.allowed_curves),
            "allowed_usages": {t: list(u) for t, u in self.allowed_usages.items()},
            "max_rotation_period": format_duration(self.max_rotation_period),
            "default_retention_period": format_duration(self.default_retention_period),
            "min_retention_period": format_duration(self.min_retention_period),
            "compromise_disables_decrypt": self.compromise_disables_decrypt,
            "destroy_requires_opt_in": self.destroy_requires_opt_in,
            "destroy_requires_approval": self.destroy_requires_approval,
            "compromise_requires_approval": self.compromise_requires_approval,
            "allow_operator_override": self.allow_operator_override,
            "require_transport_key_pin": self.require_transport_key_pin,
            "authorization": {a: list(p) for a, p in self.authorization.items()} if self.authorization else None,
            "groups": {g: list(m) for g, m in self.groups.items()},
        }


BASELINE = Policy()

_POLICY_OPTIONS = (
    "min_aes_bits", "min_rsa_bits", "allowed_key_types", "allowed_curves", "allowed_usages",
    "max_rotation_period", "default_retention_period", "min_retention_period", "compromise_disables_decrypt",
    "destroy_requires_opt_in", "destroy_requires_approval", "compromise_requires_approval", "authorization",
    "groups", "allow_operator_override", "require_transport_key_pin",
)
# Settings that switch on a stricter rule: baseline false, a policy may set them true only.
_STRICTER_SWITCHES = ("destroy_requires_opt_in", "destroy_requires_approval", "compromise_requires_approval",
                      "require_transport_key_pin")
# The lifecycle actions an authorization policy names. Reading (key_info, reports, audit_verify) is never restricted
# beyond opening the token.
AUTHORIZED_ACTIONS = ("generate", "rotate", "compromise_rotate", "destroy", "distribute")
_PRINCIPAL = re.compile(r"^(group:)?[A-Za-z0-9._@+-]{1,128}\Z")


def _weaker(option, given, floor):
    return PolicyViolation(
        "policy.%s=%s would weaken the collection's baseline (%s): an environment policy may only "
        "tighten it." % (option, given, floor), option="policy.%s" % option)


def _subset(option, given, allowed, normalise=str):
    if not isinstance(given, (list, tuple)):
        raise InvalidOption("policy.%s must be a list." % option, option="policy.%s" % option)
    values = tuple(normalise(v) for v in given)
    extra = [v for v in values if v not in allowed]
    if extra:
        raise _weaker(option, ", ".join(extra), "allowed: %s" % ", ".join(allowed))
    return values


def _load_authorization(given):
    if not isinstance(given, dict):
        raise InvalidOption("policy.authorization must map a lifecycle action to a list of operators or "
                            "group:<name> entries.", option="policy.authorization")
    unknown = sorted(set(given) - set(AUTHORIZED_ACTIONS))
    if unknown:
        raise InvalidOption("policy.authorization names unknown action(s) %s; the actions are %s."
                            % (", ".join(unknown), ", ".join(AUTHORIZED_ACTIONS)), option="policy.authorization")
    entries = {}
    for action, principals in given.items():
        if isinstance(principals, str) or not isinstance(principals, (list, tuple)):
            raise InvalidOption("policy.authorization.%s must be a list." % action,
                                option="policy.authorization.%s" % action)
        bad = [p for p in principals if not isinstance(p, str) or not _PRINCIPAL.match(p)]
        if bad:
            raise InvalidOption("policy.authorization.%s has invalid entries %s: use operator names or group:<name>."
                                % (action, bad), option="policy.authorization.%s" % action)
        entries[action] = tuple(principals)
    return entries


def _load_groups(given):
    if not isinstance(given, dict) or not all(isinstance(m, (list, tuple)) for m in given.values()):
        raise InvalidOption("policy.groups must map a group name to a list of operator names.", option="policy.groups")
    return {str(group): tuple(str(m) for m in members) for group, members in given.items()}


def load_policy(overrides=None):
    """Return the effective policy: the baseline tightened by ``overrides``."""
    if not overrides:
        return BASELINE
    if not isinstance(overrides, dict):
        raise InvalidOption("policy must be a dict of policy settings.", option="policy")
    unknown = sorted(set(overrides) - set(_POLICY_OPTIONS))
    if unknown:
        raise InvalidOption("policy has unknown setting(s) %s; known settings: %s."
                            % (", ".join(unknown), ", ".join(_POLICY_OPTIONS)), option="policy")
    changes = {}
    for option in ("min_aes_bits", "min_rsa_bits"):
        if option in overrides:
            try:
                value = int(overrides[option])
            except (TypeError, ValueError):
                raise InvalidOption("policy.%s must be a number of bits." % option,
                                    option="policy.%s" % option) from None
            if value < getattr(BASELINE, option):
                raise _weaker(option, value, getattr(BASELINE, option))
            changes[option] = value
    if "allowed_key_types" in overrides:
        changes["allowed_key_types"] = _subset("allowed_key_types", overrides["allowed_key_types"],
                                               BASELINE.allowed_key_types, lambda v: str(v).lower())
    if "allowed_curves" in overrides:
        changes["allowed_curves"] = _subset("allowed_curves", overrides["allowed_curves"], BASELINE.allowed_curves,
                                            lambda v: canonical_curve(v, "policy.allowed_curves"))
    if "allowed_usages" in overrides:
        given = overrides["allowed_usages"]
        if not isinstance(given, dict):
            raise InvalidOption("policy.allowed_usages must map a key type to a list of usages.",
                                option="policy.allowed_usages")
        usages = dict(BASELINE.allowed_usages)
        for key_type, values in given.items():
            if key_type not in usages:
                raise InvalidOption("policy.allowed_usages has unknown key type %r." % key_type,
                                    option="policy.allowed_usages")
            usages[key_type] = _subset("allowed_usages.%s" % key_type, values, usages[key_type])
        changes["allowed_usages"] = usages
    if "max_rotation_period" in overrides:
        value = parse_duration(overrides["max_rotation_period"], "policy.max_rotation_period")
        if value > BASELINE.max_rotation_period:
            raise _weaker("max_rotation_period", overrides["max_rotation_period"],
                          format_duration(BASELINE.max_rotation_period))
        changes["max_rotation_period"] = value
    for option in ("default_retention_period", "min_retention_period"):
        if option in overrides:
            changes[option] = parse_duration(overrides[option], "policy.%s" % option)
    if "compromise_disables_decrypt" in overrides:
        if not isinstance(overrides["compromise_disables_decrypt"], bool):
            raise InvalidOption("policy.compromise_disables_decrypt must be true or false.",
                                option="policy.compromise_disables_decrypt")
        changes["compromise_disables_decrypt"] = overrides["compromise_disables_decrypt"]
    for option in _STRICTER_SWITCHES:
        if option in overrides:
            if not isinstance(overrides[option], bool):
                raise InvalidOption("policy.%s must be true or false." % option, option="policy.%s" % option)
            changes[option] = overrides[option]
    if "allow_operator_override" in overrides:
        # an environment decision, like authorization: the override is recorded next to the resolved identity
        if not isinstance(overrides["allow_operator_override"], bool):
            raise InvalidOption("policy.allow_operator_override must be true or false.",
                                option="policy.allow_operator_override")
        changes["allow_operator_override"] = overrides["allow_operator_override"]
    if "authorization" in overrides:
        changes["authorization"] = _load_authorization(overrides["authorization"])
    if "groups" in overrides:
        changes["groups"] = _load_groups(overrides["groups"])
    policy = replace(BASELINE, **changes)
    if policy.default_retention_period < policy.min_retention_period:
        raise InvalidOption(
            "policy.default_retention_period (%s) is shorter than policy.min_retention_period (%s)."
            % (format_duration(policy.default_retention_period), format_duration(policy.min_retention_period)),
            option="policy.default_retention_period")
    return policy


def check_approval(policy, required, action, approved_by, operator):
    """Dual control: a second, different, authorized person must approve where the policy requires it."""
    if approved_by is not None and approved_by == operator:
        raise PolicyViolation("approved_by %r is the operator: an approval needs a second, different person."
                              % approved_by, option="approved_by")
    if approved_by is not None and not policy.allows(action, approved_by):
        raise PolicyViolation("approved_by %r is not authorized to %s: %s." % (
            approved_by, action.replace("_", " "), policy.describe_authorization(action)), option="approved_by")
    if required and not approved_by:
        raise PolicyViolation("The policy requires a second person's approval to %s: set approved_by (and "
                              "change_ref) to the approver, who must not be the operator." % action.replace("_", " "),
                              option="approved_by")


#: an operator or approver name, as recorded in audit records (user.name, keylifecycle.approved_by)
PERSON_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,128}\Z")
#: a change or ticket reference (keylifecycle.change_ref)
CHANGE_REF_RE = re.compile(r"^[A-Za-z0-9._:/#-]{1,64}\Z")


def validate_approval_options(approved_by, change_ref):
    """Check the approval options before anything happens (they go into the audit record)."""
    if approved_by is not None and not PERSON_RE.match(approved_by):
        raise InvalidOption("approved_by %r is not a valid person name: letters, digits and . _ @ + - only."
                            % approved_by, option="approved_by")
    if change_ref is not None and not CHANGE_REF_RE.match(change_ref):
        raise InvalidOption("change_ref %r is not a valid change or ticket reference: letters, digits and "
                            ". _ : / # - only, up to 64 characters." % change_ref, option="change_ref")
