"""Compromise as an operator expects: key_rotate reason compromise marks an active version (a successor is made)
or a deactivated one found leaked later (only marked); recipients withdraw both on the next distribution
(playbooks/distribute.yml), and the report (playbooks/report.yml) lists both with who, when and the change.

Independent readers: the HSM token and the recipients' tokens read with python-pkcs11 (tests/helpers).
"""

from __future__ import annotations

from tests.conftest import REPO
from tests.integration.test_key_distribute import recap
from tests.integration.test_report import write_inventory

KEY = {"name": "shared", "distributable": True, "recipients": ["billing", "reports"], "usage": ["encrypt", "decrypt"],
       "rotation_period": "30d", "retention_period": "90d"}


def states(token):
    return {label: value["state"] for label, value in token.metadata().items()
            if not label.startswith(("audit-", "package-signing:"))}


def compromise(runner, version, change_ref, *flags):
    return runner.task("key_rotate", {"name": ["shared"], "version": version, "reason": "compromise",
                                      "approved_by": "security-officer", "change_ref": change_ref}, *flags)


def distributed(distribution):
    run = distribution.playbook()
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def secret_ids(distribution, alias):
    return {o["id"] for o in distribution.recipient_objects(alias) if o["class"] == "SECRET_KEY"}


def test_compromised_versions_are_withdrawn_and_reported(runner, token, distribution, tmp_path):
    generated = runner.task("key_generate", {"keys": [KEY]})
    assert generated.task["changed"], generated.output
    distributed(distribution)
    for alias in ("r1", "r2"):
        assert distribution.installed(alias)[1] == {"shared:v1"}

    # the active version, not due, compromised without force: check mode first changes nothing
    before = token.key_objects()
    check = compromise(runner, 1, "INC-1", "--check", "--diff")
    assert check.task["changed"] is True and check.task["plan"][0]["action"] == "rotate", check.output
    assert token.key_objects() == before and states(token) == {"shared:v1": "active"}
    first = compromise(runner, 1, "INC-1")
    assert first.task["changed"] is True, first.output
    assert states(token) == {"shared:v1": "compromised", "shared:v2": "active"}
    assert first.task["rotated"][0]["new_version"] == 2
    marked = first.task["compromised"][0]
    assert (marked["version"], marked["previous_state"], marked["change_ref"]) == (1, "active", "INC-1")
    operator = marked["by"]
    v1 = [o for o in token.key_objects() if o["class"] == "SECRET_KEY" and o["label"] == "shared:v1"][0]
    assert v1["encrypt"] is False
    # marking it again, in check mode and for real, changes nothing
    assert compromise(runner, 1, "INC-1", "--check").task["changed"] is False
    assert compromise(runner, 1, "INC-1").task["changed"] is False
    assert states(token) == {"shared:v1": "compromised", "shared:v2": "active"}

    # the next distribution withdraws v1 at both recipients and installs v2
    distributed(distribution)
    v1_id = token.metadata()["shared:v1"]["id"]
    for alias in ("r1", "r2"):
        meta, keys = distribution.installed(alias)
        assert keys == {"shared:v2"} and meta["shared:v1"]["state"] == "destroyed"
        assert v1_id not in secret_ids(distribution, alias)

    # a month later the key rotates on schedule; recipients get v3 and hold v2 deactivated
    runner.clock.advance(days=31)
    assert runner.task("key_rotate", {"all_due": True}).task["rotated"][0]["new_version"] == 3
    distributed(distribution)
    for alias in ("r1", "r2"):
        meta, keys = distribution.installed(alias)
        assert keys == {"shared:v2", "shared:v3"} and meta["shared:v2"]["state"] == "deactivated"

    # weeks later a leak of v2 is found: it is only marked compromised, no new version
    runner.clock.advance(days=20)
    retain_until = token.metadata()["shared:v2"]["retain_until"]
    before = token.key_objects()
    check = compromise(runner, 2, "INC-2", "--check", "--diff")
    assert check.task["changed"] is True and check.task["plan"][0]["action"] == "compromise"
    assert token.key_objects() == before and states(token)["shared:v2"] == "deactivated"
    second = compromise(runner, 2, "INC-2")
    assert second.task["changed"] is True and second.task["rotated"] == [], second.output
    assert states(token) == {"shared:v1": "compromised", "shared:v2": "compromised", "shared:v3": "active"}
    assert token.metadata()["shared:v2"]["retain_until"] == retain_until
    assert second.task["compromised"][0]["previous_state"] == "deactivated"
    event = [e for e in second.task["audit_events"] if e["event"]["action"] == "key-rotate"][0]
    assert event["key"]["label"] == "shared:v2" and event["key"]["state"] == "compromised"
    assert event["keylifecycle"]["approved_by"] == "security-officer"
    assert compromise(runner, 2, "INC-2").task["changed"] is False

    # distribution withdraws v2 at both recipients; v3 stays; a second run changes nothing
    distributed(distribution)
    v2_id = token.metadata()["shared:v2"]["id"]
    for alias in ("r1", "r2"):
        meta, keys = distribution.installed(alias)
        assert keys == {"shared:v3"}
        assert meta["shared:v1"]["state"] == meta["shared:v2"]["state"] == "destroyed"
        assert meta["shared:v3"]["state"] == "active"
        assert not {v1_id, v2_id} & secret_ids(distribution, alias)
    again = distributed(distribution)
    assert all(counts["changed"] == 0 for counts in recap(again.stdout).values()), again.stdout

    # the report lists both compromised versions with when, by whom, the approver and the change
    report_dir = tmp_path / "reports"
    run = runner.playbook(REPO / "playbooks" / "report.yml", inventory=write_inventory(runner, token, report_dir))
    assert run.returncode == 0, run.stdout + run.stderr
    markdown = (report_dir / "report.md").read_text()
    page = (report_dir / "report.html").read_text()
    section = markdown.split("## Compromised versions")[1].split("##")[0]
    metadata = token.metadata()
    for label, change, earlier in (("shared:v1", "INC-1", "active"), ("shared:v2", "INC-2", "deactivated")):
        row = [line for line in section.splitlines() if line.startswith("| %s |" % label)]
        assert len(row) == 1, section
        marking = metadata[label]["transitions"][-1]
        for expected in (metadata[label]["id"], marking["at"], operator, "security-officer", change, earlier):
            assert expected in row[0], (expected, row[0])
        assert label in page and change in page
