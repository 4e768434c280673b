"""In-process tests against real SoftHSM2 tokens: the collection's code imported from this checkout (no build)
talks to a fresh token per test through python-pkcs11.

SoftHSM2 reads SOFTHSM2_CONF once per process, so all in-process tokens share one token folder; each test gets
its own freshly initialised token (its own label) in it.
"""

from __future__ import annotations

import itertools
import os

import pytest

from tests.conftest import PKCS11_MODULE, make_token

_counter = itertools.count(1)


@pytest.fixture(scope="session", autouse=True)
def collection_on_sys_path(source_collection):
    """The collection imported from this checkout, no build (see tests/conftest.py)."""
    return source_collection


@pytest.fixture(scope="session")
def unit_token_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("in-process-hsm")
    os.environ["SOFTHSM2_CONF"] = str(root / "softhsm2.conf")
    return root


@pytest.fixture
def hsm_token(unit_token_root):
    """A fresh token in this process's SoftHSM2 folder, visible to python-pkcs11 here."""
    import pkcs11

    token = make_token(unit_token_root, "hsm-%d" % next(_counter))
    pkcs11.lib(PKCS11_MODULE).reinitialize()
    return token


@pytest.fixture
def settings(hsm_token):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import ConnectionSettings

    return ConnectionSettings(pkcs11_module=PKCS11_MODULE, token_label=hsm_token.label,
                              user_pin_file=str(hsm_token.pin_file))
