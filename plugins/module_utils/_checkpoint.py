# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Signed checkpoints of the audit journal, made with a non-extractable key in the HSM.

PRIVATE: not part of the public interface.

A checkpoint says "journal J had record number N with hash H at time T", signed
(ECDSA P-256, SHA-256) by the managed key ``audit-checkpoint`` (generated in the
token on first use, CKA_SENSITIVE true, never extractable). Every lifecycle module
call anchors the intent record the controller journaled for it; the latest
checkpoint of each journal is also kept on the token (``_token_objects.AUDIT_CHECKPOINT``,
read from the key store's enumeration of the token), so a journal cut below it is
caught by ``audit_verify`` even though the cut journal's own chain is still valid.

The signed payload is the canonical JSON of ``{"head_hash", "journal_id", "seq",
"signed_at"}``; the signature is DER, so ``openssl dgst -sha256 -verify pub.pem
-signature sig.der payload.json`` checks it.
"""

from __future__ import annotations

import json
import re

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import UUID_RE
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import KeyLifecycleError
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import format_time, utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._managed_signing import ManagedSigningKey
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import AUDIT_CHECKPOINT

SIGNING_KEY_NAME = "audit-checkpoint"
CHECKPOINT_APPLICATION = AUDIT_CHECKPOINT.application
_HASH = re.compile(r"^[0-9a-f]{64}\Z")


def checkpoint_payload(journal_id, seq, head_hash, signed_at):
    """The exact bytes that are signed."""
    return json.dumps({"head_hash": head_hash, "journal_id": journal_id, "seq": seq, "signed_at": signed_at},
                      sort_keys=True, separators=(",", ":")).encode("ascii")


def checkpoint_label(journal_id):
    return "audit-checkpoint:%s" % journal_id


def anchor_requested(context):
    """Whether the controller passed a journal head to anchor (not in check mode, not outside a play)."""
    return bool(context and UUID_RE.match(str(context.get("journal_id") or ""))
                and _HASH.match(str(context.get("intent_hash") or "")) and context.get("intent_seq"))


class CheckpointSigner:
    """Signs and stores checkpoints on one logged-in session, through the loaded TokenKeyStore."""

    def __init__(self, session, store):
        self.session = session
        self.store = store
        self.key = ManagedSigningKey(store, SIGNING_KEY_NAME, "audit checkpoint")

    def signing_version(self, operator):
        """The active signing key version; generated in the token on first use. Returns (version, created)."""
        return self.key.prepare(operator)

    def latest(self, journal_id):
        """The checkpoint stored on the token for this journal (or None) and the objects that hold it."""
        label = checkpoint_label(journal_id)
        revisions = self.store.objects.newest(AUDIT_CHECKPOINT, label)
        if revisions is None:
            return None, []
        return revisions.newest, self.store.objects.document_objects(AUDIT_CHECKPOINT, label)

    def all_latest(self):
        """The latest checkpoint of every journal kept on this token, by journal id."""
        latest = {}
        for label in self.store.objects.document_labels(AUDIT_CHECKPOINT):
            doc = self.store.objects.newest(AUDIT_CHECKPOINT, label).newest
            if doc["journal_id"] not in latest or latest[doc["journal_id"]]["seq"] < doc["seq"]:
                latest[doc["journal_id"]] = doc
        return latest

    def anchor(self, context, operator):
        """Sign the journal head given in ``context`` and keep it as the token's latest checkpoint.

        Returns ``(checkpoint, signing_version, created)``. A checkpoint older than the one
        already on the token (a concurrent run anchored a later record) is signed and
        returned, but does not replace the stored one.
        """
        journal_id, seq, head_hash = context["journal_id"], int(context["intent_seq"]), context["intent_hash"]
        version, created = self.signing_version(operator)
        signed_at = format_time(utc_now())
        payload = checkpoint_payload(journal_id, seq, head_hash, signed_at)
        checkpoint = {
            "journal_id": journal_id, "seq": seq, "head_hash": head_hash, "signed_at": signed_at,
            "signature": self.key.sign(version, payload),
            "key_id": version.key_id, "key_version": version.version,
            "public_key_fingerprint": version.public_key_fingerprint,
        }
        latest, _objects = self.latest(journal_id)
        if latest is None or latest["seq"] < seq:  # the kind keeps one: older checkpoints are destroyed
            self.store.objects.write(AUDIT_CHECKPOINT, checkpoint_label(journal_id), checkpoint,
                                     operation="C_CreateObject (checkpoint)")
        return checkpoint, version, created

    def public_keys(self):
        """PEM public keys of every version of the signing key, by key id."""
        return self.key.public_keys()


def anchor_journal(session, store, audit_params, context, events):
    """Anchor the controller's intent record if one was passed; return ``(checkpoint or None, key_created)``.

    A signing key generated on first use adds its own ``key-generate`` event to ``events``.
    On failure the events gathered so far are attached to the error, so the module's
    failure result still carries every change that happened.
    """
    if not anchor_requested(audit_params):
        return None, False
    try:
        checkpoint, version, created = CheckpointSigner(session, store).anchor(audit_params, context.operator)
    except KeyLifecycleError as exc:
        exc.audit_events = list(events)
        exc.changed = bool(events)
        raise
    if created:
        events.append(ManagedSigningKey(store, SIGNING_KEY_NAME, "audit checkpoint").generated_event(version, context))
    return checkpoint, created
