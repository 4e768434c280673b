#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: key_info
short_description: List the keys and key versions on a PKCS#11 token
version_added: 0.1.0
description:
  - Lists the logical keys managed by this collection on a token, and each of their versions with its state,
    age, next rotation due date, retention expiry, key check value or public key fingerprint, and the token's own
    evidence about the key (CKA_LOCAL, CKA_SENSITIVE, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE,
    CKA_EXTRACTABLE).
  - Reads the token only; objects that do not belong to this collection are ignored.
  - Lists the trusted transport keys the Security Officer approved in the token
    (M(secops.keylifecycle.recipient_approve), RV(trusted_transport_keys)) and the HSM's package-signing key
    (RV(package_signer)), and for each version whether the token wraps it only under such keys
    (RV(key_versions[].wrap_with_trusted)) and whether it can be wrapped at all now (RV(key_versions[].extractable)).
    Never creates a trusted key or the package-signing key (docs/distribution.md).
  - Lists the environment's policy signers installed in the token (RV(policy_signers)).
  - Reports anomalies it finds (a key object without metadata, duplicate metadata, metadata without its key).
  - With O(probe_token), also returns a summary of what the token can do (RV(token_capabilities)), found by trying
    it as M(secops.keylifecycle.token_info) does, on session objects only (CKA_TOKEN false, gone when the session
    ends); the compliance report shows it (C(playbooks/report.yml) turns the probe on).
  - Compares each version's attributes on the token with its recorded state and returns the differences in
    RV(drift) (procedure 4.3.3, docs/monitoring.md) - a usage switched back on (a deactivated version that may encrypt,
    wrap or sign again), a destroyed version whose key object is still there, a key object under one of the
    collection's labels that no metadata explains, a key that lost CKA_SENSITIVE or gained CKA_EXTRACTABLE.
    Each key object is read with one C_GetAttributeValue. The module does not fail on drift; the scheduled check
    C(playbooks/check.yml) does.
  - Outside check mode, the action plugin journals one C(key-drift) record per finding in the audit journal
    (the one the lifecycle modules write, C(keylifecycle_audit_journal)), and fails the task if the journal
    cannot be written. Nothing is journaled when there is no finding, and no checkpoint is anchored on the token
    (the module only reads it); the next lifecycle task's checkpoint covers these records.
author:
  - secops.keylifecycle maintainers (@secops)
extends_documentation_fragment:
  - secops.keylifecycle.connection
  - secops.keylifecycle.policy
  - secops.keylifecycle.attributes
  - secops.keylifecycle.attributes.action_group
  - secops.keylifecycle.attributes.info_module
options:
  name:
    description:
      - Only these logical keys. A name not on the token is listed in RV(logical_keys) with state V(absent).
      - All keys when not given.
    type: list
    elements: str
  state:
    description: Only versions in these states.
    type: list
    elements: str
    choices: [active, deactivated, compromised, destroyed]
  probe_token:
    description:
      - Also probe the token's capabilities and return their summary in RV(token_capabilities).
      - The probe generates AES keys, an RSA-3072 key pair and EC P-256 and P-384 key pairs, wraps with OAEP and AES
        key wrap, and creates data objects, all as session objects in this task's read-only user session; nothing is
        written to the token. It costs the time of those generations (the RSA-3072 pair the most) on every call,
        hence off by default.
      - M(secops.keylifecycle.token_info) returns the whole probe, with the mechanism list and every attempt.
    type: bool
    default: false
notes:
  - O(policy) only matters for the due dates it reports, where a rotation period longer than
    O(policy.max_rotation_period) is capped by it.
seealso:
  - module: secops.keylifecycle.key_generate
  - module: secops.keylifecycle.token_info
  - module: secops.keylifecycle.compliance_report
"""

EXAMPLES = r"""
- name: List every key on the dev token
  secops.keylifecycle.key_info:
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: dev-keys
    user_pin_file: /etc/keylifecycle/dev-user.pin
  register: keys

