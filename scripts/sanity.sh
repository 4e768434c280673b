#!/usr/bin/env bash
# sanity.sh - run `ansible-test sanity` for this collection, with no Docker
# and no internet besides PyPI / Debian apt. Called by scripts/test.sh.
#
# Usage:
#   scripts/sanity.sh [--no-apt] [--from-head] [SRC_DIR] [extra ansible-test sanity args...]
#
#   SRC_DIR       collection source tree (galaxy.yml at its top). It does NOT need to be
#                 under ansible_collections/NS/NAME: its files are copied into
#                 $SANITY_HOME/work/ansible_collections/NS/NAME and tested there.
#                 Git work tree: tracked + untracked-not-ignored files (uncommitted edits
#                 included); with --from-head only what is committed at HEAD.
#                 Not a git work tree: everything except .git, tests/output, __pycache__.
#   --no-apt      do not apt-get install shellcheck / generate the en_US.UTF-8 locale.
#   --from-head   copy the committed HEAD tree (git archive) instead of the work tree.
#   extra args    passed to `ansible-test sanity`, e.g. `--test pep8`, `--skip-test pylint`,
#                 `-v`, `--junit`.
#
# Environment (all optional):
#   SANITY_HOME          state dir (venv, staging copy)      default: ~/.cache/secops-keylifecycle-sanity
#   ANSIBLE_CORE_VERSION ansible-core to test with           default: 2.19.14
#   SANITY_PYTHON        python version for --python          default: 3.11
#   COLLECTION_NAMESPACE / COLLECTION_NAME   override galaxy.yml (default secops/keylifecycle)
#
# Exit status: ansible-test's (non-zero when any sanity test reports a problem).
set -euo pipefail

SANITY_HOME="${SANITY_HOME:-$HOME/.cache/secops-keylifecycle-sanity}"
ANSIBLE_CORE_VERSION="${ANSIBLE_CORE_VERSION:-2.19.14}"
SANITY_PYTHON="${SANITY_PYTHON:-3.11}"
DO_APT=1
FROM_HEAD=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-apt) DO_APT=0; shift ;;
        --from-head) FROM_HEAD=1; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        --) shift; break ;;
        -*) echo "sanity.sh: unknown option $1 (options for ansible-test go after SRC_DIR)" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [[ $# -ge 1 && -d "$1" ]]; then
    SRC_DIR="$(cd "$1" && pwd -P)"
    shift
else
    SRC_DIR="$(cd "$(dirname "$0")/.." && pwd -P)"
fi
[[ -f "$SRC_DIR/galaxy.yml" ]] || echo "sanity.sh: warning: no galaxy.yml in $SRC_DIR" >&2

log() { printf '==> [%4ds] %s\n' "$SECONDS" "$*" >&2; }

# Find an interpreter for SANITY_PYTHON (python3.11, else python3 if it is that version).
HOST_PY=""
for cand in "python${SANITY_PYTHON}" python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
       [[ "$("$cand" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" == "$SANITY_PYTHON" ]]; then
        HOST_PY="$(command -v "$cand")"; break
    fi
done
[[ -n "$HOST_PY" ]] || { echo "sanity.sh: python${SANITY_PYTHON} not found on PATH" >&2; exit 1; }
"$HOST_PY" -c 'import ensurepip, venv' || { echo "sanity.sh: $HOST_PY lacks ensurepip/venv (Debian: apt-get install python${SANITY_PYTHON}-venv)" >&2; exit 1; }

# ---------------------------------------------------------------- 1. apt extras
# Without the shellcheck binary the "shellcheck" sanity test is silently skipped (only a WARNING).
# en_US.UTF-8: ansible-test prefers it; otherwise it warns and falls back to C.UTF-8.
if [[ "$DO_APT" == 1 && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    if ! command -v shellcheck >/dev/null 2>&1; then
        log "apt-get install shellcheck"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
    fi
    if ! locale -a 2>/dev/null | grep -qiE '^en_US\.utf-?8$'; then
        if ! command -v localedef >/dev/null 2>&1 || [[ ! -d /usr/share/i18n/locales ]]; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq locales >/dev/null
        fi
        log "generating locale en_US.UTF-8"
        localedef -i en_US -f UTF-8 en_US.UTF-8 || log "could not generate en_US.UTF-8 (harmless: ansible-test falls back to C.UTF-8)"
    fi
fi

# ---------------------------------------------------------------- 2. venv with ansible-core
VENV="$SANITY_HOME/venv"
mkdir -p "$SANITY_HOME"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    log "creating venv $VENV"
    rm -rf "$VENV"
    "$HOST_PY" -m venv "$VENV"
fi
installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("ansible-core"))' 2>/dev/null || true)"
if [[ "$installed" != "$ANSIBLE_CORE_VERSION" ]]; then
    log "pip install ansible-core==$ANSIBLE_CORE_VERSION (had: ${installed:-none})"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "ansible-core==$ANSIBLE_CORE_VERSION"
fi
ANSIBLE_TEST="$VENV/bin/ansible-test"

# ---------------------------------------------------------------- 3. seed the get-pip cache
# ansible-test creates its venvs with `python -m venv --without-pip`, then runs
# ansible_test/_util/target/setup/requirements.py:bootstrap(), which wants
#   ~/.ansible/test/cache/get_pip_<pip version, dots -> underscores>.py
# and downloads https://ci-files.testing.ansible.com/ansible-test/get-pip-<ver>.py only
# if that file is missing. quiet_pip.py then runs the cached file (runpy, as __main__)
# with the venv's python and get-pip arguments:
#   --disable-pip-version-check pip==<ver> --no-setuptools --no-wheel
# We put a stand-in there that installs pip from the pip wheel bundled with ensurepip.
PIP_VERSION="$("$VENV/bin/python" - "$SANITY_PYTHON" <<'EOF'
import sys, types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version=sys.argv[1]))['pip'])
EOF
)"
GET_PIP_CACHE="$HOME/.ansible/test/cache/get_pip_${PIP_VERSION//./_}.py"
STANDIN_MARKER='# ansible-test get-pip stand-in (run-sanity.sh)'
STANDIN="$(cat <<'EOF'
# ansible-test get-pip stand-in (run-sanity.sh)
"""Offline stand-in for ansible-test's get-pip-<version>.py bootstrap script.

Run by ansible_test/_util/target/setup/quiet_pip.py (runpy, as __main__) with the
fresh --without-pip venv's interpreter and get-pip style arguments, e.g.
    --disable-pip-version-check pip==24.2 --no-setuptools --no-wheel
Installs the requested packages by running the pip wheel bundled with ensurepip
(python <pip.whl>/pip install ...); if the index is unreachable, installs that
bundled pip wheel itself with --no-index so that pip is available anyway.
"""
import glob
import os
import re
import subprocess
import sys


