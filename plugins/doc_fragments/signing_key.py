# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The signer's own key, on the controller (policy_sign, approval_sign): _argspec.SIGNING_KEY_ARGSPEC, used by
    # plugin_utils/_policy_signing.py (PemSigner, TokenSigner).
    DOCUMENTATION = r"""
options:
  private_key_path:
    description:
      - Path, on the controller, of the signer's EC P-256 private key (the policy signer's, or the approver's), PEM,
        encrypted with a passphrase (PKCS#8 C(-----BEGIN ENCRYPTED PRIVATE KEY-----)). Refused when it is not
        encrypted, or when its mode lets its group or others access it (use V(0600) or V(0400)).
      - Mutually exclusive with O(pkcs11_module); one of them is required.
    type: path
  private_key_passphrase:
    description: The passphrase of O(private_key_path). Keep it in Ansible Vault or prompt for it.
    type: str
  pkcs11_module:
    description:
      - Path, on the controller, of the PKCS#11 library of the signer's own token (the officer's or the approver's,
        never the environment's HSM token), which holds the private key. Its environment (for SoftHSM2,
        E(SOFTHSM2_CONF)) is the controller's.
      - With it, O(token_label), O(user_pin_file) and O(key_label) are required.
    type: path
  token_label:
    description: Label of the signer's own token.
    type: str
  user_pin_file:
    description:
      - Path, on the controller, of a file holding the user PIN of the signer's own token (one line), readable only
        by its owner (mode V(0600) or V(0400)).
    type: path
  key_label:
    description:
      - CKA_LABEL of the signer's EC P-256 private key object in their own token. Its public key object (same
        CKA_ID, else same label) must be on the token too, as it names the signer's fingerprint.
    type: str
"""
