# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Argument specs shared by the HSM modules, declared once.

PRIVATE: not part of the public interface. The connection options are documented
by the ``secops.keylifecycle.connection`` doc fragment, the policy option by
``secops.keylifecycle.policy``; keep them in step with this file.
"""

from __future__ import annotations

from ansible.module_utils.basic import env_fallback

CONNECTION_ARGSPEC = {
    "pkcs11_module": {"type": "path", "required": True, "fallback": (env_fallback, ["PKCS11_MODULE"])},
    "token_label": {"type": "str", "required": True, "no_log": False, "fallback": (env_fallback, ["PKCS11_TOKEN_LABEL"])},
    "user_pin": {"type": "str", "no_log": True, "fallback": (env_fallback, ["PKCS11_USER_PIN"])},
    "user_pin_file": {"type": "path"},
}

POLICY_ARGSPEC = {
    "policy": {
        "type": "dict",
        "default": {},
        "options": {
            "min_aes_bits": {"type": "int"},
            "min_rsa_bits": {"type": "int"},
            "allowed_key_types": {"type": "list", "elements": "str", "no_log": False},
            "allowed_curves": {"type": "list", "elements": "str"},
            "allowed_usages": {"type": "dict"},
            "max_rotation_period": {"type": "str"},
            "default_retention_period": {"type": "str"},
            "min_retention_period": {"type": "str"},
            "compromise_disables_decrypt": {"type": "bool"},
            "destroy_requires_opt_in": {"type": "bool"},
            "destroy_requires_approval": {"type": "bool"},
            "compromise_requires_approval": {"type": "bool"},
            "allow_operator_override": {"type": "bool"},
            "require_transport_key_pin": {"type": "bool"},
            "authorization": {"type": "dict"},
            "groups": {"type": "dict"},
        },
    },
}

# Filled in on the controller by the collection's action plugins (plugins/plugin_utils/_lifecycle_action.py).
AUDIT_CONTEXT_ARGSPEC = {
    "audit_context": {
        "type": "dict",
        "options": {
            "operator": {"type": "str"},
            "operator_source": {"type": "str"},
            "run_id": {"type": "str"},
            "intent_id": {"type": "str"},
            "host": {"type": "str"},
            "journal_id": {"type": "str"},
            "intent_seq": {"type": "int"},
            "intent_hash": {"type": "str"},
            "resolved_operator": {"type": "str"},
            "resolved_operator_source": {"type": "str"},
        },
    },
}


def policy_overrides(params):
    """The policy settings the task actually gave (suboptions left unset are None)."""
    return {name: value for name, value in (params.get("policy") or {}).items() if value is not None}


def hsm_module_kwargs(argument_spec, mutually_exclusive=(), required_one_of=(), **kwargs):
    """Keyword arguments for AnsibleModule: the connection options merged with the module's own."""
    spec = {name: dict(option) for name, option in CONNECTION_ARGSPEC.items()}
    overlap = set(spec) & set(argument_spec)
    if overlap:
        raise ValueError("module options shadow connection options: %s" % ", ".join(sorted(overlap)))
    spec.update(argument_spec)
    return dict(
        argument_spec=spec,
        mutually_exclusive=[["user_pin", "user_pin_file"]] + list(mutually_exclusive),
        required_one_of=[["user_pin", "user_pin_file"]] + list(required_one_of),
        **kwargs,
    )
