# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Read-only description of the keys on a token (the work of key_info).

PRIVATE: not part of the public interface.

``capability_summary`` is key_info's ``token_capabilities`` (option ``probe_token``): what the token showed it can
do when ``_token_probe.probe`` tried it, summarised for the compliance report (token_info returns the whole probe).
"""

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.module_utils._drift import find_drift
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import format_time, utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._managed_signing import RESTORE_KEY_NAME
from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import signer_record
from ansible_collections.secops.keylifecycle.plugins.module_utils._trusted_keys import find_trusted_transport_keys

#: the capabilities a summary says the token lacks (``Capabilities.has``), in the order the report lists them
SUMMARISED_CAPABILITIES = ("aes", "rsa", "ec", "oaep", "aes_key_wrap", "trusted_wrapping")


def logical_key_state(versions):
    """A logical key's state: active if any version is, destroyed if all are, else the newest state."""
    if not versions:
        return "absent"
    states = [v.state for v in versions]
    if "active" in states:
        return "active"
    if all(s == "destroyed" for s in states):
        return "destroyed"
    return versions[-1].state


def _version_record(version, now, max_period):
    """key_info's record of one version: the metadata's, with what trusted distribution needs to see.

    ``wrap_with_trusted`` (in ``KeyVersion.record``): the version was generated with CKA_WRAP_WITH_TRUSTED, as its
    metadata records (absent in metadata older than trusted wrapping: false). ``extractable``: whether the token
    would wrap it now (CKA_EXTRACTABLE of its secret, from the evidence read with the version); None when no key
    object is left.
    """
    record = version.record(now, max_period)
    evidence = record.get("evidence") or {}
    record["extractable"] = bool(evidence["extractable"]) if "extractable" in evidence else None
    return record


def trusted_key_record(key):
    """What key_info returns about one trusted transport key (``_trusted_keys.TrustedTransportKey``)."""
    return {"label": key.label, "recipient": key.recipient, "host": key.host, "fingerprint": key.fingerprint,
            "key_id": key.key_id, "kind": key.kind}


def describe_trust(store):
    """The trusted transport keys on the token (approved by the Security Officer), the HSM's package signer and, on
    a replica, its restore signer.

    Read only: one C_FindObjects for the trusted keys; each signer's public record or None when the token has no
    such key yet (nothing is generated here).
    """
    keys = sorted(find_trusted_transport_keys(store.session), key=lambda k: (k.label, k.key_id))
    return {"trusted_transport_keys": [trusted_key_record(k) for k in keys], "package_signer": signer_record(store),
            "restore_signer": signer_record(store, RESTORE_KEY_NAME)}


def describe_keys(store, names=None, states=None, policy=None, now=None):
    """Return key_versions, logical_keys, anomalies and drift (``_drift``) for the selected keys.

    ``states`` filters the versions listed, not the drift: every version of the selected keys is compared.
    """
    now = now or utc_now()
    max_period = policy.max_rotation_period if policy else None
    selected = sorted(set(names)) if names else store.names()
    key_versions, logical_keys = [], []
    for name in selected:
        versions = store.versions(name)
        records = [_version_record(v, now, max_period) for v in versions]
        active = [r for r in records if r["state"] == "active"]
        due = active[-1]["next_rotation_due"] if active else None
        logical_keys.append({
            "name": name,
            "state": logical_key_state(versions),
            "active_version": active[-1]["version"] if active else None,
            "versions": [r["version"] for r in records],
            "next_rotation_due": due,
            "rotation_overdue": bool(active and active[-1]["rotation_overdue"]),
        })
        key_versions.extend(r for r in records if not states or r["state"] in states)
    if states:
        keep = {r["name"] for r in key_versions}
        logical_keys = [k for k in logical_keys if k["name"] in keep or k["state"] in states]
    drift = find_drift(store, names=names, compromise_disables_decrypt=bool(
        policy and policy.compromise_disables_decrypt))
    return {
        "key_versions": key_versions,
        "logical_keys": logical_keys,
        "anomalies": [a.as_dict() for a in store.anomalies],
        "drift": [finding.as_dict() for finding in drift],
        "checked_at": format_time(now),
        "token_label": store.token_label,
        # every version on the token is listed: what the report compares with the journal (_report.vanished_versions)
        "all_keys": not names and not states,
    }


def capability_summary(capabilities):
    """key_info's ``token_capabilities``: a summary of a probe (``_token_probe.Capabilities``).

    The token's identity; what it generated (``generates``, as token_info returns it); the OAEP hashes C_WrapKey
    worked with and the strongest; AES key wrap with and without padding; trusted wrapping (CKA_WRAP_WITH_TRUSTED
    taken and CKA_TRUSTED refused to the user); how CKA_DESTROYABLE / CKA_MODIFIABLE false are treated; how many
    mechanisms the token lists (not the list: token_info returns it); and ``missing``, each capability of
    SUMMARISED_CAPABILITIES the token lacks with why (the PKCS#11 error, or "not offered", that the probe met).
    """
    probed = capabilities.as_dict()
    generates = probed.get("generates") or {}
    rsa = generates.get("rsa") or {}
    attempts = probed.get("attempts") or {}
    aes_key_wrap = probed.get("aes_key_wrap") or {}
    missing = []
    for name in SUMMARISED_CAPABILITIES:
        if not capabilities.has(name):
            reason = attempts.get(name)
            missing.append({"capability": name, "reason": reason if isinstance(reason, str) else "not supported"})
    return {
        "token": dict(probed.get("token") or {}),
        "generates": {"aes": list(generates.get("aes") or []),
                      "rsa": {"generated": bool(rsa.get("generated")), "min_bits": rsa.get("min_bits"),
                              "max_bits": rsa.get("max_bits")},
                      "ec": list(generates.get("ec") or [])},
        "oaep_hashes": list(probed.get("oaep_hashes") or []),
        "best_oaep_hash": capabilities.best_oaep_hash(),
        "aes_key_wrap": bool(aes_key_wrap.get("CKM_AES_KEY_WRAP")),
        "aes_key_wrap_pad": capabilities.has("aes_key_wrap"),
        "trusted_wrapping": capabilities.has("trusted_wrapping"),
        "destroyable": probed.get("destroyable"),
        "modifiable": probed.get("modifiable"),
        "mechanism_count": len(probed.get("mechanisms") or ()),
        "missing": missing,
    }
