"""The token's probe summary (key_info's token_capabilities, option probe_token): how key_info summarises a probe,
and the report's "Token capabilities" section built from it. Pure: the probe results are written here (the real
probe on SoftHSM2 is tests/hsm/test_token_probe.py and tests/integration/test_key_info_capabilities.py), no token,
no build."""

from __future__ import annotations

from datetime import datetime, timezone

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
SOFTHSM_MECHANISMS = ["CKM_AES_KEY_GEN", "CKM_AES_KEY_WRAP", "CKM_AES_KEY_WRAP_PAD", "CKM_EC_KEY_PAIR_GEN",
                      "CKM_RSA_PKCS_KEY_PAIR_GEN", "CKM_RSA_PKCS_OAEP", "0x80000001"]
# what key_info returns for SoftHSM2 2.6.1 (docs/hsm-vendors.md)
SOFTHSM = {
    "token": {"label": "kl-dev", "serial": "5d1f0a2b9c3e4f61", "manufacturer": "SoftHSM project",
              "model": "SoftHSM v2", "hardware_version": "2.6", "firmware_version": "2.6"},
    "generates": {"aes": [128, 192, 256], "rsa": {"generated": True, "min_bits": 512, "max_bits": 16384},
                  "ec": ["P-256", "P-384"]},
    "oaep_hashes": ["sha1"], "best_oaep_hash": "sha1", "aes_key_wrap": True, "aes_key_wrap_pad": True,
    "trusted_wrapping": True, "destroyable": "honoured", "modifiable": "honoured", "mechanism_count": 67,
    "missing": [],
}
# what openCryptoki's soft token answered when it was tried by hand (issue 16): no EC, no CKA_WRAP_WITH_TRUSTED
OPENCRYPTOKI = {
    "token": {"label": "ock<dev>", "serial": "123", "manufacturer": "IBM", "model": "Soft",
              "hardware_version": "0.0", "firmware_version": "0.0"},
    "generates": {"aes": [128, 192, 256], "rsa": {"generated": True, "min_bits": 512, "max_bits": 4096}, "ec": []},
    "oaep_hashes": ["sha256", "sha1"], "best_oaep_hash": "sha256", "aes_key_wrap": True, "aes_key_wrap_pad": False,
    "trusted_wrapping": False, "destroyable": "unsupported", "modifiable": "honoured", "mechanism_count": 90,
    "missing": [{"capability": "ec", "reason": "MechanismInvalid"},
                {"capability": "aes_key_wrap", "reason": "not supported"},
                {"capability": "trusted_wrapping", "reason": "AttributeTypeInvalid"}],
}


def _report():
    from ansible_collections.secops.keylifecycle.plugins.plugin_utils import _report

    return _report


def _key_info(capabilities=None):
    key_info = {"key_versions": [], "logical_keys": [], "policy_signers": []}
    if capabilities is not None:
        key_info["token_capabilities"] = capabilities
    return key_info


def _rendered(capabilities=None):
    report = _report()
    model = report.build_model("dev", _key_info(capabilities), {"ok": True}, [], now=NOW)
    rendered = report.render_all(model)
    return model, rendered["report.md"], rendered["report.html"]


def _section(markdown):
    """The Markdown section "Token capabilities", up to the next section."""
    start = markdown.index("## Token capabilities\n")
    return markdown[start:markdown.index("\n## ", start + 1)]


def test_key_info_summarises_the_probe_without_the_mechanism_list():
    from ansible_collections.secops.keylifecycle.plugins.module_utils._key_report import capability_summary
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_probe import Capabilities

    probed = Capabilities(
        token=dict(SOFTHSM["token"]), mechanisms=list(SOFTHSM_MECHANISMS),
        generates={"aes": [128, 192, 256], "rsa": {"min_bits": 512, "max_bits": 16384, "generated": True},
                   "ec": ["P-256", "P-384"]},
        oaep_hashes=["sha1"], aes_key_wrap={"CKM_AES_KEY_WRAP": True, "CKM_AES_KEY_WRAP_PAD": True},
        wrap_with_trusted=True, trusted_refused_to_user=True, destroyable="honoured", modifiable="honoured",
        attempts={"aes": True, "rsa": True, "ec": True, "oaep": True, "aes_key_wrap": True, "trusted_wrapping": True})
    assert capability_summary(probed) == dict(SOFTHSM, mechanism_count=len(SOFTHSM_MECHANISMS))

    # openCryptoki's soft token as issue 16 found it: EC refused, CKA_WRAP_WITH_TRUSTED unknown
    lacking = Capabilities(
        token={"label": "ockdev"}, mechanisms=["CKM_AES_KEY_GEN", "CKM_AES_KEY_WRAP", "CKM_EC_KEY_PAIR_GEN"],
        generates={"aes": [256], "rsa": {"generated": False}, "ec": []}, oaep_hashes=[],
        aes_key_wrap={"CKM_AES_KEY_WRAP": True, "CKM_AES_KEY_WRAP_PAD": False}, wrap_with_trusted=False,
        trusted_refused_to_user=True,
        attempts={"aes": True, "rsa": "not offered", "ec": "MechanismInvalid", "oaep": "not offered",
                  "aes_key_wrap": "not supported", "trusted_wrapping": "AttributeTypeInvalid"})
    summary = capability_summary(lacking)
    assert summary["missing"] == [{"capability": "rsa", "reason": "not offered"},
                                  {"capability": "ec", "reason": "MechanismInvalid"},
                                  {"capability": "oaep", "reason": "not offered"},
                                  {"capability": "aes_key_wrap", "reason": "not supported"},
                                  {"capability": "trusted_wrapping", "reason": "AttributeTypeInvalid"}]
    assert summary["best_oaep_hash"] is None and summary["oaep_hashes"] == []
    assert (summary["aes_key_wrap"], summary["aes_key_wrap_pad"], summary["trusted_wrapping"]) == (True, False, False)
    assert summary["generates"] == {"aes": [256], "rsa": {"generated": False, "min_bits": None, "max_bits": None},
                                    "ec": []}
    assert (summary["destroyable"], summary["modifiable"]) == ("unsupported", "unsupported")
    assert summary["mechanism_count"] == 3 and "mechanisms" not in summary and "attempts" not in summary


