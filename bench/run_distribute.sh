#!/usr/bin/env bash
# Distribution benchmark (see bench/README.md, "Distribution benchmark"). Arguments are passed on,
# e.g. bench/run_distribute.sh --keys 10 --recipients 1 --repeat 1
# Needs root (it adds the recipient users kl_bench_r1, kl_bench_r2 and starts one sshd for each on loopback).
set -euo pipefail
exec "$(dirname "$0")/_with_collection.sh" bench_distribute.py "$@"
