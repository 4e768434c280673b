"""playbooks/report.yml: the key inventory and compliance report, as Markdown and HTML, shown in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import yaml

from tests.conftest import REPO


def write_inventory(runner, token, report_dir):
    inventory = runner.tmp_path / "report-inventory.yml"
    inventory.write_text(yaml.safe_dump({"hsm": {"hosts": {"test-hsm": {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "keylifecycle_audit_journal": str(runner.journal), "keylifecycle_report_dir": str(report_dir),
        "keylifecycle_environment_name": "test-env",
        "hsm_pkcs11_module": token.connection()["pkcs11_module"], "hsm_token_label": token.label,
        "hsm_user_pin_file": str(token.pin_file), "hsm_environment": token.env,
        "key_policy": {"max_rotation_period": "30d"}}}}}))
    return inventory


def test_report_lists_keys_events_and_audit_status_and_renders_in_chromium(runner, token, tmp_path):
    runner.task("key_generate", {"keys": [{"name": "payments-db", "retention_period": "30d"},
                                          {"name": "signing", "type": "ec", "usage": ["sign", "verify"]}]})
    runner.task("key_rotate", {"name": ["payments-db"], "force": True})
    refused = runner.task("key_destroy", {"name": "payments-db", "version": 2})  # active: refused, journaled
    assert refused.task["failed"]
    report_dir = tmp_path / "reports"
    inventory = write_inventory(runner, token, report_dir)

    checked = runner.playbook(REPO / "playbooks" / "report.yml", "--check", inventory=inventory)
    assert checked.returncode == 0 and not report_dir.exists(), checked.stdout  # check mode writes nothing
    run = runner.playbook(REPO / "playbooks" / "report.yml", inventory=inventory)
    assert run.returncode == 0, run.stdout + run.stderr
    markdown = (report_dir / "report.md").read_text()
    page = (report_dir / "report.html").read_text()
    metadata = token.metadata()
    for label in ("payments-db:v1", "payments-db:v2", "signing:v1"):
        assert label in markdown and label in page
        assert metadata[label]["id"] in markdown
    assert metadata["payments-db:v1"]["key_check_value"] in markdown
    assert "Audit chain: **verifies**" in markdown
    assert "| key-rotate | success | payments-db:v2 |" in markdown  # the last lifecycle events, from the journal
    assert "key-destroy | failure" in markdown
    assert "SOC 2 CC6.1" in markdown and "HIPAA 164.312(e)(2)(ii)" in markdown
    assert "<svg" in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # self-contained
    assert token.user_pin not in markdown + page
    assert (report_dir / "report.html").stat().st_mode & 0o777 == 0o640

    # the HTML page renders in headless Chromium (Debian chromium) and a screenshot is taken
    browser = shutil.which("chromium")
    assert browser, "chromium is missing: run ./scripts/bootstrap.sh"
    screenshot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            ["timeout", "90", browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--user-data-dir=%s" % profile, "--screenshot=%s" % screenshot, "--window-size=1200,900",
             "file://%s" % (report_dir / "report.html")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and screenshot.exists(), proc.stderr[-2000:]
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000, len(png)  # a rendered page, not a blank one
    shutil.copy(screenshot, report_dir / "report.png")


def test_scheduled_rotation_playbook_writes_a_summary_and_fails_loudly(runner, token, tmp_path):
    import json

    runner.task("key_generate", {"keys": [{"name": "due-soon", "rotation_period": "7d"}, {"name": "fresh"}]})
    runner.clock.advance(days=8)
    report_dir = tmp_path / "reports"
    inventory = write_inventory(runner, token, report_dir)
    run = runner.playbook(REPO / "playbooks" / "rotate.yml", inventory=inventory)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((report_dir / "rotate-summary.json").read_text())
    assert summary["failed"] is False and summary["environment"] == runner.tmp_path.name
    assert [r["name"] for r in summary["rotated"]] == ["due-soon"]
    assert {"due-soon:v2", "fresh:v1"} <= set(token.metadata())

    # a failure (here a PIN file others can read) exits non-zero and still leaves a summary saying so
    token.pin_file.chmod(0o644)
    failed = runner.playbook(REPO / "playbooks" / "rotate.yml", inventory=inventory)
    token.pin_file.chmod(0o600)
    assert failed.returncode != 0
    summary = json.loads((report_dir / "rotate-summary.json").read_text())
    assert summary["failed"] is True and summary["rotated"] == []


def test_destroy_expired_playbook_destroys_only_what_retention_allows(runner, token, tmp_path):
    runner.task("key_generate", {"keys": [{"name": "short", "retention_period": "7d"},
                                          {"name": "long", "retention_period": "30d"}]})
    runner.task("key_rotate", {"name": ["short", "long"], "force": True})
    runner.clock.advance(days=8)
    inventory = write_inventory(runner, token, tmp_path / "reports")
    checked = runner.playbook(REPO / "playbooks" / "destroy_expired.yml", "--check", inventory=inventory)
    assert checked.returncode == 0 and "short v1: destroy" in checked.stdout, checked.stdout
    assert token.metadata()["short:v1"]["state"] == "deactivated"  # check mode destroyed nothing
    run = runner.playbook(REPO / "playbooks" / "destroy_expired.yml", inventory=inventory)
    assert run.returncode == 0, run.stdout + run.stderr
    metadata = token.metadata()
    assert metadata["short:v1"]["state"] == "destroyed" and metadata["long:v1"]["state"] == "deactivated"
    assert "short:v1" not in {o["label"] for o in token.key_objects() if o["class"] == "SECRET_KEY"}


def test_report_uses_the_inventorys_templates_and_refuses_a_bad_one(runner, token, tmp_path):
    runner.task("key_generate", {"keys": [{"name": "custom-key"}]})
    own = tmp_path / "inventory-templates"
    own.mkdir()
    (own / "report.md.j2").write_text("CUSTOM MD {{ environment }}\n{% for v in versions %}- {{ v.label }} "
                                      "{{ v.state }}\n{% endfor %}Audit ok: {{ audit.ok }}\n")
    (own / "report.html.j2").write_text("<p>CUSTOM HTML {{ environment }}</p>{{ versions | length }}\n")
    report_dir = tmp_path / "reports"
    inventory = write_inventory(runner, token, report_dir)
    hosts = yaml.safe_load(inventory.read_text())
    host = hosts["hsm"]["hosts"]["test-hsm"]
    host.update(keylifecycle_report_markdown_template=str(own / "report.md.j2"),
                keylifecycle_report_html_template=str(own / "report.html.j2"), keylifecycle_environment_name="a<b")
    inventory.write_text(yaml.safe_dump(hosts))

    run = runner.playbook(REPO / "playbooks" / "report.yml", inventory=inventory)
    assert run.returncode == 0, run.stdout + run.stderr
    markdown = (report_dir / "report.md").read_text()
    page = (report_dir / "report.html").read_text()
    assert markdown.startswith("CUSTOM MD a<b\n") and markdown.endswith("Audit ok: True\n")
    assert "\n- custom-key:v1 active\n" in markdown
    assert page.startswith("<p>CUSTOM HTML a&lt;b</p>")  # HTML is autoescaped, Markdown is not
    assert (report_dir / "report.md").stat().st_mode & 0o777 == 0o640

    # a template path that does not exist: refused naming the option, and neither file is touched
    before = {name: (report_dir / name).stat().st_mtime_ns for name in ("report.md", "report.html")}
    host["keylifecycle_report_html_template"] = str(own / "missing.html.j2")
    inventory.write_text(yaml.safe_dump(hosts))
    refused = runner.playbook(REPO / "playbooks" / "report.yml", inventory=inventory)
    assert refused.returncode != 0
    assert "html_template: %s is not a readable file" % (own / "missing.html.j2") in refused.stdout, refused.stdout
    assert (report_dir / "report.md").read_text() == markdown and (report_dir / "report.html").read_text() == page
    assert before == {name: (report_dir / name).stat().st_mtime_ns for name in ("report.md", "report.html")}

    # a relative path is found as ansible.builtin.template finds its src: templates/ beside the playbook
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "relative.md.j2").write_text("RELATIVE {{ keys | map(attribute='name') | join(',') }}\n")
    play = tmp_path / "relative-report.yml"
    play.write_text(yaml.safe_dump([{"hosts": "hsm", "gather_facts": False, "tasks": [
        {"secops.keylifecycle.compliance_report": {
            "key_info": {"key_versions": [], "logical_keys": [{"name": "k1", "state": "active"}]},
            "output_dir": str(tmp_path / "relative"), "markdown_template": "relative.md.j2"}}]}]))
    relative = runner.playbook(play, inventory=inventory)
    assert relative.returncode == 0, relative.stdout + relative.stderr
    assert (tmp_path / "relative" / "report.md").read_text() == "RELATIVE k1\n"
    assert "<svg" not in (tmp_path / "relative" / "report.html").read_text()  # shipped template, no versions

    # options are validated by the module's argument spec: an unknown option and a wrong type are refused
    for extra, message in (({"html_templat": "x"}, "Invalid options for secops.keylifecycle.compliance_report: "
                                                   "html_templat"),
                           ({"events": "many"}, "argument 'events' is of type str")):
        play.write_text(yaml.safe_dump([{"hosts": "hsm", "gather_facts": False, "tasks": [
            {"secops.keylifecycle.compliance_report": dict(
                {"key_info": {"key_versions": []}, "output_dir": str(tmp_path / "relative")}, **extra)}]}]))
        invalid = runner.playbook(play, inventory=inventory)
        assert invalid.returncode != 0 and message in invalid.stdout, invalid.stdout


def test_report_shows_trusted_distribution_and_the_officers_approvals(runner, token, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    runner.task("key_generate", {"keys": [{"name": "shared", "distributable": True, "recipients": ["svc1"]}]})
    for name, host in (("svc1", "app1"), ("svc9", "app9")):  # svc9: no key lists it, so the approval is a finding
        pem = rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        approved = runner.task("recipient_approve", {
            "so_pin_file": str(token.so_pin_file), "approved_by": "olga", "change_ref": "CHG-12",
            "recipients": [{"name": name, "host": host, "public_key_pem": pem}]})
        assert approved.rc == 0, approved.stdout
    report_dir = tmp_path / "reports"
    run = runner.playbook(REPO / "playbooks" / "report.yml", inventory=write_inventory(runner, token, report_dir))
    assert run.returncode == 0, run.stdout + run.stderr
    markdown = (report_dir / "report.md").read_text()
    page = (report_dir / "report.html").read_text()
    [row] = [line for line in markdown.splitlines() if line.startswith("| shared:v1 |")]
    assert row.endswith("| trusted keys only |"), row
    assert "not wrap-with-trusted): none." in markdown
    assert "- Trusted transport key of no enrolled recipient: trusted-transport:svc9@app9:sha256:" in markdown
    assert "Trusted transport key of no enrolled recipient: trusted-transport:svc1" not in markdown
    approvals = [line for line in markdown.splitlines() if line.startswith("| ") and "| recipient-approve |" in line
                 and "| olga |" in line]
    assert len(approvals) == 2 and all(line.rstrip().endswith("| CHG-12 |") for line in approvals), approvals
    assert "Package signer: `sha256:" in markdown and "<h2>Trusted distribution</h2>" in page
    assert token.so_pin not in markdown + page and token.user_pin not in markdown + page
