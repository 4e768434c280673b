"""The capability probe (token_info, ``_token_probe``) on a real SoftHSM2 token.

What SoftHSM2 2.6.1 does is known (docs/hsm-vendors.md, and the issue that asked for the probe): it generates AES,
RSA and EC (P-256, P-384) keys, wraps with OAEP only under SHA-1 although it lists CKM_RSA_PKCS_OAEP, wraps with
CKM_AES_KEY_WRAP and _PAD, knows CKA_WRAP_WITH_TRUSTED and refuses CKA_TRUSTED to a user session, and honours
CKA_DESTROYABLE and CKA_MODIFIABLE false. The probe must find exactly that, and leave the token as it was.
"""

from __future__ import annotations

import pytest

from tests.hsm.test_module_main import connection, objects_of
from tests.unit.test_module_main import run_main


def test_token_info_finds_what_softhsm2_does_and_writes_nothing(capsys, hsm_token, settings):
    before = objects_of(settings)
    result = run_main(capsys, "token_info", connection(hsm_token))
    assert not result.get("failed") and result["changed"] is False, result
    caps = result["capabilities"]
    assert caps["token"]["label"] == hsm_token.label and caps["token"]["manufacturer"].startswith("SoftHSM")
    assert caps["token"]["serial"] and caps["token"]["firmware_version"]
    assert {"CKM_AES_KEY_GEN", "CKM_RSA_PKCS_OAEP", "CKM_EC_KEY_PAIR_GEN", "CKM_AES_KEY_WRAP_PAD"} <= set(
        caps["mechanisms"])
    assert caps["generates"]["aes"] == [128, 192, 256]
    assert caps["generates"]["rsa"]["generated"] is True and caps["generates"]["rsa"]["max_bits"] >= 4096
    assert caps["generates"]["ec"] == ["P-256", "P-384"]
    # the flags list OAEP for every hash; only SHA-1 wraps
    assert caps["oaep_hashes"] == ["sha1"] and caps["best_oaep_hash"] == "sha1"
    assert caps["aes_key_wrap"] == {"CKM_AES_KEY_WRAP": True, "CKM_AES_KEY_WRAP_PAD": True}
    assert caps["wrap_with_trusted"] is True and caps["trusted_refused_to_user"] is True
    assert (caps["destroyable"], caps["modifiable"]) == ("honoured", "honoured")
    assert all(value is True for value in caps["attempts"].values()), caps["attempts"]
    # session objects only: the token holds what it held
    assert objects_of(settings) == before


def test_a_missing_capability_names_the_token_and_the_mechanism(capsys, hsm_token, settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _token_probe
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import CapabilityMissing
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_session

    with open_session(settings, rw=False) as session:
        caps = _token_probe.probe(session, settings.token_label)
    _token_probe.require(caps, "ec", curve="P-256")
    _token_probe.require(caps, "trusted_wrapping")
    # the same token as openCryptoki's soft token answers: no EC key pair generation, no CKA_WRAP_WITH_TRUSTED
    caps.mechanisms.remove("CKM_EC_KEY_PAIR_GEN")
    caps.generates["ec"] = []
    with pytest.raises(CapabilityMissing) as refused:
        _token_probe.require(caps, "ec", option="keys")
    assert str(refused.value) == ("token %s cannot generate EC keys (CKM_EC_KEY_PAIR_GEN not offered)."
                                  % hsm_token.label)
    assert refused.value.kind == "capability_missing" and refused.value.option == "keys"
    caps.wrap_with_trusted = False
    caps.attempts["trusted_wrapping"] = "AttributeTypeInvalid"
    with pytest.raises(CapabilityMissing, match=r"cannot restrict wrapping to trusted keys \(CKA_WRAP_WITH_TRUSTED "
                                                r"/ CKA_TRUSTED: AttributeTypeInvalid\)"):
        _token_probe.require(caps, "trusted_wrapping")


def test_probe_oaep_picks_the_hash_that_wraps(hsm_token, settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _token_probe
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_session

    before = objects_of(settings)
    with open_session(settings, rw=False) as session:
        assert _token_probe.probe_oaep_hashes(session, settings.token_label)[0] == "sha1"
    assert objects_of(settings) == before


def test_require_generation_refuses_what_the_token_cannot_make_before_anything_is_written(hsm_token, settings):
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _token_probe
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import CapabilityMissing
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import open_session
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import KeySpec

    def spec(name, key_type, size, curve=None, distributable=False):
        return KeySpec(name=name, type=key_type, size=size, curve=curve, usage=("sign", "verify"),
                       distributable=distributable, rotation_period=1, retention_period=1)

    before = objects_of(settings)
    fine = [spec("a", "aes", 256, distributable=True), spec("r", "rsa", 3072), spec("e", "ec", 384, "P-384"),
            spec("e2", "ec", 256, "P-256")]
    with open_session(settings, rw=False) as session:
        _token_probe.require_generation(session, settings.token_label, fine, require_trusted_wrapping=True)
        _token_probe.require_generation(session, settings.token_label, [], require_trusted_wrapping=True)
        # beyond the token's CKM_RSA_PKCS_KEY_PAIR_GEN limit (SoftHSM2: 16384 bits): refused by its key lengths
        too_big = [spec("huge", "rsa", 65536), spec("huge2", "rsa", 65536)]
        with pytest.raises(CapabilityMissing) as refused:
            _token_probe.require_generation(session, settings.token_label, fine + too_big,
                                            require_trusted_wrapping=True)
    message = str(refused.value)
    assert message.startswith("Refusing the whole batch, nothing was changed: token %s cannot generate RSA keys "
                              "(CKM_RSA_PKCS_KEY_PAIR_GEN: 65536 bits is outside the token's " % hsm_token.label)
    assert "which keys 'huge', 'huge2' need" in message and "token_info" in message
    assert refused.value.option == "keys"
    assert objects_of(settings) == before


def test_the_pin_length_range_comes_from_the_token_info(capsys, hsm_token):
    result = run_main(capsys, "token_info", connection(hsm_token))
    # SoftHSM2 2.6: CK_TOKEN_INFO ulMinPinLen 4, ulMaxPinLen 255 (its MIN_PIN_LEN / MAX_PIN_LEN)
    assert result["capabilities"]["token"]["pin_length"] == {"min": 4, "max": 255}, result
