#!/usr/bin/env bash
# Audit benchmark (see bench/README.md, "Audit benchmark"): bench_audit.py also makes the "audit off" copy of the
# collection (with the bench-only action plugin bench/audit_off/bench_action.py) and starts rsyslog and PostgreSQL
# (TLS, loopback); part 2 is bench_verify.py (audit_verify records/s and peak RSS on 100k and 1M-record journals,
# in-process and through ansible-playbook). Arguments are passed on,
# e.g. bench/run_audit.sh --keys 100 --verify-sizes 10000 --repeat 1
set -euo pipefail
exec "$(dirname "$0")/_with_collection.sh" bench_audit.py "$@"
