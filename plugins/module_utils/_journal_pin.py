# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The token pins its journal: the one journal a token names, and the checks every lifecycle task passes against it.

PRIVATE: not part of the public interface. docs/audit.md explains it for auditors.

The checkpoints themselves (what is signed, by which key) are ``_checkpoint``.

The token names ONE journal: its pin (``_token_objects.AUDIT_JOURNAL_PIN``, label
``audit-journal-pin``) holds that journal's id and the head the token last signed. Every
state-changing lifecycle task brings the intent record the controller journaled for it
(``audit_context``: ``journal_id``, ``intent_seq``, ``intent_hash``) and a proof that this
intent extends the journal's last checkpoint of this token (``journal_proof``: the digests
of the records in between, ``_journal_chain.extends``). ``JournalPin.check`` runs before the
task changes anything and refuses (``JournalRefused``, nothing changed) a task

1. without an intent, outside check mode (``journal_required``: the module was run without
   its action plugin);
2. /3. (accepted) on a token with no pin: the first pin, or the adoption of the per-journal
   checkpoints written before the pin existed (``audit-checkpoint:<journal id>``, read, never
   written again);
4. on a token with checkpoint keys but no pin (``journal_pin_missing``: the pin was deleted);
5. whose journal is not the pinned one, without a valid rollover (``journal_mismatch``);
6. whose intent is at or before the pinned head (``journal_behind``);
7. whose intent does not extend the pinned head (``journal_rewritten``);
8. (accepted) that starts a new journal by a rollover: its genesis record names the pinned
   journal and a head that is, or extends, the pinned one;

