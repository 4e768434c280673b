#!/usr/bin/env bash
# Profile one lifecycle task, controller and module apart (see bench/README.md). Arguments are passed on,
# e.g. TMPDIR=/dev/shm bench/profile.sh --keys 1000 --task generate --output-dir /tmp/kl-prof
set -euo pipefail
exec "$(dirname "$0")/_with_collection.sh" profile_task.py "$@"
