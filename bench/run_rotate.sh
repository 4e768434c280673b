#!/usr/bin/env bash
# Rotation benchmark (see bench/README.md, "Rotation benchmark"). Arguments are passed on,
# e.g. bench/run_rotate.sh --sizes 20 --repeat 1
set -euo pipefail
exec "$(dirname "$0")/_with_collection.sh" bench_rotate.py "$@"
