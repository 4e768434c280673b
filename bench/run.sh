#!/usr/bin/env bash
# Benchmark key_generate (see bench/README.md). Arguments are passed on,
# e.g. bench/run.sh --sizes 100,1000 --skip-loop-above 100
set -euo pipefail
exec "$(dirname "$0")/_with_collection.sh" bench_generate.py "$@"
