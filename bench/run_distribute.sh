#!/usr/bin/env bash
# Distribution benchmark (see bench/README.md, "Distribution benchmark"). Arguments are passed on,
# e.g. bench/run_distribute.sh --keys 10 --recipients 1 --repeat 1
# Part 1: the per-key cost of trusted wrapping and package signing, in process, as a ratio to the untrusted
# session-key wrap without signing (bench_distribute_cost.py; --skip-playbook runs only this part).
# Part 2 needs root (it adds the recipient users kl_bench_r1, kl_bench_r2 and starts one sshd for each on loopback).
set -euo pipefail
exec "$(dirname "$0")/_with_collection.sh" bench_distribute.py "$@"
