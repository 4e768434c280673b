#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: key_distribute
short_description: Wrap the key versions each enrolled recipient must hold, under the recipient's transport key
version_added: 0.1.0
description:
  - Runs where the HSM is. For each recipient in O(recipients), works out the versions it must hold (the active
    version and the deactivated versions still inside retention of every distributable AES key that lists the
    recipient in its C(recipients)), wraps each with C_WrapKey (C(CKM_RSA_PKCS_OAEP)) under the recipient's trusted
    transport key, and returns one package per version for M(secops.keylifecycle.key_install).
  - The trusted transport key is the one the Security Officer installed in the token for that recipient and host
    (M(secops.keylifecycle.recipient_approve), CKA_TRUSTED true), found by the fingerprint of
    O(recipients[].public_key_pem). The PEM only selects it; it is never imported or wrapped under. Distributable
    keys carry CKA_WRAP_WITH_TRUSTED, so the token itself refuses to wrap them under any other key.
  - A recipient with a version to wrap and no approved transport key is refused before anything is wrapped (in
    check mode too), naming the recipient, its host and its fingerprint; ask the Security Officer to approve it.
    After a revocation the recipient is refused again.
  - With O(policy.require_trusted_wrapping=false) (development tokens only), such a recipient still receives the
    versions made without CKA_WRAP_WITH_TRUSTED, wrapped under its transport key imported as a session object; each
    wrap is journaled with C(key.trusted_wrapping=false) and a C(keylifecycle.warning), and the module warns.
  - Versions sealed at the migration to trusted wrapping (see M(secops.keylifecycle.key_rotate)) are not extractable
    any more; a recipient that does not hold them finds them in C(blocked).
  - Every package is signed by the HSM's package-signing key (C(package-signing), EC P-256 where the token generates EC
    keys, else RSA-3072; generated in the token on first use, never extractable);
    M(secops.keylifecycle.key_install) verifies it against the signer pinned at enrollment before unwrapping.
    RV(package_signer) is the signer's public record.
  - A package holds the key only in wrapped form; without the recipient's transport private key, which never leaves
    the recipient's token, it is useless. The key is never in plaintext on the HSM host, in the result, in the audit
    record or in any file.
  - Versions the recipient reports as installed (O(recipients[].installed), from M(secops.keylifecycle.recipient_enroll))
    with the same id, check value and state are not wrapped again; a state change (after a rotation) travels without
    a wrapped key. Versions destroyed or compromised upstream, and versions of keys that no longer list the recipient,
    are returned in C(withdrawn) for M(secops.keylifecycle.key_install) with O(secops.keylifecycle.key_install#module:state=absent).
  - Refused, with nothing wrapped, when a recipient is unknown (no key lists it), a named key is not distributable or
    does not list the recipient, a transport key is weak (RSA below 3072 bits, EC below P-256) or does not match its
    pinned O(recipients[].fingerprint).
  - One task wraps for every recipient and every key, in one session on the HSM.
  - Each wrapped version is journaled as a C(key-distribute) event (recipient, recipient host, key id, version,
    check value, mechanism, transport key fingerprint, C(trusted_wrapping), C(trusted_key_label),
    C(package_signer_fingerprint)). This module changes the HSM only when it generates the package-signing key
    (C(changed=true) then, with its own C(key-generate) event); otherwise it reports C(changed=false).
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
      - Nothing is wrapped or signed; the packages are returned without C(wrapped) and without signature, and the
        diff shows what each recipient would hold. Recipients without an approved transport key are refused as in a
        real run.
  diff_mode:
    support: full
    details:
      - Per recipient, the versions it holds before and after (names and versions, no key material).
  idempotent:
    support: full
    details:
      - With O(recipients[].installed) passed, a recipient that already holds what it should gets no package.
options:
  recipients:
    description: The enrolled recipients to wrap for.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The recipient's name (the service it runs), as listed in the keys' C(recipients).
        type: str
        required: true
      host:
        description: The host the recipient runs on (recorded in the audit event). Defaults to O(recipients[].name).
        type: str
      public_key_pem:
        description: The recipient's transport public key, C(transport_key.public_key_pem) from
          M(secops.keylifecycle.recipient_enroll).
        type: str
        required: true
      fingerprint:
        description:
          - The transport key's pinned fingerprint (C(sha256:<hex>) of its SubjectPublicKeyInfo), recorded in the
            inventory at enrollment. When set, a transport key with another fingerprint is refused.
        type: str
      keys:
        description: Only these keys (each must be distributable and list this recipient). Default, every key that
          lists the recipient.
        type: list
        elements: str
      installed:
        description: What the recipient holds now, C(installed) from M(secops.keylifecycle.recipient_enroll).
        type: list
        elements: dict
      oaep_hashes:
        description:
          - The OAEP hashes the recipient's token unwraps with, C(transport_key.oaep_hashes) from
            M(secops.keylifecycle.recipient_enroll) (probed there). Its packages use the strongest of the HSM's
            hashes in this list (see O(oaep_hash)). Omitted, the recipient is assumed to unwrap with any hash.
        type: list
        elements: str
        choices: [sha1, sha256, sha384, sha512]
  oaep_hash:
    description:
      - Hash of RSA-OAEP (and of its MGF1).
      - V(auto) (the default) uses, per recipient, the strongest hash the token actually wraps with (found by trying
        C_WrapKey on session objects once per task; M(secops.keylifecycle.token_info) shows the same probe) that
        the recipient's token unwraps with (O(recipients[].oaep_hashes)). The choice is in every package and
        C(key-distribute) event (C(key.mechanism), for example C(CKM_RSA_PKCS_OAEP:sha1)) and in
        RV(recipients[].oaep_hash). SoftHSM2 2.6 wraps and unwraps only with V(sha1), which is still sound for OAEP
        (see docs/distribution.md). A token that wraps with no OAEP hash is refused (C(capability_missing)), naming
        it, and so is a recipient with a key to wrap and no hash in common with the HSM (C(mechanism_unsupported)).
      - Pin a hash to refuse, rather than follow, a token or a recipient that cannot do it.
    type: str
    choices: [auto, sha1, sha256, sha384, sha512]
    default: auto
seealso:
  - module: secops.keylifecycle.recipient_enroll
  - module: secops.keylifecycle.key_install
"""

EXAMPLES = r"""
- name: Wrap every version each recipient must hold
  secops.keylifecycle.key_distribute:
    pkcs11_module: /opt/vendor/lib/libpkcs11.so
    token_label: prod-keys
    user_pin_file: /etc/keylifecycle/prod-user.pin
    oaep_hash: sha256
    recipients:
      - name: billing-api
        host: app1.example.com
        public_key_pem: "{{ hostvars['app1.example.com'].enrollment.transport_key.public_key_pem }}"
        fingerprint: "{{ hostvars['app1.example.com'].transport_key_fingerprint }}"
        installed: "{{ hostvars['app1.example.com'].enrollment.installed }}"
  register: distribution
"""

RETURN = r"""
oaep_hash:
  description:
    - The HSM's OAEP hash, the strongest it wraps with (O(oaep_hash=auto)) or the one pinned. A recipient whose token
      does not unwrap with it gets a weaker one (RV(recipients[].oaep_hash)).
  returned: success
  type: str
  sample: sha1
recipients:
  description: One entry per recipient, with its packages and the versions it must remove.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Recipient name.
      type: str
    host:
      description: Recipient host.
      type: str
    transport_key_fingerprint:
      description: Fingerprint of the transport key the packages were wrapped under.
      type: str
    trusted_key_label:
      description: Label of the trusted transport key in the HSM the packages were wrapped under; null when the
        recipient has none (nothing to wrap, or O(policy.require_trusted_wrapping=false)).
      type: str
    oaep_hash:
      description: The OAEP hash of this recipient's packages (see O(oaep_hash)).
      type: str
    packages:
      description:
        - One package per version to install (C(action=install), with C(wrapped)) or whose state changed
          (C(action=update), C(wrapped) null). Fields are C(format), C(action), C(recipient), C(recipient_host),
          C(transport_key_fingerprint), C(name), C(version), C(id), C(label), C(type), C(size), C(usage), C(state),
          C(retain_until), C(key_check_value), C(mechanism), C(oaep_hash), C(wrapped) (base64), and, signed by the
          HSM (not in check mode), C(signed_at), C(signer_fingerprint) and C(signature).
      type: list
      elements: dict
    withdrawn:
      description: Versions the recipient must not hold (C(name), C(version), C(id), C(state), C(why)).
      type: list
      elements: dict
    unchanged:
      description: Versions the recipient already holds as it should.
      type: list
      elements: dict
    blocked:
      description:
        - Versions it should hold but cannot receive (C(name), C(version), C(id), C(why)), withdrawn at the
          recipient earlier, or sealed at the migration to trusted wrapping (not extractable).
      type: list
      elements: dict
  sample: [{name: billing-api, host: app1, transport_key_fingerprint: "sha256:9f...", withdrawn: [], unchanged: [],
            packages: [{format: 1, action: install, recipient: billing-api, name: payments-db, version: 2,
                        id: 0a9b8c7d6e5f6f1c0d5e9a7b4c3d2e1f, state: active, key_check_value: 3f9a1c,
                        mechanism: "CKM_RSA_PKCS_OAEP:sha256", oaep_hash: sha256, wrapped: "kV0...="}]}]
package_signer:
  description:
    - Public record of the HSM's package-signing key (C(name), C(key_id), C(version), C(fingerprint),
      C(public_key_pem)), to pin at the recipients (M(secops.keylifecycle.recipient_enroll) option C(package_signer)).
    - C(certificates), oldest first, is the chain of signer certificates on the token. At each rotation of
      C(package-signing) the previous version, still active, signed one of the new version (C(name),
      C(previous_version), C(previous_fingerprint), C(version), C(fingerprint), C(public_key_pem), C(certified_at),
      C(signature), the base64 signature of the canonical JSON of the other fields, DER ECDSA P-256 / SHA-256 for an
      EC signer, RSASSA-PSS / SHA-256 (PKCS#1 v1.5 where the token lacks PSS) for an RSA signer). Pass
      the whole record to M(secops.keylifecycle.key_install)'s C(package_signer) so a recipient that pinned an
      older signer follows the chain.
      Null in check mode when the token has none yet.
  returned: always
  type: dict
audit_events:
  description: One C(key-distribute) event per wrapped version (and a C(key-generate) event when the package-signing
    key was generated).
  returned: always
  type: list
  elements: dict
audit_checkpoint:
  description:
    - The signed checkpoint of the controller's journal made by this call; null in check mode.
      Its fields are those of RV(secops.keylifecycle.key_generate#module:audit_checkpoint) (docs/audit.md).
  returned: success, and the failure of a token's first task (it pinned the journal before the refusal)
  type: dict
policy_change:
  description:
    - The change of policy since the token's last anchored task, as
      RV(secops.keylifecycle.key_generate#module:policy_change).
  returned: when the policy changed
  type: dict
policy_in_force:
  description:
    - The environment's policy this call ran with, as the token's policy signers checked it (O(signed_policy)).
      Its fields are those of RV(secops.keylifecycle.key_generate#module:policy_in_force).
  returned: success
  type: dict
error_kind:
  description: Category of the error (for example V(policy_violation), V(invalid_option)).
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
    TRANSPORT_TARGET_OPTIONS,
    hsm_module_kwargs,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._key_distribution import (
    apply_distribution,
    approved_transport_keys,
    choose_oaep_hashes,
    parse_recipients,
    plan_distribution,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._lifecycle_module import run_lifecycle_module
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_probe import probe_oaep_hashes
from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import (
    AUTO_OAEP_HASH,
    DEFAULT_OAEP_HASH,
    OAEP_HASHES,
)

ARGUMENT_SPEC = dict(
    recipients={"type": "list", "elements": "dict", "required": True, "options": dict(
        TRANSPORT_TARGET_OPTIONS, keys={"type": "list", "elements": "str", "no_log": False},
        installed={"type": "list", "elements": "dict"})},
    oaep_hash={"type": "str", "choices": [AUTO_OAEP_HASH] + list(OAEP_HASHES), "default": DEFAULT_OAEP_HASH},
    **POLICY_ARGSPEC,
    **AUDIT_CONTEXT_ARGSPEC,
)


def main():
    module = HsmModule(**hsm_module_kwargs(ARGUMENT_SPEC, supports_check_mode=True))
    params = module.params
    parsed = {}

    def validate(policy):
        parsed["recipients"] = parse_recipients(params["recipients"], policy)

    def work(store, policy, context):
        plans = plan_distribution(store, parsed["recipients"], utc_now(), approved_transport_keys(store),
                                  policy.require_trusted_wrapping)
        pinned = params["oaep_hash"] != AUTO_OAEP_HASH
        token_hashes = [params["oaep_hash"]] if pinned else probe_oaep_hashes(store.session, store.token_label)
        choose_oaep_hashes(plans, token_hashes, store.token_label, pinned)
        oaep_hash = token_hashes[0]
        result = apply_distribution(store, plans, oaep_hash, context, module.check_mode)
        for warning in result.warnings:
            module.warn(warning)
        return result, dict(recipients=result.recipients, package_signer=result.package_signer, oaep_hash=oaep_hash)

    run_lifecycle_module(module, work, validate=validate, empty_result={"recipients": [], "package_signer": None})


if __name__ == "__main__":
    main()
