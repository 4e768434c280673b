#!/usr/bin/env bash
# Audit benchmark (see bench/README.md, "Audit benchmark"): bench_audit.py also makes the "audit off" copy of the
# collection and starts rsyslog and PostgreSQL (TLS, loopback). Arguments are passed on,
# e.g. bench/run_audit.sh --keys 100 --records 10000 --repeat 1
set -euo pipefail
exec "$(dirname "$0")/_with_collection.sh" bench_audit.py "$@"
