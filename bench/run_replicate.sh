#!/usr/bin/env bash
# Replication and restore benchmark (see bench/README.md, "Replication benchmark"). Arguments are passed on,
# e.g. bench/run_replicate.sh --sizes 100 --repeat 1 (put TMPDIR on tmpfs for the fast-storage figure).
set -euo pipefail
exec "$(dirname "$0")/_with_collection.sh" bench_replicate.py "$@"
