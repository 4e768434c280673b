# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Verification of a journal against its signed checkpoints (controller side of audit_verify).

PRIVATE: not part of the public interface.
"""

from __future__ import annotations

import base64

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError as import_error:  # reported when a signature is checked
    CRYPTOGRAPHY_IMPORT_ERROR = import_error
else:
    CRYPTOGRAPHY_IMPORT_ERROR = None

from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import checkpoint_payload
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import verify_chain


def signature_valid(checkpoint, public_keys):
    """Whether a checkpoint's signature verifies with the signing key it names."""
    if CRYPTOGRAPHY_IMPORT_ERROR is not None:
        raise RuntimeError("audit_verify needs the Python library cryptography on the controller (pip install "
                           "cryptography): %s" % CRYPTOGRAPHY_IMPORT_ERROR)
    pem = public_keys.get(checkpoint.get("key_id"))
    if not pem:
        return False
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    payload = checkpoint_payload(checkpoint["journal_id"], checkpoint["seq"], checkpoint["head_hash"],
                                 checkpoint["signed_at"])
    try:
        key.verify(base64.b64decode(checkpoint["signature"]), payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _check_checkpoint_records(chain, public_keys, checked_token):
    """The journal's own audit-checkpoint records: signed by the token's key, over a hash the chain has.

    Returns (problems, number verified). Signatures are checked only when the token was read.
    """
    problems, verified = [], 0
    for record in chain.parsed:
        checkpoint = record["event"].get("keylifecycle", {}).get("checkpoint")
        if record["event"]["event"]["action"] != "audit-checkpoint" or not checkpoint:
            continue
        if checked_token and not signature_valid(checkpoint, public_keys):
            problems.append("checkpoint record seq %d: the signature does not verify with the token's "
                            "audit-checkpoint key %s" % (record["seq"], checkpoint.get("key_id")))
            continue
        if chain.hashes.get(checkpoint["seq"]) != checkpoint["head_hash"]:
            problems.append("checkpoint record seq %d signed record %d with a hash the journal does not have"
                            % (record["seq"], checkpoint["seq"]))
            continue
        verified += 1
    return problems, verified


def _check_token_checkpoint(chain, token_checkpoint, public_keys):
    """The token's latest signed checkpoint of this journal: valid, and not past or beside the journal's end."""
    if token_checkpoint is None:
        return []
    if not signature_valid(token_checkpoint, public_keys):
        return ["the token's checkpoint for this journal does not verify with its signing key"]
    if chain.ok and token_checkpoint["seq"] > chain.head_seq:
        return ["the journal ends at record %d but the token's signed checkpoint anchors record %d: "
                "the journal was truncated" % (chain.head_seq, token_checkpoint["seq"])]
    if token_checkpoint["seq"] in chain.hashes and \
            chain.hashes[token_checkpoint["seq"]] != token_checkpoint["head_hash"]:
        return ["record %d differs from the record the token's checkpoint signed: the journal was "
                "rewritten" % token_checkpoint["seq"]]
    return []


def _check_orphaned_checkpoints(token_checkpoints, expected_journal_id):
    """A missing or empty journal while the token holds a signed checkpoint of it: deleted or replaced."""
    orphaned = [token_checkpoints[j] for j in sorted(token_checkpoints)
                if expected_journal_id is None or j == expected_journal_id]
    if not orphaned:
        return []
    return ["the journal is missing or empty, but the token holds a signed checkpoint of record %d of journal %s: "
            "the journal was deleted or replaced" % (orphaned[0]["seq"], orphaned[0]["journal_id"])]


def _interrupted_intents(chain):
    """Intent records without an outcome; a problem when the journal ends inside one. Returns (problems, seqs)."""
    outcomes = {r["event"]["keylifecycle"].get("intent_id") for r in chain.parsed
                if r["event"].get("keylifecycle", {}).get("phase") == "outcome"}
    interrupted = [r["seq"] for r in chain.parsed if r["event"].get("keylifecycle", {}).get("phase") == "intent"
                   and r["record_id"] not in outcomes]
    if chain.ok and interrupted and interrupted[-1] == _last_intent_seq(chain.parsed):
        return ["the journal ends inside a task: intent record %d has no outcome (the run was "
                "interrupted, or the journal was truncated)" % interrupted[-1]], interrupted
    return [], interrupted


def verify_journal(lines, token_checkpoints=None, public_keys=None, expected_journal_id=None):
    """Check the chain, the journal's checkpoint records and the token's latest checkpoint."""
    chain = verify_chain(lines)
    problems = []
    if not chain.ok:
        bad = chain.first_bad
        problems.append("record on line %d (seq %s): %s" % (bad["line"], bad["seq"], bad["problem"]))
    public_keys = public_keys or {}
    checked_token = token_checkpoints is not None
    token_checkpoints = token_checkpoints or {}

    record_problems, verified = _check_checkpoint_records(chain, public_keys, checked_token)
    problems += record_problems
    journal_id = chain.journal_id or expected_journal_id
    token_checkpoint = token_checkpoints.get(journal_id) if journal_id else None
    if checked_token and not lines:
        problems += _check_orphaned_checkpoints(token_checkpoints, expected_journal_id)
    problems += _check_token_checkpoint(chain, token_checkpoint, public_keys)
    interrupted_problems, interrupted = _interrupted_intents(chain)
    problems += interrupted_problems

    return {
        "ok": not problems,
        "records": chain.records,
        "head": {"seq": chain.head_seq, "hash": chain.head_hash},
        "journal_id": journal_id,
        "first_bad": chain.first_bad,
        "problems": problems,
        "checkpoints_verified": verified,
        "token_checkpoint": token_checkpoint,
        "interrupted_intents": interrupted,
    }


def _last_intent_seq(parsed):
    intents = [r["seq"] for r in parsed if r["event"].get("keylifecycle", {}).get("phase") == "intent"]
    return intents[-1] if intents else None
