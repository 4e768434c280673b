# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""A lease on the token: lifecycle runs from any number of controllers take turns.

PRIVATE: not part of the public interface. The protocol and its failure modes are
described in docs/concurrency.md.

Each contender writes its own lease document (``_token_objects.TOKEN_LEASE``, one
C_CreateObject, label ``lease:lifecycle``) and *then* enumerates the lease documents
with a fresh C_FindObjects, after starting the PKCS#11 library afresh (C_Finalize,
C_Initialize: SoftHSM2 otherwise misses another process's object made just before its
own). It holds the lease only if no other unexpired lease is on the token; otherwise
it destroys its own object, backs off for a random time and tries again until
``lease_wait`` runs out, then fails with ``TokenBusy`` having changed nothing. Of two
contenders, the one that enumerates last sees the other's object, so at most one
wins, provided an object made by C_CreateObject is seen by every other process's
C_FindObjects once the call has returned. The run's own session is opened after the
lease is taken, so its enumeration sees all the previous holder wrote.

A lease expires ``LEASE_TTL`` seconds after it was written. The holder renews it
(a new object, then the old one destroyed) when its work runs past a third of that,
and destroys it when it is done, on errors too. A lease whose holder died (SIGKILL,
power loss) is ignored by the next contender once expired, destroyed, and the
takeover is reported as an audit event.
"""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import Attribute, ObjectClass, p11_exc
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    InvalidOption,
    MetadataCorrupt,
    TokenBusy,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import load_library, open_session, pkcs11_errors
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
    TOKEN_LEASE,
    TokenObjects,
    find_objects,
)


LEASE_LABEL = "lease:lifecycle"
LEASE_SCHEMA = 1
#: seconds a lease stays valid after it was written (renewed after a third of it)
LEASE_TTL = 300
#: default and largest ``lease_wait`` (seconds a contender waits for the lease before it fails)
DEFAULT_LEASE_WAIT = 120
MAX_LEASE_WAIT = 3600
#: the audit action of a lease takeover, by module (the module's own action)
MODULE_ACTIONS = {
    "key_generate": "key-generate",
    "key_rotate": "key-rotate",
    "key_destroy": "key-destroy",
    "key_distribute": "key-distribute",
    "key_install": "key-install",
    "recipient_enroll": "transport-key-enroll",
    "key_replicate": "key-replicate",
    "replica_install": "replica-install",
}


def _iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


def _epoch(text):
    return datetime.fromisoformat(text).timestamp()


def validate_lease_wait(value):
    """``lease_wait`` in seconds: 0 (do not wait) to MAX_LEASE_WAIT; None means the default."""
    if value is None:
        return DEFAULT_LEASE_WAIT
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LEASE_WAIT:
        raise InvalidOption("lease_wait must be a whole number of seconds from 0 to %d, got %r."
                            % (MAX_LEASE_WAIT, value), option="lease_wait")
    return value


class TokenLease:
    """One lifecycle run's lease on one token.

    The lease is taken before the run's own session is opened (``acquire`` opens short sessions of its
    own and starts the PKCS#11 library afresh), attached to that session for renewals (``attach``) and
    released after it is closed (``release``). ``clock`` (epoch seconds, the wall clock: leases are
    compared across processes and hosts), ``monotonic`` and ``sleep`` are injectable for tests.
    """

    def __init__(self, settings, purpose, operator, host=None, ttl=LEASE_TTL,
                 clock=time.time, monotonic=time.monotonic, sleep=time.sleep):
        self.settings = settings
        self.token_label = settings.token_label
        self.purpose = purpose
        self.operator = operator
        self.host = host or socket.gethostname()
        self.ttl = ttl
        self.clock, self.monotonic, self.sleep = clock, monotonic, sleep
        self.holder = str(uuid.uuid4())
        self.held = False
        self.document = None
        self.session = None
        #: leases of dead holders this run took over: their documents
        self.takeovers = []
        self._renewed_at = None

    # ---- reading -------------------------------------------------------------------------------

    def _find(self, session):
        """``[(object, document)]`` of every lease on the token (a fresh C_FindObjects, no cached index).

        An object that cannot be decoded counts as a live lease of an unknown holder: it may be a
        contender's object being written.
        """
        found = []
        with pkcs11_errors("C_FindObjects (token lease)", token_label=self.token_label):
            objects = find_objects(session, {Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: LEASE_LABEL,
                                             Attribute.APPLICATION: TOKEN_LEASE.application})
        for obj in objects:
            try:
                doc = TOKEN_LEASE.decode(LEASE_LABEL, obj[Attribute.VALUE])
            except p11_exc.ObjectHandleInvalid:  # destroyed by its holder since the enumeration
                continue
            except (MetadataCorrupt, p11_exc.PKCS11Error):
                doc = {"holder": "(unreadable lease object)", "operator": "unknown", "host": "unknown", "pid": 0,
                       "purpose": "unknown", "acquired_at": "", "expires_at": _iso(self.clock() + self.ttl)}
            found.append((obj, doc))
        return found

    def others(self, session):
        """The lease documents of other holders on the token now: ``[(object, document)]``."""
        return [(obj, doc) for obj, doc in self._find(session) if doc["holder"] != self.holder]

    def _mine(self, session):
        return [obj for obj, doc in self._find(session) if doc["holder"] == self.holder]

    def _expired(self, doc):
        return _epoch(doc["expires_at"]) <= self.clock()

    # ---- taking, keeping and giving back -------------------------------------------------------

    def _write(self, session, revision):
        now = self.clock()
        doc = {"schema": LEASE_SCHEMA, "holder": self.holder, "operator": str(self.operator), "host": self.host,
               "pid": os.getpid(), "purpose": self.purpose, "revision": revision,
               "acquired_at": self.document["acquired_at"] if self.document else _iso(now),
               "expires_at": _iso(now + self.ttl)}
        obj = TokenObjects(session, self.token_label).write(
            TOKEN_LEASE, LEASE_LABEL, doc, operation="C_CreateObject (token lease)")
        self._renewed_at = now
        return obj, doc

    def _destroy(self, objects):
        with pkcs11_errors("C_DestroyObject (token lease)", token_label=self.token_label):
            for obj in objects:
                try:
                    obj.destroy()
                except p11_exc.ObjectHandleInvalid:  # already gone
                    pass

    def _fresh_view(self):
        """Start the PKCS#11 library afresh (C_Finalize, C_Initialize), so that the next C_FindObjects reads the
        token as it is now.

        SoftHSM2's file store keeps each process's list of objects and re-reads the token folder only when a
        generation counter changed since it last looked; its own C_CreateObject advances that counter past a
        change another process made just before, which then stays unseen. docs/concurrency.md.
        """
        with pkcs11_errors("C_Finalize/C_Initialize", token_label=self.token_label):
            load_library(self.settings.pkcs11_module).reinitialize()

    def acquire(self, wait=DEFAULT_LEASE_WAIT):
        """Take the lease, waiting up to ``wait`` seconds for another holder; TokenBusy if it is still held.

        No session of this process may be open: the library is started afresh before each look.
        """
        deadline = self.monotonic() + wait
        attempt = 0
        while True:
            with open_session(self.settings) as session:
                _obj, doc = self._write(session, 1)
            self._fresh_view()
            with open_session(self.settings) as session:
                try:
                    others = self.others(session)
                    live = [(o, d) for o, d in others if not self._expired(d)]
                    if not live:
                        self.document, self.held = doc, True
                        for other, expired in others:
                            self._take_over(other, expired)
                        return self
                finally:
                    if not self.held:
                        self._destroy(self._mine(session))
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                raise self._busy(live, wait)
            attempt += 1
            self.sleep(min(remaining, random.uniform(0.05, min(2.0, 0.1 * 2 ** attempt))))

    def _take_over(self, obj, doc):
        try:
            obj.destroy()
        except p11_exc.PKCS11Error:  # another contender destroyed it first; it is gone all the same
            pass
        self.takeovers.append(doc)

    def _busy(self, live, wait):
        _obj, doc = min(live, key=lambda item: item[1]["expires_at"])
        return TokenBusy(
            "Token %r is busy: another lifecycle run holds its lease (holder %s: %s by %s on host %s, pid %s, since "
            "%s) until %s. Waited %d s (lease_wait); nothing was changed. Run the task again when that run has "
            "finished; a lease whose holder died expires by itself at that time."
            % (self.token_label, doc["holder"], doc["purpose"], doc["operator"], doc["host"], doc["pid"],
               doc["acquired_at"] or "unknown", doc["expires_at"], wait), option="lease_wait")

    def attach(self, session):
        """The session the run works in: renewals are written there."""
        self.session = session
        return self

    def renew(self):
        """Write a new revision of the lease (a later expiry), then destroy the previous objects."""
        older = self._mine(self.session)
        _obj, self.document = self._write(self.session, self.document["revision"] + 1)
        self._destroy(older)

    def check(self):
        """Before a change: renew the lease past a third of its time; refuse to go on once it has expired.

        An expired lease may have been taken over by another run, so nothing more may be written.
        """
        if not self.held:
            return
        now = self.clock()
        if now >= _epoch(self.document["expires_at"]):
            self.held = False
            raise TokenBusy(
                "The lease on token %r expired at %s while this run was working (it was not renewed in time); "
                "another run may hold the token now, so this run stopped before its next change. Run the task "
                "again: it repairs what was left half-made." % (self.token_label, self.document["expires_at"]))
        if now - self._renewed_at >= self.ttl / 3.0 and self.session is not None:
            self.renew()

    def release(self):
        """Destroy this run's lease objects, in a session of its own (best effort: a lease left behind expires).

        Call it after the run's own session is closed.
        """
        self.held, self.session = False, None
        try:
            with open_session(self.settings) as session:
                self._destroy(self._mine(session))
        except Exception:  # pylint: disable=broad-except
            pass  # the token went away: the lease expires by itself

    # ---- reporting -----------------------------------------------------------------------------

    def takeover_events(self, context, action):
        """One audit event per expired lease this run took over."""
        events = []
        for doc in self.takeovers:
            reason = "lease of %s (%s@%s) expired at %s, taken over" % (
                doc["holder"], doc["operator"], doc["host"], doc["expires_at"])
            if len(reason) > 128:
                reason = "lease of %s expired at %s, taken over" % (doc["holder"][:40], doc["expires_at"][:30])
            events.append(build_event(action, "success", context, reason=reason,
                                      key={"label": LEASE_LABEL, "token": self.token_label}))
        return events


class NoLease:
    """Check mode: nothing is written, so no lease is taken."""

    held = False
    takeovers = ()

    def attach(self, session):
        return self

    def check(self):
        pass

    def takeover_events(self, context, action):
        return []


def module_action(module):
    """The audit action of a module (``secops.keylifecycle.key_rotate`` -> ``key-rotate``)."""
    name = str(getattr(module, "_name", "") or "").rsplit(".", 1)[-1]
    return MODULE_ACTIONS.get(name, "key-update")


@contextmanager
def lifecycle_lease(settings, module, context):
    """Hold the token's lease around a state-changing module's work (none in check mode).

    Enter it before the module's session is opened, and ``attach`` that session; the lease is
    released after the session is closed, on errors too. Yields the lease (or ``NoLease``).
    """
    if module.check_mode:
        yield NoLease()
        return
    wait = validate_lease_wait(module.params.get("lease_wait"))
    name = str(getattr(module, "_name", "") or "lifecycle").rsplit(".", 1)[-1]
    lease = TokenLease(settings, name, context.operator, host=context.host).acquire(wait)
    try:
        yield lease
    finally:
        lease.release()
