#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: token_info
short_description: Find out what a PKCS#11 token can do, by trying it
version_added: 0.1.0
description:
  - Reports what the token generates and wraps, and how it treats the attributes the collection relies on, found by
    trying each capability in the logged-in user session on session objects (CKA_TOKEN false). Nothing is written
    to the token; the session's end removes what the probe made.
  - Mechanism flags are not trusted for what matters. SoftHSM2 2.6, for one, lists CKM_RSA_PKCS_OAEP but wraps
    only with SHA-1, so RV(capabilities.oaep_hashes) lists the hashes C_WrapKey actually worked with, strongest
    first.
  - Tried are the generation of AES (128, 192, 256 bits), RSA (3072 bits) and EC (P-256, P-384) keys; OAEP
    wrapping of an AES key under an RSA public key with SHA-512, SHA-384, SHA-256 and SHA-1; AES key wrap
    (CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD); CKA_WRAP_WITH_TRUSTED on a generated key and that a user session is
    refused CKA_TRUSTED (trusted wrapping, docs/distribution.md); whether CKA_DESTROYABLE false and CKA_MODIFIABLE
    false are honoured (the token's immutable records, docs/access-control.md).
  - Also returns the token's identity (label, serial, manufacturer, model, hardware and firmware versions) and the
    mechanisms C_GetMechanismList lists. docs/hsm-vendors.md relates each capability to what the collection needs.
author:
  - secops.keylifecycle maintainers (@secops)
extends_documentation_fragment:
  - secops.keylifecycle.connection
  - secops.keylifecycle.attributes
  - secops.keylifecycle.attributes.action_group
  - secops.keylifecycle.attributes.info_module
seealso:
  - module: secops.keylifecycle.token_check
  - module: secops.keylifecycle.key_info
"""

EXAMPLES = r"""
- name: What can the dev token do?
  secops.keylifecycle.token_info:
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: kl-dev
    user_pin_file: .state/dev/user.pin
  register: probed

- name: Pin the strongest OAEP hash the token wraps with
  ansible.builtin.set_fact:
    key_distribution_oaep_hash: "{{ probed.capabilities.best_oaep_hash }}"
"""

RETURN = r"""
capabilities:
  description: What the token did when it was tried.
  returned: success
  type: dict
  contains:
    token:
      description:
        - C(label), C(serial), C(manufacturer), C(model), C(hardware_version), C(firmware_version), and
          C(pin_length), the PIN lengths the token accepts (C(min), C(max), from CK_TOKEN_INFO; null when the library
          does not say).
      type: dict
      sample: {label: kl-dev, serial: 6f1c2a3b4d5e6f70, manufacturer: SoftHSM project, model: SoftHSM v2,
               hardware_version: "2.6", firmware_version: "2.6", pin_length: {min: 4, max: 255}}
    mechanisms:
      description: The mechanisms C_GetMechanismList lists (C(CKM_...) names, or hex for vendor mechanisms).
      type: list
      elements: str
    generates:
      description:
        - C(aes), the AES key sizes generated; C(rsa), C(min_bits) and C(max_bits) as the token states them and
          C(generated) (an RSA-3072 pair was generated); C(ec), the curves a key pair was generated on.
      type: dict
      sample: {aes: [128, 192, 256], rsa: {min_bits: 512, max_bits: 16384, generated: true}, ec: [P-256, P-384]}
    oaep_hashes:
      description: The OAEP hashes C_WrapKey worked with, strongest first.
      type: list
      elements: str
      sample: [sha1]
    best_oaep_hash:
      description: The strongest of RV(capabilities.oaep_hashes), or null when OAEP wrapping does not work.
      type: str
    aes_key_wrap:
      description: C(CKM_AES_KEY_WRAP) and C(CKM_AES_KEY_WRAP_PAD), whether each wrapped an AES key.
      type: dict
    wrap_with_trusted:
      description: Whether a key could be generated with CKA_WRAP_WITH_TRUSTED true.
      type: bool
    trusted_refused_to_user:
      description: Whether the token knows CKA_TRUSTED and refused it to the user session, as PKCS#11 requires.
      type: bool
    destroyable:
      description: V(honoured), V(ignored) or V(unsupported) for CKA_DESTROYABLE false.
      type: str
    modifiable:
      description: V(honoured), V(ignored) or V(unsupported) for CKA_MODIFIABLE false.
      type: str
    attempts:
      description: Per capability, V(true) or why it did not work (the PKCS#11 error, or V(not offered)).
      type: dict
error_kind:
  description: Category of the error (for example V(login_failed)).
  returned: failure
  type: str
"""


from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import HsmModule, hsm_module_kwargs
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import require_dependencies
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import ConnectionSettings, open_session
from ansible_collections.secops.keylifecycle.plugins.module_utils._module_result import fail_with_error
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_probe import probe


def main():
    module = HsmModule(**hsm_module_kwargs({}, supports_check_mode=True))
    require_dependencies(module)
    settings = ConnectionSettings.from_params(module.params)
    try:
        with open_session(settings, rw=False) as session:  # session objects only: nothing is written to the token
            capabilities = probe(session, settings.token_label, settings.pkcs11_module)
    except KeyLifecycleError as exc:
        fail_with_error(module, exc)
    module.exit_json(changed=False, capabilities=capabilities.as_dict())


if __name__ == "__main__":
    main()
