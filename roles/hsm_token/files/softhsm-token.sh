#!/usr/bin/env bash
# Set-up helper (SoftHSM2 only): create a SoftHSM2 token in its own folder, with random user and SO PINs
# stored in files readable only by their owner. Idempotent: an existing token is kept.
#   usage: scripts/softhsm-token.sh [--reinit] STATE_DIR TOKEN_LABEL
# Writes STATE_DIR/softhsm2.conf, STATE_DIR/tokens/, STATE_DIR/user.pin, STATE_DIR/so.pin.
# --reinit re-initialises the existing token (same label and PINs, every object gone): the loss of an HSM partition,
# for playbooks/restore_drill.yml.
set -euo pipefail
reinit=false
if [ "${1:-}" = "--reinit" ]; then reinit=true; shift; fi
state_dir=${1:?usage: softhsm-token.sh [--reinit] STATE_DIR TOKEN_LABEL}
label=${2:?usage: softhsm-token.sh [--reinit] STATE_DIR TOKEN_LABEL}
umask 077
mkdir -p "$state_dir/tokens"
state_dir=$(cd "$state_dir" && pwd)
chmod 700 "$state_dir" "$state_dir/tokens"
conf="$state_dir/softhsm2.conf"
if [ ! -f "$conf" ]; then
  cat > "$conf" <<CONF
directories.tokendir = $state_dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
fi
export SOFTHSM2_CONF="$conf"
new_pin() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
[ -s "$state_dir/user.pin" ] || new_pin > "$state_dir/user.pin"
[ -s "$state_dir/so.pin" ] || new_pin > "$state_dir/so.pin"
chmod 600 "$state_dir/user.pin" "$state_dir/so.pin"
if softhsm2-util --show-slots 2>/dev/null | grep -Eq "^[[:space:]]*Label:[[:space:]]+${label}[[:space:]]*$"; then
  if [ "$reinit" = true ]; then
    softhsm2-util --init-token --token "$label" --label "$label" \
      --so-pin "$(cat "$state_dir/so.pin")" --pin "$(cat "$state_dir/user.pin")" >/dev/null
    echo "token '$label' re-initialised in $state_dir/tokens"
    exit 0
  fi
  echo "token '$label' already present in $state_dir/tokens"
else
  # PINs go through a file descriptor-free path: softhsm2-util only takes them as arguments, so the
  # call is kept short-lived and the PINs are random, per-token and never reused elsewhere.
  softhsm2-util --init-token --free --label "$label" \
    --so-pin "$(cat "$state_dir/so.pin")" --pin "$(cat "$state_dir/user.pin")" >/dev/null
  echo "token '$label' created in $state_dir/tokens"
fi
