#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: key_install
short_description: Install distributed key versions into a recipient's token, or withdraw them
version_added: 0.1.0
description:
  - Runs on the recipient host, against the recipient's own PKCS#11 token, with the packages
    M(secops.keylifecycle.key_distribute) made for this recipient. One task handles all of the recipient's keys.
  - With O(state=present), every package's signature is first verified with the HSM's package signer pinned in
    this token by M(secops.keylifecycle.recipient_enroll) (option C(package_signer)); without a pinned signer
    nothing is installed. A package that is unsigned, relabelled (name, version or id changed), whose usage or state
    was altered, that is addressed to another recipient or transport key, or that was signed before the package
    last applied to the same version (a replay) is refused and nothing is stored. The same package again changes
    nothing.
  - Signer rollover. When the packages name a signer other than the pinned one (the HSM rotated its
    C(package-signing) key) and O(package_signer) is the HSM's record with its certificates, the certificates are
    followed from the pinned signer; each must name the signer trusted before it as previous and verify with it,
    until the signer the packages name. The packages are verified with that signer; once they have all unwrapped
    and checked, it replaces the pinned object (journaled C(package-signer-pin), reason
    C(rollover certified by <previous fingerprint>)). A chain that does not start at the pinned signer, is broken,
    or does not verify is refused and nothing changes.
  - Each package is then checked (addressed to O(recipient), wrapped under this host's transport key), unwrapped
    by the token with a template built only from its verified metadata (sensitive, not extractable, the usages of
    its state) (C_UnwrapKey, C(CKM_RSA_PKCS_OAEP)) into a session object, and its key
    check value is recomputed by the token and compared with the HSM's. Only when every package passes are the keys
    stored on the token (sensitive, not extractable, labelled C(<name>:v<version>) with the HSM's CKA_ID). A package
    that does not unwrap or whose check value differs fails the task and nothing is stored.
  - A version already installed with the same id and check value is left alone (C(changed=false)); a package whose
    state changed (a rotation upstream deactivated it) switches the copy's encrypt, wrap, sign and derive usages off.
  - With O(state=absent), the versions in O(versions) (C(withdrawn) from M(secops.keylifecycle.key_distribute),
    that is destroyed or compromised upstream) are destroyed on the recipient's token, the token is searched again by CKA_ID
    and CKA_LABEL to verify they are gone, and a tombstone keeps the same version from being installed again.
  - Journaled as C(key-install), C(key-update) and C(key-withdraw) events naming the recipient.
author:
  - secops.keylifecycle maintainers (@secops)
extends_documentation_fragment:
  - secops.keylifecycle.connection
  - secops.keylifecycle.policy
  - secops.keylifecycle.audit_context
  - secops.keylifecycle.attributes
  - secops.keylifecycle.attributes.action_group
attributes:
  check_mode:
    support: full
    details:
      - Nothing is unwrapped or stored; RV(plan) and the diff say what would be.
  diff_mode:
    support: full
    details:
      - Each version on the recipient's token before and after, as C(<label> <state>), so a state the HSM changed
        (deactivated, compromised) shows as well as a new version; with a package signer rollover, the pinned
        signer's fingerprint before and after. With O(state=absent), the labels before and after.
  idempotent:
    support: full
options:
  recipient:
    description: The recipient (service) this host's token serves. Packages addressed to another recipient are refused.
    type: str
    required: true
  state:
    description: V(present) installs O(packages); V(absent) withdraws O(versions).
    type: str
    choices: [present, absent]
    default: present
  packages:
    description: The packages M(secops.keylifecycle.key_distribute) returned for this recipient. Required with
      O(state=present).
    type: list
    elements: dict
  versions:
    description: Versions to withdraw (C(name), C(version), optional C(id)). Required with O(state=absent).
    type: list
    elements: dict
  package_signer:
    description:
      - The HSM's package signer record as M(secops.keylifecycle.key_distribute) returns it
        (RV(secops.keylifecycle.key_distribute#module:package_signer)), passed unchanged. C(public_key_pem) (required),
        C(fingerprint) (checked against it) and C(certificates) (oldest first) are read, other fields are ignored.
      - Only used when the packages name a signer other than the one pinned in this token (a rollover, see above).
    type: dict
  transport_key_label:
    description: CKA_LABEL of this host's transport key pair (see M(secops.keylifecycle.recipient_enroll)).
    type: str
    default: keylifecycle-transport
seealso:
  - module: secops.keylifecycle.key_distribute
  - module: secops.keylifecycle.recipient_enroll
"""

EXAMPLES = r"""
- name: Install every key this recipient must hold
  secops.keylifecycle.key_install:
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: billing-api
    user_pin_file: /etc/keylifecycle/billing-api.pin
    recipient: billing-api
    packages: "{{ (hostvars['hsm1'].distribution.recipients | selectattr('host', 'equalto', inventory_hostname)
                  | first).packages }}"

- name: Withdraw the versions destroyed upstream
  secops.keylifecycle.key_install:
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: billing-api
    user_pin_file: /etc/keylifecycle/billing-api.pin
    recipient: billing-api
    state: absent
    versions: "{{ (hostvars['hsm1'].distribution.recipients | selectattr('host', 'equalto', inventory_hostname)
                  | first).withdrawn }}"
