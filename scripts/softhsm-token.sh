#!/usr/bin/env bash
# Set-up helper (SoftHSM2 only): see roles/hsm_token/files/softhsm-token.sh, which the hsm_token role also runs
# for the dev token (hsm_token_softhsm_state_dir).
#   usage: scripts/softhsm-token.sh STATE_DIR TOKEN_LABEL
exec "$(dirname "$0")/../roles/hsm_token/files/softhsm-token.sh" "$@"
