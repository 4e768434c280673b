# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Argument specs shared by the HSM modules, declared once.

PRIVATE: not part of the public interface. The connection options are documented
by the ``secops.keylifecycle.connection`` doc fragment (keep them in step with this file),
the policy option by ``secops.keylifecycle.policy`` (declared in ``_policy.SETTINGS``), with the signed_policy
option (``_signed_policy``).
"""

from __future__ import annotations

import copy
import os

from ansible.module_utils.basic import AnsibleFallbackNotFound, AnsibleModule
from ansible.module_utils.errors import NoLogError

from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import policy_argspec


def set_env_fallback(*names):
    """The first of the environment variables ``names`` that is set and not empty.

    Ansible's env_fallback takes an empty variable as a value: an empty PKCS11_USER_PIN would then be a PIN given,
    and collide with user_pin_file ("parameters are mutually exclusive"). Here an empty variable counts as unset.
    """
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    raise AnsibleFallbackNotFound


# None of them is required here, although a module cannot run without them: they are usually set once for the play
# with module_defaults (group/secops.keylifecycle.hsm), which linters do not see (ansible/ansible-lint#2953).
# ConnectionSettings.from_params (_hsm.py) requires them at run time, before anything touches the token.
CONNECTION_ARGSPEC = {
    "pkcs11_module": {"type": "path", "fallback": (set_env_fallback, ["PKCS11_MODULE"])},
    "token_label": {"type": "str", "no_log": False, "fallback": (set_env_fallback, ["PKCS11_TOKEN_LABEL"])},
    "user_pin": {"type": "str", "no_log": True, "fallback": (set_env_fallback, ["PKCS11_USER_PIN"])},
    "user_pin_file": {"type": "path"},
    # seconds a state-changing module waits for the token's lease (_token_lease); None: DEFAULT_LEASE_WAIT
    "lease_wait": {"type": "int"},
}

# The Security Officer's credential (the SO PIN). Declared here once, for recipient_approve only (token_check has its
# own so_pin_file, read by the same function): NOT part of CONNECTION_ARGSPEC, so module_defaults for the hsm group,
# which the operators' plays set, cannot carry it. The SO PIN must never be needed by scheduled rotation.
OFFICER_ARGSPEC = {
    "so_pin": {"type": "str", "no_log": True, "fallback": (set_env_fallback, ["PKCS11_SO_PIN"])},
    "so_pin_file": {"type": "path"},
}
OFFICER_MUTUALLY_EXCLUSIVE = (("so_pin", "so_pin_file"),)

# The policy option: its suboptions come from the table of settings in _policy.py (SETTINGS).
POLICY_ARGSPEC = {
    "policy": {
        "type": "dict",
        "default": {},
        "options": policy_argspec(),
    },
    # The environment's signed policy (plugins/module_utils/_signed_policy.py): free-form here, its shape is checked
    # by _signed_policy.parse_signed_policy and its signature inside the token by check_policy.
    "signed_policy": {"type": "dict", "no_log": False},
}

# The signer's own key on the controller (policy_sign, approval_sign; doc_fragments/signing_key.py): a
# passphrase-protected PEM, or a private key object in the signer's own PKCS#11 token (plugin_utils/_policy_signing.py).
SIGNING_KEY_ARGSPEC = {
    "private_key_path": {"type": "path"},
    "private_key_passphrase": {"type": "str", "no_log": True},
    "pkcs11_module": {"type": "path"},
    "token_label": {"type": "str", "no_log": False},
    "user_pin_file": {"type": "path"},
    "key_label": {"type": "str", "no_log": False},
}
SIGNING_KEY_RULES = {
    "mutually_exclusive": [["private_key_path", "pkcs11_module"]],
    "required_one_of": [["private_key_path", "pkcs11_module"]],
    "required_together": [["private_key_path", "private_key_passphrase"]],
    "required_by": {"pkcs11_module": ["token_label", "user_pin_file", "key_label"]},
}

# The approval options of the high-risk actions (destroy, compromise rotation, retire, journal rollover), documented
# once in doc_fragments/approvals.py and checked by _approvals.ApprovalGate: signed approvals (approval_sign
# documents; free-form here, their shape is checked by _approvals.parse_approval), or the legacy asserted approver.
APPROVALS_ARGSPEC = {
    "approvals": {"type": "list", "elements": "raw", "no_log": False},
    "approved_by": {"type": "str"},
    "change_ref": {"type": "str"},
}

# That the intent extends the journal head the token pinned: the digests of the records after start_seq
# (plugins/module_utils/_journal_chain.py).
JOURNAL_PROOF_OPTIONS = {
    "start_seq": {"type": "int"},
    "start_hash": {"type": "str"},
    "digests": {"type": "list", "elements": "str"},
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
            "journal_proof": {"type": "dict", "options": JOURNAL_PROOF_OPTIONS},
            "journal_rollover": {"type": "dict", "options": {
                "genesis": {"type": "str"},
                "previous_proof": {"type": "dict", "options": JOURNAL_PROOF_OPTIONS},
            }},
        },
    },
}

# The batch modules' choice of a full or a summary result (doc_fragments/batch_result.py); _lifecycle_module
# summarises, _lifecycle_action journals the events either way.
#: an enrolled token a key is wrapped for, as recipient_enroll described it (key_distribute's recipients,
#: key_replicate's replicas): who, where, its transport public key and pinned fingerprint, the OAEP hashes it unwraps
TRANSPORT_TARGET_OPTIONS = {
    "name": {"type": "str", "required": True},
    "host": {"type": "str"},
    "public_key_pem": {"type": "str", "required": True, "no_log": False},
    "fingerprint": {"type": "str"},
    "oaep_hashes": {"type": "list", "elements": "str", "choices": ["sha1", "sha256", "sha384", "sha512"]},
}

BATCH_RESULT_ARGSPEC = {
    "return_records": {"type": "bool", "default": True},
}


def policy_overrides(params):
    """The policy settings the task actually gave (suboptions left unset are None).

    On the controller the task's ``policy`` is not type-checked yet: anything but a dict is refused here,
    naming the option (InvalidOption), so a caller never iterates a string.
    """
    policy = params.get("policy")
    if policy is None:
        return {}
    if not isinstance(policy, dict):
        given = "a string" if isinstance(policy, str) else "a list" if isinstance(policy, list) else "a value"
        raise InvalidOption("policy must be a dict of policy settings (for example {min_rsa_bits: 4096}), got %s: %r."
                            % (given, policy), option="policy")
    return {name: value for name, value in policy.items() if value is not None}


class HsmModule(AnsibleModule):
    """AnsibleModule whose refusal of a malformed option names the option and has ``error_kind: invalid_option``.

    ansible-core lists the no_log values of an option with suboptions (``policy``, ``keys``, ``recipients``)
    before it checks the option's type; given a string there, the first error it reports is check_type_dict's
    bare "dictionary requested, could not parse JSON or key=value", which names no option. The same run also
    records the type error that names it ("argument 'policy' is of type str ..."): that one is reported.
    """

    def __init__(self, *args, **kwargs):
        self._arguments_checked = False
        super().__init__(*args, **kwargs)
        self._arguments_checked = True

    def fail_json(self, msg, **kwargs):
        if not self._arguments_checked:  # AnsibleModule refuses the task's arguments
            result = getattr(self, "validation_result", None)
            errors = list(result.errors.errors) if result is not None else []
            if errors and isinstance(errors[0], NoLogError) and msg == errors[0].msg:
                msg = next((error.msg for error in errors if not isinstance(error, NoLogError)), msg)
            kwargs.setdefault("error_kind", InvalidOption.kind)
        super().fail_json(msg=msg, **kwargs)


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


#: the options every Security Officer module takes besides its own (the approver and the change come with
#: APPROVALS_ARGSPEC where the module checks signed approvals, else with OFFICER_APPROVER_ARGSPEC)
OFFICER_COMMON_ARGSPEC = {**OFFICER_ARGSPEC, **POLICY_ARGSPEC, **AUDIT_CONTEXT_ARGSPEC}
OFFICER_APPROVER_ARGSPEC = {"approved_by": {"type": "str"}, "change_ref": {"type": "str"}}


def officer_module(argument_spec):
    """The HsmModule of a Security Officer module (recipient_approve, policy_signer, package_signer_approve): check
    mode supported, so_pin and so_pin_file mutually exclusive."""
    return HsmModule(**hsm_module_kwargs(argument_spec, supports_check_mode=True,
                                         mutually_exclusive=[list(pair) for pair in OFFICER_MUTUALLY_EXCLUSIVE]))
