# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Plan and wrap the key versions each recipient must hold (the work of key_distribute).

PRIVATE: not part of the public interface.

For each recipient, the keys it may hold are the distributable AES keys whose spec
lists it in ``recipients`` (or the subset the task names). It must hold each such
key's active version and its deactivated versions still inside retention; it must
not hold versions destroyed or compromised upstream, nor versions of a key that no
longer lists it. Versions the recipient reports as already installed (same id,
same check value, same state) are not wrapped again.

Wrapping is C_WrapKey(CKM_RSA_PKCS_OAEP) under the recipient's trusted transport
key: the key the Security Officer installed in the token for that recipient and host
(``_trusted_keys``, CKA_TRUSTED true), found by the fingerprint of the recipient's
enrolled public key. The PEM in the play only selects that key; it is never imported.
Distributable keys carry CKA_WRAP_WITH_TRUSTED, so the token itself refuses to wrap
them under anything else. A recipient with a package to wrap and no approved key is
refused in planning, before any wrap (check mode too). Only where
``policy.require_trusted_wrapping`` is off (development tokens) does a recipient
without an approved key get the old path: its transport key imported as a session
object, each wrap journaled with ``trusted_wrapping: false`` and a warning.

The OAEP hash is chosen per recipient (``choose_oaep_hashes``): the strongest the HSM wraps with (or the one
pinned) that the recipient's token unwraps with (``oaep_hashes`` from recipient_enroll, probed there); a recipient
with a key to wrap and no hash in common is refused before any wrap.

