# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import fcntl
import json
import os

from ansible.errors import AnsibleActionFail

from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import CONNECTION_ARGSPEC
from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event
from ansible_collections.secops.keylifecycle.plugins.module_utils._journal_chain import GENESIS_HASH, record_digest
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._audit_verification import missing_outcomes
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._journal import (
    Journal,
    JournalError,
    register_journal,
)
from ansible_collections.secops.keylifecycle.plugins.plugin_utils._lifecycle_action import LifecycleActionBase


def _kept_path(path, tag):
    """Where a journal is kept once a new one takes its place: ``journal.jsonl`` -> ``journal.<tag>.jsonl``."""
    stem, ext = os.path.splitext(path)
    return "%s.%s%s" % (stem, tag, ext or ".jsonl")


def _refuse_shared(journal, token_label):
    """A journal that holds checkpoints of other tokens is theirs too: moving it aside would leave them naming a
    journal that is no longer at its path (every task of theirs refused, their own rollover then declaring it
    lost). Refused before anything is written."""
    others = set()
    for line in journal.iter_lines(complete_only=True):
        if '"action":"audit-checkpoint"' not in line:
            continue
        try:
            checkpoint = json.loads(line)["event"]["keylifecycle"]["checkpoint"]
        except (ValueError, KeyError, TypeError):
            continue
        label = checkpoint.get("token_label") if isinstance(checkpoint, dict) else None
        if isinstance(label, str) and label != token_label:
            others.add(label)
    if others:
        raise AnsibleActionFail(
            "The audit journal %s is shared with token(s) %s, which still write it: a rollover would move it aside "
            "under them. Give token %r a journal of its own (the host's keylifecycle_audit_journal) and roll over "
            "with previous_journal=%s, which continues this journal where it is. Nothing was changed."
            % (journal.path, ", ".join(sorted(others)), token_label, journal.path),
            result={"error_kind": "journal_shared", "error_option": "previous_journal", "changed": False})


def _genesis_previous(journal):
    """The journal a journal's genesis record says it continues (``previous_journal``), or {}."""
    for line in journal.iter_lines(complete_only=True):
        try:
            previous = json.loads(line)["event"]["keylifecycle"].get("previous_journal")
        except (ValueError, KeyError, TypeError, AttributeError):
            return {}
        return previous if isinstance(previous, dict) else {}
    return {}


def _pinned_journal_elsewhere(target, journal_id, given=None):
    """The journal the token names, at another path than the journal's: ``given`` (the option previous_journal,
    which must hold it), else a journal file beside the path that holds it (kept there by an earlier rollover whose
    result never came back, or by another token's), so that it is continued, not declared lost. None if none."""
    if given:
        path = os.path.abspath(os.path.expanduser(str(given)))
        journal = Journal(path)
        tail = journal.tail() if os.path.isfile(path) else None
        if not tail or tail[0] != journal_id:
            raise AnsibleActionFail(
                "previous_journal %s does not hold journal %s, the one the token names%s. Nothing was changed."
                % (path, journal_id, " (it holds journal %s)" % tail[0] if tail else ""),
                result={"error_kind": "invalid_option", "error_option": "previous_journal", "changed": False})
        return journal
    directory = os.path.dirname(target.path)
    best = None
    for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        if not entry.endswith(".jsonl") or path == target.path or not os.path.isfile(path) or os.path.islink(path):
            continue
        try:
            tail = Journal(path).tail()
        except (JournalError, OSError):
            continue
        if tail and tail[0] == journal_id and (best is None or tail[1] > best[1][1]):
            best = (Journal(path), tail)
    return best[0] if best else None


def _move_shipping_cursors(old, new):
    """The callback's per-store cursors (``<journal>.shipped-<store>.json``) follow the journal they count."""
    directory, name = os.path.split(old)
    for entry in os.listdir(directory):
        if entry.startswith(name + ".shipped-") and entry.endswith(".json"):
            os.replace(os.path.join(directory, entry), new + entry[len(name):])


