#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: recipient_enroll
short_description: Give a recipient host a transport key pair in its own PKCS#11 token and report its public key
version_added: 0.1.0
description:
  - Runs on the recipient host, against the recipient's own PKCS#11 token. Generates the recipient's RSA transport
    key pair inside that token when it has none (label O(transport_key_label)); the private key is sensitive, never
    extractable, and may only unwrap. Only the public key comes back to the controller.
  - An existing transport key is kept and checked; a weak one (RSA below 3072 bits or below O(policy.min_rsa_bits),
    EC below P-256) is refused, and so is an EC key, because distribution wraps with RSA-OAEP.
  - Also returns what the token holds (C(installed)), so M(secops.keylifecycle.key_distribute) wraps only what is
    missing.
  - Pin C(transport_key.fingerprint) in the inventory after the first enrollment and pass it to
    M(secops.keylifecycle.key_distribute) as O(secops.keylifecycle.key_distribute#module:recipients[].fingerprint).
  - With O(package_signer), also pins the HSM's package-signing public key in the recipient's token (a public key
    object labelled C(keylifecycle-package-signer) that may only verify and cannot be modified).
    M(secops.keylifecycle.key_install) installs only packages whose signature verifies with it. A different signer
    already pinned is refused; the module never replaces a pinned signer.
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
      - Nothing is generated or pinned; RV(plan) says whether a transport key would be generated and the package
        signer pinned.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  transport_key_label:
    description: CKA_LABEL of the transport key pair on the recipient's token.
    type: str
    default: keylifecycle-transport
  key_size:
    description: RSA modulus size of a new transport key.
    type: int
    default: 3072
  accept_exportable_transport_key:
    description:
      - Test set-ups only. Accept an existing transport key whose private half is not a sensitive, never-extractable
        key generated inside the token (an imported or exportable key), as the distribution tests do to unwrap a
        package independently. Refused otherwise, because whoever holds a copy of that key can unwrap every
        package. RV(transport_key.exportable) says which it is.
    type: bool
    default: false
  package_signer:
    description:
      - The HSM's package-signing public key, to pin in the recipient's token, as
        RV(secops.keylifecycle.key_info#module:package_signer) of M(secops.keylifecycle.key_info) on the HSM host
        gives it.
      - Pinned once. Giving the same key again changes nothing. Giving another key while one is pinned is a
        rollover, accepted only when O(package_signer.certificates) lead from the pinned signer to the given one,
        each certificate verified with the signer before it (the HSM's previous signing version certifies the new
        one at every rotation); the new signer then replaces the pinned object (journaled C(package-signer-pin),
        reason C(rollover certified by <previous fingerprint>)). Without such a chain it is refused (confirm the
        new fingerprint with the Security Officer, remove the pinned object, then enroll again).
      - Omitted, nothing is pinned and RV(package_signer) reports what is pinned already.
    type: dict
    suboptions:
      public_key_pem:
        description: The signer's PEM public key (EC P-256, or RSA-3072 where the HSM's token has no EC).
        type: str
        required: true
      fingerprint:
        description:
          - Pin. C(sha256:<hex>) of the signer's DER SubjectPublicKeyInfo, as the Security Officer confirmed it.
            Refused when O(package_signer.public_key_pem) has another fingerprint.
        type: str
      certificates:
        description:
          - The HSM's signer certificates, oldest first, as RV(secops.keylifecycle.key_info#module:package_signer)
            lists them (C(name), C(previous_version), C(previous_fingerprint), C(version), C(fingerprint),
            C(public_key_pem), C(certified_at), C(signature)). Used only when another signer is pinned.
        type: list
        elements: dict
        default: []
      name:
        description: Ignored (part of the HSM's record, so the record can be passed unchanged).
        type: str
      key_id:
        description: Ignored (part of the HSM's record).
        type: str
      version:
        description: Ignored (part of the HSM's record).
        type: int
seealso:
  - module: secops.keylifecycle.key_distribute
  - module: secops.keylifecycle.key_install
"""

EXAMPLES = r"""
- name: Enroll this host as a key recipient
  secops.keylifecycle.recipient_enroll:
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: billing-api
    user_pin_file: /etc/keylifecycle/billing-api.pin
  register: enrollment

- name: Enroll this host and pin the HSM's package signer (key_info's package_signer, run on the HSM host)
  secops.keylifecycle.recipient_enroll:
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: billing-api
    user_pin_file: /etc/keylifecycle/billing-api.pin
    package_signer:
      public_key_pem: "{{ hostvars['hsm1'].key_lifecycle_hsm_info.package_signer.public_key_pem }}"
      fingerprint: sha256:3f1c0d5e9a7b4c3d2e1f0a9b8c7d6e5f6f1c0d5e9a7b4c3d2e1f0a9b8c7d6e5f
  register: enrollment
"""

RETURN = r"""
transport_key:
  description: The transport key (no private material). Null in check mode before the first enrollment.
  returned: success
  type: dict
  contains:
    label:
      description: CKA_LABEL.
      type: str
    id:
      description: CKA_ID in hex.
      type: str
    type:
      description: Key type (V(rsa)).
      type: str
    size:
      description: Modulus size in bits.
      type: int
    fingerprint:
      description: C(sha256:<hex>) of the DER SubjectPublicKeyInfo (C(openssl pkey -pubin -outform DER | sha256sum)).
      type: str
    public_key_pem:
      description: The PEM public key to wrap under.
      type: str
    exportable:
      description: Whether the private half could leave the token (only with O(accept_exportable_transport_key)).
      type: bool
    oaep_hashes:
      description:
        - The OAEP hashes this token unwraps with under the transport key, strongest first, found by trying
          C_UnwrapKey of a random key into a session object with each hash (nothing is written to the token).
          Pass it to O(secops.keylifecycle.key_distribute#module:recipients[].oaep_hashes) so that the HSM wraps
          with a hash this token can unwrap (SoftHSM2 2.6, V(sha1) only). Empty when none works (this token
          cannot install packages).
      type: list
      elements: str
      sample: [sha1]
package_signer:
  description:
    - The HSM's package signer pinned in this token (no private material), or null when none is pinned (also in
      check mode before the first pin).
  returned: success
  type: dict
  contains:
    label:
      description: CKA_LABEL of the pinned public key object (C(keylifecycle-package-signer)).
      type: str
    id:
      description: Its CKA_ID in hex.
      type: str
    type:
      description:
        - V(ec) or V(rsa). The HSM's package-signing key follows its token, EC P-256 where the token generates EC
          keys, else RSA-3072.
      type: str
    curve:
      description: Its curve (V(P-256)), or null for an RSA signer.
      type: str
    fingerprint:
      description: C(sha256:<hex>) of the signer's DER SubjectPublicKeyInfo.
      type: str
    trusted:
      description:
        - CKA_TRUSTED of the pinned object - true when this token's Security Officer pinned it
          (M(secops.keylifecycle.package_signer_approve)), which a restore requires. A trusted pin of the same
          signer is left as it is.
      type: bool
installed:
  description:
    - Key versions on this token (C(name), C(version), C(id), C(key_check_value), C(state), C(recipient),
      C(installed_at), C(mechanism), C(transport_key_fingerprint)), including the ones withdrawn earlier
      (C(state=destroyed), tombstones), which are never installed again.
  returned: success
  type: list
  elements: dict
plan:
  description: V(generate) or V(none) for the transport key; V(pin) or V(none) for the package signer (a rollover
    is V(pin) with C(previous_fingerprint)).
  returned: always
  type: list
  elements: dict
audit_events:
  description:
    - A C(transport-key-enroll) event when a transport key was generated, a C(package-signer-pin) event when the
      package signer was pinned.
  returned: always
  type: list
  elements: dict
error_kind:
  description: Category of the error.
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
from ansible_collections.secops.keylifecycle.plugins.module_utils._key_installation import (
    check_package_signer_option,
    enroll,
    pin_package_signer,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._lifecycle_module import run_lifecycle_module
from ansible_collections.secops.keylifecycle.plugins.module_utils._recipient_store import RecipientTokenStore
from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import (
    DEFAULT_TRANSPORT_KEY_LABEL,
    MIN_TRANSPORT_RSA_BITS,
)

ARGUMENT_SPEC = dict(
    transport_key_label={"type": "str", "default": DEFAULT_TRANSPORT_KEY_LABEL, "no_log": False},
    key_size={"type": "int", "default": MIN_TRANSPORT_RSA_BITS},
    accept_exportable_transport_key={"type": "bool", "default": False},
    package_signer={"type": "dict", "options": {
        "public_key_pem": {"type": "str", "required": True, "no_log": False},
        "fingerprint": {"type": "str"},
        "certificates": {"type": "list", "elements": "dict", "default": []},
        "name": {"type": "str"},
        "key_id": {"type": "str", "no_log": False},
        "version": {"type": "int"},
    }},
    **POLICY_ARGSPEC,
    **AUDIT_CONTEXT_ARGSPEC,
)


def main():
    module = HsmModule(**hsm_module_kwargs(ARGUMENT_SPEC, supports_check_mode=True))
    params = module.params

    def open_store(session, token_label):
        return RecipientTokenStore(session, token_label, params["transport_key_label"]).load()

    def work(store, policy, context):
        result, transport = enroll(store, params["key_size"], policy.min_rsa_bits, context, module.check_mode,
                                   params["accept_exportable_transport_key"])
        signer = pin_package_signer(store, params["package_signer"], context, module.check_mode, result)
        return result, dict(transport_key=transport, package_signer=signer, plan=result.plan,
                            installed=store.inventory())

    run_lifecycle_module(module, work, validate=lambda _policy: check_package_signer_option(params["package_signer"]),
                         empty_result={"plan": [], "installed": []}, open_store=open_store, anchor=False)


if __name__ == "__main__":
    main()
