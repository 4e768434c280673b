"""key_replicate's plan (before any wrap) and replica_install's package checks. Pure: real KeyVersion records in a
fake key store, no token, no build."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

NOW = datetime(2026, 11, 30, tzinfo=timezone.utc)
FP = "sha256:" + "a" * 64


def _rep():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _replication

    return _replication


def _errors():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _errors

    return _errors


def _version(name, number, state="active", backup=True, revision=1, extractable=True, key_type="aes"):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import KeyVersion, build_key_spec
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE

    spec = build_key_spec({"name": name, "type": key_type, "backup": backup}, BASELINE)
    return KeyVersion(spec=spec, version=number, key_id=("%02x" % number) * 16, state=state, created=NOW,
                      transitions=(), key_check_value="abcdef" if key_type == "aes" else None, revision=revision,
                      wrap_with_trusted=backup, evidence={"extractable": extractable})


class FakeStore:
    token_label = "primary"

    def __init__(self, *versions):
        self._versions = {}
        for version in versions:
            self._versions.setdefault(version.name, []).append(version)

    def names(self):
        return sorted(self._versions)

    def versions(self, name):
        return list(self._versions.get(name, ()))


def _replica(held=None, hashes=None):
    return _rep().Replica(name="dr", host="hsm-b", public_key=None, fingerprint=FP, held=held or {},
                          oaep_hashes=hashes)


def _held(version, revision=None, state=None, key_id=None):
    return {(version.name, version.version): {"id": key_id or version.key_id,
                                              "revision": revision or version.revision,
                                              "state": state or version.state}}


def test_the_plan_installs_updates_withdraws_keeps_and_blocks():
    new = _version("vault", 3)
    rotated = _version("vault", 2, state="deactivated", revision=2)
    destroyed = _version("vault", 1, state="destroyed", revision=3)
    sealed = _version("old", 1, backup=False, extractable=False)
    sealed_spec = replace(sealed.spec, backup=True)  # backup switched on later: the old version cannot leave
    old = replace(sealed, spec=sealed_spec)
    kept = _version("signer", 1, key_type="ec")
    store = FakeStore(destroyed, rotated, new, old, kept)
    held = {}
    held.update(_held(destroyed, revision=2, state="deactivated"))
    held.update(_held(rotated, revision=1, state="active"))
    held.update(_held(kept))
    names = _rep().backup_keys(store)
    assert names == ["old", "signer", "vault"]
    plan = _rep().plan_replica(store, _replica(held), names)
    assert [(v.label, action) for v, action in plan.packages] == [
        ("vault:v1", "withdraw"), ("vault:v2", "update"), ("vault:v3", "install")]
    assert [v.label for v in plan.unchanged] == ["signer:v1"]
    assert [(b["name"], b["version"]) for b in plan.blocked] == [("old", 1)]
    assert "generated before backup" in plan.blocked[0]["why"]


def test_a_destroyed_version_goes_as_a_tombstone_once():
    """Its history (version number, transitions, the destruction) goes along, never a key."""
    destroyed = _version("vault", 1, state="destroyed", revision=2)
    store = FakeStore(destroyed)
    plan = _rep().plan_replica(store, _replica(), ["vault"])
    assert [(v.label, action) for v, action in plan.packages] == [("vault:v1", "tombstone")]
    plan = _rep().plan_replica(store, _replica(_held(destroyed)), ["vault"])
    assert plan.packages == [] and [v.label for v in plan.unchanged] == ["vault:v1"]


def test_a_replica_holding_another_key_under_the_label_is_refused():
    version = _version("vault", 1)
    store = FakeStore(version)
    with pytest.raises(_errors().KeyConflict, match="copies of another token") as info:
        _rep().plan_replica(store, _replica(_held(version, key_id="ff" * 16)), ["vault"])
    assert info.value.option == "replicas"


def test_only_backup_keys_are_replicated_and_a_named_other_key_is_refused():
    store = FakeStore(_version("vault", 1), _version("local", 1, backup=False))
    assert _rep().backup_keys(store) == ["vault"]
    with pytest.raises(_errors().PolicyViolation, match="not a backup key") as info:
        _rep().backup_keys(store, ["local"])
    assert info.value.option == "keys"
    with pytest.raises(_errors().KeyNotFound):
        _rep().backup_keys(store, ["missing"])


def test_the_replicas_own_restore_signer_never_goes_along():
    """restore-signing signs only in the replica that made it: never selected (even with a backup spec), refused
    when named, and not reported among the copies the replica holds."""
    own = _version("restore-signing", 1, key_type="ec")  # as if it had been made for backup
    store = FakeStore(_version("vault", 1), own)
    assert _rep().backup_keys(store) == ["vault"]
    with pytest.raises(_errors().PolicyViolation, match="never leaves its token") as info:
        _rep().backup_keys(store, ["restore-signing"])
    assert info.value.option == "keys"
    assert [entry["name"] for entry in _rep().held_versions(store)] == ["vault"]


def test_a_replica_without_an_approved_key_is_refused_before_any_wrap():
    store = FakeStore(_version("vault", 1))
    approved_for_a_recipient = SimpleNamespace(kind="recipient", fingerprint=FP, recipient="dr", host="hsm-b")
    with pytest.raises(_errors().PolicyViolation, match="kind: replica") as info:
        _rep().plan_replication(store, [_replica()], ["vault"], [approved_for_a_recipient])
    assert info.value.option == "replicas"


def test_the_oaep_hash_is_one_every_replica_unwraps_with():
    replicas = [_replica(hashes=("sha1", "sha256")), _replica(hashes=("sha256",)), _replica()]
    assert _rep().choose_oaep_hash(replicas, ["sha512", "sha256", "sha1"], "primary") == "sha256"
    with pytest.raises(_errors().MechanismUnsupported):
        _rep().choose_oaep_hash([_replica(hashes=("sha1",))], ["sha256"], "primary")


def _package(version, **changes):
    package = {"format": 1, "kind": "replica", "action": "install", "transport_key_fingerprint": FP,
               "name": version.name, "version": version.version, "id": version.key_id, "type": version.spec.type,
               "revision": version.revision, "state": version.state, "metadata": version.encode().decode(),
               "wrapped": "AAAA"}
    package.update(changes)
    return package


def test_a_package_is_checked_against_its_own_metadata_and_addressee():
    version = _version("vault", 1)
    assert _rep().validate_replica_package(_package(version), 0, FP).key_id == version.key_id
    with pytest.raises(_errors().PackageRejected, match="addressed to transport key"):
        _rep().validate_replica_package(_package(version), 0, "sha256:" + "b" * 64)
    with pytest.raises(_errors().PackageRejected, match="does not match the package"):
        _rep().validate_replica_package(_package(version, state="destroyed"), 0, FP)
    with pytest.raises(_errors().PackageRejected, match="cannot be read"):
        _rep().validate_replica_package(_package(version, metadata="{}"), 0, FP)
    with pytest.raises(_errors().InvalidOption, match="no wrapped key"):
        _rep().validate_replica_package(_package(version, wrapped=None), 0, FP)
    with pytest.raises(_errors().InvalidOption) as info:
        _rep().validate_replica_package(_package(version, action="steal"), 0, FP)
    assert info.value.option == "packages"
    with pytest.raises(_errors().InvalidOption, match="not shown") as info:  # a malformed blob is never echoed
        _rep().validate_replica_package(_package(version, wrapped="U0VDUkVUS0VZ\n"), 0, FP)
    assert "U0VDUkVU" not in info.value.message


def _signed_checkpoint(private_key, key_id, seq, journal_id="j-1", label="primary"):
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from ansible_collections.secops.keylifecycle.plugins.module_utils._checkpoint import checkpoint_payload

    checkpoint = {"journal_id": journal_id, "seq": seq, "head_hash": "ab" * 32,
                  "signed_at": "2026-11-30T00:00:00+00:00", "key_id": key_id, "key_version": 1,
                  "public_key_fingerprint": "sha256:" + "c" * 64, "token_label": label, "token_serial": "1"}
    payload = checkpoint_payload(journal_id, seq, checkpoint["head_hash"], checkpoint["signed_at"])
    checkpoint["signature"] = base64.b64encode(private_key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    return checkpoint


def test_a_restore_moves_the_pin_only_to_a_checkpoint_the_restored_key_signed():
    """The replica's pin is behind the journal (every anchored task moves it); the restore moves it to the journal's
    last checkpoint of the token, after verifying it under the restored key history. An older, foreign or forged
    checkpoint is refused."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    history = {"schema": 1, "revision": 1, "keys": {"k1": {"version": 1, "fingerprint": "sha256:x",
                                                           "public_key_pem": pem}}}
    todo = [("audit checkpoint key history", "audit-checkpoint-keys", history)]
    pin = {"journal_id": "j-1", "seq": 7, "head_hash": "00" * 32, "token_label": "primary", "policy_serial": 3,
           "revision": 9}
    installer = _rep().ReplicaInstaller(store=None, transport=None, signer=None, policy=None, restore=True)

    moved = installer._moved_pin(pin, _signed_checkpoint(key, "k1", 12), todo)
    assert moved["seq"] == 12 and moved["head_hash"] == "ab" * 32 and moved["policy_serial"] == 3
    # the fields the signature does not cover come from the key history, not from the checkpoint as given
    assert (moved["key_version"], moved["public_key_fingerprint"]) == (1, "sha256:x")
    unsigned = dict(_signed_checkpoint(key, "k1", 12), key_version=99)
    del unsigned["public_key_fingerprint"]
    assert installer._moved_pin(pin, unsigned, todo)["key_version"] == 1
    assert installer._moved_pin(pin, None, todo) is pin  # no checkpoint: as the replica kept it
    for bad in (_signed_checkpoint(key, "k1", 6),                       # behind the replicated pin
                _signed_checkpoint(key, "k1", 12, journal_id="j-2"),    # another journal
                _signed_checkpoint(key, "k1", 12, label="other"),       # another token
                _signed_checkpoint(other, "k1", 12),                    # not the restored key's signature
                _signed_checkpoint(key, "unknown", 12)):                # a key the history does not hold
        with pytest.raises(_errors().PackageRejected) as info:
            installer._moved_pin(pin, bad, todo)
        assert info.value.option == "checkpoint"