"""

RETURN = r"""
plan:
  description: Per package or version, the action taken (V(install), V(update), V(withdraw) or V(none)).
  returned: always
  type: list
  elements: dict
  sample: [{name: payments-db, version: 2, id: 0a9b8c7d6e5f6f1c0d5e9a7b4c3d2e1f, state: active, action: install}]
installed:
  description: Key versions installed on this token after the task.
  returned: success
  type: list
  elements: dict
package_signer:
  description: The package signer pinned in this token after the task (C(label), C(id), C(type) V(ec) or V(rsa),
    C(curve) (null for RSA), C(fingerprint), C(trusted)), or null when none is pinned.
  returned: success
  type: dict
package_signer_rollover:
  description: The signer rollover of this task (C(previous_fingerprint), C(fingerprint)), also in check mode; null
    when the pinned signer did not change.
  returned: success
  type: dict
audit_events:
  description: C(key-install), C(key-update) and C(key-withdraw) events, and a C(package-signer-pin) event for a
    signer rollover.
  returned: always
  type: list
  elements: dict
error_kind:
  description: Category of the error (for example V(package_rejected)).
  returned: failure
  type: str
error_option:
  description: The option the error is about, when there is one.
  returned: failure
  type: str
"""


from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import (
    HsmModule,
    AUDIT_CONTEXT_ARGSPEC,
    POLICY_ARGSPEC,
    hsm_module_kwargs,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._key_installation import install, withdraw
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import utc_now, validate_name
from ansible_collections.secops.keylifecycle.plugins.module_utils._lifecycle_module import run_lifecycle_module
from ansible_collections.secops.keylifecycle.plugins.module_utils._recipient_store import RecipientTokenStore
from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import DEFAULT_TRANSPORT_KEY_LABEL

ARGUMENT_SPEC = dict(
    recipient={"type": "str", "required": True},
    state={"type": "str", "choices": ["present", "absent"], "default": "present"},
    packages={"type": "list", "elements": "dict"},
    versions={"type": "list", "elements": "dict"},
    transport_key_label={"type": "str", "default": DEFAULT_TRANSPORT_KEY_LABEL, "no_log": False},
    package_signer={"type": "dict"},
    **POLICY_ARGSPEC,
    **AUDIT_CONTEXT_ARGSPEC,
)


def main():
    module = HsmModule(**hsm_module_kwargs(
        ARGUMENT_SPEC,
        required_if=[["state", "present", ["packages"], True], ["state", "absent", ["versions"], True]],
        supports_check_mode=True,
    ))
    params = module.params

    def validate(policy):
        validate_name(params["recipient"], "recipient")

    def open_store(session, token_label):
        return RecipientTokenStore(session, token_label, params["transport_key_label"]).load()

    def work(store, policy, context):
        if params["state"] == "present":
            result = install(store, params["packages"] or [], params["recipient"], context, module.check_mode,
                             utc_now(), params["package_signer"])
        else:
            result = withdraw(store, params["versions"] or [], context, module.check_mode, utc_now())
        signer = store.package_signer
        return result, dict(plan=result.plan, installed=[v.record() for v in store.installed()],
                            package_signer=signer.record() if signer else None,
                            package_signer_rollover=result.rollover)

    run_lifecycle_module(module, work, validate=validate, empty_result={"plan": []}, open_store=open_store,
                         anchor=False)


if __name__ == "__main__":
    main()
