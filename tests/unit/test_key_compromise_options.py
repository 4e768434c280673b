"""key_rotate's version option: only for a compromise of one named key."""

from __future__ import annotations

import pytest


def test_version_option_rules():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._errors import InvalidOption
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_rotation import validate_versions

    validate_versions(None, ["k"], "scheduled")
    validate_versions([1], ["k"], "compromise")
    for versions, names, reason in (([1], ["k"], "manual"), ([1], ["a", "b"], "compromise"),
                                    ([0], ["k"], "compromise"), ([1], None, "compromise")):
        with pytest.raises(InvalidOption) as refused:
            validate_versions(versions, names, reason)
        assert refused.value.option == "version"
