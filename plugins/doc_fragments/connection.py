# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The HSM connection options shared by every HSM module (plugins/module_utils/_argspec.py).
    DOCUMENTATION = r"""
options:
  pkcs11_module:
    description:
      - Absolute path of the HSM vendor's PKCS#11 library on the host that runs the module.
      - For example V(/usr/lib/softhsm/libsofthsm2.so) (SoftHSM2), V(/usr/lib/libCryptoki2_64.so) (Luna),
        V(/opt/cloudhsm/lib/libcloudhsm_pkcs11.so) (CloudHSM) or V(/usr/lib/x86_64-linux-gnu/pkcs11/yubihsm_pkcs11.so).
      - If not set, the E(PKCS11_MODULE) environment variable of the module's host is used.
      - Required, from the task, from C(module_defaults) for C(group/secops.keylifecycle.hsm) or from
        E(PKCS11_MODULE); the module fails before opening the token when none sets it. It is not marked
        required so that linters accept tasks that get it from C(module_defaults).
    type: path
    required: false
  token_label:
    description:
      - Label of the token (CKA_LABEL of the token info) that holds the keys. Exactly one token must carry it.
      - If not set, the E(PKCS11_TOKEN_LABEL) environment variable of the module's host is used.
      - Required, from the task, from C(module_defaults) for C(group/secops.keylifecycle.hsm) or from
        E(PKCS11_TOKEN_LABEL); the module fails before opening the token when none sets it.
    type: str
    required: false
  user_pin:
    description:
      - The token's user PIN (never the SO PIN). Keep it in Ansible Vault.
      - Refused unless pipelining is on for the host (C(ANSIBLE_PIPELINING=True) or C(ansible_pipelining=true)),
        because without it Ansible writes the module's arguments, PIN included, to a temporary file on the host.
      - If not set, the E(PKCS11_USER_PIN) environment variable of the module's host is used. Set it in the host's
        own environment; a task refuses E(PKCS11_USER_PIN) given through C(environment:), which puts it on the
        remote command line where C(ps) shows it. An empty E(PKCS11_USER_PIN) (like an empty E(PKCS11_MODULE) or
        E(PKCS11_TOKEN_LABEL)) counts as unset.
      - Mutually exclusive with O(user_pin_file). One of the two (or E(PKCS11_USER_PIN)) is required, from the task or
        from C(module_defaults) for C(group/secops.keylifecycle.hsm); the module fails before opening the token
        when neither is set.
    type: str
  user_pin_file:
    description:
      - Path, on the module's host, of a file holding the user PIN (one line).
      - The file must be readable only by its owner (mode V(0600) or V(0400)); a group- or world-accessible
        file is refused.
    type: path
  lease_wait:
    description:
      - How many seconds a module that changes the token waits for the token's lease while another lifecycle run
        (from this or any other controller) holds it, before it fails with C(error_kind=token_busy)
        having changed nothing. V(0) fails at once. From V(0) to V(3600); 120 seconds when not set.
      - Lifecycle runs on one token take turns through a lease object on the token itself; see
        C(docs/concurrency.md). A lease whose holder died expires 300 seconds after it was last renewed.
      - Read-only modules and check mode take no lease and ignore this option.
    type: int
    required: false
notes:
  - Set the connection options once for a play, block or role in C(module_defaults), under
    C(group/secops.keylifecycle.hsm); every HSM module of this collection is in that group.
  - The module opens one read/write session, logs in once and handles the whole batch in it.
  - The PIN is never returned, logged or written to a file by this collection.
requirements:
  - python-pkcs11 >= 0.10 on the host that runs the module
  - cryptography on the host that runs the module
"""