def test_the_pin_digest_ignores_its_moving_head():
    pin = {"journal_id": "j-1", "seq": 7, "head_hash": "00" * 32, "revision": 3, "policy_serial": 2}
    moved = dict(pin, seq=9, head_hash="11" * 32, revision=4)
    assert _rep().document_digest("audit journal pin", pin) == _rep().document_digest("audit journal pin", moved)
    assert _rep().document_digest("audit journal pin", pin) != _rep().document_digest(
        "audit journal pin", dict(pin, policy_serial=3))
    assert _rep().document_digest("approval nonce", pin) != _rep().document_digest("approval nonce", moved)


def test_the_shared_transport_target_options_name_the_oaep_hashes_the_wrap_knows():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._argspec import TRANSPORT_TARGET_OPTIONS
    from ansible_collections.secops.keylifecycle.plugins.module_utils._wrap import OAEP_HASHES

    assert TRANSPORT_TARGET_OPTIONS["oaep_hashes"]["choices"] == list(OAEP_HASHES)


def test_a_key_pair_package_is_refused_with_another_runs_kek_before_anything_is_stored():
    """Each key pair's package names (signed) the KEK it was wrapped under; a kek package that is not that one is
    refused by the check that runs before any copy is stored."""
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import package_payload
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import spki_fingerprint

    key = ec.generate_private_key(ec.SECP256R1())

    def signed(value):
        value = dict(value, signed_at="2026-12-03T10:00:00+00:00", signer_fingerprint=spki_fingerprint(key.public_key()))
        der = key.sign(package_payload(value), ec.ECDSA(hashes.SHA256()))
        return dict(value, signature=base64.b64encode(der).decode())

    class Store:
        token_label = "replica"

        @staticmethod
        def version(_name, _number):
            return None

    installer = _rep().ReplicaInstaller(Store(), SimpleNamespace(fingerprint=FP),
                                        SimpleNamespace(public_key=key.public_key(), trusted=False), policy=None)
    pair = _version("signer", 1, key_type="ec")
    kek = signed({"format": 1, "kind": "replica-kek", "transport_key_fingerprint": FP, "id": "aa" * 16,
                  "mechanism": "CKM_RSA_PKCS_OAEP:sha1", "wrapped": "AAAA"})
    ok = signed(_package(pair, mechanism=_rep().KEK_MECHANISM, kek_id="aa" * 16))
    assert installer._check_package(0, ok, kek)[1].label == "signer:v1"
    other = signed(_package(pair, mechanism=_rep().KEK_MECHANISM, kek_id="bb" * 16))
    with pytest.raises(_errors().PackageRejected, match="wrapped under replica KEK bbbb") as info:
        installer._check_package(0, other, kek)
    assert info.value.option == "kek"


