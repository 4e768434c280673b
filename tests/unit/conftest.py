"""Unit tests: pure logic, the collection imported from this checkout; no build, no token, no server.

Tests that need a real token are in tests/hsm (in process) and tests/integration (through ansible-playbook).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def collection_on_sys_path(source_collection):
    """The collection imported from this checkout, no build (see tests/conftest.py)."""
    return source_collection
