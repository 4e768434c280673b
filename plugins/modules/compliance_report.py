#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: compliance_report
short_description: Write the key inventory and compliance report (Markdown and self-contained HTML) on the controller
version_added: 0.1.0
description:
  - Runs on the controller (action plugin). From a M(secops.keylifecycle.key_info) result, a
    M(secops.keylifecycle.audit_verify) result and the environment's audit journal, writes C(report.md) and
    C(report.html) into O(output_dir) for the Security Officer and auditors.
  - The report lists every key and version with state, type, id, check value or fingerprint, creation time, age, next
    rotation, retention expiry; what needs attention (rotation overdue, retention expired but not destroyed,
    compromised versions, anomalies, audit problems); the last lifecycle events from the journal (who, when, which
    key, recipient, outcome); whether the audit chain verifies; and the SOC 2 / HIPAA control each step serves.
  - Trusted distribution (docs/distribution.md). Findings under attention - every distributable version the token
    would still wrap under any key (extractable and not generated with CKA_WRAP_WITH_TRUSTED, rotate the key to
    migrate it); every trusted transport key not tied to an enrolled recipient; every wrap the journal records under
    a key the Security Officer did not approve (C(key-distribute) with C(key.trusted_wrapping) false, policy
    C(require_trusted_wrapping) off) with its warning. Also listed - the trusted transport keys in the HSM, the
    package-signing key, the Security Officer's approvals and revocations (C(recipient-approve),
    C(recipient-revoke) - who approved which recipient, host and fingerprint, when, under which change) and the
    versions sealed at the migration (C(key-seal)), all from the whole journal, not only the last O(events).
  - A trusted transport key is tied to an enrolled recipient when its label names a recipient that a version not
    destroyed lists in its C(recipients) (read from the token by key_info, the list key_distribute plans against).
    That list is used, not the journal's C(transport-key-enroll) records, because it is complete whatever the
    journal holds (a journal started after the enrollment, a recipient enrolled from another controller); whether
    the journal holds an enrollment with the key's fingerprint is shown beside each key.
  - Policy (docs/access-control.md, "Signed policy"). Each listed event shows the policy in force for its task, as
    the task's intent record states it (C(keylifecycle.policy)) - the serial and signer of a signed policy, or
    C(unsigned) and the first 12 hex digits of the unsigned policy's SHA-256. Every change of policy between
    consecutive intents of the journal is a finding under attention (C(policy_change)), and listed with the policy
    before and after. A token without a policy signer (key_info's C(policy_signers) empty, or absent in a key_info
    result from before policy signers) is a finding (C(no_policy_signer)) - its policy is whatever each task passes.
  - Token capabilities. When the M(secops.keylifecycle.key_info) result carries C(token_capabilities) (its option
    C(probe_token), which C(playbooks/report.yml) turns on), the report shows the probe's summary - the token's
    identity, the key types it generates, the OAEP hashes C_WrapKey works with, AES key wrap, trusted wrapping,
    CKA_DESTROYABLE / CKA_MODIFIABLE false, the number of mechanisms, and what it lacks; without it, that the probe
    was not run.
  - The HTML page has no external resources (inline CSS and an SVG timeline of key versions), so it can be archived
    as evidence.
  - Both files are rendered from Jinja2 templates. The collection ships them in C(templates/compliance_report/) of
    the installed collection; an inventory can use its own copies through O(markdown_template) and
    O(html_template). The data model the templates receive is described in the collection's C(docs/report.md).
    Both templates are rendered before either file is written, so a template that fails changes nothing.
  - Holds names, ids, check values, dates and outcomes only, never key material or a PIN.
author:
  - secops.keylifecycle maintainers (@secops)
extends_documentation_fragment:
  - secops.keylifecycle.attributes
attributes:
  check_mode:
    support: full
    details:
      - Nothing is written; RV(summary) is returned.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - The report files are outputs, not managed state; the module always reports C(changed=false).
