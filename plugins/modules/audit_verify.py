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
  - Re-checks every record of the controller's audit journal (hash chain, sequence, canonical form) and reports
    the first bad record with what is wrong with it (modified, deleted, reordered, spliced).
  - Verifies the signature of every checkpoint record in the journal with the public key of the
    C(audit-checkpoint) signing key read from the token, and that each checkpoint's record is in the journal
    with the hash that was signed.
  - Compares the journal with the latest checkpoint kept on the token, which catches a journal cut short (a
    truncated journal's own chain is still valid).
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
      - Defaults to the C(keylifecycle_audit_journal) variable, else C(~/.ansible/secops_keylifecycle/audit-journal.jsonl)
        (or under E(KEYLIFECYCLE_AUDIT_STATE_DIR)).
    type: path
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
notes:
  - Records after the last checkpoint are protected by the chain only; every lifecycle task anchors its intent
    record, and an intent without an outcome at the end of the journal is reported.
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
records:
  description: Number of records that verified before the first bad one (all of them when RV(ok)).
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
  description: Number of checkpoint records whose signature verified.
  returned: always
  type: int
token_checkpoint:
  description: The latest checkpoint kept on the token for this journal (seq, head_hash, signed_at, signature, key_id).
  returned: when the token was read
  type: dict
token_checkpoints:
  description: The latest checkpoint of every journal kept on the token, by journal id.
  returned: when the token was read
  type: dict
checkpoint_public_keys:
  description: PEM public keys of the checkpoint signing key versions, by key id.
  returned: when the token was read
  type: dict
interrupted_intents:
  description: Sequence numbers of intent records without an outcome record (interrupted tasks).
  returned: always
  type: list
  elements: int
"""


from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import HsmModule, hsm_module_kwargs
from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import CheckpointSigner
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
    export_public_keys={"type": "path"},
    fail_on_error={"type": "bool", "default": True},
)


def main():
    """The HSM-host half: read the token's checkpoint and the signing public keys."""
    module = HsmModule(**hsm_module_kwargs(ARGUMENT_SPEC, supports_check_mode=True))
    require_dependencies(module)
    try:
        settings = ConnectionSettings.from_params(module.params)
        with open_session(settings, rw=False) as session:
            store = TokenKeyStore(session, settings.token_label).load()
            signer = CheckpointSigner(session, store)
            checkpoints = signer.all_latest()
            public_keys = signer.public_keys()
    except KeyLifecycleError as exc:
        fail_with_error(module, exc)
    module.exit_json(changed=False, token_checkpoints=checkpoints, checkpoint_public_keys=public_keys)


if __name__ == "__main__":
    main()
