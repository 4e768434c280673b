"""choose_oaep_hashes: each recipient's OAEP hash is the strongest the HSM wraps with (or the one pinned) that the
recipient's token unwraps with; a recipient with a key to wrap and none in common is refused before any wrap.
Pure: the fake store of test_distribution_plan, no token."""

from __future__ import annotations

import pytest

from tests.unit.test_distribution_plan import NOW, _dist, _recipient, _store

OCK = ["sha512", "sha384", "sha256", "sha1"]  # what openCryptoki 3.8 wraps with, strongest first


def _plans(oaep_hashes, installed=None):
    """One recipient's plan (plan_recipient: what it receives), its token unwrapping with ``oaep_hashes``."""
    recipient = _recipient(installed=installed)
    recipient.oaep_hashes = None if oaep_hashes is None else tuple(oaep_hashes)
    return [_dist().plan_recipient(_store(), recipient, NOW)]


@pytest.mark.parametrize("unwraps, chosen", [
    (None, "sha512"),              # not stated (an older enrollment, or a key_distribute call by hand): any
    (["sha1"], "sha1"),            # SoftHSM2 2.6
    (["sha256", "sha1"], "sha256"),
])
def test_the_strongest_hash_both_tokens_implement_is_chosen(unwraps, chosen):
    plans = _plans(unwraps)
    _dist().choose_oaep_hashes(plans, OCK, "hsm")
    assert plans[0].oaep_hash == chosen


def test_no_hash_in_common_is_refused_before_any_wrap_naming_both_sides():
    plans = _plans(["sha1"])
    with pytest.raises(_dist().MechanismUnsupported) as err:
        _dist().choose_oaep_hashes(plans, ["sha256"], "hsm", pinned=True)
    assert "unwraps with RSA-OAEP under sha1 only" in str(err.value)
    assert "token 'hsm' is pinned to sha256" in str(err.value) and err.value.option == "oaep_hash"
    plans = _plans([])
    with pytest.raises(_dist().MechanismUnsupported) as err:
        _dist().choose_oaep_hashes(plans, OCK, "hsm")
    assert "its token unwraps with no RSA-OAEP hash" in str(err.value) and err.value.option == "recipients"


def test_a_recipient_with_nothing_to_wrap_is_not_refused():
    installed = {("db", 1): {"id": "id-db-1", "key_check_value": "kcv-db-1", "state": "deactivated"},
                 ("db", 2): {"id": "id-db-2", "key_check_value": "kcv-db-2", "state": "active"},
                 ("old", 3): {"id": "id-old-3", "key_check_value": "kcv-old-3", "state": "active"}}
    plans = _plans(["sha1"], installed=installed)
    assert plans[0].installs() == []
    _dist().choose_oaep_hashes(plans, ["sha256"], "hsm", pinned=True)
    assert plans[0].oaep_hash == "sha256"
