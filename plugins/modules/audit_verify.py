#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: audit_verify
short_description: Verify the audit journal's hash chain and its HSM-signed checkpoints
version_added: 0.1.0
description:
  - Re-checks every record of the controller's audit journal (hash chain, sequence, layout) and reports
    the first bad record with what is wrong with it (modified, deleted, reordered, spliced).
  - The journal is streamed from the file with memory flat in its size; a record is checked on its stored bytes
    (SHA-256 of its content, linked to its predecessor), so large journals verify at 100,000+ records/s. Records
    written before the token pinned its journal (format 1, canonical JSON) are still verified.
  - Verifies the signature of every checkpoint record in the journal with the public key of the
    C(audit-checkpoint) signing key read from the token, and that each checkpoint's record is in the journal
    with the hash that was signed.
  - Compares the journal with the token's pin (the one journal the token names, with its signed head), which
    catches a journal cut short (a truncated journal's own chain is still valid), rewritten, deleted, or replaced
    by another journal. Legacy per-journal checkpoints kept on the token are compared too.
  - Checkpoint records signed on other tokens (another token label or serial, or a key that is not one of this
    token's checkpoint keys, current or destroyed) are counted in RV(other_token_checkpoints), not reported as
    problems. The first checkpoint of a new signing key carries its predecessor's co-signature, which is verified.
  - When the journal starts with a rollover (its first record continues an earlier journal), the earlier journal
    is verified too when its file is still at the path the rollover recorded, and its head must be the one the
    rollover named (RV(journals)).
  - The journal is read on the controller (this module has an action plugin); the token is read on the HSM
    host through the module. The token is only read.
author:
  - secops.keylifecycle maintainers (@secops)
extends_documentation_fragment:
  - secops.keylifecycle.connection
  - secops.keylifecycle.attributes
  - secops.keylifecycle.attributes.action_group
  - secops.keylifecycle.attributes.info_module
options:
  journal:
    description:
      - Path of the journal on the controller.
      - Defaults to the C(keylifecycle_audit_journal) variable, else the token's default journal,
        C(<state dir>/journals/<token label>-<hash of module path and label>.jsonl), where the state dir is
        E(KEYLIFECYCLE_AUDIT_STATE_DIR), else C(secops_keylifecycle) under E(ANSIBLE_HOME) (C(~/.ansible)) - the
        journal the lifecycle modules write for this token.
    type: path
  since_seq:
    description:
      - Verify only the records from this sequence number on (a range), for a large journal checked regularly.
      - The record must be anchored by a signed checkpoint of this token (a checkpoint record in the journal, or
        the token's pin); otherwise the range is reported as a problem, since nothing vouches for its start. Records
        before it are skipped unread beyond their line end.
    type: int
  journal_id:
    description:
      - Id the journal is expected to have. When the journal file is missing or empty, the token's checkpoint for
        this id proves that records existed. Without it, any checkpoint on the token counts.
    type: str
  export_public_keys:
    description:
      - A directory on the controller where the checkpoint signing public keys are written as
        C(<key id>.pem), for checking signatures with C(openssl).
    type: path
  fail_on_error:
    description: Fail the task when the journal does not verify. With V(false) the report is returned as ok.
    type: bool
    default: true
  compare_store:
    description:
      - Also compare the journal with its acknowledged copy in the PostgreSQL store (the table the callback
        C(secops.keylifecycle.audit) ships to; a record is there only once its INSERT was committed). Every record
        missing from the store, present only in the store, or different there is reported by record id
        (RV(store_comparison)), and the journal does not verify then.
      - Syslog over TLS has no acknowledgement a verifier could rely on, so it is not compared.
    type: bool
    default: false
  postgresql_dsn:
    description:
      - libpq connection string of the store (SELECT on the table is enough), as the callback's C(postgresql_dsn).
        Without C(sslmode), C(verify-full) is used.
      - Falls back to E(KEYLIFECYCLE_AUDIT_POSTGRESQL_DSN) on the controller. Required with O(compare_store).
    type: str
  postgresql_table:
    description: Table of the store (falls back to E(KEYLIFECYCLE_AUDIT_POSTGRESQL_TABLE)).
    type: str
    default: keylifecycle_audit
  store_timeout:
    description: Seconds for each step of reading the store (connect, each fetch).
    type: float
    default: 5.0
notes:
  - Records after the last checkpoint are protected by the chain only (RV(unanchored_records) says how many); every
    lifecycle task anchors its intent record, and an intent without an outcome at the end of the journal is
    reported.
  - A last line without its line end (a write that failed, for example on a full file system) was never
    acknowledged. It is reported in RV(torn_tail), not verified, and the next append cuts it off and journals the
    repair.
seealso:
  - module: secops.keylifecycle.key_generate
"""

EXAMPLES = r"""
- name: Verify the dev audit journal
  secops.keylifecycle.audit_verify:
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: kl-dev
    user_pin_file: /etc/keylifecycle/dev-user.pin
    export_public_keys: /var/tmp/audit-keys
  register: audit

- name: Verify only the records since a checkpointed record (its seq from an earlier run's last_anchored_seq)
  secops.keylifecycle.audit_verify:
    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so
    token_label: kl-dev
    user_pin_file: /etc/keylifecycle/dev-user.pin
    since_seq: "{{ previous_audit.last_anchored_seq }}"
"""

RETURN = r"""
ok:
  description: Whether the journal verified completely.
  returned: always
  type: bool
journal:
  description: Path of the journal checked.
  returned: always
  type: str
journal_id:
  description: Id of the journal checked (from its records, else the O(journal_id) option).
  returned: always
  type: str
records:
  description:
    - Number of records that verified before the first bad one (all of them when RV(ok)); with O(since_seq), the
      records from that one on.
  returned: always
  type: int
head:
  description: Sequence number and hash of the last good record.
  returned: always
  type: dict
first_bad:
  description: The first bad record (line, seq, expected_seq, problem), or null.
  returned: always
  type: dict
problems:
  description: Every problem found, in words.
  returned: always
  type: list
  elements: str
checkpoints_verified:
  description: Number of checkpoint records of this token whose signature verified over a record the journal has.
  returned: always
  type: int
outcomes_verified:
  description:
    - Number of finished tasks whose audit events the journal holds as the token's pin remembers them (the last 32
      tasks with events of the pinned journal; for an older journal of a rollover chain, those its successor's
      genesis record names). A remembered task whose events are missing or altered is a problem (docs/audit.md).
  returned: always
  type: int
other_token_checkpoints:
  description:
    - Number of checkpoint records signed on other tokens (another token label or serial, or a key that is not one
      of this token's checkpoint keys), neither checked nor problems. Always 0 when the token was not read.
  returned: always
  type: int
store_comparison:
  description:
    - The journal compared with the PostgreSQL store (O(compare_store)), by record id. C(compared) journal
      records, C(store_records) rows; C(missing) (in the journal, not in the store), C(extra) (only in the store)
      and C(altered) (same record id, another hash, line or sequence number) are lists of record ids, lowest
      sequence number first, at most C(limit) each, with exact C(missing_count), C(extra_count), C(altered_count).
  returned: when O(compare_store) is true
  type: dict
unanchored_records:
  description:
    - Records after the last record a signed checkpoint of this token anchors (the pin or a checkpoint record),
      protected by the chain only until a later task anchors them; null when the token was not read.
  returned: always
  type: int
last_anchored_seq:
  description: Sequence number of the last record a signed checkpoint of this token anchors, or null.
  returned: always
  type: int
since_seq:
  description: The O(since_seq) the range started at, or null for the whole journal.
  returned: always
  type: int
torn_tail:
  description:
    - A last line without its line end (C(line), C(length) in bytes), or null. Not part of the chain; the next
      append cuts it off and journals the repair.
  returned: always
  type: dict
previous_journal:
  description:
    - When the journal starts with a rollover, the journal it continues (C(journal_id), C(head_seq), C(head_hash),
      C(path), and C(lost) when the old journal was not at hand), else null.
  returned: always
  type: dict
journals:
  description:
    - The journals checked, newest first (C(journal_id), C(path), C(records), C(ok), C(present)), this journal,
      then each earlier journal of a rollover chain (verified when its file exists at the recorded path, whose
      head must be the one the rollover named; C(ok) null when it is not at hand).
  returned: always
  type: list
  elements: dict
token_checkpoint:
  description:
    - The token's signed head of this journal (seq, head_hash, signed_at, signature, key_id), its pin when the pin
      names this journal, else the legacy checkpoint kept for it.
  returned: when the token was read
  type: dict
token_checkpoints:
  description: The latest checkpoint of every journal kept on the token, by journal id.
  returned: when the token was read
  type: dict
checkpoint_public_keys:
  description:
    - PEM public keys of every version of the checkpoint signing key ever generated, by key id, including versions
      destroyed since (kept on the token in the C(audit-checkpoint-keys) history).
  returned: when the token was read
  type: dict
token_pin:
  description:
    - The token's pin of its journal (C(audit-journal-pin)), or null when the token names no journal yet.
    - Holds C(schema), C(revision), C(journal_id), C(seq), C(head_hash), C(signed_at), C(signature), C(key_id),
      C(key_version), C(public_key_fingerprint), C(token_label), C(token_serial), C(pinned_since) and
      C(previous_journal) (null, or the C(journal_id), C(head_seq) and C(head_hash) of the journal a rollover
      continued); C(adopted_from_legacy) when the pin adopted a checkpoint written before pins existed.
  returned: when the token was read
  type: dict
checkpoint_certificates:
  description:
    - Certificates of each C(audit-checkpoint) version signed by the version before it at its rotation, oldest
      first (C(name), C(previous_version), C(previous_fingerprint), C(version), C(fingerprint),
      C(public_key_pem), C(certified_at), C(signature)).
  returned: when the token was read
  type: list
  elements: dict
token_label:
  description: Label of the token read.
  returned: when the token was read
  type: str
token_serial:
  description: Serial number of the token read (empty when the PKCS#11 library does not give one).
  returned: when the token was read
  type: str
policy_signers:
  description:
    - The policy signers the Security Officer installed in the token (name, label, fingerprint, destroyable), as
      M(secops.keylifecycle.key_info) returns them.
  returned: when the token was read
  type: list
  elements: dict
interrupted_intents:
  description: Sequence numbers of intent records without an outcome record (interrupted tasks).
  returned: always
  type: list
  elements: int
"""


from ansible.module_utils.basic import env_fallback

from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import HsmModule, hsm_module_kwargs
from ansible_collections.secops.keylifecycle.plugins.module_utils._journal_pin import pin_report
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import require_dependencies
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import ConnectionSettings, open_session
from ansible_collections.secops.keylifecycle.plugins.module_utils._key_store import TokenKeyStore
from ansible_collections.secops.keylifecycle.plugins.module_utils._module_result import fail_with_error

# The options of audit_verify itself (besides the connection options). The action plugin validates the task's
# arguments with this spec on the controller, handles these options there and sends the module only the
# connection options; they stay here because this spec is the one the documentation is checked against.
ARGUMENT_SPEC = dict(
    journal={"type": "path"},
    journal_id={"type": "str"},
    since_seq={"type": "int"},
    export_public_keys={"type": "path"},
    fail_on_error={"type": "bool", "default": True},
    compare_store={"type": "bool", "default": False},
    postgresql_dsn={"type": "str", "no_log": True, "fallback": (env_fallback, ["KEYLIFECYCLE_AUDIT_POSTGRESQL_DSN"])},
    postgresql_table={"type": "str", "default": "keylifecycle_audit",
                      "fallback": (env_fallback, ["KEYLIFECYCLE_AUDIT_POSTGRESQL_TABLE"])},
    store_timeout={"type": "float", "default": 5.0},
)


def main():
    """The HSM-host half: read the token's pin, its legacy checkpoints, and every checkpoint key ever used."""
    module = HsmModule(**hsm_module_kwargs(ARGUMENT_SPEC, supports_check_mode=True))
    require_dependencies(module)
    try:
        settings = ConnectionSettings.from_params(module.params)
        with open_session(settings, rw=False) as session:
            report = pin_report(session, TokenKeyStore(session, settings.token_label).load())
    except KeyLifecycleError as exc:
        fail_with_error(module, exc)
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