options:
  key_info:
    description: The registered result of M(secops.keylifecycle.key_info) (all keys).
    type: dict
    required: true
  audit:
    description: The registered result of M(secops.keylifecycle.audit_verify) (with C(fail_on_error=false)).
    type: dict
  journal:
    description:
      - The audit journal to take the last events from.
      - Default, the journal O(audit) verified (the token's journal), else the host's C(keylifecycle_audit_journal).
    type: path
  output_dir:
    description: Directory on the controller for C(report.md) and C(report.html) (created, mode 0750).
    type: path
    required: true
  environment_name:
    description: Name of the environment shown in the report.
    type: str
    default: default
  events:
    description: How many of the last lifecycle events to list (1 or more).
    type: int
    default: 25
  markdown_template:
    description:
      - Jinja2 template on the controller that renders C(report.md). Default, the collection's
        C(templates/compliance_report/report.md.j2).
      - A relative path is searched like the O(ansible.builtin.template#module:src) of a template task (the
        C(templates/) folders of the role and the playbook, then the playbook's folder).
      - Rendered in a Jinja2 sandbox without autoescaping; an undefined variable is an error.
      - A template that cannot be read, parsed or rendered fails the task, naming this option; nothing is written.
    type: path
  html_template:
    description:
      - Jinja2 template on the controller that renders C(report.html). Default, the collection's
        C(templates/compliance_report/report.html.j2).
      - Searched and checked as O(markdown_template); rendered with HTML autoescaping.
      - Keep the page self-contained (no external resources) if it is archived as evidence.
    type: path
seealso:
  - module: secops.keylifecycle.key_info
  - module: secops.keylifecycle.audit_verify
"""

EXAMPLES = r"""
- name: Write the report
  secops.keylifecycle.compliance_report:
    key_info: "{{ key_report }}"
    audit: "{{ audit_report }}"
    output_dir: /var/lib/secops-keylifecycle/prod/reports
    environment_name: prod

- name: Write the report with the inventory's own templates (copies of the collection's, changed)
  secops.keylifecycle.compliance_report:
    key_info: "{{ key_report }}"
    audit: "{{ audit_report }}"
    output_dir: /var/lib/secops-keylifecycle/prod/reports
    environment_name: prod
    html_template: "{{ inventory_dir }}/templates/report.html.j2"
    markdown_template: "{{ inventory_dir }}/templates/report.md.j2"
"""

RETURN = r"""
markdown:
  description: Path of the Markdown report (not set in check mode).
  returned: success
  type: str
html:
  description: Path of the HTML report (not set in check mode).
  returned: success
  type: str
summary:
  description: Counts and the items that need attention.
  returned: always
  type: dict
  contains:
    keys:
      description: Number of logical keys.
      type: int
    versions:
      description: Number of key versions.
      type: int
    rotation_overdue:
      description: Keys whose rotation is overdue.
      type: list
      elements: str
    retention_expired:
      description: Versions whose retention expired and that are not destroyed yet.
      type: list
      elements: str
    compromised:
      description: Versions marked compromised.
      type: list
      elements: str
    anomalies:
      description: Number of anomalies key_info reported.
      type: int
    drift:
      description: Number of drift findings key_info reported.
      type: int
    untrusted_versions:
      description: Distributable versions that are extractable and not wrap-with-trusted (each a finding).
      type: list
      elements: str
    unbound_trusted_keys:
      description: Labels of the trusted transport keys not tied to an enrolled recipient (each a finding).
      type: list
      elements: str
    untrusted_wraps:
      description: Number of wraps under untrusted keys the journal records (each a finding).
      type: int
    vanished_versions:
      description:
        - Labels of versions the journal records on the token (generated, rotated in, replicated or restored) that
          the token no longer holds, with no V(key-destroy) or V(replica-withdraw) record (each a finding); only
          when the O(key_info) result lists every version (its RV(secops.keylifecycle.key_info#module:all_keys)).
      type: list
      elements: str
    audit_ok:
      description: Whether the audit chain verified.
      type: bool
    policy_signers:
      description: Names of the policy signers in the token (empty - a C(no_policy_signer) finding).
      type: list
      elements: str
    policy_changes:
      description: Number of changes of policy between consecutive intents of the journal (each a finding).
      type: int
    break_glass:
      description:
        - Number of journal records of break-glass actions (a Security Officer executed a destroy, compromise or
          retire; each a finding).
      type: int
"""

from ansible.module_utils.basic import AnsibleModule

# The one declaration of the options: the action plugin, which does the work on the controller, validates the
# task's arguments with it (ActionBase.validate_argument_spec); this stub only refuses to run on a target.
ARGUMENT_SPEC = dict(
    key_info={"type": "dict", "required": True, "no_log": False},
    audit={"type": "dict"},
    journal={"type": "path"},
    output_dir={"type": "path", "required": True},
    environment_name={"type": "str", "default": "default"},
    events={"type": "int", "default": 25},
    markdown_template={"type": "path"},
    html_template={"type": "path"},
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.fail_json(msg="compliance_report runs on the controller through its action plugin; call it as "
                         "secops.keylifecycle.compliance_report in a task.")


if __name__ == "__main__":
    main()
