"""The token-objects layer: document kinds, one enumeration, revisions, curves and usages, on a real token."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def tob():
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _token_objects

    return _token_objects


def _open(settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_session

    return open_session(settings)


# ---- tables (no token) ---------------------------------------------------------------------------


def test_curve_table_agrees_with_pkcs11_cryptography_and_the_policy(tob):
    from pkcs11.util.ec import encode_named_curve_parameters

    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import CURVE_BITS, CURVES

    assert set(CURVES.values()) == set(CURVE_BITS) <= set(tob.TOKEN_CURVES)
    for name, curve in tob.TOKEN_CURVES.items():
        assert curve.name == name
        assert curve.ec_params() == encode_named_curve_parameters(curve.oid_name) == curve.der_oid
        assert curve.cryptography_curve().name == curve.oid_name
        if name in CURVE_BITS:
            assert curve.cryptography_curve().key_size == CURVE_BITS[name]


def test_usage_map_covers_every_usage_and_one_side_of_a_pair(tob):
    from pkcs11 import Attribute

    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import USAGES

    assert tuple(tob.USAGE_ATTRIBUTES) == USAGES
    public = tob.usage_template(["verify", "sign"], "public")
    private = tob.usage_template(["verify", "sign"], "private", skip=tob.EC_NO_USAGES)
    assert public == {Attribute.ENCRYPT: False, Attribute.WRAP: False, Attribute.VERIFY: True}
    assert private == {Attribute.SIGN: True, Attribute.DERIVE: False}
    secret = tob.usage_template(["decrypt"], skip=("encrypt",))
    assert len(secret) == 6 and secret[Attribute.DECRYPT] is True and Attribute.ENCRYPT not in secret


def test_document_kinds_are_registered_once_each(tob):
    assert [k.application for k in (tob.KEY_METADATA, tob.RECIPIENT_METADATA, tob.AUDIT_CHECKPOINT)] == [
        "secops.keylifecycle", "secops.keylifecycle.recipient", "secops.keylifecycle.audit"]
    assert all(tob.DOCUMENT_KINDS[k.application] is k for k in tob.DOCUMENT_KINDS.values())
    with pytest.raises(ValueError):
        tob.register_kind(tob.AUDIT_CHECKPOINT)


def test_der_octet_string_short_long_and_raw(tob):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import TokenOperationFailed

    point = b"\x04" + bytes(range(64))
    assert tob.der_octet_string(b"\x04\x41" + point) == point
    long_point = b"\x04" + bytes(132)
    assert tob.der_octet_string(b"\x04\x81\x85" + long_point) == long_point
    assert tob.der_octet_string(point) == point  # a raw point, as some tokens return it
    with pytest.raises(TokenOperationFailed):
        tob.der_octet_string(b"\x03\x01")


# ---- on a token ----------------------------------------------------------------------------------

# A test kind, as a later issue would add one.
def _test_kind(tob, keep_history=True):
    return tob.DocumentKind(name="test document", application="secops.keylifecycle.test", encode=tob.canonical_json,
                            decode=lambda label, blob: json.loads(bytes(blob)), revision=lambda doc: doc["revision"],
                            keep_history=keep_history)


class _CountingSession:
    """A session that counts its searches (C_FindObjects)."""

    def __init__(self, session):
        self.session = session
        self.searches = []

    def get_objects(self, *args, **kwargs):
        self.searches.append(args)
        return self.session.get_objects(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.session, name)


def _documents(hsm_token):
    """The values of the data objects on the token, read by the independent reader."""
    return [json.loads(bytes.fromhex(o["value"])) if isinstance(o["value"], str) else o["value"]
            for o in hsm_token.objects() if o["class"] == "DATA"]


def _data(session, application, label, doc):
    from pkcs11 import Attribute, ObjectClass

    return session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.PRIVATE: True,
                                  Attribute.LABEL: label, Attribute.APPLICATION: application,
                                  Attribute.VALUE: json.dumps(doc).encode()})


def test_one_enumeration_indexes_documents_and_keys_by_kind_and_label(tob, settings, hsm_token):
    from pkcs11 import Attribute, KeyType, ObjectClass

    kind = _test_kind(tob)
    with _open(settings) as session:
        _data(session, kind.application, "doc", {"revision": 1})
        _data(session, "someone.else", "doc", {"revision": 9})
        session.generate_key(KeyType.AES, 128, label="doc", store=True, template={Attribute.SENSITIVE: True})
        session.generate_keypair(KeyType.RSA, 2048, label="pair", store=True)
        counting = _CountingSession(session)
        searches = counting.searches
        objects = tob.TokenObjects(counting, settings.token_label).load()
        assert len(searches) == 1  # one C_FindObjects for every kind
        assert objects.document_labels(kind) == ["doc"]
        assert objects.newest(kind, "doc").newest == {"revision": 1}
        assert len(objects.key_objects(ObjectClass.SECRET_KEY, "doc")) == 1
        assert objects.key_objects(ObjectClass.PRIVATE_KEY, "doc") == []
        assert len(objects.key_objects(ObjectClass.PUBLIC_KEY, "pair")) == 1
        assert sorted(objects.labels()) == ["doc", "pair"]
        assert objects.document_labels(tob.KEY_METADATA) == [] and objects.newest(tob.KEY_METADATA, "doc") is None
        assert len(searches) == 1  # reading the index searches no more


def test_newest_revision_wins_and_a_duplicated_revision_is_flagged(tob, settings, hsm_token):
    kind = _test_kind(tob)
    with _open(settings) as session:
        objects = tob.TokenObjects(session, settings.token_label).load()
        for revision in (1, 2, 3):
            objects.write(kind, "doc", {"revision": revision, "n": revision})
        assert objects.newest(kind, "doc") == tob.Revisions({"revision": 3, "n": 3})
    values = sorted(doc["revision"] for doc in _documents(hsm_token))
    assert values == [1, 2, 3]  # append-only: every revision is its own object
    with _open(settings) as session:
        assert tob.TokenObjects(session, settings.token_label).load().newest(kind, "doc").newest["n"] == 3
        _data(session, kind.application, "doc", {"revision": 3, "n": "again"})
        revisions = tob.TokenObjects(session, settings.token_label).load().newest(kind, "doc")
        assert revisions.duplicated and revisions.newest["revision"] == 3


def test_a_kind_without_history_keeps_only_the_latest_object(tob, settings, hsm_token):
    kind = _test_kind(tob, keep_history=False)
    with _open(settings) as session:
        objects = tob.TokenObjects(session, settings.token_label).load()
        objects.write(kind, "latest", {"revision": 1})
        objects.write(kind, "latest", {"revision": 2})
        assert len(objects.document_objects(kind, "latest")) == 1
    assert _documents(hsm_token) == [{"revision": 2}]


def test_destroyed_key_objects_leave_the_index(tob, settings, hsm_token):
    from pkcs11 import Attribute, KeyType, ObjectClass

    with _open(settings) as session:
        session.generate_key(KeyType.AES, 128, label="k:v1", store=True, template={Attribute.SENSITIVE: True})
        objects = tob.TokenObjects(session, settings.token_label).load()
        objects.destroy_key_objects("k:v1")
        assert objects.key_objects(ObjectClass.SECRET_KEY, "k:v1") == []
    assert [o for o in hsm_token.objects() if o["label"] == "k:v1"] == []


@pytest.mark.parametrize("curve", ["P-256", "P-384", "P-521"])
def test_ec_public_keys_are_read_with_the_curve_table(tob, settings, hsm_token, curve):
    from pkcs11 import Attribute, KeyType

    with _open(settings) as session:
        public, _private = session.generate_keypair(
            KeyType.EC, None, label="e", store=False,
            public_template={Attribute.EC_PARAMS: tob.TOKEN_CURVES[curve].ec_params()})
        assert tob.curve_of(public) is tob.TOKEN_CURVES[curve]
        key = tob.ec_public_key(public, curve)
        assert key.curve.name == tob.TOKEN_CURVES[curve].oid_name
        assert tob.spki_fingerprint(key).startswith("sha256:") and "BEGIN PUBLIC KEY" in tob.public_key_pem(key)


def test_rsa_public_key_and_evidence(tob, settings, hsm_token):
    from pkcs11 import Attribute, KeyType

    with _open(settings) as session:
        public, private = session.generate_keypair(
            KeyType.RSA, 2048, label="r", store=False,
            private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
        assert tob.rsa_public_key(public).key_size == 2048
        flags = tob.evidence(private)
        assert flags["local"] and flags["sensitive"] and not flags["extractable"]
        assert tob.never_left_the_token(flags)