and, when the key that signed the pinned head is gone and no certificate links it to the
active key, ``checkpoint_key_replaced``. After the task's work, ``JournalPin.anchor`` signs
the intent and moves the pin forward (never back). A rotation of ``audit-checkpoint``
certifies the new version with the old one (``_managed_signing.certify_successor``); every
version's public key is kept (``_token_objects.AUDIT_KEY_HISTORY``); and the first checkpoint
of a new key is co-signed by the pinned key while that one can still sign
(``previous_key_id``, ``previous_signature``).
"""

from __future__ import annotations

import re

from ansible.module_utils.common.parameters import remove_values

from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import (
    SIGNING_KEY_NAME,
    CheckpointSigner,
    anchor_requested,
    token_serial,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import ObjectClass
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    JournalRefused,
    KeyLifecycleError,
    PackageRejected,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._journal_chain import (
    GENESIS_HASH,
    ChainError,
    canonical_json,
    decode_record,
    extends,
    outcome_digest,
    proof_passes_through,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import format_time, utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._managed_signing import (
    key_history,
    remember_public_keys,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import follow_certificates
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy_signers import find_policy_signers
from ansible_collections.secops.keylifecycle.plugins.module_utils._signatures import load_public_key
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    AUDIT_JOURNAL_PIN,
    AUDIT_JOURNAL_PIN_LABEL,
    AUDIT_SCHEMA,
)


PIN_LABEL = AUDIT_JOURNAL_PIN_LABEL
#: how many finished tasks' outcomes (``task_outcome``) the pin remembers, the newest last: audit_verify finds each
#: one's events in the journal (docs/audit.md)
OUTCOMES_REMEMBERED = 32
ROLLOVER_ACTION = "audit-journal-rollover"
_RECOVER_ROLLOVER = "run playbooks/audit_rollover.yml"


def _refuse(kind, message):
    return JournalRefused(message + " Nothing was changed on the token.", kind)


class JournalPin:
    """The token's pin of its journal, on one loaded TokenKeyStore: ``check`` before the work, ``anchor`` after."""

    def __init__(self, session, store):
        self.session = session
        self.store = store
        self.signer = CheckpointSigner(session, store)
        revisions = store.objects.newest(AUDIT_JOURNAL_PIN, PIN_LABEL)
        #: the pin as read from the token (a dict), or None
        self.pin = revisions.newest if revisions is not None else None
        #: how ``check`` accepted the task's intent: None (nothing to anchor), first, adopt, extend, rollover
        self.accepted = None
        #: the journal a rollover continues ({journal_id, head_seq, head_hash})
        self.previous_journal = None
        #: what that rollover declared lost ({journal_id, lost, lost_outcomes}), kept in the pin for good
        self.declared_loss = None
        #: set by ``_signed_policy.check_policy``: the policy in force (its serial raises the pin's policy_serial)
        #: and the fingerprints of the token's policy signers (added to the pin's policy_signers)
        self.policy_in_force = None
        self.policy_signers = None
        #: the new signed policy this task brings, recorded on the token after the work (``_signed_policy``)
        self.policy_acceptance = None

    # ---- the decision ---------------------------------------------------------------------------------------

    def check(self, params, check_mode, state_changing=True, module_name=None, allow_rollover=False):
        """Refuse (JournalRefused) a task whose intent the token must not anchor; return how it was accepted.

        ``params``: the module's ``audit_context``. Without an intent, a state-changing module is refused unless
        in check mode (nothing is anchored then: returns None). A rollover is accepted only where
        ``allow_rollover`` (audit_rollover). Reads only; in check mode writes nothing.
        """
        params = params or {}
        if not anchor_requested(params):
            if state_changing and not check_mode:
                name = module_name or "this module"
                raise _refuse("journal_required", (
                    "%s changes the token only through its action plugin, which journals an intent first (run it as "
                    "secops.keylifecycle.%s, not a copied module or directly with python): this task carries no "
                    "journaled intent in audit_context." % (name, name.rsplit(".", 1)[-1])))
            return None
        journal_id, seq, head = params["journal_id"], int(params["intent_seq"]), params["intent_hash"]
        if params.get("journal_rollover"):
            if not allow_rollover:
                raise _refuse("journal_mismatch", (
                    "A new journal is started only by secops.keylifecycle.audit_rollover, not by %s."
                    % (module_name or "this module")))
            self._check_rollover(params["journal_rollover"], journal_id, seq, head)
            self.accepted = "rollover"
        elif self.pin is None:
            self.accepted = self._check_unpinned(journal_id, seq)
        else:
            self.accepted = self._check_pinned(params.get("journal_proof"), journal_id, seq, head)
        if not check_mode:  # keep every existing version's public key before the work can destroy one
            remember_public_keys(self.store, SIGNING_KEY_NAME, self.store.versions(SIGNING_KEY_NAME))
        return self.accepted

    def _check_unpinned(self, journal_id, seq):
        legacy = self.signer.all_latest()
        if legacy:  # written before the pin existed: adopted (migration)
            checkpoint = legacy.get(journal_id)
            if checkpoint is not None and seq <= int(checkpoint["seq"]):
                raise _refuse("journal_behind", (
                    "Journal %s ends at record %d or earlier, but the token signed its record %d: the journal was "
                    "truncated or restored from an older copy. Restore journal %s from the log store."
                    % (journal_id, seq, int(checkpoint["seq"]), journal_id)))
            return "adopt"
        if self.store.versions(SIGNING_KEY_NAME) or key_history(self.store, SIGNING_KEY_NAME):
            raise _refuse("journal_pin_missing", (
                "Token %r has signed checkpoints (it holds an %r key) but names no journal: its pin (%s) was "
                "deleted. Start a journal that names the lost one: %s."
                % (self.store.token_label, SIGNING_KEY_NAME, PIN_LABEL, _RECOVER_ROLLOVER)))
        managed = [name for name in self.store.names() if self.store.versions(name)]  # recorded, not half-made
        if managed:  # the first pin is written before the first task's work, so keys never precede it
            raise _refuse("journal_pin_missing", (
                "Token %r holds managed keys (%s) but names no journal: its pin (%s) and its checkpoint key were "
                "deleted. Start a journal that names the lost one: %s."
                % (self.store.token_label, ", ".join(managed[:5]) + (", ..." if len(managed) > 5 else ""),
                   PIN_LABEL, _RECOVER_ROLLOVER)))
        return "first"

    def pin_first(self, params, operator):
        """Write the first pin before the first task's work (so no key is ever on the token before a pin is).

        Returns ``(checkpoint, signing_version, created)``; a no-op (None, None, False) unless ``check`` accepted
        the task as the token's first."""
        if self.accepted != "first":
            return None, None, False
        return self.anchor(params, operator)

    def _check_pinned(self, proof, journal_id, seq, head):
        pin = self.pin
        if pin["journal_id"] != journal_id:
            raise _refuse("journal_mismatch", (
                "Token %r names journal %s (signed head: record %d), but this task's intent is in journal %s: the "
                "token's journal was deleted, replaced, or the task was diverted to another journal."
                % (self.store.token_label, pin["journal_id"], pin["seq"], journal_id)))
        proof = proof if isinstance(proof, dict) else {}
        start_seq, start_hash = proof.get("start_seq", seq), proof.get("start_hash", head)
        digests = proof.get("digests", [])
        try:
            start_seq = int(start_seq)
        except (TypeError, ValueError):
            start_seq = seq
        end_seq = start_seq + len(digests) if isinstance(digests, (list, tuple)) else start_seq
        if max(seq, end_seq) < pin["seq"]:
            raise _refuse("journal_behind", (
                "Journal %s ends at record %d, but token %r signed its record %d: the journal was truncated or "
                "restored from an older copy. Restore journal %s from the log store."
                % (journal_id, max(seq, end_seq), self.store.token_label, pin["seq"], journal_id)))
        if start_seq > pin["seq"]:
            if start_seq == seq and not digests:
                raise _refuse("journal_rewritten", (
                    "Journal %s holds no checkpoint of token %r at or after record %d, the head the token signed: "
                    "its checkpoint records were removed or the journal was rewritten. Restore journal %s from the "
                    "log store." % (journal_id, self.store.token_label, pin["seq"], journal_id)))
            raise _refuse("journal_rewritten", (
                "Token %r signed record %d of journal %s, but the journal's last checkpoint of this token is at "
                "record %d: the token's head is older than the journal's last checkpoint of this token: the token "
                "was restored from an older backup, or another token has the same label."
                % (self.store.token_label, pin["seq"], journal_id, start_seq)))
        if not start_seq <= seq <= end_seq:
            raise _refuse("journal_rewritten", (
                "The proof sent with this task's intent (record %d of journal %s) covers records %d to %d only."
                % (seq, journal_id, start_seq, end_seq)))
        if seq == pin["seq"] and head != pin["head_hash"]:
            marks = {seq: head}  # the journal's own record there, checked against the proof; then refused below
        else:
            marks = {pin["seq"]: pin["head_hash"], seq: head}
        try:
            proof_passes_through(start_seq, start_hash, digests, marks)
        except ChainError as exc:
            raise _refuse("journal_rewritten", (
                "Journal %s does not extend the head token %r signed (record %d): %s. Records were removed, "
                "altered or re-hashed, or a copy of the journal was written elsewhere. Restore journal %s from "
                "the log store." % (journal_id, self.store.token_label, pin["seq"], exc, journal_id))) from None
        if seq == pin["seq"] and head != pin["head_hash"]:
            raise _refuse("journal_behind", (
                "The journal's record %d (journal %s) is not the record token %r signed: it was truncated or restored "
                "from an older copy, or a copy of it was written elsewhere. Restore journal %s from the log store."
                % (seq, journal_id, self.store.token_label, journal_id)))
        self._check_key()
        # a later intent (another controller's, on a shared journal) may have been pinned first: this one is anchored
        # all the same, without moving the pin back
        return "extend" if seq > pin["seq"] else "overtaken"

    def _check_rollover(self, rollover, journal_id, seq, head):
        """Case 8: a new journal whose genesis record continues the pinned one."""
        genesis = rollover.get("genesis") if isinstance(rollover, dict) else None

        def invalid(why):
            pinned = " (token %r names journal %s, signed head: record %d)" % (
                self.store.token_label, self.pin["journal_id"], self.pin["seq"]) if self.pin else ""
            return _refuse("journal_mismatch", "The journal rollover to %s is refused%s: %s." % (journal_id, pinned,
                                                                                                 why))

        try:
            record = decode_record(genesis)
            event = record["event"]
            action, phase = event["event"]["action"], event["keylifecycle"]["phase"]
            previous = event["keylifecycle"].get("previous_journal")
        except (ChainError, ValueError, TypeError, KeyError, AttributeError, UnicodeError):
            raise invalid("its genesis record is not a journal record") from None
        if record.get("seq") != 1 or seq != 1 or record.get("prev_hash") != GENESIS_HASH:
            raise invalid("its genesis record is not the first record of a journal")
        if record.get("journal_id") != journal_id or record.get("hash") != head:
            raise invalid("its genesis record is not this task's intent")
        if action != ROLLOVER_ACTION or phase != "intent":
            raise invalid("its first record is a %s %s, not the intent of %s" % (action, phase, ROLLOVER_ACTION))
        if not isinstance(previous, dict):
            raise invalid("its genesis record names no previous journal")
        try:
            named = {"journal_id": str(previous["journal_id"]), "head_seq": int(previous["head_seq"]),
                     "head_hash": str(previous["head_hash"])}
        except (KeyError, TypeError, ValueError):
            raise invalid("its genesis record names no previous journal head") from None
        if self.pin is not None:
            pin = self.pin
            if named["journal_id"] != pin["journal_id"]:
                raise invalid("it continues journal %s, not the pinned one" % named["journal_id"])
            if (previous.get("outcomes") or []) != (pin.get("outcomes") or []):
                raise invalid("its genesis record does not name the outcomes of the pinned journal's last tasks as "
                              "the token remembers them (previous_journal.outcomes)")
            if (named["head_seq"], named["head_hash"]) != (pin["seq"], pin["head_hash"]):
                proof = rollover.get("previous_proof")
                if not isinstance(proof, dict):
                    raise invalid("it names head record %d of journal %s, not the pinned head, and gives no proof "
                                  "that it extends it (previous_proof)" % (named["head_seq"], pin["journal_id"]))
                try:
                    extends(int(proof.get("start_seq", -1)), proof.get("start_hash"), proof.get("digests"),
                            named["head_seq"], named["head_hash"], pin["seq"], pin["head_hash"])
                except (ChainError, TypeError, ValueError) as exc:
                    raise invalid("the previous journal's head does not extend the pinned head (%s)" % exc) from None
        lost, lost_outcomes = previous.get("lost", False), previous.get("lost_outcomes") or []
        if not isinstance(lost, bool) or not isinstance(lost_outcomes, list) or not all(
                isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 for seq in lost_outcomes):
            raise invalid("its genesis record's previous_journal.lost or lost_outcomes is malformed")
        if lost or lost_outcomes:
            self.declared_loss = {"journal_id": named["journal_id"], "lost": lost, "lost_outcomes": lost_outcomes}
        self.previous_journal = named

    def _check_key(self):
        """``checkpoint_key_replaced`` when the key that signed the pinned head is gone and nothing links it to the
        key that would sign now."""
        pin = self.pin
        active = self.signer.key.active_version()
        if active is not None and active.key_id == pin["key_id"]:
            return
        pinned = next((v for v in self.store.versions(SIGNING_KEY_NAME) if v.key_id == pin["key_id"]), None)
        if pinned is not None and pinned.state != "destroyed" \
                and self.store.objects.key_objects(ObjectClass.PRIVATE_KEY, pinned.label):
            return  # still on the token: it co-signs the new key's first checkpoint if it can still sign
        if active is not None and self._certified(pin, active):
            return
        raise _refuse("checkpoint_key_replaced", (
            "The %r key that signed token %r's head (key id %s) is gone and nothing certifies the current key: "
            "history cannot be re-based. To start over, %s."
            % (SIGNING_KEY_NAME, self.store.token_label, pin["key_id"], _RECOVER_ROLLOVER)))

    def _certified(self, pin, active):
        """Whether the certificates lead from the pinned key to ``active``, each verifying with the key before it."""
        pem = self.signer.public_keys().get(pin["key_id"])
        pinned_key = load_public_key(pem) if pem else None
        if pinned_key is None:
            return False
        try:
            follow_certificates(pinned_key, self.signer.certificates(), active.public_key_fingerprint,
                                option="audit_context", name=SIGNING_KEY_NAME)
        except PackageRejected:
            return False
        return True

    # ---- the anchor -----------------------------------------------------------------------------------------

    def anchor(self, params, operator, events=None, context=None, hidden=()):
        """Sign the intent ``check`` accepted and move the pin to it (never back).

        ``events``: the task's audit events once its work is done (None: before the work, ``pin_first``). A
        signing key generated here adds its ``key-generate`` event to them (built with ``context``); then the
        pin remembers the task's outcome (``task_outcome``), also when it does not move. ``hidden``: the values
        the module's result masks (its no_log values), so the outcome is that of the events the journal receives.

        Returns ``(checkpoint, signing_version, created)``; the checkpoint carries the token's label and serial,
        the outcome, and for a new key's first checkpoint the pinned key's co-signature (when that key can still
        sign).
        """
        journal_id, seq, head_hash = params["journal_id"], int(params["intent_seq"]), params["intent_hash"]
        version, created = self.signer.signing_version(operator)
        outcome = None
        if events is not None:
            if created:
                events.append(self.signer.key.generated_event(version, context))
            outcome = task_outcome(seq, events, hidden)
        signed_at = format_time(utc_now())
        checkpoint = {
            "journal_id": journal_id, "seq": seq, "head_hash": head_hash, "signed_at": signed_at,
            "signature": self.signer.sign(version, journal_id, seq, head_hash, signed_at),
            "key_id": version.key_id, "key_version": version.version,
            "public_key_fingerprint": version.public_key_fingerprint,
            "token_label": self.store.token_label, "token_serial": token_serial(self.session),
        }
        pin = self.pin
        if pin is not None and pin["key_id"] != version.key_id:
            previous = next((v for v in self.store.versions(SIGNING_KEY_NAME)
                             if v.key_id == pin["key_id"] and v.state == "active"), None)
            if previous is not None:
                checkpoint["previous_key_id"] = previous.key_id
                checkpoint["previous_signature"] = self.signer.sign(previous, journal_id, seq, head_hash, signed_at)
        if outcome is not None:
            checkpoint["outcome"] = {"events": outcome["events"], "sha256": outcome["sha256"]}
        same_journal = pin is not None and pin["journal_id"] == journal_id
        advance = not (same_journal and pin["seq"] >= seq)  # never moved backwards
        remember = outcome is not None and outcome["events"] > 0
        if advance or remember:
            self._write_pin(checkpoint, same_journal, advance, outcome if remember else None)
        return checkpoint, version, created

    def _write_pin(self, checkpoint, same_journal, advance=True, outcome=None):
        """A new revision of the pin: at ``checkpoint``'s head when ``advance``, else the pinned head kept; the
        outcomes it remembers of this journal's tasks (at most OUTCOMES_REMEMBERED), with ``outcome`` added."""
        pin = self.pin
        outcomes = list(pin.get("outcomes") or ()) if same_journal else []
        if outcome is not None:
            outcomes = (outcomes + [outcome])[-OUTCOMES_REMEMBERED:]
        losses = list((pin or {}).get("declared_losses") or ())
        if self.declared_loss is not None and self.accepted == "rollover" and self.declared_loss not in losses:
            losses.append(self.declared_loss)
        if not advance:  # an overtaken task (the pin is ahead of it) or the first task's second anchor
            doc = dict(pin, revision=int(pin["revision"]) + 1, outcomes=outcomes)
            self.store.objects.write(AUDIT_JOURNAL_PIN, PIN_LABEL, doc, operation="C_CreateObject (audit journal pin)")
            self.pin = doc
            return
        doc = {"schema": AUDIT_SCHEMA, "revision": int(pin["revision"]) + 1 if pin else 1}
        doc.update({field: checkpoint[field] for field in (
            "journal_id", "seq", "head_hash", "signed_at", "signature", "key_id", "key_version",
            "public_key_fingerprint", "token_label", "token_serial")})
        if outcomes:
            doc["outcomes"] = outcomes
        if losses:  # every loss a rollover declared, whatever journals followed (the report lists them)
            doc["declared_losses"] = losses
        doc["pinned_since"] = pin["pinned_since"] if same_journal else checkpoint["signed_at"]
        if self.previous_journal is not None and self.accepted == "rollover":
            doc["previous_journal"] = dict(self.previous_journal)
        else:
            doc["previous_journal"] = pin.get("previous_journal") if same_journal else None
        if self.accepted == "adopt" or (same_journal and pin.get("adopted_from_legacy")):
            doc["adopted_from_legacy"] = True
        doc.update(self._policy_fields())
        self.store.objects.write(AUDIT_JOURNAL_PIN, PIN_LABEL, doc, operation="C_CreateObject (audit journal pin)")
        self.pin = doc

    def _policy_fields(self):
        """``policy_serial`` (the highest signed policy serial the token accepted) and ``policy_signers`` (every
        policy signer fingerprint the token ever held), carried over from the old pin, whatever its journal, and
        raised by this task: they never go down or shrink. Left out while there is nothing to remember (a token
        without a policy signer keeps the pin it had before signed policies existed)."""
        pin = self.pin or {}
        serial = pin.get("policy_serial") or 0
        in_force = self.policy_in_force or {}
        if in_force.get("signed"):
            serial = max(serial, int(in_force["serial"]))
        signers = self.policy_signers
        if signers is None:  # not checked by this task (anchored without check_policy): read them here
            signers = [signer.fingerprint for signer in find_policy_signers(self.session)]
        signers = sorted(set(pin.get("policy_signers") or ()) | set(signers))
        fields = {}
        if serial:
            fields["policy_serial"] = serial
        if signers:
            fields["policy_signers"] = signers
        if in_force.get("sha256"):  # the policy of the last anchored task: the next one's plan shows a change
            fields["policy"] = {k: in_force[k] for k in ("sha256", "signed", "serial", "signer_name") if k in in_force}
        elif pin.get("policy"):
            fields["policy"] = pin["policy"]
        return fields