def test_a_package_refused_part_way_keeps_the_events_of_the_copies_stored_before_it():
    """The second key's check value does not match its metadata: the first copy is stored already. The failure
    carries its replica-install event (journaled) and says changed, instead of "nothing was changed"."""
    import base64
    from types import SimpleNamespace

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext
    from ansible_collections.secops.keylifecycle.plugins.module_utils._package_signing import package_payload
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import spki_fingerprint

    key = ec.generate_private_key(ec.SECP256R1())

    def signed(value):
        value = dict(value, signed_at="2026-12-03T10:00:00+00:00", signer_fingerprint=spki_fingerprint(key.public_key()))
        return dict(value, signature=base64.b64encode(key.sign(package_payload(value),
                                                               ec.ECDSA(hashes.SHA256()))).decode())

    class Unwrapped:
        def __init__(self, check_value):
            self.check_value = check_value

        def encrypt(self, data, mechanism=None):
            return bytes.fromhex(self.check_value) + bytes(13)

        def copy(self, attrs):
            return SimpleNamespace(stored=True)

        def destroy(self):
            pass

    class Replica:
        token_label = "replica"

        def __init__(self):
            self.stored = []

        def version(self, _name, _number):
            return None

        def record_copy(self, version, objects):
            self.stored.append(version.label)

    check_values = iter(["abcdef", "000000"])
    transport = SimpleNamespace(fingerprint=FP, private=SimpleNamespace(
        unwrap_key=lambda *args, **kwargs: Unwrapped(next(check_values))))
    replica = Replica()
    installer = _rep().ReplicaInstaller(replica, transport, SimpleNamespace(public_key=key.public_key(), trusted=False),
                                        policy=SimpleNamespace(compromise_disables_decrypt=False))
    packages = [signed(_package(_version(name, 1), mechanism="CKM_RSA_PKCS_OAEP:sha1")) for name in ("vault", "other")]
    todo = [installer._check_package(index, package, None) for index, package in enumerate(packages)]
    with pytest.raises(_errors().PackageRejected) as refused:
        installer.apply((todo, [], None), None, AuditContext("op", "test", "run-1", host="hsm-b"), check_mode=False)
    assert replica.stored == ["vault:v1"]
    assert refused.value.changed is True
    assert [(e["event"]["action"], e["key"]["label"]) for e in refused.value.audit_events] == [
        ("replica-install", "vault:v1")]
    assert "Before that, this task still changed the token (replica-install vault:v1" in refused.value.message


