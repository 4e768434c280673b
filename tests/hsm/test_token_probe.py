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
        assert _token_probe.probe_oaep(session, settings.token_label) == "sha1"
    assert objects_of(settings) == before
