"""plan_distribution / plan_recipient (check before any wrap): what each recipient receives, keeps or loses, and
what is refused. Pure: a fake key store, no token, no build."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

NOW = datetime(2026, 11, 30, tzinfo=timezone.utc)


def _dist():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _key_distribution

    return _key_distribution


def _errors():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _errors

    return _errors


@dataclass
class FakeVersion:
    name: str
    version: int
    state: str
    spec: SimpleNamespace
    retain_until: datetime | None = None
    wrap_with_trusted: bool = True
    sealed_at: datetime | None = None
    evidence: dict = field(default_factory=lambda: {"extractable": True})

    @property
    def label(self):
        return "%s:v%d" % (self.name, self.version)

    @property
    def key_id(self):
        return "id-%s-%d" % (self.name, self.version)

    @property
    def key_check_value(self):
        return "kcv-%s-%d" % (self.name, self.version)


class FakeStore:
    token_label = "hsm"

    def __init__(self, keys):
        self.keys = keys

    def names(self):
        return sorted(self.keys)

    def versions(self, name):
        return self.keys.get(name, [])


def _spec(recipients=("app",), distributable=True, key_type="aes"):
    return SimpleNamespace(recipients=list(recipients), distributable=distributable, type=key_type)


FINGERPRINT = "sha256:" + "0" * 64


def _recipient(name="app", keys=None, installed=None):
    return _dist().Recipient(name=name, host=name, public_key=None, fingerprint=FINGERPRINT, keys=keys,
                             installed=installed or {})


def _trusted(recipient="app", host="app", fingerprint=FINGERPRINT, kind="recipient"):
    label = "trusted-%s:%s@%s:%s" % ("transport" if kind == "recipient" else kind, recipient, host, fingerprint)
    return SimpleNamespace(label=label, recipient=recipient, host=host, fingerprint=fingerprint, key_id="00",
                           obj=None, modifiable=False, kind=kind)


def _plan(store, recipients, trusted=None, require=True):
    return _dist().plan_distribution(store, recipients, NOW, [_trusted()] if trusted is None else trusted, require)


def _store():
    spec = _spec()
    return FakeStore({
        "db": [FakeVersion("db", 1, "deactivated", spec, NOW + timedelta(days=5)),
               FakeVersion("db", 2, "active", spec)],
        "old": [FakeVersion("old", 1, "deactivated", spec, NOW - timedelta(days=1)),
                FakeVersion("old", 2, "compromised", spec), FakeVersion("old", 3, "active", spec)],
        "local": [FakeVersion("local", 1, "active", _spec(distributable=False))],
        "other": [FakeVersion("other", 1, "active", _spec(recipients=("billing",)))],
    })


def test_a_new_recipient_receives_active_and_retained_versions_and_learns_what_is_gone():
    plan = _plan(_store(), [_recipient()])[0]
    assert [(v.name, v.version, action) for v, action in plan.packages] == [
        ("db", 1, "install"), ("db", 2, "install"), ("old", 3, "install")]
    assert [(w["name"], w["version"], w["why"]) for w in plan.withdrawn] == [("old", 2, "compromised")]
    assert plan.held == [] and plan.blocked == []


def test_a_reporting_recipient_keeps_what_it_holds_and_loses_what_it_should_not():
    store = _store()
    installed = {
        ("db", 2): {"id": "id-db-2", "key_check_value": "kcv-db-2", "state": "active"},
        ("db", 1): {"id": "id-db-1", "key_check_value": "kcv-db-1", "state": "active"},  # deactivated upstream
        ("old", 1): {"id": "id-old-1", "key_check_value": "kcv-old-1", "state": "deactivated"},  # retention over
        ("old", 3): {"id": "id-old-3", "key_check_value": "kcv-old-3", "state": "destroyed"},  # withdrawn earlier
        ("gone", 1): {"id": "x", "key_check_value": "y", "state": "active"},  # no longer assigned
    }
    plan = _dist().plan_recipient(store, _recipient(installed=installed), NOW)
    assert [v.version for v in plan.held] == [2]
    assert [(v.name, v.version, action) for v, action in plan.packages] == [("db", 1, "update")]
    assert [(w["name"], w["version"], w["why"]) for w in plan.withdrawn] == [
        ("old", 1, "retention expired"), ("gone", 1, "no longer assigned to this recipient")]
    assert [(b["name"], b["version"]) for b in plan.blocked] == [("old", 3)]


@pytest.mark.parametrize("recipient, error, text", [
    ({"keys": ("nope",)}, "KeyNotFound", "recipient 'app': key 'nope' does not exist on token 'hsm'."),
    ({"keys": ("local",)}, "PolicyViolation", "key 'local' is not distributable"),
    ({"keys": ("other",)}, "PolicyViolation", "recipient 'app' may not receive key 'other': the key's "
                                              "recipients are billing."),
    ({"name": "stranger"}, "InvalidOption", "unknown recipient 'stranger'"),
])
def test_refusals_name_the_recipients_option(recipient, error, text):
    with pytest.raises(getattr(_errors(), error)) as err:
        _plan(_store(), [_recipient(**recipient)])
    assert text in str(err.value) and err.value.option == "recipients"


def test_only_aes_keys_are_distributed():
    store = FakeStore({"sig": [FakeVersion("sig", 1, "active", _spec(key_type="ec"))]})
    with pytest.raises(_errors().PolicyViolation, match="key 'sig' lists recipients but is an EC key"):
        _plan(store, [_recipient()])


def test_the_approved_trusted_key_of_the_recipient_is_chosen():
    others = [_trusted(host="other-host"), _trusted(recipient="billing"), _trusted(fingerprint="sha256:" + "1" * 64)]
    plan = _plan(_store(), [_recipient()], trusted=others + [_trusted()])[0]
    assert plan.trusted_key.label == "trusted-transport:app@app:" + FINGERPRINT


@pytest.mark.parametrize("trusted", [[], [_trusted(host="other-host")], [_trusted(fingerprint="sha256:" + "1" * 64)],
                                     [_trusted(kind="replica")]])  # a replica's key is not a recipient's
def test_a_recipient_without_an_approved_key_is_refused_before_any_wrap(trusted):
    with pytest.raises(_errors().PolicyViolation) as err:
        _plan(_store(), [_recipient()], trusted=trusted)
    text = str(err.value)
    assert err.value.option == "recipients"
    assert "recipient 'app' on host app (transport key %s)" % FINGERPRINT in text
    assert "ask the security officer" in text.lower() and "recipient_approve" in text


def test_a_token_without_cka_trusted_is_refused_naming_the_capability():
    """Such a token (the openCryptoki 3.8 soft token) answers the CKA_TRUSTED search with CKR_ATTRIBUTE_TYPE_INVALID:
    find_trusted_transport_keys gives TrustedKeysUnsupported, and with the policy on nothing is wrapped."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._trusted_keys import TrustedKeysUnsupported

    with pytest.raises(_errors().CapabilityMissing) as err:
        _plan(_store(), [_recipient()], trusted=TrustedKeysUnsupported())
    assert "CKA_TRUSTED" in str(err.value) and err.value.option == "policy.require_trusted_wrapping"
    assert err.value.kind == "capability_missing"
    # policy off (dev only): keys made before trusted wrapping may still go, under the recipient's session key
    old_style = FakeStore({"db": [FakeVersion("db", 1, "active", _spec(), wrap_with_trusted=False)]})
    plan = _plan(old_style, [_recipient()], trusted=TrustedKeysUnsupported(), require=False)[0]
    assert [v.label for v in plan.installs()] == ["db:v1"] and plan.trusted_key is None


