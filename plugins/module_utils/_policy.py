# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Key policy: minimum strengths, allowed usages, rotation and retention periods.

PRIVATE: not part of the public interface.

``BASELINE`` is the collection's floor (AES-256, RSA >= 3072, EC P-256 or stronger,
rotation at least every 365 days). An environment's ``policy`` dict may only
tighten it: a value that would weaken the baseline is refused, so no inventory
can quietly lower the bar.

Each setting is declared once, in ``SETTINGS``: its Ansible type, baseline value,
the rule that parses it, the rule that keeps it at least as strict as the baseline,
and the first line of its documentation. The ``policy`` argspec, ``Policy``,
``load_policy`` and ``Policy.as_dict`` come from that table; the doc fragment
``secops.keylifecycle.policy`` is checked against it by tests/unit/test_policy_settings.py.
"""

from __future__ import annotations

import re
from copy import deepcopy
from dataclasses import dataclass, field, make_dataclass, replace
from functools import partial

from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import ec, serialization
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption, PolicyViolation

_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*\Z")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

KEY_TYPES = ("aes", "rsa", "ec")
DEFAULT_KEY_TYPE = "aes"

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
# The sizes a key may have: the policy's minimum (min_aes_bits, min_rsa_bits) then keeps those at or above it, so
# the baseline allows AES 256 and RSA 3072 or 4096. Larger RSA moduli are left out: signing and unwrapping with them
# is slow on every HSM, and no guidance asks for more than 4096 bits before post-quantum schemes.
KEY_SIZES = {"aes": (128, 192, 256), "rsa": (2048, 3072, 4096)}

#: the longest duration any option takes (rotation and retention periods): 100 years. Dates derived from a
#: duration (retain_until, next rotation) then stay far inside what datetime and the token can hold, and no
#: retention requirement (archives, statutes of limitation) asks for more than a lifetime.
MAX_DURATION = 36500 * 86400


def allowed_sizes(key_type, policy):
    """The sizes the policy allows for an AES or RSA key, smallest first."""
    minimum = policy.min_aes_bits if key_type == "aes" else policy.min_rsa_bits
    return tuple(size for size in KEY_SIZES[key_type] if size >= minimum)


def parse_duration(value, option, bounded=True):
    """Parse ``30s``, ``10m``, ``12h``, ``90d``, ``2w`` (or plain seconds) into seconds.

    A duration must be positive and, when ``bounded``, at most MAX_DURATION (100 years).
    """
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
    if bounded and seconds > MAX_DURATION:
        raise InvalidOption("%s %r is longer than %s (100 years), the longest duration accepted: give a period "
                            "in days up to 36500d." % (option, value, format_duration(MAX_DURATION)), option=option)
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


def _weaker(option, given, floor):
    return PolicyViolation(
        "policy.%s=%s would weaken the collection's baseline (%s): an environment policy may only "
        "tighten it." % (option, given, floor), option="policy.%s" % option)


# Rules: each setting is parsed by its rule (a malformed value is refused, InvalidOption), then checked against
# the baseline by its tightening rule, if it has one (a weaker value is refused, PolicyViolation).

def _bits(option, given):
    try:
        return int(given)
    except (TypeError, ValueError):
        raise InvalidOption("policy.%s must be a number of bits." % option, option="policy.%s" % option) from None


def _at_least_baseline(option, given, value, floor):
    if value < floor:
        raise _weaker(option, value, floor)
    return value


def _list_of(normalise):
    def parse(option, given):
        if not isinstance(given, (list, tuple)):
            raise InvalidOption("policy.%s must be a list." % option, option="policy.%s" % option)
        return tuple(normalise(v) for v in given)
    return parse


def _within_baseline(option, given, value, floor):
    extra = [v for v in value if v not in floor]
    if extra:
        raise _weaker(option, ", ".join(extra), "allowed: %s" % ", ".join(floor))
    return value


def _usages_by_type(option, given):
    if not isinstance(given, dict):
        raise InvalidOption("policy.allowed_usages must map a key type to a list of usages.",
                            option="policy.allowed_usages")
    usages = {}
    for key_type, values in given.items():
        if key_type not in USAGES_BY_TYPE:
            raise InvalidOption("policy.allowed_usages has unknown key type %r." % key_type,
                                option="policy.allowed_usages")
        usages[key_type] = _list_of(str)("%s.%s" % (option, key_type), values)
    return usages


def _usages_within_baseline(option, given, value, floor):
    usages = dict(floor)
    for key_type, values in value.items():
        usages[key_type] = _within_baseline("%s.%s" % (option, key_type), given[key_type], values, floor[key_type])
    return usages


def _duration(option, given):
    return parse_duration(given, "policy.%s" % option)


def _at_most_baseline(option, given, value, floor):
    if value > floor:
        raise _weaker(option, given, format_duration(floor))
    return value


def _switch(option, given):
    if not isinstance(given, bool):
        raise InvalidOption("policy.%s must be true or false." % option, option="policy.%s" % option)
    return given


# The lifecycle actions an authorization policy names. Reading (key_info, reports, audit_verify) is never restricted
# beyond opening the token.
AUTHORIZED_ACTIONS = ("generate", "rotate", "compromise_rotate", "destroy", "distribute", "journal_rollover",
                      "replicate")
#: an operator or approver name, as recorded in audit records (user.name, keylifecycle.approved_by)
PERSON_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,128}\Z")
#: a change or ticket reference (keylifecycle.change_ref)
CHANGE_REF_RE = re.compile(r"^[A-Za-z0-9._:/#-]{1,64}\Z")
#: a principal in policy.authorization: an operator name or group:<name>
_PRINCIPAL = re.compile(r"^(group:)?" + PERSON_RE.pattern[1:])


def _authorization(option, given):
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


#: the lifecycle actions a signed policy can bind to signed approvals, M of N (policy.approvals_required, _approvals)
APPROVAL_ACTIONS = ("destroy", "compromise_rotate", "retire", "journal_rollover", "recipient_approve",
                    "recipient_revoke", "policy_change")
#: most approvers a policy lists (every approval is checked on the HSM host)
MAX_APPROVERS = 32


def _approvers(option, given):
    """policy.approvers: approver name -> PEM of their EC P-256 public key (the keys approval_sign signs with)."""
    where = "policy.%s" % option
    if not isinstance(given, dict):
        raise InvalidOption("%s must map an approver's name to the PEM of their EC P-256 public key." % where,
                            option=where)
    if len(given) > MAX_APPROVERS:
        raise InvalidOption("%s lists %d approvers; at most %d." % (where, len(given), MAX_APPROVERS), option=where)
    approvers, seen = {}, {}
    for name, pem in given.items():
        if not isinstance(name, str) or not PERSON_RE.match(name):
            raise InvalidOption("%s names %r, which is not a person's name (letters, digits and . _ @ + -)."
                                % (where, name), option=where)
        try:
            key = serialization.load_pem_public_key(str(pem).strip().encode("ascii"))
        except (ValueError, TypeError, UnicodeError):
            raise InvalidOption("%s.%s is not a PEM public key." % (where, name), option=where) from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise InvalidOption("%s.%s must be an EC P-256 public key: approvals are ECDSA P-256 / SHA-256."
                                % (where, name), option=where)
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if der in seen:
            raise InvalidOption("%s gives %s and %s the same key: each approver needs a key of their own."
                                % (where, seen[der], name), option=where)
        seen[der] = name
        approvers[name] = str(pem).strip() + "\n"
    return approvers


def _approvals_required(option, given):
    """policy.approvals_required: lifecycle action -> M, the number of signed approvals it needs."""
    where = "policy.%s" % option
    if not isinstance(given, dict):
        raise InvalidOption("%s must map a lifecycle action (%s) to a number of approvals."
                            % (where, ", ".join(APPROVAL_ACTIONS)), option=where)
    unknown = sorted(str(action) for action in set(given) - set(APPROVAL_ACTIONS))
    if unknown:
        raise InvalidOption("%s names unknown action(s) %s; the actions are %s."
                            % (where, ", ".join(unknown), ", ".join(APPROVAL_ACTIONS)), option=where)
    required = {}
    for action, count in given.items():
        try:
            count = int(count)
        except (TypeError, ValueError):
            count = -1
        if isinstance(given[action], bool) or count < 0 or count > MAX_APPROVERS:
            raise InvalidOption("%s.%s must be a number of approvals from 0 to %d, got %r."
                                % (where, action, MAX_APPROVERS, given[action]), option=where)
        required[action] = count
    return required


def _persons(option, given):
    where = "policy.%s" % option
    if not isinstance(given, (list, tuple)) or not all(isinstance(p, str) and PERSON_RE.match(p) for p in given):
        raise InvalidOption("%s must be a list of person names (letters, digits and . _ @ + -)." % where,
                            option=where)
    return tuple(given)


def _groups(option, given):
    if not isinstance(given, dict) or not all(isinstance(m, (list, tuple)) for m in given.values()):
        raise InvalidOption("policy.groups must map a group name to a list of operator names.", option="policy.groups")
    return {str(group): tuple(str(m) for m in members) for group, members in given.items()}


def _same(value):
    return value


def _lists_by_key(value):
    return {k: list(v) for k, v in value.items()}


def _lists_by_key_or_none(value):
    return _lists_by_key(value) if value else None


@dataclass(frozen=True)
class Setting:
    """One policy setting, declared once: the argspec, the loader, ``Policy`` and ``as_dict`` come from it.

    ``plugins/doc_fragments/policy.py`` documents the same settings (ansible-doc reads it without importing
    this file); tests/unit/test_policy_settings.py checks that it lists exactly these, with the same types.
    """

    name: str
    type: str  # the Ansible type of the policy suboption
    default: object  # the baseline value
    parse: object  # parse(name, given) -> value; refuses a malformed value
    doc: str  # the first sentence of the suboption's description in the doc fragment
    elements: str | None = None
    tighten: object = None  # tighten(name, given, value, baseline) -> value; refuses a weaker one (None: any value)
    show: object = _same  # value -> as shown by Policy.as_dict()
    no_log: bool | None = None

    def argspec(self):
        spec = {"type": self.type}
        if self.elements:
            spec["elements"] = self.elements
        if self.no_log is not None:
            spec["no_log"] = self.no_log
        return spec

    def load(self, given):
        value = self.parse(self.name, given)
        return value if self.tighten is None else self.tighten(self.name, given, value, self.default)


SETTINGS = (
    Setting("min_aes_bits", "int", 256, _bits, tighten=_at_least_baseline,
            doc="Minimum AES key size in bits (baseline 256)."),
    Setting("min_rsa_bits", "int", 3072, _bits, tighten=_at_least_baseline,
            doc="Minimum RSA modulus size in bits (baseline 3072)."),
    Setting("allowed_key_types", "list", KEY_TYPES, _list_of(lambda v: str(v).lower()), elements="str",
            tighten=_within_baseline, show=list, no_log=False,
            doc="Key types that may be generated (subset of V(aes), V(rsa), V(ec))."),
    Setting("allowed_curves", "list", ("P-256", "P-384", "P-521"),
            _list_of(lambda v: canonical_curve(v, "policy.allowed_curves")), elements="str",
            tighten=_within_baseline, show=list,
            doc="EC curves that may be used (subset of V(P-256), V(P-384), V(P-521))."),
    Setting("allowed_usages", "dict", {t: tuple(u) for t, u in USAGES_BY_TYPE.items()}, _usages_by_type,
            tighten=_usages_within_baseline, show=_lists_by_key,
            doc="Per key type, the list of usages that may be given"),
    Setting("max_rotation_period", "str", 365 * 86400, _duration, tighten=_at_most_baseline, show=format_duration,
            doc="Longest allowed rotation period (baseline V(365d))."),
    Setting("default_retention_period", "str", 90 * 86400, _duration, show=format_duration,
            doc="Retention period of a deactivated version when the key spec gives none (default V(90d))."),
    Setting("min_retention_period", "str", 1, _duration, show=format_duration,
            doc="Shortest retention period a key spec may give."),
    Setting("compromise_disables_decrypt", "bool", False, _switch,
            doc="Whether a compromise rotation also switches off decrypt and unwrap on the compromised version"),
    # The three switches below, and require_transport_key_pin, turn on a stricter rule.
    Setting("destroy_requires_opt_in", "bool", False, _switch,
            doc="Destroy only versions of keys generated (or updated) with C(destroy_allowed=true)."),
    Setting("destroy_requires_approval", "bool", False, _switch,
            doc="Destroy only with C(approved_by) naming a second person, different from the operator."),
    Setting("compromise_requires_approval", "bool", False, _switch,
            doc="Compromise rotations only with C(approved_by) naming a second person, different from the operator."),
    Setting("journal_rollover_requires_approval", "bool", False, _switch,
            doc="Start a new audit journal for a token (M(secops.keylifecycle.audit_rollover)) only with "
                "C(approved_by) naming a second person, different from the operator."),
    # an environment decision, like authorization: the override is recorded next to the resolved identity
    Setting("allow_operator_override", "bool", False, _switch,
            doc="Whether the variable C(keylifecycle_operator) may name the operator instead of the identity "
                "resolved on the controller"),
    Setting("require_transport_key_pin", "bool", False, _switch,
            doc="M(secops.keylifecycle.key_distribute) refuses a recipient whose transport key fingerprint is not "
                "pinned"),
    # on in the baseline; an environment may turn it off (dev only, docs/distribution.md): no tightening rule
    Setting("require_trusted_wrapping", "bool", True, _switch,
            doc="Distributable keys are generated with CKA_WRAP_WITH_TRUSTED and"),
    # a stricter rule: every key survives the loss of the token (docs/replication.md)
    Setting("require_backup", "bool", False, _switch,
            doc="Every key, and the collection's own signing keys, is generated with C(backup=true)"),
    # action -> principals (operator names, or "group:<name>"); None: every operator who can open the token
    Setting("authorization", "dict", None, _authorization, show=_lists_by_key_or_none,
            doc="Who may perform which lifecycle action."),
    Setting("groups", "dict", {}, _groups, show=_lists_by_key,
            doc="Groups of operator names used by O(policy.authorization) as C(group:<name>)."),
    # signed approvals, M of N (_approvals): an environment decision of the Security Officer, who signs the policy
    Setting("approvers", "dict", {}, _approvers, show=dict,
            doc="The people whose signed approvals count, each with the PEM of their EC P-256 public key"),
    Setting("approvals_required", "dict", {}, _approvals_required, show=dict,
            doc="How many signed approvals (M) each high-risk lifecycle action needs"),
    Setting("security_officers", "list", (), _persons, elements="str", show=list, no_log=False,
            doc="The people who hold the Security Officer role."),
    Setting("approval_max_validity", "str", 7 * 86400, _duration, tighten=_at_most_baseline, show=format_duration,
            doc="Longest time from now an approval's C(not_after) may lie (baseline V(7d))"),
)
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


class _PolicyRules:
    """What the effective policy answers beyond its settings."""

    __slots__ = ()

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
        return {setting.name: setting.show(getattr(self, setting.name)) for setting in SETTINGS}


# One field per setting of SETTINGS, defaulting to its baseline value.
Policy = make_dataclass(
    "Policy", [(s.name, object, field(default_factory=partial(deepcopy, s.default))) for s in SETTINGS],
    bases=(_PolicyRules,), frozen=True,
    namespace={"__module__": __name__, "__doc__": "The effective policy of one environment."})

BASELINE = Policy()


def policy_argspec():
    """The ``policy`` option's suboptions for AnsibleModule (each unset suboption is None)."""
    return {setting.name: setting.argspec() for setting in SETTINGS}


