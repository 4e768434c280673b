#!/usr/bin/env bash
# The whole test suite: install what is needed, then unit + integration tests on real SoftHSM2 tokens
# (pytest), ansible-lint (production profile) and ansible-test sanity. Exits non-zero on any failure,
# and when pytest collects no tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== pytest (unit + integration, real SoftHSM2 tokens)"
set +e
# Two workers, each running whole test files (--dist loadfile keeps a file's module fixtures in one worker); every
# test is hermetic (its own tokens, journal, controller state dir, free ports, recipient users unique per worker).
# Files are handed out in collection order, the longest first (tests/conftest.py LONGEST_FILES_FIRST), so xdist's
# reordering by number of tests per file is off.
python -m pytest tests -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder --durations=15 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
[ "$rc" -eq 0 ] || exit "$rc"

echo "== ansible-lint (production profile), against this tree built and installed as the playbooks use it"
ansible-galaxy collection build --force --output-path .state/build . >/dev/null
ansible-galaxy collection install --force -p .state/collections .state/build/secops-keylifecycle-*.tar.gz >/dev/null
ansible-lint --profile production --offline

echo "== ansible-test sanity"
./scripts/sanity.sh