def test_a_recipient_with_nothing_to_wrap_needs_no_approved_key():
    installed = {("db", 2): {"id": "id-db-2", "key_check_value": "kcv-db-2", "state": "active"},
                 ("db", 1): {"id": "id-db-1", "key_check_value": "kcv-db-1", "state": "active"}}  # an update
    plan = _plan(_store(), [_recipient(keys=("db",), installed=installed)], trusted=[])[0]
    assert plan.installs() == [] and plan.trusted_key is None


def test_policy_off_allows_untrusted_wrapping_only_of_keys_made_before_trusted_wrapping():
    spec = _spec()
    old_style = FakeStore({"db": [FakeVersion("db", 1, "active", spec, wrap_with_trusted=False)]})
    plan = _plan(old_style, [_recipient()], trusted=[], require=False)[0]
    assert [v.label for v in plan.installs()] == ["db:v1"] and plan.trusted_key is None
    with pytest.raises(_errors().PolicyViolation, match="db:v1 can be wrapped only under a transport key"):
        _plan(FakeStore({"db": [FakeVersion("db", 1, "active", spec)]}), [_recipient()], trusted=[], require=False)


def test_sealed_versions_are_blocked_for_recipients_that_lack_them():
    spec = _spec()
    store = FakeStore({"db": [
        FakeVersion("db", 1, "deactivated", spec, NOW + timedelta(days=5), wrap_with_trusted=False, sealed_at=NOW,
                    evidence={"extractable": False}),
        FakeVersion("db", 2, "active", spec)]})
    plan = _plan(store, [_recipient()])[0]
    assert [(v.version, action) for v, action in plan.packages] == [(2, "install")]
    assert plan.blocked == [{"name": "db", "version": 1, "id": "id-db-1",
                             "why": "not extractable: sealed at the migration to trusted wrapping"}]
    holder = {("db", 1): {"id": "id-db-1", "key_check_value": "kcv-db-1", "state": "active"}}
    plan = _plan(store, [_recipient(installed=holder)])[0]
    assert [(v.version, action) for v, action in plan.packages] == [(1, "update"), (2, "install")]
    assert plan.blocked == []
