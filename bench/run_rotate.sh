#!/usr/bin/env bash
# Rotation benchmark (see bench/README.md, "Rotation benchmark"): build the collection from this checkout,
# install it into a temporary collections path, and run bench/bench_rotate.py with the venv python. Arguments are
# passed on, e.g. bench/run_rotate.sh --sizes 20 --repeat 1
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$repo/.venv"
work="$(mktemp -d "${TMPDIR:-/tmp}/kl-bench-rotate.XXXXXX")"
if [ -n "${KL_BENCH_KEEP:-}" ]; then
  echo "work dir kept: $work" >&2
else
  trap 'rm -rf "$work"' EXIT
fi

cd "$work"  # ansible-galaxy must not read the repo's ansible.cfg (its collections path)
"$venv/bin/ansible-galaxy" collection build --output-path build "$repo" >/dev/null
ANSIBLE_COLLECTIONS_PATH="$work/collections" \
  "$venv/bin/ansible-galaxy" collection install --force -p collections build/secops-keylifecycle-*.tar.gz >/dev/null
"$venv/bin/python" "$repo/bench/bench_rotate.py" --collections-path "$work/collections" --work-dir "$work" "$@"
