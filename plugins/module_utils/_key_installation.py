# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The recipient side of distribution: enroll a transport key, install and withdraw key versions.

PRIVATE: not part of the public interface. The work of recipient_enroll and key_install.

Installing is all-or-nothing per task: every package is checked, unwrapped into a
session object and its key check value recomputed by the recipient's token before
any of them is stored. A package that does not unwrap (made for another transport
key, or altered) or whose check value differs stops the task with nothing stored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    InvalidOption,
    KeyConflict,
    KeyNotFound,
    PackageRejected,
    TokenOperationFailed,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import version_label
from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import (
    check_transport_strength,
    decode_wrapped,
    public_key_pem,
    validate_package,
    validate_version_ref,
)


@dataclass
class InstallResult:
    changed: bool = False
    audit_events: list = field(default_factory=list)
    plan: list = field(default_factory=list)
    diff: dict | None = None


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


def enroll(store, key_size, min_rsa_bits, context, check_mode):
    """Make sure the recipient's token holds a strong transport key pair; return (result, transport record)."""
    result = InstallResult()
    transport = store.transport
    if transport is not None:
        check_transport_strength(transport.public_key, "transport key %r on token %r"
                                 % (transport.label, store.token_label), min_rsa_bits)
        result.plan.append({"action": "none", "label": transport.label})
        return result, transport.record(public_key_pem(transport.public_key))
    if key_size < max(3072, int(min_rsa_bits or 0)):
        raise InvalidOption("key_size %d is too small for a transport key: use 3072 or more." % key_size,
                            option="key_size")
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
    return result, transport.record(public_key_pem(transport.public_key))


def install(store, raw_packages, recipient, context, check_mode, now):
    """Install the packages' key versions (or apply their state change); all checked before any is stored."""
    transport = store.transport
    if transport is None:
        raise KeyNotFound("Token %r has no transport key %r: run recipient_enroll on this host first."
                          % (store.token_label, store.transport_label), option="transport_key_label")
    packages = [validate_package(raw, index, recipient) for index, raw in enumerate(raw_packages)]
    steps = []
    for index, package in enumerate(packages):
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
        if current is not None and not current.key_objects:
            raise KeyConflict("%s: the metadata says %s is installed but its key object is missing from token %r. "
                              "Withdraw it (state: absent) before installing again."
                              % (where, label, store.token_label),
                              option="packages")
        if current is None:
            action = "install"
            if package["wrapped"] is None and not check_mode:
                raise InvalidOption("%s carries no wrapped key, so it cannot be installed. Run key_distribute for "
                                    "real (not in check mode) and pass its packages." % where, option="packages")
        elif current.state != package["state"]:
            action = "update"
        else:
            action = "none"
        steps.append((package, current, action))

    result = InstallResult()
    result.plan = [{"name": p["name"], "version": p["version"], "id": p["id"], "state": p["state"],
                    "action": action} for p, _current, action in steps]
    result.changed = any(action != "none" for _p, _c, action in steps)
    result.diff = {"before": sorted(v.doc["name"] + ":v%d" % v.doc["version"] for v in store.installed()),
                   "after": sorted(set(v.doc["name"] + ":v%d" % v.doc["version"] for v in store.installed()) |
                                   set(version_label(p["name"], p["version"]) for p, _c, _a in steps))}
    if check_mode:
        return result

    checked = []
    try:
        for package, _current, action in steps:
            if action == "install":
                blob = decode_wrapped(package, "packages (%s)" % version_label(package["name"], package["version"]))
                checked.append((package, store.unwrap_checked(package, blob)))
    except Exception:
        for _package, session_key in checked:
            try:
                session_key.destroy()
            except Exception:  # pylint: disable=broad-except
                pass
        raise
    for package, session_key in checked:
        installed = store.store(package, session_key, now)
        result.audit_events.append(build_event("key-install", "success", context,
                                               key=_section(installed.doc, store.token_label),
                                               reason="unwrapped into the recipient's token; check value matches"))
    for package, current, action in steps:
        if action == "update":
            previous = current.state
            store.set_state(current, package["state"], now)
            section = dict(_section(current.doc, store.token_label), previous_state=previous)
            result.audit_events.append(build_event("key-update", "success", context, key=section,
                                                   reason="state at the recipient follows the HSM"))
    return result


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
    result.diff = {"before": sorted(v.doc["name"] + ":v%d" % v.doc["version"] for v in store.installed()),
                   "after": sorted(set(v.doc["name"] + ":v%d" % v.doc["version"] for v in store.installed()) -
                                   set(version_label(r["name"], r["version"]) for r, _c in targets))}
    if check_mode:
        return result
    for ref, current in targets:
        if current is None:
            raise KeyNotFound("%s has key objects but no recipient metadata on token %r; inspect the token before "
                              "removing it." % (version_label(ref["name"], ref["version"]), store.token_label),
                              option="versions")
        found = store.withdraw(current, now)
        if found:
            result.audit_events.append(build_event("key-withdraw", "failure", context,
                                                   key=_section(current.doc, store.token_label),
                                                   extra={"verified_absent": False}))
            exc = TokenOperationFailed("%s was destroyed but the token still holds %s; the version is not recorded "
                                       "as withdrawn." % (version_label(ref["name"], ref["version"]), ", ".join(found)))
            exc.audit_events, exc.changed = list(result.audit_events), True
            raise exc
        result.audit_events.append(build_event("key-withdraw", "success", context,
                                               key=_section(current.doc, store.token_label, state="destroyed"),
                                               reason="removed from the recipient's token",
                                               extra={"verified_absent": True}))
    return result
