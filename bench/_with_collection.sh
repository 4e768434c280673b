#!/usr/bin/env bash
# Shared by bench/run*.sh: build the collection from this checkout, install it into a temporary collections path,
# and run the benchmark script given as first argument with the venv python (further arguments are passed on).
#   usage: bench/_with_collection.sh BENCH_SCRIPT.py [arguments...]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$repo/.venv"
script="$1"
shift
# A relative --output is relative to where the bench was started (the script runs from the work dir, removed at exit).
args=()
previous=""
for arg in "$@"; do
  if [ "$previous" = "--output" ] && [ "${arg#/}" = "$arg" ]; then
    arg="$PWD/$arg"
  elif [ "${arg#--output=}" != "$arg" ] && [ "${arg#--output=/}" = "$arg" ]; then
    arg="--output=$PWD/${arg#--output=}"
  fi
  args+=("$arg")
  previous="$arg"
done
set -- "${args[@]+"${args[@]}"}"
work="$(mktemp -d "${TMPDIR:-/tmp}/kl-bench.XXXXXX")"
if [ -n "${KL_BENCH_KEEP:-}" ]; then
  echo "work dir kept: $work" >&2
else
  trap 'rm -rf "$work"' EXIT
fi

cd "$work"  # ansible-galaxy must not read the repo's ansible.cfg (its collections path)
"$venv/bin/ansible-galaxy" collection build --output-path build "$repo" >/dev/null
ANSIBLE_COLLECTIONS_PATH="$work/collections" \
  "$venv/bin/ansible-galaxy" collection install --force -p collections build/secops-keylifecycle-*.tar.gz >/dev/null
"$venv/bin/python" "$repo/bench/$script" --collections-path "$work/collections" --work-dir "$work" "$@"
