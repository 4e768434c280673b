#!/usr/bin/env bash
# Set-up helper (dev only): the dev Security Officer's policy-signing key, an EC P-256 private key in a
# passphrase-protected PKCS#8 PEM, with its passphrase and public key beside it (all 0600). playbooks/policy.yml
# installs the public key in the dev token as the policy signer (with the dev SO PIN) and signs the dev policy with
# the private key. In staging and prod the officer's key never sits on an operator's machine: it lives in the
# officer's own token or PEM, and the officer signs offline (docs/access-control.md, "Signed policy").
#   usage: scripts/dev-policy-signer.sh STATE_DIR
set -euo pipefail
state="${1:?usage: $0 STATE_DIR}"
dir="$state/policy"
if [ -s "$dir/signer.key.pem" ] && [ -s "$dir/signer.passphrase" ] && [ -s "$dir/signer.pub.pem" ]; then
  exit 0
fi
umask 077
mkdir -p "$dir"
openssl rand -hex 24 > "$dir/signer.passphrase"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes-256-cbc \
  -pass "file:$dir/signer.passphrase" -out "$dir/signer.key.pem"
openssl pkey -in "$dir/signer.key.pem" -passin "file:$dir/signer.passphrase" -pubout -out "$dir/signer.pub.pem"
echo "dev policy signer key: $dir/signer.key.pem (passphrase in $dir/signer.passphrase)"
