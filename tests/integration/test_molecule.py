"""Molecule scenarios of the roles (extensions/molecule/<role>): real SoftHSM2 tokens on localhost, no containers.

Each scenario runs prepare, converge, idempotence (a second converge changes nothing), check (converge in check
mode) and verify, against the collection built from this checkout.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import REPO, VENV_BIN

SCENARIOS = sorted(p.name for p in (REPO / "extensions" / "molecule").iterdir() if (p / "molecule.yml").exists())


def test_every_role_has_a_scenario():
    assert SCENARIOS == sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_role_scenario(scenario, collections_path, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_", "KEYLIFECYCLE_"))}
    env.update({
        "PATH": "%s:%s" % (VENV_BIN, os.environ.get("PATH", "/usr/bin:/bin")),
        "ANSIBLE_CONFIG": str(tmp_path / "no-ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
        "ANSIBLE_NOCOLOR": "1",
        "NO_COLOR": "1",
        "KEYLIFECYCLE_AUDIT_STATE_DIR": str(tmp_path / "controller-state"),
    })
    # forget what an earlier run left in the scenario's ephemeral state (an unmanaged driver never destroys)
    subprocess.run([str(VENV_BIN / "molecule"), "reset", "-s", scenario], cwd=str(REPO), env=env,
                   capture_output=True, text=True, check=False, timeout=120)
    proc = subprocess.run([str(VENV_BIN / "molecule"), "test", "-s", scenario], cwd=str(REPO), env=env,
                          capture_output=True, text=True, check=False, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    for step in ("prepare", "converge", "idempotence", "check", "verify"):
        assert "%s: Executed: Successful" % step in output.replace(" ➜ ", ": "), (step, output[-3000:])
