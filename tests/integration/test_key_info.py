"""key_info through ansible-playbook: listing, filters, check mode, anomalies."""

from __future__ import annotations

from datetime import datetime, timedelta


def test_listing_filters_and_check_mode(runner, token):
    runner.task("key_generate", {"keys": [{"name": "a", "rotation_period": "30d"},
                                          {"name": "b", "type": "ec"}]})
    info = runner.task("key_info", {}, "--check")
    assert info.rc == 0 and info.task["changed"] is False
    records = {r["label"]: r for r in info.task["key_versions"]}
    # the journal's checkpoint signing key is a managed key too, and is listed
    assert sorted(records) == ["a:v1", "audit-checkpoint:v1", "b:v1"]
    assert records["audit-checkpoint:v1"]["evidence"]["never_extractable"] is True
    a = records["a:v1"]
    assert a["state"] == "active" and a["type"] == "aes" and a["size"] == 256
    created = datetime.fromisoformat(a["created"])
    assert datetime.fromisoformat(a["next_rotation_due"]) - created == timedelta(days=30)
    assert a["rotation_overdue"] is False and a["retain_until"] is None
    assert a["evidence"] == {"local": True, "sensitive": True, "always_sensitive": True,
                             "never_extractable": True, "extractable": False}
    kcv = {o["label"]: o.get("kcv") for o in token.objects() if o["class"] == "SECRET_KEY"}
    assert a["key_check_value"] == kcv["a:v1"]
    assert records["b:v1"]["public_key_fingerprint"].startswith("sha256:")

    only_a = runner.task("key_info", {"name": ["a", "ghost"]})
    assert [r["label"] for r in only_a.task["key_versions"]] == ["a:v1"]
    assert {k["name"]: k["state"] for k in only_a.task["logical_keys"]} == {"a": "active", "ghost": "absent"}

    deactivated = runner.task("key_info", {"state": ["deactivated"]})
    assert deactivated.task["key_versions"] == []


def test_policy_caps_due_date(runner, token):
    runner.task("key_generate", {"name": "a", "rotation_period": "300d"})
    info = runner.task("key_info", {"policy": {"max_rotation_period": "10d"}})
    record = info.task["key_versions"][0]
    due = datetime.fromisoformat(record["next_rotation_due"]) - datetime.fromisoformat(record["created"])
    assert due == timedelta(days=10)


def test_anomaly_reported_for_key_without_metadata(runner, token):
    import subprocess

    subprocess.run(["pkcs11-tool", "--module", token.connection()["pkcs11_module"], "--token-label", token.label,
                    "--login", "--pin", token.user_pin, "--keygen", "--key-type", "AES:32", "--sensitive",
                    "--label", "orphan:v1"], check=True, capture_output=True, env={**token.env, "PATH": "/usr/bin:/bin"})
    info = runner.task("key_info", {})
    assert info.task["anomalies"] == [{"label": "orphan:v1",
                                       "problem": "key object(s) without a metadata object: generation was "
                                                  "interrupted or the metadata was removed"}]
    assert info.task["key_versions"] == []


def test_bad_input(runner, token):
    result = runner.task("key_info", {"name": ["bad/name"]})
    assert result.task.get("failed") and "is not a valid key name" in result.task["msg"]
    result = runner.task("key_info", {"state": ["lost"]})
    assert result.task.get("failed") and "state" in result.task["msg"]


def _transport_pem():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    public = rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key()
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_trusted_distribution_is_reported_and_key_info_creates_nothing(runner, token):
    runner.task("key_generate", {"keys": [{"name": "plain"}]})
    objects = sorted((o["class"], o["label"]) for o in token.objects())
    info = runner.task("key_info", {})
    assert info.rc == 0 and info.task["changed"] is False
    assert info.task["trusted_transport_keys"] == [] and info.task["package_signer"] is None
    plain = {r["label"]: r for r in info.task["key_versions"]}["plain:v1"]
    assert plain["wrap_with_trusted"] is False and plain["extractable"] is False
    assert sorted((o["class"], o["label"]) for o in token.objects()) == objects  # read only: no signer made

    runner.task("key_generate", {"keys": [{"name": "shared", "distributable": True, "recipients": ["svc1"]}]})
    pem = _transport_pem()
    approved = runner.task("recipient_approve", {"so_pin_file": str(token.so_pin_file), "approved_by": "olga",
                                                 "recipients": [{"name": "svc1", "host": "app1",
                                                                 "public_key_pem": pem}]})
    assert approved.rc == 0, approved.stdout
    info = runner.task("key_info", {}, "--check")
    records = {r["label"]: r for r in info.task["key_versions"]}
    assert records["shared:v1"]["wrap_with_trusted"] is True and records["shared:v1"]["extractable"] is True
    assert records["shared:v1"]["evidence"]["extractable"] is True
    [trusted] = info.task["trusted_transport_keys"]
    assert trusted["label"] == "trusted-transport:svc1@app1:" + trusted["fingerprint"]
    assert trusted["recipient"] == "svc1" and trusted["host"] == "app1" and len(trusted["key_id"]) == 32
    assert set(trusted) == {"label", "recipient", "host", "fingerprint", "key_id", "kind"} and trusted["kind"] == "recipient"
    signer = info.task["package_signer"]  # made by key_generate with the first distributable key
    assert signer["name"] == "package-signing" and signer["public_key_pem"].startswith("-----BEGIN PUBLIC KEY")
    assert signer["fingerprint"] == records["package-signing:v%d" % signer["version"]]["public_key_fingerprint"]