def test_the_report_shows_softhsm2s_capabilities():
    model, markdown, page = _rendered(SOFTHSM)
    assert model["token_capabilities"]["token"]["label"] == "kl-dev"
    section = _section(markdown)
    assert ("Probed by key_info (`probe_token`) on session objects, nothing written to the token: **kl-dev**, "
            "SoftHSM project SoftHSM v2, serial `5d1f0a2b9c3e4f61`, hardware 2.6, firmware 2.6; 67 mechanisms "
            "listed.") in section
    for line in ("| generates AES | 128, 192, 256 bits |",
                 "| generates RSA | yes (RSA-3072 pair generated); the token states 512-16384 bits |",
                 "| generates EC | P-256, P-384 |",
                 "| OAEP hashes C_WrapKey works with | sha1 (strongest: sha1) |",
                 "| AES key wrap (RFC 3394 / RFC 5649 with padding) | yes / yes |",
                 "| trusted wrapping (CKA_WRAP_WITH_TRUSTED, CKA_TRUSTED refused to the user) | yes |",
                 "| CKA_DESTROYABLE false | honoured |", "| CKA_MODIFIABLE false | honoured |",
                 "The token has every capability the collection uses."):
        assert "\n%s\n" % line in section, line
    assert "CKM_" not in section.replace("CKA_", "")  # a summary: no mechanism list
    assert "<h2>Token capabilities</h2>" in page and "<b>kl-dev</b>" in page
    assert '<tr><td>generates EC</td><td class="ok">P-256, P-384</td></tr>' in page
    assert '<tr><td>OAEP hashes C_WrapKey works with</td><td class="ok">sha1 (strongest: sha1)</td></tr>' in page
    assert '<p class="ok">The token has every capability the collection uses.</p>' in page
    # the section sits before trusted distribution, whose capability it reports
    assert page.index("<h2>Token capabilities</h2>") < page.index("<h2>Trusted distribution</h2>")


def test_the_report_says_what_a_token_lacks_and_escapes_the_label():
    _model, markdown, page = _rendered(OPENCRYPTOKI)
    section = _section(markdown)
    assert "\n| generates EC | **no** |\n" in section
    assert "\n| OAEP hashes C_WrapKey works with | sha256, sha1 (strongest: sha256) |\n" in section
    assert "\n| AES key wrap (RFC 3394 / RFC 5649 with padding) | yes / **no** |\n" in section
    assert "\n| trusted wrapping (CKA_WRAP_WITH_TRUSTED, CKA_TRUSTED refused to the user) | **no** |\n" in section
    assert "\n| CKA_DESTROYABLE false | unsupported |\n" in section
    assert ("\nThe token lacks: ec (MechanismInvalid), aes_key_wrap (not supported), trusted_wrapping "
            "(AttributeTypeInvalid).\n") in section
    assert '<tr><td>generates EC</td><td class="bad">no</td></tr>' in page
    assert '<td class="bad">no</td></tr>\n' in page.split("trusted wrapping (CKA_WRAP_WITH_TRUSTED")[1][:200]
    assert ('<p class="bad">The token lacks: ec (MechanismInvalid), aes_key_wrap (not supported), trusted_wrapping '
            '(AttributeTypeInvalid).</p>') in page
    assert "<b>ock&lt;dev&gt;</b>" in page and "ock<dev>" not in page  # HTML-escaped
    assert "**ock<dev>**" in section  # Markdown is rendered without escaping


def test_without_a_probe_the_section_says_it_was_not_run():
    model, markdown, page = _rendered(None)
    assert model["token_capabilities"] is None
    assert _section(markdown) == (
        "## Token capabilities\n\nThe token's capabilities were not probed: key_info ran without `probe_token` "
        "(`playbooks/report.yml` turns it on).\n")
    assert ("<h2>Token capabilities</h2> <p>The token's capabilities were not probed: key_info ran without "
            "probe_token (playbooks/report.yml turns it on).</p>") in " ".join(page.split())


def test_a_partial_summary_still_renders():
    """A summary missing fields (another version of key_info, a hand-made result) renders: each field a template
    uses is in the model, None or empty."""
    model, markdown, page = _rendered({"token": {"label": "kl-x"}, "generates": {"aes": [256]}})
    caps = model["token_capabilities"]
    assert caps["generates"] == {"aes": [256], "rsa": {"generated": None, "min_bits": None, "max_bits": None},
                                 "ec": []}
    assert caps["missing"] is None and caps["oaep_hashes"] == [] and caps["best_oaep_hash"] is None
    section = _section(markdown)
    assert "**kl-x**, manufacturer not stated" in section and "\n| generates RSA | **no** |\n" in section
    assert "\n| CKA_MODIFIABLE false | not probed |\n" in section
    assert "every capability" not in section and "lacks" not in section  # the summary does not say
    assert "<b>kl-x</b>" in page