Versions sealed at the migration to trusted wrapping (not extractable) are ``blocked``
for recipients that do not hold them. After wrapping, every package is signed by the
HSM's package-signing key (``_package_signing``). The HSM host never sees the key in
plaintext; the wrapped bytes are the only key-derived data that leave the token.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event, key_section
from ansible_collections.secops.keylifecycle.plugins.module_utils._dependencies import Mechanism, p11_exc
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    CapabilityMissing,
    InvalidOption,
    KeyNotFound,
    MechanismUnsupported,
    PolicyViolation,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import pkcs11_errors
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import format_time, validate_name
from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import (
    ensure_package_signer,
    signer_record,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._trusted_keys import (
    TrustedKeysUnsupported,
    find_trusted_transport_keys,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import (
    FINGERPRINT_RE,
    OAEP_HASHES,
    PACKAGE_FORMAT,
    load_transport_public_key,
    mechanism_name,
    oaep_parameters,
)


WITHDRAWN_STATES = ("destroyed", "compromised")
SEALED_WHY = "not extractable: sealed at the migration to trusted wrapping"
UNTRUSTED_WARNING = ("wrapped under a transport key the Security Officer did not approve: "
                     "policy.require_trusted_wrapping is off (development only)")


@dataclass
class Recipient:
    name: str
    host: str
    public_key: object
    fingerprint: str
    keys: tuple | None
    installed: dict  # (name, version) -> {"id", "key_check_value", "state"}
    oaep_hashes: tuple | None = None  # the OAEP hashes its token unwraps with (recipient_enroll); None: not stated


@dataclass
class RecipientPlan:
    recipient: Recipient
    packages: list = field(default_factory=list)   # (version, action) with action install | update
    withdrawn: list = field(default_factory=list)  # dicts: name, version, id, state, why
    held: list = field(default_factory=list)       # versions already installed as they should be
    blocked: list = field(default_factory=list)    # versions it should hold but withdrew earlier, or sealed
    trusted_key: object = None  # its approved transport key (_trusted_keys.TrustedTransportKey), or None
    oaep_hash: str | None = None  # the OAEP hash its packages are wrapped with (choose_oaep_hashes)

    def installs(self):
        return [version for version, action in self.packages if action == "install"]

    def as_dict(self, wrapped, mechanism):
        return {
            "name": self.recipient.name,
            "host": self.recipient.host,
            "transport_key_fingerprint": self.recipient.fingerprint,
            "trusted_key_label": self.trusted_key.label if self.trusted_key is not None else None,
            "oaep_hash": self.oaep_hash,
            "packages": [self.package(version, action, wrapped.get((version.name, version.version)), mechanism)
                         for version, action in self.packages],
            "withdrawn": list(self.withdrawn),
            "unchanged": [{"name": v.name, "version": v.version, "id": v.key_id} for v in self.held],
            "blocked": list(self.blocked),
        }

    def package(self, version, action, blob, mechanism):
        return {
            "format": PACKAGE_FORMAT,
            "action": action,
            "recipient": self.recipient.name,
            "recipient_host": self.recipient.host,
            "transport_key_fingerprint": self.recipient.fingerprint,
            **version.identity(),
            "usage": list(version.spec.usage),
            "state": version.state,
            "retain_until": format_time(version.retain_until),
            "key_check_value": version.key_check_value,
            "mechanism": mechanism,
            "oaep_hash": mechanism.split(":", 1)[1],
            "wrapped": base64.b64encode(blob).decode("ascii") if blob is not None else None,
        }


@dataclass
class DistributionResult:
    recipients: list
    audit_events: list
    diff: dict
    changed: bool = False  # true only when the package-signing key was generated
    package_signer: dict | None = None  # its public record (null in check mode before it exists)
    warnings: list = field(default_factory=list)  # one per recipient wrapped under an unapproved key (policy off)


def parse_recipients(raw_recipients, policy):
    """Validate the ``recipients`` option: names, hosts, transport public keys, pinned fingerprints.

    A recipient is one host of a service: several hosts may serve one recipient name (each with its own transport
    key and its own copies), but each host is listed once.
    """
    recipients, seen = [], set()
    for index, raw in enumerate(raw_recipients):
        where = "recipients[%d]" % index
        name = validate_name(raw.get("name"), "%s.name" % where)
        host = str(raw.get("host") or name)
        if host in seen:
            raise InvalidOption("host %r is listed twice in recipients; list each recipient host once." % host,
                                option="recipients")
        seen.add(host)
        where = "recipient %r on %s" % (name, host)
        pin = raw.get("fingerprint")
        if pin in ("", None):
            if policy.require_transport_key_pin:
                raise PolicyViolation(
                    "%s has no pinned transport key fingerprint, and policy.require_transport_key_pin is on. Confirm "
                    "the fingerprint recipient_enroll reported (transport_key.fingerprint) with the recipient's owner "
                    "and pin it (recipient_transport_key_fingerprint)." % where, option="recipients")
            pin = None
        elif not (isinstance(pin, str) and FINGERPRINT_RE.match(pin.lower())):
            raise InvalidOption("%s: fingerprint %r must be sha256: followed by 64 hex digits, as recipient_enroll "
                                "reports it (transport_key.fingerprint)." % (where, pin), option="recipients")
        public_key, fingerprint = load_transport_public_key(raw.get("public_key_pem"), where, pin,
                                                            policy.min_rsa_bits)
        installed = {}
        for entry in raw.get("installed") or ():
            try:
                installed[(str(entry["name"]), int(entry["version"]))] = {
                    "id": entry.get("id"), "key_check_value": entry.get("key_check_value"),
                    "state": entry.get("state")}
            except (KeyError, TypeError, ValueError):
                raise InvalidOption("%s: installed must be the installed list that recipient_enroll returned."
                                    % where, option="recipients") from None
        keys = raw.get("keys")
        unwraps = raw.get("oaep_hashes")
        if unwraps is not None and not (isinstance(unwraps, list) and all(h in OAEP_HASHES for h in unwraps)):
            raise InvalidOption("%s: oaep_hashes must be the list of OAEP hashes its token unwraps with, as "
                                "recipient_enroll reports it (transport_key.oaep_hashes)." % where,
                                option="recipients")
        recipients.append(Recipient(name=name, host=host, public_key=public_key, fingerprint=fingerprint,
                                    keys=tuple(validate_name(k, "%s.keys" % where) for k in keys) if keys else None,
                                    installed=installed, oaep_hashes=tuple(unwraps) if unwraps is not None else None))
    return recipients


def _sendable(version, now):
    if version.state == "active":
        return True
    return version.state == "deactivated" and version.retain_until is not None and now < version.retain_until


def _distributable_versions(store, recipient, name):
    """The versions of key ``name`` this recipient may receive, or None if it is not one of its keys.

    Refuses a key the recipient lists explicitly but may not receive, and a distributed key that is not AES.
    """
    versions = store.versions(name)
    if not versions:
        if recipient.keys is not None:
            raise KeyNotFound("recipient %r: key %r does not exist on token %r."
                              % (recipient.name, name, store.token_label), option="recipients")
        return None
    spec = versions[-1].spec
    allowed = recipient.name in spec.recipients
    if recipient.keys is not None:
        if not spec.distributable:
            raise PolicyViolation(
                "key %r is not distributable: it was generated with distributable: false and never leaves "
                "the token. Generate a new distributable key for recipient %r instead." % (name, recipient.name),
                option="recipients")
        if not allowed:
            raise PolicyViolation(
                "recipient %r may not receive key %r: the key's recipients are %s. Add the recipient to the "
                "key's recipients (key_generate) if the change is approved." %
                (recipient.name, name, ", ".join(spec.recipients) or "none"), option="recipients")
    if not allowed or not spec.distributable:
        return None
    if spec.type != "aes":
        raise PolicyViolation("key %r lists recipients but is an %s key; only AES keys are distributed."
                              % (name, spec.type.upper()), option="recipients")
    return versions


def _plan_versions(plan, recipient, versions, now, should_hold):
    """Sort one key's versions into the plan: send (install/update), held, withdrawn or blocked."""
    for version in versions:
        key = (version.name, version.version)
        have = recipient.installed.get(key)
        if have and have.get("state") == "destroyed":
            # withdrawn at the recipient earlier (a tombstone): never installed again there
            if _sendable(version, now):
                plan.blocked.append({"name": version.name, "version": version.version,
                                     "id": version.key_id, "why": "withdrawn at the recipient earlier; "
                                     "rotate the key to give the recipient a new version"})
            continue
        if _sendable(version, now):
            should_hold.add(key)
            if have and have.get("id") == version.key_id and \
                    have.get("key_check_value") == version.key_check_value:
                if have.get("state") == version.state:
                    plan.held.append(version)
                else:
                    plan.packages.append((version, "update"))
            elif _sealed(version):
                plan.blocked.append({"name": version.name, "version": version.version, "id": version.key_id,
                                     "why": SEALED_WHY})
            else:
                plan.packages.append((version, "install"))
        elif version.state in WITHDRAWN_STATES or have:
            if recipient.installed and not have:
                continue  # the recipient reported what it holds, and it does not hold this one
            plan.withdrawn.append({"name": version.name, "version": version.version, "id": version.key_id,
                                   "state": version.state,
                                   "why": version.state if version.state in WITHDRAWN_STATES
                                   else "retention expired"})


def _sealed(version):
    """Sealed at the migration to trusted wrapping, or otherwise no longer extractable on the token."""
    return version.sealed_at is not None or version.evidence.get("extractable") is False


def _plan_unassigned(plan, recipient, should_hold):
    """Withdraw what the recipient holds but should no longer hold (within the keys it lists, if any)."""
    for (name, number), have in sorted(recipient.installed.items()):
        if recipient.keys is not None and name not in recipient.keys:
            continue
        if have.get("state") == "destroyed":
            continue
        if (name, number) not in should_hold and not any(
                w["name"] == name and w["version"] == number for w in plan.withdrawn):
            plan.withdrawn.append({"name": name, "version": number, "id": have.get("id"), "state": None,
                                   "why": "no longer assigned to this recipient"})


def plan_recipient(store, recipient, now):
    """What one recipient receives, keeps or loses; refuses an unknown recipient or a key it may not have."""
    plan = RecipientPlan(recipient)
    listed = False
    should_hold = set()
    for name in recipient.keys if recipient.keys is not None else store.names():
        versions = _distributable_versions(store, recipient, name)
        if versions is not None:
            listed = True
            _plan_versions(plan, recipient, versions, now, should_hold)
    holds = [k for k, have in recipient.installed.items() if have.get("state") != "destroyed"]
    if not listed and recipient.keys is None and not holds:
        raise InvalidOption(
            "unknown recipient %r: no distributable key on token %r lists it in recipients, and it holds "
            "nothing. Check the name, or add it to the recipients of the keys it should hold."
            % (recipient.name, store.token_label), option="recipients")
    _plan_unassigned(plan, recipient, should_hold)
    return plan


def plan_distribution(store, recipients, now, trusted_keys, require_trusted=True):
    """Which versions each recipient receives, keeps or loses, and the approved key each is wrapped under.

    ``trusted_keys``: the token's trusted transport keys (``find_trusted_transport_keys``). Refuses the whole call
    on bad input, and a recipient with a key to wrap but no approved transport key (see ``check_trusted_wrapping``).
    """
    plans = [plan_recipient(store, recipient, now) for recipient in recipients]
    for plan in plans:
        plan.trusted_key = approved_key(plan.recipient, trusted_keys)
    if require_trusted and isinstance(trusted_keys, TrustedKeysUnsupported) and any(p.installs() for p in plans):
        raise CapabilityMissing(
            "Token %r does not implement CKA_TRUSTED (CKR_ATTRIBUTE_TYPE_INVALID): the Security Officer cannot approve "
            "transport keys on it, so it cannot restrict wrapping to approved recipients, and "
            "policy.require_trusted_wrapping is on; nothing was wrapped. Use a token with trusted wrapping "
            "(CKA_TRUSTED, CKA_WRAP_WITH_TRUSTED; docs/distribution.md, \"Tokens without trusted wrapping\")."
            % store.token_label, option="policy.require_trusted_wrapping")
    check_trusted_wrapping(plans, require_trusted)
    return plans


def approved_transport_keys(store):
    """The token's trusted transport keys (none on a token without CKA_TRUSTED: every wrap is then refused)."""
    return find_trusted_transport_keys(store.session)


def approved_key(recipient, trusted_keys):
    """The trusted key approved for this recipient and host with its transport key's fingerprint, or None."""
    for key in trusted_keys:
        if (key.fingerprint, key.recipient, key.host, key.kind) == (
                recipient.fingerprint, recipient.name, recipient.host, "recipient"):
            return key  # a replica's trusted key (kind replica) is approved for replication, not distribution
    return None


def check_trusted_wrapping(plans, require_trusted):
    """Refuse, before any wrap, recipients with a key to wrap and no approved transport key.

    With ``require_trusted`` off, they may still receive keys made before trusted wrapping (not wrap-with-trusted);
    a wrap-with-trusted version would be refused by the token itself, so it is refused here first.
    """
    missing = [plan for plan in plans if plan.installs() and plan.trusted_key is None]
    if missing and require_trusted:
        raise PolicyViolation(
            "No transport key approved by the Security Officer for %s, nothing was wrapped. Ask the Security Officer "
            "to approve that fingerprint in the HSM (secops.keylifecycle.recipient_approve); until then these "
            "recipients receive nothing." % "; ".join(_describe_recipient(plan.recipient) for plan in missing),
            option="recipients")
    for plan in missing:
        trusted_only = [v.label for v in plan.installs() if v.wrap_with_trusted]
        if trusted_only:
            raise PolicyViolation(
                "%s: %s can be wrapped only under a transport key the Security Officer approved "
                "(CKA_WRAP_WITH_TRUSTED), and none is approved for it, nothing was wrapped. Ask the Security Officer "
                "to approve that fingerprint (secops.keylifecycle.recipient_approve)."
                % (_describe_recipient(plan.recipient), ", ".join(trusted_only)), option="recipients")


def choose_oaep_hashes(plans, token_hashes, token_label, pinned=False):
    """Set each plan's OAEP hash: the first of ``token_hashes`` (the HSM's, strongest first; or the one pinned hash)
    that the recipient's token unwraps with (``Recipient.oaep_hashes``; any, when the recipient did not state them).

    Refuses the whole call (before any wrap) when a recipient with a key to wrap has no hash in common with the HSM.
    A recipient with nothing to wrap gets the HSM's first hash (its packages only update states).
    """
    for plan in plans:
        accepted = plan.recipient.oaep_hashes
        common = [name for name in token_hashes if accepted is None or name in accepted]
        if common:
            plan.oaep_hash = common[0]
            continue
        if plan.installs():
            if accepted:
                unwraps = "unwraps with RSA-OAEP under %s only" % ", ".join(accepted)
            else:
                unwraps = "unwraps with no RSA-OAEP hash"
            raise MechanismUnsupported(
                "%s: its token %s (recipient_enroll's transport_key.oaep_hashes), and token %r %s %s; nothing was "
                "wrapped. %s" % (
                    _describe_recipient(plan.recipient), unwraps, token_label,
                    "is pinned to" if pinned else "wraps with", ", ".join(token_hashes),
                    "Set oaep_hash to auto or to a hash both tokens implement." if pinned else
                    "Give the recipient a token that unwraps with one of them."),
                option="oaep_hash" if pinned else "recipients")
        plan.oaep_hash = token_hashes[0]


def _describe_recipient(recipient):
    return "recipient %r on host %s (transport key %s)" % (recipient.name, recipient.host, recipient.fingerprint)


def apply_distribution(store, plans, oaep_hash, context, check_mode):
    """Wrap every package that needs the key (action install) under its recipient's approved transport key, then
    sign every package with the HSM's package-signing key (generated on first use). In check mode: neither.

    Each recipient's packages use its plan's OAEP hash (``choose_oaep_hashes``), else ``oaep_hash``."""
    for plan in plans:
        plan.oaep_hash = plan.oaep_hash or oaep_hash
    events, blobs = [], [{} for _plan in plans]
    signer, created = None, False
    if not check_mode and any(plan.packages for plan in plans):
        signer, created = ensure_package_signer(store, context, events)
    if not check_mode:
        for plan, wrapped in zip(plans, blobs):
            events.extend(_wrap_for(store, plan, wrapped, plan.oaep_hash, context, signer))
    recipients = [plan.as_dict(wrapped, mechanism_name(plan.oaep_hash)) for plan, wrapped in zip(plans, blobs)]
    for entry in recipients if signer is not None else ():
        entry["packages"] = [signer.sign(package) for package in entry["packages"]]
    return DistributionResult(
        recipients=recipients, audit_events=events, diff=_diff(plans), changed=created,
        package_signer=signer.public_record() if signer is not None else signer_record(store),
        warnings=["%s: %s." % (_describe_recipient(plan.recipient), UNTRUSTED_WARNING)
                  for plan in plans if plan.installs() and plan.trusted_key is None])


def _diff(plans):
    diff = {"before": {}, "after": {}}
    for plan in plans:
        before = sorted(["%s:v%d" % key for key, have in plan.recipient.installed.items()])
        after = sorted(set(["%s:v%d" % (v.name, v.version) for v in plan.held] +
                           ["%s:v%d" % (v.name, v.version) for v, _action in plan.packages]))
        diff["before"][plan.recipient.name] = before
        diff["after"][plan.recipient.name] = after
    return diff


def _wrap_for(store, plan, wrapped, oaep_hash, context, signer):
    """Wrap one recipient's installs: under its trusted key, else (policy off) under its imported session key."""
    if not plan.installs():
        return []
    if plan.trusted_key is not None:
        return _wrap_all(store, plan, plan.trusted_key.obj, wrapped, oaep_hash, context, signer)
    wrapping_key = store.import_wrapping_key(plan.recipient.public_key)
    try:
        return _wrap_all(store, plan, wrapping_key, wrapped, oaep_hash, context, signer)
    finally:
        with pkcs11_errors("C_DestroyObject (session wrapping key)", token_label=store.token_label):
            wrapping_key.destroy()


def _wrap_all(store, plan, wrapping_key, wrapped, oaep_hash, context, signer):
    """C_WrapKey of each install under ``wrapping_key``; one ``key-distribute`` event each."""
    events, params, trusted = [], oaep_parameters(oaep_hash), plan.trusted_key
    for version in plan.installs():
        wrapped[(version.name, version.version)] = _wrap(store, plan.recipient, version, wrapping_key, params,
                                                         oaep_hash)
        section = key_section(version, store.token_label)
        section.update(recipient=plan.recipient.name, recipient_host=plan.recipient.host,
                       mechanism=mechanism_name(oaep_hash), transport_key_fingerprint=plan.recipient.fingerprint,
                       trusted_wrapping=trusted is not None)
        if trusted is not None:
            section["trusted_key_label"] = trusted.label
        if signer is not None and signer.version is not None:
            section["package_signer_fingerprint"] = signer.version.public_key_fingerprint
        events.append(build_event("key-distribute", "success", context, key=section,
                                  reason="wrapped for recipient %s" % plan.recipient.name,
                                  extra=None if trusted is not None else {"warning": UNTRUSTED_WARNING}))
    return events


def _wrap(store, recipient, version, wrapping_key, params, oaep_hash):
    try:
        return store.wrap_secret(version, wrapping_key, Mechanism.RSA_PKCS_OAEP, params)
    except p11_exc.KeyNotWrappable:
        raise PolicyViolation(
            "The token refused to wrap %s for %s (CKR_KEY_NOT_WRAPPABLE): the key was generated with "
            "CKA_WRAP_WITH_TRUSTED and is wrapped only under a transport key the Security Officer approved. Ask the "
            "Security Officer to approve that fingerprint (secops.keylifecycle.recipient_approve)."
            % (version.label, _describe_recipient(recipient)), option="recipients") from None
    except (p11_exc.ArgumentsBad, p11_exc.MechanismInvalid, p11_exc.MechanismParamInvalid):
        raise MechanismUnsupported(
            "The token refused C_WrapKey with CKM_RSA_PKCS_OAEP and hash %s for %s. Set oaep_hash to a hash this "
            "token implements for OAEP (some tokens, for example SoftHSM2 2.6, implement only sha1)."
            % (oaep_hash, version.label), option="oaep_hash") from None
    except p11_exc.PKCS11Error as exc:
        with pkcs11_errors("C_WrapKey for %s" % version.label, token_label=store.token_label):
            raise exc
