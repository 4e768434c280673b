# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The recipient side of distribution: enroll a transport key, install and withdraw key versions.

PRIVATE: not part of the public interface. The work of recipient_enroll and key_install.

Installing is all-or-nothing per task: every package's HSM signature is verified
against the package signer pinned in the recipient's token, then each is unwrapped
into a session object (template from the verified metadata only) and its key check
value recomputed by the recipient's token, before any of them is stored. A package
that is unsigned or altered (relabelled, usage widened, state changed), meant for
another recipient, older than the one last applied, that does not unwrap, or whose
check value differs stops the task with nothing stored.

Signer rollover: when the packages name a signer other than the pinned one and the HSM's
``package_signer`` record is given, its certificates are followed from the pinned signer
(``_package_signing.follow_certificates``); the packages are verified with the signer the
chain reaches, and only once every package has unwrapped and checked is that signer pinned
in place of the old one (journaled ``package-signer-pin``). ``recipient_enroll`` follows the
same chain when it is given a signer other than the one pinned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    InvalidOption,
    KeyConflict,
    KeyLifecycleError,
    KeyNotFound,
    PackageRejected,
    PolicyViolation,
    TokenOperationFailed,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import format_time, utc_now, version_label
from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import (
    follow_certificates,
    verify_package,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._pinned_signer import (
    PACKAGE_SIGNER_LABEL,
    load_signer_key,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import public_key_pem
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_probe import probe_unwrap_oaep
from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import (
    check_transport_strength,
    decode_wrapped,
    validate_package,
    validate_version_ref,
)


#: how far ahead of this host's clock a package's ``signed_at`` may be (clock skew between the HSM host and here)
MAX_CLOCK_SKEW = timedelta(minutes=5)


@dataclass
class InstallResult:
    changed: bool = False
    audit_events: list = field(default_factory=list)
    plan: list = field(default_factory=list)
    diff: dict | None = None
    #: the signer rollover of this task (``previous_fingerprint``, ``fingerprint``), or None
    rollover: dict | None = None


def _section(doc, token_label, state=None):
    section = {"name": doc["name"], "version": doc["version"], "id": doc["id"],
               "label": version_label(doc["name"], doc["version"]), "type": doc["type"], "size": doc["size"],
               "state": state or doc["state"], "token": token_label, "check_value": doc["key_check_value"],
               "recipient": doc["recipient"]}
    if doc.get("mechanism"):
        section["mechanism"] = doc["mechanism"]
    if doc.get("transport_key_fingerprint"):
        section["transport_key_fingerprint"] = doc["transport_key_fingerprint"]
    return section


def _held_labels(store):
    """Labels of the versions the recipient's token holds now (for the diff)."""
    return {version_label(v.doc["name"], v.doc["version"]) for v in store.installed()}


def enroll(store, key_size, min_rsa_bits, context, check_mode, accept_exportable=False):
    """Make sure the recipient's token holds a strong transport key pair; return (result, transport record)."""
    result = InstallResult()
    transport = store.transport
    if transport is not None:
        where = "transport key %r on token %r" % (transport.label, store.token_label)
        check_transport_strength(transport.public_key, where, min_rsa_bits)
        if transport.exportable and not accept_exportable:
            raise PolicyViolation(
                "%s: its private half is not a sensitive, never-extractable key generated inside the token "
                "(CKA_SENSITIVE/CKA_EXTRACTABLE/CKA_ALWAYS_SENSITIVE/CKA_NEVER_EXTRACTABLE), so someone may hold a "
                "copy and unwrap every package. Remove the pair from the token and run recipient_enroll again to "
                "generate one inside it." % where, option="transport_key_label")
        result.plan.append({"action": "none", "label": transport.label})
        return result, _transport_record(store, transport)
    minimum = max(3072, int(min_rsa_bits or 0))
    if key_size < minimum:
        raise InvalidOption("key_size %d is too small for a transport key: use %d or more (policy.min_rsa_bits and "
                            "the collection's floor of 3072)." % (key_size, minimum), option="key_size")
    result.changed = True
    result.plan.append({"action": "generate", "label": store.transport_label, "size": key_size})
    if check_mode:
        return result, None
    transport = store.generate_transport(key_size, os.urandom(16))
    result.audit_events.append(build_event(
        "transport-key-enroll", "success", context,
        key={"label": transport.label, "id": transport.key_id, "type": "rsa", "size": transport.size,
             "token": store.token_label, "state": "active", "public_key_fingerprint": transport.fingerprint},
        reason="recipient transport key generated in the recipient's token"))
    return result, _transport_record(store, transport)


def _transport_record(store, transport):
    """What recipient_enroll returns of the transport key, with the OAEP hashes it unwraps with (strongest first):
    key_distribute's ``oaep_hash: auto`` picks one this token can unwrap from them (``recipients[].oaep_hashes``)."""
    record = transport.record(public_key_pem(transport.public_key))
    record["oaep_hashes"] = probe_unwrap_oaep(transport.private, transport.public_key, store.token_label)
    return record


def _signer_key(raw):
    """The ``package_signer`` option: the HSM's signing public key (EC P-256 or stronger, or RSA of 3072 bits or more),
    checked against its pin if one is given."""
    if not isinstance(raw, dict) or not isinstance(raw.get("public_key_pem"), str):
        raise InvalidOption("package_signer must be a dict with public_key_pem: the package_signer that key_info "
                            "returns on the HSM host.", option="package_signer")
    return load_signer_key(raw["public_key_pem"], raw.get("fingerprint"), "package_signer")


def check_package_signer_option(raw):
    """Refuse a malformed ``package_signer`` option before the token is opened (nothing is enrolled then)."""
    if raw is not None:
        _signer_key(raw)


def pin_package_signer(store, raw, context, check_mode, result):
    """Pin the HSM's package signer in the recipient's token (once); return what is pinned (a dict) or None.

    ``raw``: the ``package_signer`` option, or None to only report what is pinned. A different signer already
    pinned is refused: the HSM's signer changed, which the Security Officer confirms before it is pinned again.
    """
    pinned = store.package_signer
    if raw is None:
        return pinned.record() if pinned else None
    public_key, fingerprint = _signer_key(raw)
    if pinned is not None and pinned.fingerprint != fingerprint and raw.get("certificates"):
        rollover = _rollover(pinned, raw, fingerprint)
        result.changed = True
        result.plan.append({"action": "pin", "label": pinned.label, "fingerprint": fingerprint,
                            "previous_fingerprint": pinned.fingerprint})
        return pinned.record() if check_mode else _roll_over(store, rollover, context, result).record()
    if pinned is not None:
        if pinned.fingerprint != fingerprint:
            raise PolicyViolation(
                "package_signer: this token already pins the HSM's package signer %s, but %s was given: the HSM's "
                "package-signing key changed (another HSM, or a new key) and no certificate chain "
                "(package_signer.certificates) leads to it. Nothing was changed. Confirm the new signer's fingerprint "
                "with the Security Officer, then remove the pinned object %r from token %r (pkcs11-tool "
                "--delete-object --type pubkey --label %s) and run recipient_enroll again."
                % (pinned.fingerprint, fingerprint, pinned.label, store.token_label, pinned.label),
                option="package_signer")
        result.plan.append({"action": "none", "label": pinned.label, "fingerprint": pinned.fingerprint})
        return pinned.record()
    result.changed = True
    result.plan.append({"action": "pin", "label": PACKAGE_SIGNER_LABEL, "fingerprint": fingerprint})
    if check_mode:
        return None
    return _pin(store, public_key, context, result,
                "the HSM's package-signing public key pinned in the recipient's token").record()


def _pin(store, public_key, context, result, reason):
    """Pin ``public_key`` (in place of the signer pinned before, if any) and journal ``package-signer-pin``."""
    pinned = store.pin_signer(public_key, os.urandom(16))
    result.audit_events.append(build_event(
        "package-signer-pin", "success", context,
        key={"label": pinned.label, "id": pinned.key_id, "type": pinned.type, "curve": pinned.curve,
             "token": store.token_label, "state": "active", "public_key_fingerprint": pinned.fingerprint,
             "package_signer_fingerprint": pinned.fingerprint},
        reason=reason))
    return pinned


@dataclass(frozen=True)
class Rollover:
    """A new signer reached by a verified certificate chain from the pinned one."""

    previous: str
    fingerprint: str
    public_key: object

    def record(self):
        return {"previous_fingerprint": self.previous, "fingerprint": self.fingerprint}


def _rollover(pinned, raw, fingerprint):
    """The ``Rollover`` to the signer ``fingerprint`` certified from the pinned one (PackageRejected if not)."""
    certified = follow_certificates(pinned.public_key, raw.get("certificates"), fingerprint)
    return Rollover(previous=pinned.fingerprint, fingerprint=fingerprint, public_key=certified)


def _roll_over(store, rollover, context, result):
    """Pin the rolled-over signer (the chain was verified); journaled with the signer that certified it."""
    return _pin(store, rollover.public_key, context, result, "rollover certified by %s" % rollover.previous)


def _batch_rollover(signer, raw_signer, packages):
    """The rollover the packages need: they name the HSM's current signer (``raw_signer``), not the pinned one."""
    if raw_signer is None:
        return None
    fingerprint = _signer_key(raw_signer)[1]
    if fingerprint == signer.fingerprint or all(p["signer_fingerprint"] != fingerprint for p in packages):
        return None
    return _rollover(signer, raw_signer, fingerprint)


def _check_batch(store, raw_packages, recipient, raw_signer=None):
    """The batch as a whole: a transport key to unwrap with, a pinned signer (or one certified from it), signed
    packages, each version once. Returns ``(transport, packages, rollover or None)``."""
    transport = store.transport
    if transport is None:
        raise KeyNotFound("Token %r has no transport key %r: run recipient_enroll on this host first."
                          % (store.token_label, store.transport_label), option="transport_key_label")
    signer = store.package_signer
    if signer is None:
        raise PackageRejected(
            "Token %r pins no package signer, so no package can be verified. Nothing was installed. Run "
            "recipient_enroll on this host with package_signer (the package_signer that key_info returns on the "
            "HSM host), then key_install again." % store.token_label, option="packages")
    packages = [validate_package(raw, index, recipient) for index, raw in enumerate(raw_packages)]
    rollover = _batch_rollover(signer, raw_signer, packages)
    for index, package in enumerate(packages):
        verify_package(package, rollover.public_key if rollover else signer.public_key,
                       "packages[%d] (%s)" % (index, version_label(package["name"], package["version"])))
    labels = [version_label(p["name"], p["version"]) for p in packages]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise InvalidOption("packages lists %s more than once; pass each version once." % ", ".join(repeated),
                            option="packages")
    return transport, packages, rollover


def _check_package(store, package, index, transport, held_kcv, check_mode):
    """One package against what the token holds; return (current version or None, action)."""
    label = version_label(package["name"], package["version"])
    where = "packages[%d] (%s)" % (index, label)
    if package["transport_key_fingerprint"] != transport.fingerprint:
        raise PackageRejected(
            "%s was wrapped for transport key %s, but this host's transport key is %s: it is meant for another "
            "recipient, or this host was enrolled again. Nothing was installed. Run key_distribute with this "
            "host's current transport key." % (where, package["transport_key_fingerprint"], transport.fingerprint),
            option="packages")
    current = store.get(package["name"], package["version"])
    if current is not None and current.state == "destroyed":
        raise PackageRejected("%s was withdrawn from this recipient on %s; a withdrawn version is never "
                              "installed again. Nothing was installed." % (where, current.doc.get("withdrawn_at")),
                              option="packages")
    if current is not None and (current.doc["id"] != package["id"]
                                or current.doc["key_check_value"] != package["key_check_value"]):
        raise KeyConflict("%s: this token already holds %s with id %s and check value %s; the package carries id "
                          "%s and check value %s. Nothing was installed." %
                          (where, label, current.doc["id"], current.doc["key_check_value"], package["id"],
                           package["key_check_value"]), option="packages")
    if held_kcv.get(package["key_check_value"], label) != label:
        raise PackageRejected("%s carries check value %s, which this token already holds as %s: the package was "
                              "relabelled. Nothing was installed." % (where, package["key_check_value"],
                                                                      held_kcv[package["key_check_value"]]),
                              option="packages")
    _refuse_future(package, where, label)
    applied = current.doc.get("package_signed_at") if current is not None else None
    if applied and datetime.fromisoformat(package["signed_at"]) < datetime.fromisoformat(applied):
        raise PackageRejected(
            "%s was signed by the HSM at %s, before the package last applied to %s (signed at %s): it is an older "
            "package replayed. Nothing was installed. Pass the packages of the latest key_distribute."
            % (where, package["signed_at"], label, applied), option="packages")
    if applied == package["signed_at"] and current.key_objects:
        return current, "none"  # the package applied last, again
    if current is not None and current.state == "deactivated" and package["state"] == "active":
        raise PackageRejected("%s would make %s active again, but a deactivated version never becomes active: the "
                              "package is stale or was altered. Run key_distribute again. Nothing was installed."
                              % (where, label), option="packages")
    if current is None or not current.key_objects:
        # new, or a repair of a version whose key object went missing
        if package["wrapped"] is None and not check_mode:
            raise InvalidOption("%s carries no wrapped key, so it cannot be installed. Run key_distribute for "
                                "real (not in check mode) and pass its packages." % where, option="packages")
        return current, "install"
    return current, "update" if current.state != package["state"] else "none"


def _refuse_future(package, where, label):
    """A package signed after this host's time (beyond ``MAX_CLOCK_SKEW``) is refused: once applied, its time would
    make every genuine later package of the version look like an older one replayed, so the version would stay as
    that package left it. Only whoever can sign with the HSM's package-signing key can make one."""
    now = utc_now()
    if datetime.fromisoformat(package["signed_at"]) > now + MAX_CLOCK_SKEW:
        raise PackageRejected(
            "%s was signed at %s, later than this host's time (%s) by more than %d minutes: the HSM host's "
            "clock is ahead, or the time was forged. Applied, it would make every later package of %s look like an "
            "older one replayed. Nothing was installed. Check both hosts' clocks (NTP) and run key_distribute again."
            % (where, package["signed_at"], format_time(now), MAX_CLOCK_SKEW.total_seconds() // 60, label),
            option="packages")


def plan_install(store, raw_packages, recipient, check_mode, raw_signer=None):
    """Check every package before anything is unwrapped; return ([(package, current, action)], rollover or None)."""
    transport, packages, rollover = _check_batch(store, raw_packages, recipient, raw_signer)
    held_kcv = {v.doc["key_check_value"]: version_label(v.doc["name"], v.doc["version"]) for v in store.installed()}
    return [(package,) + _check_package(store, package, index, transport, held_kcv, check_mode)
            for index, package in enumerate(packages)], rollover


def _unwrap_all(store, steps):
    """Unwrap every new version into a session object (check value recomputed); on any failure, none remain."""
    checked = []
    try:
        for package, current, action in steps:
            if action == "install":
                blob = decode_wrapped(package, "packages (%s)" % version_label(package["name"], package["version"]))
                checked.append((package, current, store.unwrap_checked(package, blob)))
    except Exception:
        for _package, _current, session_key in checked:
            try:
                session_key.destroy()
            except Exception:  # pylint: disable=broad-except
                pass
        raise
    return checked


def _apply_install(store, steps, checked, context, now, result, rollover=None):
    """Pin the rolled-over signer, store the unwrapped versions, then follow the HSM's state changes; one audit
    event each."""
    try:
        if rollover is not None:
            _roll_over(store, rollover, context, result)
        for package, current, session_key in checked:
            installed = store.store(package, session_key, now, current=current)
            result.audit_events.append(build_event(
                "key-install", "success", context, key=_section(installed.doc, store.token_label),
                reason="unwrapped into the recipient's token; check value matches" + (
                    " (repair: the key object was missing)" if current is not None else "")))
        for package, current, action in steps:
            if action == "update":
                previous = current.state
                store.set_state(current, package["state"], now, signed_at=package["signed_at"])
                section = dict(_section(current.doc, store.token_label), previous_state=previous)
                result.audit_events.append(build_event("key-update", "success", context, key=section,
                                                       reason="state at the recipient follows the HSM"))
    except KeyLifecycleError as exc:
        # some versions are stored already: the failure result carries their events, so they are journaled
        exc.audit_events, exc.changed = list(result.audit_events), bool(result.audit_events)
        raise


def install(store, raw_packages, recipient, context, check_mode, now, raw_signer=None):
    """Install the packages' key versions (or apply their state change); all checked before any is stored.

    ``raw_signer``: the HSM's ``package_signer`` record (with its certificates), for a signer rollover.
    """
    steps, rollover = plan_install(store, raw_packages, recipient, check_mode, raw_signer)
    result = InstallResult(rollover=rollover.record() if rollover else None)
    result.plan = [{"name": p["name"], "version": p["version"], "id": p["id"], "state": p["state"],
                    "action": action} for p, _current, action in steps]
    result.changed = rollover is not None or any(action != "none" for _p, _c, action in steps)
    result.diff = _install_diff(store, steps, rollover)
    if check_mode:
        return result
    _apply_install(store, steps, _unwrap_all(store, steps), context, now, result, rollover)
    return result


def _install_diff(store, steps, rollover):
    """``<label> <state>`` of every version held before and after, so a state the HSM changed (deactivated,
    compromised) shows as well as a new version; and the pinned package signer when it rolls over."""
    before = {version_label(v.doc["name"], v.doc["version"]): v.state for v in store.installed()}
    after = dict(before)
    after.update({version_label(p["name"], p["version"]): p["state"] for p, _current, action in steps
                  if action != "none"})
    diff = {"before": sorted("%s %s" % item for item in before.items()),
            "after": sorted("%s %s" % item for item in after.items())}
    if rollover is not None:
        diff["before"].append("package signer %s" % rollover.previous)
        diff["after"].append("package signer %s" % rollover.fingerprint)
    return diff


def withdraw(store, raw_versions, context, check_mode, now):
    """Remove versions from the recipient's token (cryptographic erasure there) and verify they are gone."""
    refs = [validate_version_ref(raw, index) for index, raw in enumerate(raw_versions)]
    result = InstallResult()
    targets = []
    for ref in refs:
        current = store.get(ref["name"], ref["version"])
        label = version_label(ref["name"], ref["version"])
        orphan = label in store.orphan_labels()
        if current is not None and ref["id"] and current.doc["id"] != ref["id"]:
            raise KeyConflict("versions: %s on this token has id %s, not %s; nothing was removed."
                              % (label, current.doc["id"], ref["id"]), option="versions")
        if (current is not None and (current.present or current.key_objects)) or orphan:
            targets.append((ref, current))
            result.plan.append(dict(ref, action="withdraw"))
        else:
            result.plan.append(dict(ref, action="none"))
    result.changed = bool(targets)
    held = _held_labels(store)
    result.diff = {"before": sorted(held),
                   "after": sorted(held - set(version_label(r["name"], r["version"]) for r, _c in targets))}
    for ref, current in targets:  # every target is checked before anything is destroyed
        if current is None:
            raise KeyNotFound("%s has key objects but no recipient metadata on token %r; inspect the token before "
                              "removing it. Nothing was removed." % (version_label(ref["name"], ref["version"]),
                                                                     store.token_label), option="versions")
    if check_mode:
        return result
    try:
        for ref, current in targets:
            found = store.withdraw(current, now)
            if found:
                result.audit_events.append(build_event("key-withdraw", "failure", context,
                                                       key=_section(current.doc, store.token_label),
                                                       extra={"verified_absent": False}))
                exc = TokenOperationFailed(
                    "%s was destroyed but the token still holds %s; the version is not recorded as withdrawn."
                    % (version_label(ref["name"], ref["version"]), ", ".join(found)))
                exc.audit_events, exc.changed = list(result.audit_events), True
                raise exc
            result.audit_events.append(build_event("key-withdraw", "success", context,
                                                   key=_section(current.doc, store.token_label, state="destroyed"),
                                                   reason="removed from the recipient's token",
                                                   extra={"verified_absent": True}))
    except KeyLifecycleError as exc:
        if not getattr(exc, "audit_events", None):
            exc.audit_events, exc.changed = list(result.audit_events), bool(result.audit_events)
        raise
    return result