def find_bundled_wheel(name):
    candidates = []
    try:
        import ensurepip
        bundled_dir = os.path.join(os.path.dirname(ensurepip.__file__), '_bundled')
        getter = getattr(ensurepip, '_get_packages', None)  # Python <= 3.11
        if getter is not None:
            pkg = getter().get(name)
            if pkg is not None:
                if getattr(pkg, 'wheel_path', None):
                    candidates.append(pkg.wheel_path)
                if getattr(pkg, 'wheel_name', None):
                    candidates.append(os.path.join(bundled_dir, pkg.wheel_name))
        candidates.extend(sorted(glob.glob(os.path.join(bundled_dir, name + '-*.whl')), reverse=True))
        pkg_dir = getattr(ensurepip, '_WHEEL_PKG_DIR', None)  # distro wheel dir (Debian patch)
        if pkg_dir:
            candidates.extend(sorted(glob.glob(os.path.join(pkg_dir, name + '-*.whl')), reverse=True))
    except ImportError:
        pass
    candidates.extend(sorted(glob.glob('/usr/share/python-wheels/' + name + '-*.whl'), reverse=True))
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def main():
    args = sys.argv[1:]
    want_setuptools = '--no-setuptools' not in args
    want_wheel = '--no-wheel' not in args
    args = [a for a in args if a not in ('--no-setuptools', '--no-wheel')]
    options = [a for a in args if a.startswith('-')]
    packages = [a for a in args if not a.startswith('-')]

    def requested(name):
        return any(re.match(r'%s\s*([=<>!~;\[]|$)' % name, p, re.I) for p in packages)

    if not requested('pip'):
        packages.insert(0, 'pip')
    if want_setuptools and not requested('setuptools'):
        packages.append('setuptools')
    if want_wheel and not requested('wheel'):
        packages.append('wheel')

    pip_whl = find_bundled_wheel('pip')
    if pip_whl is None:
        sys.stderr.write('get-pip stand-in: no pip wheel bundled with ensurepip found '
                         '(Debian: apt-get install python3-venv / python3-pip-whl)\n')
        sys.exit(1)

    runner = [sys.executable, os.path.join(pip_whl, 'pip')]
    env = dict(os.environ)
    env.pop('GET_PIP', None)
    env.setdefault('PIP_DISABLE_PIP_VERSION_CHECK', '1')
    base = ['install', '--quiet', '--no-warn-script-location']

    if subprocess.call(runner + base + options + packages, env=env) == 0:
        return
    sys.stderr.write('get-pip stand-in: could not install %s from the package index; '
                     'installing bundled %s instead\n' % (' '.join(packages), os.path.basename(pip_whl)))
    sys.exit(subprocess.call(runner + base + ['--no-index'] + options + [pip_whl], env=env))


