"""key_info's probe summary (option probe_token) through ansible-playbook on a real SoftHSM2 token, and the compliance
report's "Token capabilities" section rendered from it by playbooks/report.yml.

What SoftHSM2 2.6.1 can do is known (docs/hsm-vendors.md): it generates EC P-256, wraps with OAEP only under
SHA-1, and restricts wrapping to trusted keys. The token is read independently (tests/helpers/read_token.py,
pkcs11-tool) to show the probe wrote nothing and to count the mechanisms.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import yaml

from tests.conftest import PKCS11_MODULE, REPO


def _mechanisms_listed(token):
    """How many mechanisms ``pkcs11-tool --list-mechanisms`` (OpenSC) lists for the token's slot."""
    proc = subprocess.run(["pkcs11-tool", "--module", PKCS11_MODULE, "--token-label", token.label,
                           "--list-mechanisms"], capture_output=True, text=True, check=True,
                          env={**os.environ, **token.env})
    lines = proc.stdout.splitlines()
    start = lines.index("Supported mechanisms:") + 1
    return len([line for line in lines[start:] if re.match(r"^  \S", line)])


def test_key_info_returns_the_probe_summary_only_when_asked_and_writes_nothing(runner, token):
    runner.task("key_generate", {"keys": [{"name": "db"}]})
    before = token.objects()

    plain = runner.task("key_info", {})
    assert plain.rc == 0 and plain.task["changed"] is False
    assert "token_capabilities" not in plain.task  # no probe unless asked
    assert [r["label"] for r in plain.task["key_versions"]] == ["audit-checkpoint:v1", "db:v1"]

    probed = runner.task("key_info", {"probe_token": True}, "--check")
    assert probed.rc == 0 and probed.task["changed"] is False, probed.output
    # the listing is the same with the probe (its session objects are not listed)
    assert [(r["label"], r["id"]) for r in probed.task["key_versions"]] == [
        (r["label"], r["id"]) for r in plain.task["key_versions"]]
    assert probed.task["anomalies"] == [] and probed.task["drift"] == []
    caps = probed.task["token_capabilities"]
    assert caps["token"]["label"] == token.label and caps["token"]["manufacturer"].startswith("SoftHSM")
    assert caps["token"]["serial"] and caps["token"]["firmware_version"]
    assert "P-256" in caps["generates"]["ec"] and caps["generates"]["aes"] == [128, 192, 256]
    assert caps["generates"]["rsa"]["generated"] is True
    assert caps["best_oaep_hash"] == "sha1" and caps["oaep_hashes"] == ["sha1"]
    assert caps["trusted_wrapping"] is True and caps["aes_key_wrap_pad"] is True and caps["aes_key_wrap"] is True
    assert (caps["destroyable"], caps["modifiable"]) == ("honoured", "honoured")
    assert caps["missing"] == []
    # a summary: the mechanism list is counted, not returned
    assert "mechanisms" not in caps and caps["mechanism_count"] == _mechanisms_listed(token)
    # session objects only: the token holds exactly what it held
    assert token.objects() == before
    assert token.user_pin not in probed.output


def test_the_report_playbook_probes_the_token_and_shows_its_capabilities(runner, token, tmp_path):
    runner.task("key_generate", {"keys": [{"name": "db"}]})
    report_dir = tmp_path / "reports"
    inventory = tmp_path / "report-inventory.yml"
    inventory.write_text(yaml.safe_dump({"hsm": {"hosts": {"test-hsm": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "keylifecycle_audit_journal": str(runner.journal), "keylifecycle_report_dir": str(report_dir),
        "keylifecycle_environment_name": "caps-env",
        "hsm_pkcs11_module": PKCS11_MODULE, "hsm_token_label": token.label,
        "hsm_user_pin_file": str(token.pin_file), "hsm_environment": token.env}}}}))
    before = token.objects()
    run = runner.playbook(REPO / "playbooks" / "report.yml", inventory=inventory)
    assert run.returncode == 0, run.stdout + run.stderr
    assert token.objects() == before
    markdown = (report_dir / "report.md").read_text()
    page = (report_dir / "report.html").read_text()
    section = markdown[markdown.index("## Token capabilities\n"):markdown.index("## Trusted distribution\n")]
    assert "on session objects, nothing written to the token: **%s**, SoftHSM" % token.label in section
    assert "| generates EC | P-256, P-384 |" in section
    assert "| OAEP hashes C_WrapKey works with | sha1 (strongest: sha1) |" in section
    assert "| trusted wrapping (CKA_WRAP_WITH_TRUSTED, CKA_TRUSTED refused to the user) | yes |" in section
    assert "The token has every capability the collection uses." in section
    assert "not probed" not in section
    assert "<h2>Token capabilities</h2>" in page and "<b>%s</b>" % token.label in page
    assert '<tr><td>generates EC</td><td class="ok">P-256, P-384</td></tr>' in page
    assert "db:v1" in markdown  # the rest of the report is still there
    assert token.user_pin not in markdown + page