def task_outcome(intent_seq, events, hidden=()):
    """What a token's pin remembers of a finished task: ``{intent_seq, events, sha256}``, the number of its audit
    events and ``_journal_chain.outcome_digest`` of them as the journal will hold them. ``hidden``: the module's
    no_log values, which its result masks (AnsibleModule's ``remove_values``) wherever they occur in an event."""
    texts = [_returned(event, hidden)[1] for event in events]
    return {"intent_seq": intent_seq, "events": len(texts), "sha256": outcome_digest(texts)}


def as_returned(event, hidden):
    """``event`` as the module's result returns it: AnsibleModule masks its no_log values (``hidden``) in every
    value (``remove_values``). A result that carries the events as one text (``return_records: false``) masks each
    event this way first, since masking the text would miss a value JSON escapes, and break the JSON of a number."""
    return _returned(event, hidden)[0]


def _returned(event, hidden):
    """``(event, its canonical JSON)`` as the module's result returns it (masked only where a hidden value may be)."""
    text = canonical_json(event)
    if hidden and _may_hide(text, hidden):
        event = remove_values(event, hidden)
        text = canonical_json(event)
    return event, text


def _may_hide(text, hidden):
    """Whether masking ``hidden`` may change the event whose canonical JSON is ``text``: a value of printable ASCII
    without a quote or backslash is written unescaped, so it changes the event only if ``text`` holds it."""
    return any(not _PLAIN.match(value) or value in text for value in hidden)