class ActionModule(LifecycleActionBase):
    """Controller side of secops.keylifecycle.audit_rollover: the new journal's genesis, written durably before the
    token is asked to pin it, and moved into place only once it is pinned."""

    AUDIT_ACTION = "audit-journal-rollover"
    AUTHORIZATION_ACTION = "journal_rollover"

    def requested_keys(self, args):
        return []

    def journal_for(self, module_args, task_vars):
        self._rollover["target"] = super().journal_for(module_args, task_vars)
        return self._rollover["target"]

    def _token_pin(self, module_args, task_vars):
        """The token's pin, read through audit_verify's HSM-host half (read-only)."""
        connection = {k: v for k, v in module_args.items() if k in CONNECTION_ARGSPEC}
        result = self._execute_module(module_name="secops.keylifecycle.audit_verify", module_args=connection,
                                      task_vars=task_vars)
        if result.get("failed"):
            raise AnsibleActionFail("The token's journal pin cannot be read: %s" % result.get("msg"),
                                    result={"error_kind": result.get("error_kind", "module_failure")})
        return result.get("token_pin")

    def _previous_journal(self, target, pin, module_args):
        """What the genesis says the new journal continues; the proof that its head extends the pin; a superseded
        journal found at the path."""
        tail = target.tail()
        previous, proof, superseded = None, None, None
        if tail:  # moved aside below: never a journal other tokens still write
            _refuse_shared(target, module_args.get("token_label"))
        elsewhere = None
        if pin and not (tail and tail[0] == pin["journal_id"]):
            elsewhere = _pinned_journal_elsewhere(target, pin["journal_id"], module_args.get("previous_journal"))
        if pin and tail and tail[0] == pin["journal_id"]:
            previous = {"journal_id": tail[0], "head_seq": tail[1], "head_hash": tail[2], "lost": False,
                        "path": _kept_path(target.path, tail[0])}
            proof = target.proof_since(module_args.get("token_label"), tail[1])
        elif elsewhere is not None:  # the pinned journal, kept at another path: continued from there, left there
            found = elsewhere.tail()
            previous = {"journal_id": found[0], "head_seq": found[1], "head_hash": found[2], "lost": False,
                        "path": elsewhere.path, "in_place": True}
            proof = elsewhere.proof_since(module_args.get("token_label"), found[1])
            if tail:  # where that journal's own genesis says this one is kept, if it is the one it continues
                named = _genesis_previous(elsewhere)
                kept = named.get("path") if named.get("journal_id") == tail[0] else None
                if not isinstance(kept, str) or os.path.lexists(kept):
                    kept = _kept_path(target.path, "superseded-%s" % tail[0])
                superseded = {"journal_id": tail[0], "path": kept}
        elif pin:
            previous = {"journal_id": pin["journal_id"], "head_seq": pin["seq"], "head_hash": pin["head_hash"],
                        "lost": True}
            if tail:
                superseded = {"journal_id": tail[0], "path": _kept_path(target.path, "superseded-%s" % tail[0])}
        elif tail:
            previous = {"journal_id": tail[0], "head_seq": tail[1], "head_hash": tail[2], "lost": False,
                        "path": _kept_path(target.path, tail[0])}
        else:
            raise AnsibleActionFail(
                "Nothing to roll over: the token names no journal and %s holds none. The next lifecycle task on "
                "this token starts its journal; nothing was changed." % target.path)
        if pin:
            previous.update(pinned_seq=pin["seq"], pinned_hash=pin["head_hash"])
            if pin.get("outcomes"):  # the token checks they are named: audit_verify looks for them in the old journal
                previous["outcomes"] = pin["outcomes"]
                source = previous["path"] if previous.get("in_place") else target.path
                lost = missing_outcomes(source, pin["outcomes"]) if not previous["lost"] else []
                if lost:  # declared, so that the old journal verifies with the loss on record
                    previous["lost_outcomes"] = lost
        return previous, proof, superseded

    def write_intent(self, journal, controller_context, extra, module_args, task_vars):
        state = self._rollover
        target = state["target"]
        pin = self._token_pin(module_args, task_vars)
        previous, proof, superseded = self._previous_journal(target, pin, module_args)
        section = dict(extra, previous_journal=previous)
        if superseded:
            section["superseded_journal"] = superseded
        for option in ("approved_by", "change_ref"):
            if isinstance(module_args.get(option), str):
                section[option] = module_args[option]
        genesis = build_event(self.AUDIT_ACTION, "unknown", controller_context, phase="intent",
                              reason=str(module_args.get("reason") or ""), extra=section)
        # the new journal is written next to the old one; it takes the old one's place once the token pinned it
        staging = Journal(target.path + ".rollover")
        if staging.exists():
            os.replace(staging.path, _kept_path(target.path, "rollover-abandoned-%d" % os.getpid()))
        intent = staging.append([genesis], context=controller_context)[-1]
        state.update(staging=staging, previous=previous, proof=proof, superseded=superseded, intent=intent)
        return staging, intent

    def module_audit_context(self, journal, intent, context, module_args):
        state = self._rollover
        audit_context = dict(context, intent_id=intent.record_id, journal_id=intent.journal_id, intent_seq=intent.seq,
                             intent_hash=intent.hash,
                             journal_proof={"start_seq": 0, "start_hash": GENESIS_HASH,
                                            "digests": [record_digest(intent.line)]},
                             journal_rollover={"genesis": intent.line})
        if state["proof"]:
            audit_context["journal_rollover"]["previous_proof"] = state["proof"]
        return audit_context

    def journal_after_module(self, journal, module_result):
        """Once the token pinned the new journal, keep the old one aside and move the new one into place."""
        state = self._rollover
        staging, target = state["staging"], state["target"]
        if module_result.get("failed"):
            kept = _kept_path(target.path, "rollover-%s" % state["intent"].journal_id)
            os.replace(staging.path, kept)
            module_result["msg"] = "%s The old journal is unchanged at %s; this attempt is kept in %s." % (
                module_result.get("msg", ""), target.path, kept)
            return Journal(kept)
        fd = os.open(target.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            kept = None
            if target.exists():
                aside = state["superseded"] or state["previous"]
                # a previous journal continued in place stays where it is: what is at the path is set aside
                kept = None if aside.get("in_place") else aside.get("path")
                kept = kept or _kept_path(target.path, "superseded-%s" % aside["journal_id"])
                os.replace(target.path, kept)
                _move_shipping_cursors(target.path, kept)
            os.replace(staging.path, target.path)
            directory = os.open(os.path.dirname(target.path), os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        finally:
            os.close(fd)
        for leftover in (staging.lock_path,):
            if os.path.exists(leftover):
                os.unlink(leftover)
        register_journal(target.path)
        if kept:  # the callback still ships what the old journal holds and the stores have not acknowledged yet
            register_journal(kept)
        module_result.update(journal=target.path, journal_id=state["intent"].journal_id,
                             previous_journal=state["previous"])
        if state["superseded"]:
            module_result["superseded_journal"] = state["superseded"]
        return target

    def run(self, tmp=None, task_vars=None):
        self._rollover = {}
        return super().run(tmp, task_vars)
