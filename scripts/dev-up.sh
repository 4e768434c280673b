#!/usr/bin/env bash
# Main job on a fresh Debian/Ubuntu machine: install everything, create the dev SoftHSM2 token under
# .state/dev (and the dev-app recipient's token under .state/dev-app), build and install the collection, and run
# the dev-environment lifecycle: playbooks/site.yml (check the token, generate, rotate what is due, distribute to
# the dev-app recipient's token, report), then playbooks/audit_verify.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
./scripts/softhsm-token.sh .state/dev kl-dev
./scripts/softhsm-token.sh .state/dev-app kl-dev-app
./scripts/dev-policy-signer.sh .state/dev
export PATH="$PWD/.venv/bin:$PATH"
ansible-galaxy collection build --force --output-path .state/build . >/dev/null
ansible-galaxy collection install --force -p .state/collections .state/build/secops-keylifecycle-*.tar.gz >/dev/null
ansible-playbook -i inventories/dev playbooks/site.yml "$@"
ansible-playbook -i inventories/dev playbooks/audit_verify.yml
cat <<MSG

Done. The dev token lives in .state/dev (SOFTHSM2_CONF=.state/dev/softhsm2.conf, user PIN in .state/dev/user.pin),
the dev-app recipient's token in .state/dev-app; the audit journal of every lifecycle action is
.state/dev/audit/journal.jsonl (docs/audit.md); the compliance report is .state/dev/reports/report.html (and .md).
Plan a change:      .venv/bin/ansible-playbook -i inventories/dev playbooks/site.yml --check --diff
Rotate what is due: .venv/bin/ansible-playbook -i inventories/dev playbooks/rotate.yml
Report:             .venv/bin/ansible-playbook -i inventories/dev playbooks/report.yml
Verify the audit:   .venv/bin/ansible-playbook -i inventories/dev playbooks/audit_verify.yml
Or with OpenSC:     SOFTHSM2_CONF=.state/dev/softhsm2.conf pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so \\
                      --token-label kl-dev --login --list-objects
MSG