def test_a_package_of_the_restore_signer_or_with_a_blob_that_is_not_base64_is_refused_before_anything_is_stored():
    with pytest.raises(_errors().PackageRejected) as refused:
        _rep().validate_replica_package(_package(_version("restore-signing", 1)), 0, FP)
    assert "restore-signing" in refused.value.message and refused.value.option == "packages"
    with pytest.raises(_errors().InvalidOption) as refused:
        _rep().validate_replica_package(_package(_version("vault", 1), wrapped="AAAAA"), 3, FP)
    assert refused.value.message == "packages[3]: wrapped is not valid base64." and refused.value.option == "packages"


def test_a_new_copy_under_a_cka_id_another_version_has_is_refused():
    """A key is found, and verified absent when withdrawn, by its CKA_ID: a second key under one could never go."""
    held = _version("old", 1)

    class Replica:
        token_label = "replica"

        @staticmethod
        def names():
            return ["old"]

        @staticmethod
        def versions(name):
            return [held] if name == "old" else []

    installer = _rep().ReplicaInstaller(Replica(), None, None, policy=None)
    clash = _version("new", 1)  # the same CKA_ID as old:v1
    assert clash.key_id == held.key_id
    with pytest.raises(_errors().KeyConflict) as refused:
        installer._check_ids([({}, clash, None)])
    assert "old:v1" in refused.value.message and refused.value.option == "packages"
    # two packages of the batch under one CKA_ID, and an update of a held version (its own id) is fine
    with pytest.raises(_errors().KeyConflict):
        installer._check_ids([({}, _version("twin", 2), None), ({}, _version("other", 2), None)])
    installer._check_ids([({}, held, held), ({}, _version("fresh", 3), None)])