def _given_settings(overrides):
    if not isinstance(overrides, dict):
        raise InvalidOption("policy must be a dict of policy settings.", option="policy")
    unknown = sorted(set(overrides) - set(SETTINGS_BY_NAME))
    if unknown:
        raise InvalidOption("policy has unknown setting(s) %s; known settings: %s."
                            % (", ".join(unknown), ", ".join(SETTINGS_BY_NAME)), option="policy")
    return [(setting, overrides[setting.name]) for setting in SETTINGS if setting.name in overrides]


def _check_consistent(policy):
    short = sorted(action for action, count in policy.approvals_required.items() if count > len(policy.approvers))
    if short:
        raise InvalidOption(
            "policy.approvals_required asks for more approvals than policy.approvers lists (%d): %s. List enough "
            "approvers, or lower the number." % (len(policy.approvers), ", ".join(
                "%s needs %d" % (action, policy.approvals_required[action]) for action in short)),
            option="policy.approvals_required")
    if policy.default_retention_period < policy.min_retention_period:
        raise InvalidOption(
            "policy.default_retention_period (%s) is shorter than policy.min_retention_period (%s)."
            % (format_duration(policy.default_retention_period), format_duration(policy.min_retention_period)),
            option="policy.default_retention_period")
    return policy


def load_policy(overrides=None):
    """Return the effective policy: the baseline tightened by ``overrides``.

    Each given setting is parsed by its rule and checked against its baseline value (a policy may only
    tighten the baseline), then the settings are checked together.
    """
    if not overrides:
        return BASELINE
    changes = {setting.name: setting.load(given) for setting, given in _given_settings(overrides)}
    return _check_consistent(replace(BASELINE, **changes))
