"""Every environment's inventory holds a policy and key inventory the collection accepts."""

from __future__ import annotations

import base64

import pytest
import yaml

from tests.conftest import REPO

ENVIRONMENTS = sorted(p.name for p in (REPO / "inventories").iterdir() if p.is_dir())


SIGNED_POLICY_TEMPLATE = "{{ key_policy_signed.policy }}"


def group_vars(env, group):
    """The variables a host of ``group`` gets from group_vars (all, then the group); ``key_policy`` taken from the
    signed copy where the inventory says so (staging and prod)."""
    merged = {}
    for folder in ("all", group):
        for path in sorted((REPO / "inventories" / env / "group_vars" / folder).glob("*.yml")):
            merged.update(yaml.safe_load(path.read_text()) or {})
    if merged.get("key_policy") == SIGNED_POLICY_TEMPLATE:
        merged["key_policy"] = merged["key_policy_signed"]["policy"]
    return merged


def test_the_three_environments_exist():
    assert ENVIRONMENTS == ["dev", "prod", "staging"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_policy_and_keys_load(env):
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import build_key_specs
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy

    hsm = group_vars(env, "hsm")
    policy = load_policy(hsm.get("key_policy"))
    specs = build_key_specs(hsm["key_inventory"], policy)
    recipients = {host.get("recipient_name") for host in (yaml.safe_load(
        (REPO / "inventories" / env / "hosts.yml").read_text())["key_recipients"]["hosts"] or {}).values()}
    for spec in specs:
        assert set(spec.recipients) <= recipients, (env, spec.name, "lists a recipient the inventory does not have")
    # recipient hosts are authorized against the same policy as the HSM host
    assert group_vars(env, "key_recipients")["key_policy"] == hsm["key_policy"]
    if env != "dev":
        # staging and prod: PINs from Vault with pipelining, authorization and approval switched on, no override
        assert "vault_" in hsm["hsm_user_pin"] and hsm["ansible_pipelining"] is True
        assert policy.authorization and not policy.allow_operator_override
        # high-risk actions need signed approvals from approvers the signed policy lists (M of N)
        for action in ("destroy", "compromise_rotate", "retire", "journal_rollover", "recipient_approve",
                       "recipient_revoke", "policy_change"):
            assert policy.approvals_required.get(action, 0) >= 1, (env, action)
        assert set(policy.security_officers) == {"dana", "erin"} and set(policy.approvers) >= {"dana", "erin"}
        assert policy.require_transport_key_pin
        assert hsm["key_distribution_oaep_hash"] == "sha256"


def test_prod_is_the_strictest():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy

    staging, prod = (load_policy(group_vars(env, "hsm")["key_policy"]) for env in ("staging", "prod"))
    assert prod.max_rotation_period <= staging.max_rotation_period
    assert prod.min_retention_period >= staging.min_retention_period
    assert prod.compromise_disables_decrypt
    assert all(prod.approvals_required[action] >= staging.approvals_required[action] >= 1
               for action in ("destroy", "compromise_rotate", "retire", "journal_rollover"))
    assert prod.approvals_required["destroy"] == 2 and prod.approval_max_validity <= staging.approval_max_validity


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_engineering_executes_and_officers_approve(env):
    """Procedure section 8: Security Engineering executes, the Security Officer oversees. The custodians and the
    rotation service account execute; an officer may execute a destroy or compromise only as break-glass (listed in
    security_officers, so two approvals from other people are required); a break-glass is always possible: at least
    two approvers besides each officer."""
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import load_policy

    policy = load_policy(group_vars(env, "hsm")["key_policy"])
    for custodian in policy.groups["custodians"]:
        assert all(policy.allows(action, custodian) for action in (
            "generate", "rotate", "compromise_rotate", "destroy", "distribute", "journal_rollover"))
    assert policy.allows("rotate", "svc-keyrotation") and not policy.allows("destroy", "svc-keyrotation")
    assert not any(policy.allows(action, officer) for officer in policy.security_officers
                   for action in ("generate", "rotate", "distribute", "journal_rollover"))
    for officer in policy.security_officers:
        assert len(set(policy.approvers) - {officer}) >= 2, officer
    assert "svc-keyrotation" not in policy.approvers  # a scheduled job holds no approver key


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_so_pin_stays_out_of_operator_inventories(env):
    """No staging or prod inventory names the HSM's SO PIN; dev keeps its dev SO PIN file in officer.yml only.

    (A recipient's own token has an SO PIN of its own, which the key_recipient role compares: not the HSM's.)
    """
    root = REPO / "inventories" / env
    paths = [root / "hosts.yml"] + sorted((root / "group_vars" / "all").glob("*.yml")) + sorted(
        (root / "group_vars" / "hsm").glob("*.yml"))
    mentions = sorted(str(path.relative_to(root)) for path in paths if "so_pin" in path.read_text())
    assert mentions == (["group_vars/hsm/officer.yml"] if env == "dev" else []), mentions
    policy = group_vars(env, "all")["key_policy"]
    assert policy.get("require_trusted_wrapping", True), "the baseline's trusted wrapping is switched off in %s" % env


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_staging_and_prod_policies_are_signed_by_their_officer(env):
    """The inventory loads the signed policy; it verifies with the officer's public key the inventory installs as
    the token's policy signer, is not expired, and is exactly the policy source the officer edits."""
    from datetime import datetime, timezone

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from ansible_collections.secops.keylifecycle.plugins.module_utils._signed_policy import (
        normalised_policy,
        parse_signed_policy,
        policy_payload,
    )
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_objects import spki_fingerprint

    hsm = group_vars(env, "hsm")
    signed = parse_signed_policy(hsm["key_policy_signed"])
    assert signed["environment"] == env and signed["serial"] >= 1
    public_key = serialization.load_pem_public_key(hsm["keylifecycle_policy_signer_public_key"].encode())
    assert spki_fingerprint(public_key) == signed["signer"]
    public_key.verify(base64.b64decode(signed["signature"]), policy_payload(signed),
                      ec.ECDSA(hashes.SHA256()))
    assert datetime.fromisoformat(signed["not_after"]) > datetime.now(timezone.utc)
    source = yaml.safe_load((REPO / "inventories" / env / "policy.source.yml").read_text())["key_policy"]
    assert normalised_policy(source) == signed["policy"]
