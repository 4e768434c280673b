# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Signed checkpoints of the audit journal, made with a non-extractable key in the HSM.

PRIVATE: not part of the public interface. docs/audit.md explains it for auditors.

A checkpoint says "journal J had record number N with hash H at time T", signed by the managed key
``audit-checkpoint`` (generated in the token on first use, CKA_SENSITIVE true, never extractable; EC P-256 / ECDSA
where the token offers it, else RSA-3072 / RSASSA-PSS). The signed payload is the canonical JSON of
``{"head_hash", "journal_id", "seq", "signed_at"}``; the signature is DER (ECDSA) or raw (RSA), so
``openssl dgst -sha256 -verify pub.pem -signature sig payload.json`` checks it (docs/audit.md).

``CheckpointSigner`` signs on the loaded token and reads the legacy per-journal checkpoints; the pin that names the
token's one journal, and the checks every task passes against it, are ``_journal_pin``.
"""

from __future__ import annotations

import json
import re

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import UUID_RE
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError
from ansible_collections.secops.keylifecycle.plugins.module_utils._managed_signing import (
    CHECKPOINT_KEY_NAME,
    ManagedSigningKey,
    certificates,
    key_history,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    AUDIT_CHECKPOINT,
    is_legacy_checkpoint_label,
)

SIGNING_KEY_NAME = CHECKPOINT_KEY_NAME
CHECKPOINT_APPLICATION = AUDIT_CHECKPOINT.application
_HASH = re.compile(r"^[0-9a-f]{64}\Z")


def checkpoint_payload(journal_id, seq, head_hash, signed_at):
    """The exact bytes that are signed."""
    return json.dumps({"head_hash": head_hash, "journal_id": journal_id, "seq": seq, "signed_at": signed_at},
                      sort_keys=True, separators=(",", ":")).encode("ascii")


def checkpoint_label(journal_id):
    """The label of a legacy per-journal checkpoint (read only)."""
    return "audit-checkpoint:%s" % journal_id


def anchor_requested(context):
    """Whether the controller passed a journal head to anchor (not in check mode, not outside a play)."""
    return bool(context and UUID_RE.match(str(context.get("journal_id") or ""))
                and _HASH.match(str(context.get("intent_hash") or "")) and context.get("intent_seq"))


def token_serial(session):
    """The token's serial number (CK_TOKEN_INFO.serialNumber, trimmed), or "" when the library does not say."""
    try:
        serial = session.token.serial
    except (AttributeError, KeyLifecycleError):
        return ""
    if isinstance(serial, bytes):
        serial = serial.decode("ascii", "replace")
    return str(serial or "").strip()


class CheckpointSigner:
    """Signs checkpoints on one logged-in session and reads the legacy ones, through the loaded TokenKeyStore."""

    def __init__(self, session, store):
        self.session = session
        self.store = store
        self.key = ManagedSigningKey(store, SIGNING_KEY_NAME, "audit checkpoint")

    def signing_version(self, operator):
        """The active signing key version; generated in the token on first use. Returns (version, created)."""
        return self.key.prepare(operator)

    def latest(self, journal_id):
        """The legacy checkpoint stored on the token for this journal (or None) and the objects that hold it."""
        label = checkpoint_label(journal_id)
        revisions = self.store.objects.newest(AUDIT_CHECKPOINT, label)
        if revisions is None:
            return None, []
        return revisions.newest, self.store.objects.document_objects(AUDIT_CHECKPOINT, label)

    def all_latest(self):
        """The latest legacy checkpoint of every journal kept on this token, by journal id."""
        latest = {}
        for label in self.store.objects.document_labels(AUDIT_CHECKPOINT):
            if not is_legacy_checkpoint_label(label):
                continue  # the pin and the key history share the application
            doc = self.store.objects.newest(AUDIT_CHECKPOINT, label).newest
            if doc["journal_id"] not in latest or latest[doc["journal_id"]]["seq"] < doc["seq"]:
                latest[doc["journal_id"]] = doc
        return latest

    def sign(self, version, journal_id, seq, head_hash, signed_at):
        """Base64 DER signature of the checkpoint payload by ``version``."""
        return self.key.sign(version, checkpoint_payload(journal_id, seq, head_hash, signed_at))

    def public_keys(self):
        """PEM public keys of every version of the signing key ever generated, by key id: the kept history
        (destroyed versions too) and the versions on the token."""
        keys = {key_id: entry["public_key_pem"] for key_id, entry in key_history(self.store, SIGNING_KEY_NAME).items()}
        keys.update(self.key.public_keys())
        return keys

    def certificates(self):
        """The certificates of each audit-checkpoint version by the one before it, oldest first."""
        return certificates(self.store, SIGNING_KEY_NAME)