- name: Show keys whose rotation is overdue
  ansible.builtin.debug:
    msg: "{{ keys.logical_keys | selectattr('rotation_overdue') | map(attribute='name') | list }}"

- name: Active versions of two keys
  secops.keylifecycle.key_info:
    name: [payments-db, invoice-signing]
    state: [active]

- name: Every key, and what the token can do (for the compliance report)
  secops.keylifecycle.key_info:
    probe_token: true
  register: keys

- name: Show the strongest OAEP hash the token wraps with
  ansible.builtin.debug:
    msg: "{{ keys.token_capabilities.best_oaep_hash | default('none', true) }}"
"""

RETURN = r"""
key_versions:
  description: Every selected key version, oldest first per key.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: Logical key name.
      type: str
    version:
      description: Version number (1..n).
      type: int
    label:
      description: CKA_LABEL of the version's objects, C(<name>:v<version>).
      type: str
    id:
      description: CKA_ID of the version's objects, hex.
      type: str
    state:
      description: V(active), V(deactivated), V(compromised) or V(destroyed).
      type: str
    type:
      description: V(aes), V(rsa) or V(ec).
      type: str
    size:
      description: Key size in bits (for EC, the curve's size).
      type: int
    curve:
      description: EC curve, or null.
      type: str
    usage:
      description: Usages the key was generated with.
      type: list
      elements: str
    distributable:
      description: Whether the key may be wrapped for recipients.
      type: bool
    recipients:
      description: Recipients allowed to receive the key.
      type: list
      elements: str
    created:
      description: Creation time, ISO 8601 in UTC.
      type: str
    age_seconds:
      description: Seconds since creation.
      type: int
    rotation_period:
      description: Rotation period, like V(365d).
      type: str
    next_rotation_due:
      description: When the active version must be rotated (null for other states).
      type: str
    rotation_overdue:
      description: Whether that time has passed.
      type: bool
    retention_period:
      description: Retention period of a deactivated version.
      type: str
    retain_until:
      description: Until when a deactivated version is retained (null while active).
      type: str
    retention_expired:
      description: Whether V(retain_until) has passed.
      type: bool
    key_check_value:
      description: AES key check value (first 3 bytes of AES-ECB of a zero block), hex; null for key pairs.
      type: str
    public_key_fingerprint:
      description: C(sha256:) and the SHA-256 of the DER SubjectPublicKeyInfo (RSA, EC); null for AES.
      type: str
    evidence:
      description: The token's attributes C(local), C(sensitive), C(always_sensitive), C(never_extractable) and
        C(extractable) of the secret (AES key or private key).
      type: dict
    wrap_with_trusted:
      description:
        - Whether the version was generated with CKA_WRAP_WITH_TRUSTED, so the token wraps it only under a trusted
          transport key the Security Officer approved (as recorded in its metadata).
        - V(false) for versions generated before trusted wrapping, on a token without the attribute (policy
          C(require_trusted_wrapping) off), and for keys that are not distributable.
      type: bool
    extractable:
      description:
        - Whether the token would wrap the version now (CKA_EXTRACTABLE of its AES key or private key, as in
          RV(key_versions[].evidence)). A distributable version sealed at the migration to trusted wrapping is
          V(false) (recipients keep what they hold, nothing new is wrapped from it).
        - Null when no key object of the version is left on the token (destroyed).
      type: bool
    transitions:
      description: State transitions with time, operator and reason.
      type: list
      elements: dict
logical_keys:
  description: One summary per selected logical key.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: Logical key name.
      type: str
    state:
      description: V(active) if a version is active, V(destroyed) if all are destroyed, V(absent) if not on the token.
      type: str
    active_version:
      description: The active version number, or null.
      type: int
    versions:
      description: All version numbers on record.
      type: list
      elements: int
    next_rotation_due:
      description: When the active version must be rotated.
      type: str
    rotation_overdue:
      description: Whether rotation is overdue.
      type: bool
  sample: [{name: payments-db, state: active, active_version: 1, versions: [1],
            next_rotation_due: "2027-11-28T23:00:00+00:00", rotation_overdue: false}]
anomalies:
  description: Inconsistencies found on the token, each with the label concerned and the problem.
  returned: success
  type: list
  elements: dict
  sample: [{label: "payments-db:v2", problem: "key object(s) without a metadata object"}]
drift:
  description:
    - Differences between the token's attributes and the recorded state of the selected keys (all their versions,
      whatever O(state) selects), one entry per finding. Empty when the token matches the records.
  returned: success
  type: list
  elements: dict
  contains:
    label:
      description: CKA_LABEL of the object concerned, C(<name>:v<version>).
      type: str
    name:
      description: Logical key name.
      type: str
    version:
      description: Version number.
      type: int
    id:
      description: CKA_ID of the object (hex); the recorded id for an attribute finding.
      type: str
    kind:
      description:
        - V(usage_enabled) (a usage is on that the version's state does not allow),
          V(destroyed_present) (a destroyed version's key object is on the token),
          V(unexplained_object) (a key object no metadata explains - no metadata, another CKA_ID, a class the key
          type does not have, or a second object of its class), V(lost_sensitive) (CKA_SENSITIVE or
          CKA_ALWAYS_SENSITIVE false), V(gained_extractable) (CKA_EXTRACTABLE true or CKA_NEVER_EXTRACTABLE false
          on a key that is not distributable), V(managed_key_altered) (a version of one of the collection's own
          signing keys recorded as other than an EC or RSA sign/verify key pair that is not distributable; the
          finding has no attribute), V(key_missing) (a version recorded as active, deactivated or compromised whose
          key objects are gone, destroyed outside M(secops.keylifecycle.key_destroy); no attribute).
      type: str
    attribute:
      description: The attribute compared (for example V(CKA_ENCRYPT)), or null for a finding about a whole object.
      type: str
    expected:
      description: What the record says (V(true)/V(false) for an attribute).
      type: str
    actual:
      description: What the token holds.
      type: str
    object_class:
      description: V(SECRET_KEY), V(PRIVATE_KEY) or V(PUBLIC_KEY).
      type: str
    state:
      description: The version's recorded state, or null when no metadata records the label.
      type: str
    detail:
      description: The finding in one sentence.
      type: str
  sample: [{label: "payments-db:v1", name: payments-db, version: 1, id: "5d0c...", kind: usage_enabled,
            attribute: CKA_ENCRYPT, expected: "false", actual: "true", object_class: SECRET_KEY,
            state: deactivated, detail: "payments-db:v1 (deactivated): SECRET_KEY CKA_ENCRYPT: true, expected false"}]
trusted_transport_keys:
  description:
    - The recipients' transport public keys the Security Officer installed in the token as trusted wrapping keys
      (CKA_TRUSTED and CKA_WRAP true), by label. M(secops.keylifecycle.key_distribute) wraps only under these.
    - Every public key object with CKA_TRUSTED and CKA_WRAP on is listed, including ones not made by this
      collection (their C(recipient) and C(host) are null).
  returned: success
  type: list
  elements: dict
  contains:
    label:
      description: CKA_LABEL, C(trusted-transport:<recipient>@<host>:<fingerprint>).
      type: str
    recipient:
      description: The recipient named by the label, or null when the label is not the collection's.
      type: str
    host:
      description: The recipient's host named by the label, or null.
      type: str
    fingerprint:
      description: C(sha256:) and the SHA-256 of the key's DER SubjectPublicKeyInfo, computed from the key on the
        token (not taken from the label).
      type: str
    key_id:
      description: CKA_ID, hex.
      type: str
    kind:
      description: V(recipient) or V(replica) (C(trusted-replica:<replica>@<host>:<fingerprint>), a replica token's
        key, docs/replication.md); null when the label is not the collection's.
      type: str
  sample: [{label: "trusted-transport:svc1@app1:sha256:9f86...", recipient: svc1, host: app1,
            fingerprint: "sha256:9f86...", key_id: "9f86d081884c7d659a2feaa0c55ad015", kind: recipient}]
package_signer:
  description:
    - The public record of the HSM's package-signing key (the managed key C(package-signing), EC P-256 where the
      token generates EC keys, else RSA-3072), whose public key recipients pin at enrollment to verify packages.
      Null when the token has none yet (it is generated by M(secops.keylifecycle.key_generate) with the first
      distributable key, or by M(secops.keylifecycle.key_distribute)); key_info does not create it.
  returned: success
  type: dict
  contains:
    name:
      description: C(package-signing).
      type: str
    key_id:
      description: CKA_ID of the signing key's active version, hex.
      type: str
    version:
      description: Version number of the signing key.
      type: int
    fingerprint:
      description: C(sha256:) and the SHA-256 of its DER SubjectPublicKeyInfo.
      type: str
    public_key_pem:
      description: The public key, PEM (give it to M(secops.keylifecycle.recipient_enroll)'s C(package_signer)).
      type: str
    certificates:
      description:
        - The signer certificates on the token, oldest first; each made at a rotation of C(package-signing) by the
          previous version (RV(secops.keylifecycle.key_distribute#module:package_signer) describes the fields).
      type: list
      elements: dict
restore_signer:
  description:
    - On a replica token, the public record of its own signer of restore packages (the managed key
      C(restore-signing), made by M(secops.keylifecycle.replica_install) with the first copies, never backed up),
      with the fields of RV(package_signer) (no certificates). The Security Officer of a replacement token pins it
      with M(secops.keylifecycle.package_signer_approve) before a restore (docs/replication.md). Null elsewhere.
  returned: success
  type: dict
policy_signers:
  description:
    - The environment's policy signers the Security Officer installed in the token
      (M(secops.keylifecycle.policy_signer)), EC P-256 public keys with CKA_TRUSTED and CKA_VERIFY, labelled
      C(policy-signer:<name>), by fingerprint. Once the list is not empty, every state-changing lifecycle module
      runs only with a policy one of them signed (O(signed_policy)).
    - Empty on a token without a policy signer, where the unsigned O(policy) applies; the compliance report lists
      that as a finding.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The signer's name, from its label.
      type: str
    label:
      description: CKA_LABEL, C(policy-signer:<name>).
      type: str
    fingerprint:
      description: C(sha256:) and the SHA-256 of the key's DER SubjectPublicKeyInfo, computed from the key on the
        token; a signed policy names its signer by it.
      type: str
    destroyable:
      description:
        - Whether the token would let the object be deleted. False where the token honours CKA_DESTROYABLE false
          (SoftHSM2 2.6.1 then refuses C_DestroyObject to the user and to the Security Officer).
      type: bool
  sample: [{name: dana, label: "policy-signer:dana", fingerprint: "sha256:3b1f...", destroyable: false}]
token_capabilities:
  description:
    - What the token did when it was tried (O(probe_token)), summarised. M(secops.keylifecycle.token_info)
      describes each capability and returns the whole probe (the mechanisms as a list, every attempt).
  returned: when O(probe_token) is true
  type: dict
  contains:
    token:
      description: The token's identity - C(label), C(serial), C(manufacturer), C(model), C(hardware_version),
        C(firmware_version), C(pin_length) (C(min), C(max)).
      type: dict
    generates:
      description:
        - C(aes), the AES key sizes generated (of 128, 192, 256); C(rsa), C(generated) (an RSA-3072 pair was
          generated) with C(min_bits) and C(max_bits) as the token states them; C(ec), the curves a key pair was
          generated on (of P-256, P-384).
      type: dict
      sample: {aes: [128, 192, 256], rsa: {generated: true, min_bits: 512, max_bits: 16384}, ec: [P-256, P-384]}
    oaep_hashes:
      description: The OAEP hashes C_WrapKey worked with, strongest first (not the ones the token's flags list).
      type: list
      elements: str
      sample: [sha1]
    best_oaep_hash:
      description: The strongest of RV(token_capabilities.oaep_hashes), or null when OAEP wrapping does not work.
      type: str
      sample: sha1
    aes_key_wrap:
      description: Whether CKM_AES_KEY_WRAP (RFC 3394) wrapped an AES key.
      type: bool
    aes_key_wrap_pad:
      description: Whether CKM_AES_KEY_WRAP_PAD (RFC 5649) wrapped an AES key.
      type: bool
    trusted_wrapping:
      description:
        - Whether the token restricts wrapping to trusted keys, as distribution needs (docs/distribution.md) - a
          key was generated with CKA_WRAP_WITH_TRUSTED true and the user session was refused CKA_TRUSTED.
      type: bool
    destroyable:
      description: V(honoured), V(ignored) or V(unsupported), for CKA_DESTROYABLE false.
      type: str
    modifiable:
      description: V(honoured), V(ignored) or V(unsupported), for CKA_MODIFIABLE false.
      type: str
    mechanism_count:
      description: How many mechanisms C_GetMechanismList lists.
      type: int
    missing:
      description:
        - Each capability the token lacks, of C(aes), C(rsa), C(ec) (key generation), C(oaep), C(aes_key_wrap)
          (with padding) and C(trusted_wrapping), with C(reason), the PKCS#11 error the attempt met or
          C(not offered). Empty when the token has them all.
      type: list
      elements: dict
      sample: [{capability: ec, reason: not offered}]
checked_at:
  description: When the token was read (UTC).
  returned: success
  type: str
token_label:
  description: The label of the token read.
  returned: success
  type: str
  sample: dev-keys
all_keys:
  description:
    - Whether RV(key_versions) lists every version on the token (neither O(name) nor O(state) was given). The
      compliance report compares such a listing with the journal, and names a version the journal records and the
      token no longer holds (no V(key-destroy) record).
  returned: success
  type: bool
error_kind:
  description: Category of the error (for example V(login_failed), V(token_unavailable)).
  returned: failure
  type: str
error_option:
  description: The option the error is about, when there is one.
  returned: failure
  type: str
"""


from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import (
    HsmModule,
    POLICY_ARGSPEC,
    hsm_module_kwargs,
    policy_overrides,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import require_dependencies
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import ConnectionSettings, open_session
from ansible_collections.secops.keylifecycle.plugins.module_utils._key_report import (
    capability_summary,
    describe_keys,
    describe_trust,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._key_store import TokenKeyStore
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import STATES, validate_name
from ansible_collections.secops.keylifecycle.plugins.module_utils._module_result import fail_with_error
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy_signers import find_policy_signers
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_probe import probe

ARGUMENT_SPEC = dict(
    name={"type": "list", "elements": "str"},
    state={"type": "list", "elements": "str", "choices": list(STATES)},
    probe_token={"type": "bool", "default": False},
    **POLICY_ARGSPEC,
)


def main():
    module = HsmModule(**hsm_module_kwargs(ARGUMENT_SPEC, supports_check_mode=True))
    require_dependencies(module)
    try:
        policy = load_policy(policy_overrides(module.params))
        names = [validate_name(n) for n in module.params["name"] or ()]
        settings = ConnectionSettings.from_params(module.params)
        # Read-write is not needed to read; a read-only session also works on tokens that refuse RW.
        with open_session(settings, rw=False) as session:
            store = TokenKeyStore(session, settings.token_label).load()
            report = describe_keys(store, names=names, states=module.params["state"], policy=policy)
            report.update(describe_trust(store))
            report["policy_signers"] = [signer.as_dict() for signer in find_policy_signers(session)]
            if module.params["probe_token"]:  # last: its session objects are never among what was read
                probed = probe(session, settings.token_label, settings.pkcs11_module)
                report["token_capabilities"] = capability_summary(probed)
    except KeyLifecycleError as exc:
        fail_with_error(module, exc)
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
