#!/usr/bin/env bash
# Install everything the collection and its tests need on a fresh Debian/Ubuntu machine:
# apt packages (sudo when not root) and a project-local Python venv (.venv) with requirements-test.txt.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# softhsm2/opensc: the embedded HSM and an independent PKCS#11 reader; rsyslog-*/postgresql-15: the audit log
# stores the tests ship to (real servers on loopback); openssl: checkpoint signatures in tests and docs;
# openssh-*: key recipients are reached over real sshd on loopback; passwd: their service users;
# chromium, fonts-liberation: the HTML compliance report is rendered headless in a test;
# libfaketime: tests run ansible-playbook on a shifted wall clock instead of sleeping through retention periods;
# opencryptoki: the second PKCS#11 token the lifecycle smoke set runs on (slots: scripts/opencryptoki-slots.sh).
APT_PACKAGES=(softhsm2 opensc python3-venv rsync git openssl iproute2
              rsyslog rsyslog-gnutls rsyslog-openssl postgresql-15
              openssh-server openssh-client passwd chromium fonts-liberation libfaketime opencryptoki)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing apt packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "bootstrap: Python 3.11 or newer is required (found $("$PYTHON" --version 2>&1))." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-test.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing Python requirements into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements-test.txt
  echo "$want" > "$stamp"
fi
# The Python that key recipients (other users, reached over ssh) run modules with: the system python3 with
# requirements-target.txt, in a venv every user can read (the project's .venv may sit under a private home).
RECIPIENT_VENV="${KL_RECIPIENT_VENV:-/opt/secops-keylifecycle/recipient-venv}"
want_target=$(sha256sum requirements-target.txt | cut -d' ' -f1)
if [ "$(cat "$RECIPIENT_VENV/.requirements.sha256" 2>/dev/null)" != "$want_target" ]; then
  echo "bootstrap: creating the recipient venv $RECIPIENT_VENV"
  as_root mkdir -p "$(dirname "$RECIPIENT_VENV")"
  as_root /usr/bin/python3 -m venv "$RECIPIENT_VENV"
  as_root "$RECIPIENT_VENV/bin/python" -m pip install -q -r requirements-target.txt
  echo "$want_target" | as_root tee "$RECIPIENT_VENV/.requirements.sha256" >/dev/null
  as_root chmod -R a+rX "$RECIPIENT_VENV"
fi

echo "bootstrap: ready (ansible-core $(.venv/bin/python -c "import ansible.release as r; print(r.__version__)"), softhsm2 $(softhsm2-util --version))"