_PLAIN = re.compile(r'^[ !#-\[\]-~]*\Z')


def anchor_journal(session, store, audit_params, context, events, pin=None, hidden=()):
    """Anchor the controller's intent record if one was passed; return ``(checkpoint or None, key_created)``.

    ``pin``: the JournalPin whose ``check`` accepted the intent (run before the work); without one it is read
    and checked here. A signing key generated on first use adds its own ``key-generate`` event to ``events``,
    and the pin remembers the task's outcome (``task_outcome``; ``hidden``: the module's no_log values). On
    failure the events gathered so far are attached to the error, so the module's failure result still
    carries every change that happened.
    """
    if not anchor_requested(audit_params):
        return None, False
    try:
        if pin is None:
            pin = JournalPin(session, store)
            pin.check(audit_params, check_mode=True)
        checkpoint, _version, created = pin.anchor(audit_params, context.operator, events, context, hidden)
    except KeyLifecycleError as exc:
        exc.audit_events = list(events)
        exc.changed = bool(events)
        raise
    return checkpoint, created


def pin_report(session, store):
    """What audit_verify's module half returns about the token (read only)."""
    signer = CheckpointSigner(session, store)
    revisions = store.objects.newest(AUDIT_JOURNAL_PIN, PIN_LABEL)
    pin = revisions.newest if revisions is not None else None
    checkpoints = signer.all_latest()
    if pin is not None:
        checkpoints[pin["journal_id"]] = {field: pin[field] for field in (
            "journal_id", "seq", "head_hash", "signed_at", "signature", "key_id", "key_version",
            "public_key_fingerprint", "token_label", "token_serial")}
    return {"token_pin": pin, "token_checkpoints": checkpoints, "checkpoint_public_keys": signer.public_keys(),
            "checkpoint_certificates": signer.certificates(), "token_label": store.token_label,
            "token_serial": token_serial(session),
            "policy_signers": [policy_signer.as_dict() for policy_signer in find_policy_signers(session)]}
