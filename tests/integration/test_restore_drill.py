"""playbooks/restore_drill.yml end to end on the dev inventory (two SoftHSM2 tokens the drill makes itself), checked
by paths of the test's own: the report's verdict, the restored token read with python-pkcs11
(tests/helpers/read_token.py), the records decrypted with tests/helpers/gcm.py, and the drill's journal."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import GCM, PKCS11_MODULE, READER, REPO


def test_the_restore_drill_runs_end_to_end_and_its_report_says_what_was_checked(runner, tmp_path):
    drill_base = tmp_path / "drill"
    run = runner.playbook(REPO / "playbooks" / "restore_drill.yml", "-e", "keylifecycle_drill_dir=%s" % drill_base,
                          inventory=REPO / "inventories" / "dev")
    assert run.returncode == 0, run.stdout + run.stderr
    (run_dir,) = [path for path in drill_base.iterdir() if path.is_dir()]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["passed"] is True and len(report["checks"]) == 8 and all(c["ok"] for c in report["checks"])
    assert set(report["seconds"]) == {"1 generate, encrypt, rotate", "2 replicate", "3 wipe", "4 restore",
                                      "5 decrypt, continue, verify"}
    assert all(seconds > 0 for seconds in report["seconds"].values())
    html = (run_dir / "report.html").read_text()
    assert "PASSED" in html and html.count('class="ok">passed') == 8 and "FAILED" not in html

    # the restored primary, read independently: every version with the id and metadata the replica kept
    env = {"SOFTHSM2_CONF": str(run_dir / "primary" / "softhsm2.conf")}
    pin_file = run_dir / "primary" / "user.pin"
    objects = json.loads(subprocess.run([sys.executable, str(READER), PKCS11_MODULE, "drill-primary", str(pin_file)],
                                        capture_output=True, text=True, check=True, env=env).stdout)
    metadata = {o["label"]: o["value"] for o in objects if o.get("application") == "secops.keylifecycle"}
    assert metadata["drill-records:v1"]["state"] == "deactivated" and metadata["drill-records:v2"]["state"] == "active"
    assert {"audit-checkpoint:v1", "package-signing:v1", "drill-signer:v1", "drill-after-restore:v1"} <= set(metadata)
    secrets = {o["label"]: o for o in objects if o["class"] == "SECRET_KEY"}
    assert secrets["drill-records:v1"]["sensitive"] and not secrets["drill-records:v1"]["local"]
    assert not secrets["drill-records:v1"]["encrypt"] and secrets["drill-records:v1"]["decrypt"]  # decrypt-only
    assert secrets["drill-records:v2"]["kcv"] == metadata["drill-records:v2"]["key_check_value"]

    # each record decrypts on the restored primary with tests/helpers/gcm.py (not the drill's own helper)
    for number in (1, 2):
        sealed = json.loads((run_dir / ("record-v%d.json" % number)).read_text())
        out = subprocess.run([sys.executable, str(GCM), PKCS11_MODULE, "drill-primary", str(pin_file), "decrypt",
                              "drill-records:v%d" % number, sealed["nonce"], sealed["ciphertext"]],
                             capture_output=True, text=True, check=False, env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        assert bytes.fromhex(out.stdout.strip()).decode() == "drill record encrypted under drill-records:v%d in run %s" \
            % (number, report["run"])

    # the drill's journal holds the restore, and the task after it anchored by the restored checkpoint key
    records = [json.loads(line)["event"] for line in (run_dir / "audit" / "journal.jsonl").read_text().splitlines()]
    restored = [e for e in records if e["event"]["action"] == "key-restore" and e["keylifecycle"]["phase"] == "change"]
    assert {e["key"]["label"] for e in restored} >= {"drill-records:v1", "drill-records:v2", "audit-journal-pin"}
    # the restore came after the replacement token's Security Officer pinned the signer it accepts packages from
    order = [e["event"]["action"] for e in records if e["keylifecycle"]["phase"] == "change"]
    assert order.index("package-signer-approve") < order.index("key-restore")
    checkpoints = [e["keylifecycle"]["checkpoint"] for e in records if e["event"]["action"] == "audit-checkpoint"]
    assert len({c["key_id"] for c in checkpoints}) == 1 and checkpoints[-1]["token_label"] == "drill-primary"
