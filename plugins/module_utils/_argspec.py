# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Argument specs shared by the HSM modules, declared once.

PRIVATE: not part of the public interface. The connection options are documented
by the ``secops.keylifecycle.connection`` doc fragment (keep them in step with this file),
the policy option by ``secops.keylifecycle.policy`` (declared in ``_policy.SETTINGS``).
"""

from __future__ import annotations

import copy

from ansible.module_utils.basic import env_fallback

from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import policy_argspec

# None of them is required here, although a module cannot run without them: they are usually set once for the play
# with module_defaults (group/secops.keylifecycle.hsm), which linters do not see (ansible/ansible-lint#2953).
# ConnectionSettings.from_params (_hsm.py) requires them at run time, before anything touches the token.
CONNECTION_ARGSPEC = {
    "pkcs11_module": {"type": "path", "fallback": (env_fallback, ["PKCS11_MODULE"])},
    "token_label": {"type": "str", "no_log": False, "fallback": (env_fallback, ["PKCS11_TOKEN_LABEL"])},
    "user_pin": {"type": "str", "no_log": True, "fallback": (env_fallback, ["PKCS11_USER_PIN"])},
    "user_pin_file": {"type": "path"},
}

# The policy option: its suboptions come from the table of settings in _policy.py (SETTINGS).
POLICY_ARGSPEC = {
    "policy": {
        "type": "dict",
        "default": {},
        "options": policy_argspec(),
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


def hsm_module_kwargs(argument_spec, mutually_exclusive=(), required_one_of=(), env_fallbacks=True, **kwargs):
    """Keyword arguments for AnsibleModule: the connection options merged with the module's own.

    ``env_fallbacks=False`` leaves out the environment fallbacks, for validating a task's arguments on the
    controller (an action plugin), whose environment is not the module's host's.
    """
    spec = {name: {key: value for key, value in option.items() if env_fallbacks or key != "fallback"}
            for name, option in CONNECTION_ARGSPEC.items()}
    overlap = set(spec) & set(argument_spec)
    if overlap:
        raise ValueError("module options shadow connection options: %s" % ", ".join(sorted(overlap)))
    # a copy: AnsibleModule fills a dict default with its suboptions in place, which would change the shared specs
    spec.update(copy.deepcopy(argument_spec))
    kwargs = dict(argument_spec=spec, mutually_exclusive=[["user_pin", "user_pin_file"]] + list(mutually_exclusive),
                  **kwargs)
    if required_one_of:
        kwargs["required_one_of"] = list(required_one_of)
    return kwargs