if __name__ == '__main__':
    main()
EOF
)"
mkdir -p "$(dirname "$GET_PIP_CACHE")"
if [[ ! -f "$GET_PIP_CACHE" ]] || { head -n1 "$GET_PIP_CACHE" | grep -qF "$STANDIN_MARKER" &&
        [[ "$(cat "$GET_PIP_CACHE")" != "$STANDIN" ]]; }; then
    # (a genuine get-pip.py already in the cache is left alone: it works offline too)
    log "seeding $GET_PIP_CACHE (pip $PIP_VERSION bootstrap stand-in)"
    printf '%s\n' "$STANDIN" > "$GET_PIP_CACHE.tmp"
    mv "$GET_PIP_CACHE.tmp" "$GET_PIP_CACHE"
fi

# ---------------------------------------------------------------- 4. stage the collection
read -r NS NAME < <("$VENV/bin/python" - "$SRC_DIR/galaxy.yml" <<'EOF'
import os, sys, yaml
data = {}
if os.path.isfile(sys.argv[1]):
    with open(sys.argv[1]) as f:
        data = yaml.safe_load(f) or {}
print(data.get('namespace') or 'secops', data.get('name') or 'keylifecycle')
EOF
)
NS="${COLLECTION_NAMESPACE:-$NS}"
NAME="${COLLECTION_NAME:-$NAME}"
[[ -n "$NS" && -n "$NAME" ]] || { echo "sanity.sh: could not determine collection namespace/name" >&2; exit 1; }
WORK_ROOT="$SANITY_HOME/work"
DEST="$WORK_ROOT/ansible_collections/$NS/$NAME"
case "$DEST/" in "$SRC_DIR"/*|"$SRC_DIR/") echo "sanity.sh: SANITY_HOME must not be inside SRC_DIR" >&2; exit 2 ;; esac
case "$SRC_DIR/" in "$DEST"/*) echo "sanity.sh: SRC_DIR must not be inside $DEST" >&2; exit 2 ;; esac
log "staging $SRC_DIR -> $DEST"
mkdir -p "$DEST"
# Wipe the previous copy (and old results) but keep ansible-test's controller venv
# tests/output/.tmp/delegation, so warm runs do not rebuild it.
keep_only() {  # keep_only DIR NAME: delete everything in DIR except NAME
    [[ -d "$1" ]] && find "$1" -mindepth 1 -maxdepth 1 ! -name "$2" -exec rm -rf {} +
    return 0
}
keep_only "$DEST" tests
keep_only "$DEST/tests" output
keep_only "$DEST/tests/output" .tmp
keep_only "$DEST/tests/output/.tmp" delegation

if git -C "$SRC_DIR" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    if [[ "$FROM_HEAD" == 1 ]]; then
        prefix="$(git -C "$SRC_DIR" rev-parse --show-prefix)"
        toplevel="$(git -C "$SRC_DIR" rev-parse --show-toplevel)"
        git -C "$toplevel" archive --format=tar "HEAD:${prefix}" | tar -x -C "$DEST"
    else
        # tracked + untracked-but-not-ignored files, minus deleted ones (what ansible-test itself lists)
        comm -z -23 \
            <(git -C "$SRC_DIR" ls-files -z --cached --others --exclude-standard | sort -zu) \
            <(git -C "$SRC_DIR" ls-files -z --deleted | sort -zu) |
            tar -C "$SRC_DIR" --null --no-recursion -T - -cf - | tar -x -C "$DEST"
    fi
else
    tar -C "$SRC_DIR" --exclude=./.git --exclude=./tests/output --exclude='__pycache__' --exclude='*.py[co]' -cf - . |
        tar -x -C "$DEST"
fi

# A throw-away git repo in the copy: ansible-test then lists content with git (and stops
# walking up to any enclosing repo). tests/output must be excluded, otherwise the
# controller venv under tests/output/.tmp counts as content (symlinks/pep8/... failures).
git -C "$DEST" init -q
printf 'tests/output/\n__pycache__/\n*.py[co]\n' >> "$DEST/.git/info/exclude"
git -C "$DEST" add -A
git -C "$DEST" -c user.name=run-sanity -c user.email=run-sanity@localhost -c commit.gpgsign=false \
    commit -q --no-verify --allow-empty -m "staged copy of $SRC_DIR"

# ---------------------------------------------------------------- 5. run
log "ansible-test sanity (ansible-core $ANSIBLE_CORE_VERSION, python $SANITY_PYTHON, --venv)"
cd "$DEST"
set +e
"$ANSIBLE_TEST" sanity --venv --requirements --python "$SANITY_PYTHON" --color no "$@"
rc=$?
set -e
log "ansible-test exit status: $rc (results: $DEST/tests/output)"
exit "$rc"
