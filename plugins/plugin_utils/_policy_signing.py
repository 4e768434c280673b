# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The work of policy_sign, on the controller: the policy signer signs the environment's policy.

PRIVATE: not part of the public interface. docs/access-control.md ("Signed policy") explains the model; the
document's format and its signed bytes have one home, ``module_utils/_signed_policy.py`` (``policy_payload``).

The signer's private key is either a passphrase-protected PEM (PKCS#8, EC P-256) readable only by its owner, or an
EC P-256 private key object in the officer's own PKCS#11 token (C_Sign, CKM_ECDSA over SHA-256, in that token).
Either way the signature is checked with the signer's public key before anything is written, so the ``signer``
fingerprint in the document is the key that signed it.

A new policy can carry the signed approvals of its coming into force (``approvals``: approval_sign documents of
action ``policy_change`` naming this document's ``policy_digest``), not covered by the signer's signature. The
workflow: the officer signs; the approvers of the policy in force run approval_sign with ``new_policy`` = the file's
``key_policy_signed``; the officer runs policy_sign again with the same options plus ``approvals``: the same
payload, so the existing signature is kept and only the approvals are added (``embedded_approvals``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import yaml

from ansible_collections.secops.keylifecycle.plugins.module_utils._approvals import (
    MAX_APPROVALS,
    approver_keys,
    parse_approval,
    parse_time,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._approvals import (
    verify_signature as verify_approval,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import (
    InvalidOption,
    KeyLifecycleError,
    KeyNotFound,
    PolicyViolation,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import format_time, utc_now
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import (
    BASELINE,
    SETTINGS,
    load_policy,
    parse_duration,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._policy_signers import check_signer_name
from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import (
    ENVIRONMENT_RE,
    FORMAT,
    normalised_policy,
    parse_not_after,
    parse_signed_policy,
    policy_digest,
    policy_payload,
)
from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import spki_fingerprint

try:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
except ImportError:  # refused by require_crypto() with a clear message
    InvalidSignature = UnsupportedAlgorithm = hashes = serialization = ec = encode_dss_signature = None

#: the key of the signed document in the file policy_sign writes (an inventory's group_vars)
DOCUMENT_VARIABLE = "key_policy_signed"
POLICY_VARIABLE = "key_policy"


def require_crypto():
    if ec is None:
        raise KeyLifecycleError("policy_sign needs the Python package cryptography on the controller "
                                "(pip install cryptography).")


# ---- the document --------------------------------------------------------------------------------------------

def checked_policy(raw):
    """The policy settings as the lifecycle modules' ``policy`` option holds them, refused as ``load_policy``
    refuses them (same messages): a setting that would weaken the baseline, an unknown or malformed one."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidOption("policy must be a dict of policy settings (for example {min_rsa_bits: 4096}), got %s."
                            % type(raw).__name__, option="policy")
    policy = normalised_policy(raw)
    load_policy(policy)
    return policy


def resolve_not_after(value, now=None):
    """``not_after``: an ISO 8601 time (UTC, or with an offset) or a duration from now (``180d``); returned as the
    document holds it, ISO 8601 UTC ending in ``+00:00``. It must lie in the future."""
    now = now or utc_now()
    if value is None or value == "":
        raise InvalidOption("not_after is required: an ISO 8601 time (2027-06-30T00:00:00+00:00) or a duration "
                            "from now (180d).", option="not_after")
    text = str(value).strip()
    moment = None
    if text[:1].isdigit() and ("-" in text or "T" in text):
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidOption("not_after %r is neither an ISO 8601 time (2027-06-30T00:00:00+00:00) nor a "
                                "duration (180d)." % (value,), option="not_after") from None
        if moment.tzinfo is None:
            raise InvalidOption("not_after %r has no time zone: give it in UTC (2027-06-30T00:00:00+00:00)."
                                % (value,), option="not_after")
        moment = moment.astimezone(timezone.utc).replace(microsecond=0)
    else:
        moment = (now + timedelta(seconds=parse_duration(text, "not_after"))).replace(microsecond=0)
    if moment <= now:
        raise InvalidOption("not_after %s is not in the future (it is now %s): a policy signed to expire already "
                            "would be refused by every task." % (format_time(moment), format_time(now)),
                            option="not_after")
    result = format_time(moment)
    parse_not_after(result, "not_after")
    return result


def check_document_options(environment, serial, signer_name):
    if not isinstance(environment, str) or not ENVIRONMENT_RE.match(environment):
        raise InvalidOption("environment %r must be 1 to 64 letters, digits, '.', '_' or '-' (the inventory's "
                            "environment: dev, staging, prod)." % (environment,), option="environment")
    if isinstance(serial, bool) or not isinstance(serial, int) or serial < 1:
        raise InvalidOption("serial %r must be a whole number of at least 1, higher than the serial of the policy "
                            "it replaces." % (serial,), option="serial")
    check_signer_name(signer_name, option="signer_name")


def unsigned_document(policy, environment, serial, not_after, signer_fingerprint, signer_name):
    """The document before its signature, in plain JSON types (task arguments may be str or int subclasses that
    YAML's safe dumper cannot write)."""
    doc = {"format": FORMAT, "environment": environment, "serial": serial, "not_after": not_after,
           "policy": policy, "signer": signer_fingerprint, "signer_name": signer_name}
    return json.loads(json.dumps(doc))


def verify_signature(public_key, doc):
    """Whether ``doc``'s signature verifies with ``public_key`` over ``policy_payload(doc)``."""
    try:
        public_key.verify(base64.b64decode(doc["signature"]), policy_payload(doc), ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError, TypeError, KeyError):
        return False


def summary_lines(doc, digest):
    """The policy in words, as the officer is about to sign it."""
    lines = ["Signing the policy of environment %s, serial %d, valid until %s, as policy signer %s (%s)."
             % (doc["environment"], doc["serial"], doc["not_after"], doc["signer_name"], doc["signer"])]
    baseline = BASELINE.as_dict()
    given = doc["policy"]
    if not given:
        lines.append("No setting changed: the collection's baseline policy.")
    for setting in SETTINGS:
        if setting.name in given:
            lines.append("policy.%s: %s (baseline %s)" % (setting.name, _show(given[setting.name]),
                                                          _show(baseline[setting.name])))
    lines.append("Policy sha256: %s" % digest)
    return lines


def _show(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "[%s]" % ", ".join(_show(item) for item in value)
    if isinstance(value, dict):
        return "{%s}" % ", ".join("%s: %s" % (key, _show(item)) for key, item in sorted(value.items()))
    return str(value)


class _IndentedDumper(yaml.SafeDumper):
    """SafeDumper that indents block sequences under their key (yamllint's and ansible-lint's default)."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


#: what check mode shows instead of a new signature (made, checked, and not returned: a --check --diff in a job log
#: would otherwise hold a usable signed policy)
CHECK_MODE_SIGNATURE = "<made when run without check mode>"


def render_file(doc, digest):
    """The YAML file policy_sign writes: a header comment, ``key_policy_signed`` and ``key_policy``."""
    approvals = doc.get("approvals") or []
    approved = ["# approvals of this policy change (not covered by the signature): %s"
                % ", ".join("%s (%s)" % (item.get("approver_name") or "unnamed", item["approver"])
                            for item in approvals)] if approvals else []
    header = [
        "---",
        "# The signed policy of environment %s, written by secops.keylifecycle.policy_sign." % doc["environment"],
        "# serial %d, not_after %s, signer %s" % (doc["serial"], doc["not_after"], doc["signer_name"]),
        "# signer key %s" % doc["signer"],
        "# policy sha256 %s" % digest,
        "# Do not edit: any change breaks the signature, and lifecycle tasks on a token with a policy signer then",
        "# refuse to act. To change the policy, sign it again with a higher serial.",
    ] + approved
    body = yaml.dump({DOCUMENT_VARIABLE: doc}, Dumper=_IndentedDumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=False, width=1000)
    return "\n".join(header) + "\n" + body + '%s: "{{ %s.policy }}"\n' % (POLICY_VARIABLE, DOCUMENT_VARIABLE)


def read_existing(dest):
    """The signed document ``dest`` holds, or None (absent, unreadable or not a policy_sign file)."""
    try:
        with open(dest, "r", encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError, UnicodeError):
        return None
    if not isinstance(data, dict) or DOCUMENT_VARIABLE not in data:
        return None
    try:
        return parse_signed_policy(data[DOCUMENT_VARIABLE], option="dest")
    except KeyLifecycleError:
        return None


# ---- the signer's private key --------------------------------------------------------------------------------

def _check_p256(key, option):
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidOption("%s must hold an EC P-256 private key: signatures are ECDSA P-256 / SHA-256."
                            % option, option=option)


@dataclass
class PemSigner:
    """A passphrase-protected PEM private key on the controller."""

    path: str
    passphrase: str | None

    def __repr__(self):  # never show the passphrase
        return "PemSigner(path=%r)" % self.path

    def _load(self):
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise InvalidOption("private_key_path %s does not exist." % self.path,
                                option="private_key_path") from None
        except OSError as exc:
            raise InvalidOption("private_key_path %s cannot be read (%s)." % (self.path, exc.strerror),
                                option="private_key_path") from None
        if not stat.S_ISREG(info.st_mode):
            raise InvalidOption("private_key_path %s is not a regular file." % self.path, option="private_key_path")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise PolicyViolation(
                "private_key_path %s has mode %04o: the signing key must be readable only by its "
                "owner. Fix it with: chmod 600 %s" % (self.path, mode, self.path), option="private_key_path")
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise InvalidOption("private_key_path %s cannot be read (%s)." % (self.path, exc.strerror),
                                option="private_key_path") from None
        try:
            serialization.load_pem_private_key(data, password=None)
        except TypeError:  # encrypted: a passphrase is needed, as it must be
            pass
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise InvalidOption("private_key_path %s is not a PEM private key (%s)." % (self.path, exc),
                                option="private_key_path") from None
        else:
            raise PolicyViolation(
                "private_key_path %s is not encrypted: the signing key must be protected by a "
                "passphrase. Encrypt it (openssl pkcs8 -topk8 -v2 aes-256-cbc -in key.pem -out key.enc.pem), "
                "destroy the clear copy, and give the passphrase as private_key_passphrase." % self.path,
                option="private_key_path")
        if not self.passphrase:
            raise InvalidOption("private_key_passphrase is required: private_key_path %s is encrypted." % self.path,
                                option="private_key_passphrase")
        try:
            key = serialization.load_pem_private_key(data, password=self.passphrase.encode("utf-8"))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise InvalidOption("private_key_passphrase does not decrypt private_key_path %s." % self.path,
                                option="private_key_passphrase") from None
        _check_p256(key, "private_key_path")
        return key

    def sign(self, make_document, payload=policy_payload):
        """Sign the document ``make_document(signer_fingerprint)`` returns; returns it with its signature.

        ``payload`` turns the document into the signed bytes (``policy_payload``; ``_approvals.approval_payload``
        for approval_sign)."""
        key = self._load()
        doc = make_document(spki_fingerprint(key.public_key()))
        signature = key.sign(payload(doc), ec.ECDSA(hashes.SHA256()))
        doc["signature"] = base64.b64encode(signature).decode("ascii")
        return doc, key.public_key()


@dataclass
class TokenSigner:
    """An EC P-256 private key object in the officer's own PKCS#11 token (logged in with the user PIN file)."""

    pkcs11_module: str
    token_label: str
    user_pin_file: str
    key_label: str

    def sign(self, make_document, payload=policy_payload):
        from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import (
            ConnectionSettings,
            open_session,
            translate_pkcs11_error,
        )

        try:
            from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
            from pkcs11 import exceptions as p11_exc
        except ImportError:
            raise KeyLifecycleError("Signing with pkcs11_module needs the Python package python-pkcs11 on the "
                                    "controller (pip install python-pkcs11).") from None
        from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import (
            TOKEN_CURVES,
            curve_of,
            ec_public_key,
            find_objects,
        )

        settings = ConnectionSettings(self.pkcs11_module, self.token_label, None, self.user_pin_file)
        with open_session(settings, rw=False) as session:
            try:
                private = find_objects(session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                                 Attribute.KEY_TYPE: KeyType.EC, Attribute.LABEL: self.key_label})
                if not private:
                    raise KeyNotFound("Token %r holds no EC private key labelled %r (key_label)."
                                      % (self.token_label, self.key_label), option="key_label")
                if len(private) > 1:
                    raise InvalidOption("Token %r holds %d EC private keys labelled %r: key_label must name one."
                                        % (self.token_label, len(private), self.key_label), option="key_label")
                private = private[0]
                if curve_of(private) is not TOKEN_CURVES["P-256"]:
                    raise InvalidOption("key_label %r is not an EC P-256 key: signatures are ECDSA P-256 / "
                                        "SHA-256." % self.key_label, option="key_label")
                key_id = bytes(private[Attribute.ID] or b"")
                template = {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.EC}
                template[Attribute.ID if key_id else Attribute.LABEL] = key_id or self.key_label
                public = find_objects(session, template)
                if len(public) != 1:
                    raise KeyNotFound("Token %r holds %s public key object for the private key %r (same CKA_ID, "
                                      "else same label): signing needs exactly one, to name the signer's "
                                      "fingerprint." % (self.token_label, len(public) or "no", self.key_label),
                                      option="key_label")
                public_key = ec_public_key(public[0], "P-256")
                doc = make_document(spki_fingerprint(public_key))
                raw = private.sign(hashlib.sha256(payload(doc)).digest(), mechanism=Mechanism.ECDSA)
            except p11_exc.PKCS11Error as exc:
                raise translate_pkcs11_error(exc, "signing with %r" % self.key_label,
                                             token_label=self.token_label) from None
        raw = bytes(raw)
        half = len(raw) // 2
        signature = encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
        doc["signature"] = base64.b64encode(signature).decode("ascii")
        return doc, public_key


def signer_from_options(args):
    """The signer a task's signing-key options name (``_argspec.SIGNING_KEY_ARGSPEC``, checked by its rules)."""
    if args.get("pkcs11_module"):
        return TokenSigner(str(args["pkcs11_module"]), str(args["token_label"]),
                           os.path.expanduser(str(args["user_pin_file"])), str(args["key_label"]))
    return PemSigner(os.path.expanduser(str(args["private_key_path"])), args["private_key_passphrase"])


# ---- the approvals of a policy change ------------------------------------------------------------------------

def read_signed_policy(raw, option):
    """``(parsed signed-policy document, its Policy)`` of the option ``option``; InvalidOption naming it when it is
    not a signed policy or holds a policy the lifecycle modules would refuse. Its signature is not checked here (the
    HSM host checks it against the signer in its token)."""
    doc = parse_signed_policy(raw, option=option)
    try:
        policy = load_policy(doc["policy"])
    except KeyLifecycleError as exc:
        raise InvalidOption("%s holds a policy the lifecycle modules would refuse: %s" % (option, exc.message),
                            option=option) from None
    return doc, policy


def _in_force(in_force_policy, doc):
    """``(parsed in-force document, its Policy)``; InvalidOption naming in_force_policy."""
    current, policy = read_signed_policy(in_force_policy, "in_force_policy")
    if current["environment"] != doc["environment"]:
        raise InvalidOption("in_force_policy is the policy of environment %s, not %s: give the policy in force on "
                            "this environment's tokens, whose approvers approve the change."
                            % (current["environment"], doc["environment"]), option="in_force_policy")
    return current, policy


def embedded_approvals(raw_approvals, doc, in_force_policy=None):
    """The ``approvals`` a new signed policy ``doc`` carries: each an approval of action ``policy_change`` whose
    keys are exactly ``[{"policy": policy_digest(doc)}]``; with ``in_force_policy`` (the signed policy in force)
    also signed by one of its approvers (``policy.approvers``) and verified. Sorted by approver fingerprint (then
    nonce), the same nonce kept once. The HSM host checks them again against the policy in force on its token."""
    raw_approvals = raw_approvals or []
    if not isinstance(raw_approvals, (list, tuple)):
        raise InvalidOption("approvals must be a list of approval documents written by "
                            "secops.keylifecycle.approval_sign.", option="approvals")
    if len(raw_approvals) > MAX_APPROVALS:
        raise InvalidOption("approvals lists %d documents; a policy carries at most %d."
                            % (len(raw_approvals), MAX_APPROVALS), option="approvals")
    digest = policy_digest(doc)
    keys = None
    if in_force_policy is not None:
        current, policy = _in_force(in_force_policy, doc)
        keys = approver_keys(policy)
    by_nonce = {}
    for index, raw in enumerate(raw_approvals):
        where = "approvals[%d]" % index
        approval = json.loads(json.dumps(parse_approval(raw, where)))  # plain types: task args are str subclasses
        request = approval["request"]
        who = approval["approver_name"] or approval["approver"]
        if request["action"] != "policy_change":
            raise InvalidOption("%s by %s approves %s, not a policy change: only approvals of action policy_change "
                                "ride with a signed policy." % (where, who, request["action"]), option="approvals")
        if request["keys"] != [{"policy": digest}]:
            raise InvalidOption("%s by %s approves the policy of SHA-256 %s, not this document (SHA-256 %s): the "
                                "approver must sign approval_sign with new_policy set to this very document."
                                % (where, who, ", ".join(str(entry.get("policy", entry)) for entry in request["keys"]),
                                   digest), option="approvals")
        if keys is not None:
            known = keys.get(approval["approver"])
            if known is None:
                raise InvalidOption("%s is signed by %s (%s), which is not an approver of in_force_policy (environment "
                                    "%s, serial %d; policy.approvers lists %s)."
                                    % (where, approval["approver"], who, current["environment"], current["serial"],
                                       ", ".join(sorted(name for name, _key in keys.values())) or "nobody"),
                                    option="approvals")
            if not verify_approval(known[1], approval):
                raise InvalidOption("The signature of %s (approver %s, %s) does not verify: it was altered after it "
                                    "was signed." % (where, known[0], approval["approver"]), option="approvals")
        by_nonce.setdefault(request["nonce"], approval)
    return sorted(by_nonce.values(), key=lambda item: (item["approver"], item["request"]["nonce"]))


def approval_lines(approvals, in_force_policy=None, now=None):
    """The approvals a policy carries, in words (part of the summary)."""
    now = now or utc_now()
    lines = []
    names = {}
    required = None
    if in_force_policy is not None:
        current, policy = read_signed_policy(in_force_policy, "in_force_policy")
        names = {fingerprint: name for fingerprint, (name, _key) in approver_keys(policy).items()}
        required = (policy.approvals_required or {}).get("policy_change", 0)
    for approval in approvals:
        request = approval["request"]
        expired = parse_time(request["not_after"], "approvals.request.not_after") < now
        lines.append("Approval of this policy change by %s (%s), change %s, token %s, valid until %s%s, nonce %s."
                     % (names.get(approval["approver"], approval["approver_name"] or "an unnamed approver"),
                        approval["approver"], request["change_ref"], request["token"], request["not_after"],
                        " (EXPIRED: the HSM host refuses it)" if expired else "", request["nonce"]))
    if required is not None:
        approvers = len({approval["approver"] for approval in approvals})
        lines.append("%d approver(s) of %d required by the policy in force (serial %d, policy.approvals_required."
                     "policy_change)." % (approvers, required, current["serial"]))
    return lines


# ---- the whole step ------------------------------------------------------------------------------------------

@dataclass
class SigningResult:
    signed_policy: dict
    sha256: str
    summary: list
    text: str
    unchanged: bool


def sign_policy(raw_policy, environment, serial, not_after, signer_name, signer, existing=None, now=None,
                approvals=None, in_force_policy=None):
    """Check the options, sign, check the signature; returns a SigningResult (nothing written here).

    ``existing``: the signed document already at ``dest`` (``read_existing``). When it signs the very same payload
    and its signature verifies with this signer's key, its signature is kept: ECDSA signatures differ at each
    signing, so a re-run would otherwise always rewrite the file. It is ``unchanged`` when its approvals are
    the same too. ``approvals``/``in_force_policy``: the policy_change approvals to embed (``embedded_approvals``).
    """
    require_crypto()
    check_document_options(environment, serial, signer_name)
    policy = checked_policy(raw_policy)
    not_after = resolve_not_after(not_after, now)

    def make_document(fingerprint):
        return unsigned_document(policy, environment, serial, not_after, fingerprint, signer_name)

    doc, public_key = signer.sign(make_document)
    if not verify_signature(public_key, doc):
        raise InvalidOption("The signature the key made does not verify with its public key: the private and "
                            "public key objects of key_label %r do not belong together."
                            % getattr(signer, "key_label", ""), option="key_label")
    embedded = embedded_approvals(approvals, doc, in_force_policy)
    unchanged = False
    if existing is not None and policy_payload(existing) == policy_payload(doc) \
            and existing.get("signer_name") == doc["signer_name"] and verify_signature(public_key, existing):
        doc = dict(doc, signature=existing["signature"])
        unchanged = (existing.get("approvals") or []) == embedded
    doc.pop("approvals", None)
    if embedded:
        doc["approvals"] = embedded
    digest = policy_digest(doc)
    summary = summary_lines(doc, digest) + approval_lines(embedded, in_force_policy, now)
    return SigningResult(signed_policy=doc, sha256=digest, summary=summary, text=render_file(doc, digest),
                         unchanged=unchanged)
