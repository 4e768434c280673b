#!/usr/bin/env bash
# Set-up helper (openCryptoki, test tokens only): the slots the test suite's second PKCS#11 token lives in.
#   usage: scripts/opencryptoki-slots.sh [COUNT]        (root, or sudo without a password prompt)
# Writes /etc/opencryptoki/opencryptoki.conf with the distribution's soft token (slot 3, swtok) plus COUNT
# (default 4) soft-token slots 10, 11, ... named kltest0, kltest1, ... (tokname: each keeps its data in
# /var/lib/opencryptoki/kltestN/), makes their data and lock folders and /var/lib/secops-keylifecycle-tests/
# opencryptoki/ (root:pkcs11, for the set-up lock and the test sessions' slot reservations), and (re)starts
# pkcsslotd only when the configuration changed or the daemon is not running. The tokens themselves are made,
# and made afresh for every test, by tests/helpers/ock_token.py (which says why it resets a token's files
# instead of calling C_InitToken on it again).
# Idempotent, no prompts, no PINs. The configuration it replaces is kept once as opencryptoki.conf.orig.
set -euo pipefail
count=${1:-4}
case "$count" in ''|*[!0-9]*) echo "usage: $0 [COUNT]" >&2; exit 2 ;; esac

if [ "$(id -u)" -ne 0 ]; then
  exec sudo -n "$0" "$@"
fi
command -v pkcsslotd >/dev/null || { echo "opencryptoki-slots: pkcsslotd is missing: run ./scripts/bootstrap.sh" >&2; exit 1; }

CONF=/etc/opencryptoki/opencryptoki.conf
DATA=/var/lib/opencryptoki
LOCKS=/var/lock/opencryptoki
STATE=/var/lib/secops-keylifecycle-tests/opencryptoki
PIDFILE=/var/run/pkcsslotd.pid
FIRST_SLOT=10

# one run at a time (pytest workers start this concurrently); tests/helpers/ock_token.py takes the same lock,
# so the daemon is never restarted while a token is being made
install -d -m 0755 "$(dirname "$STATE")"
install -d -m 2770 -o root -g pkcs11 "$STATE"  # setgid: lock files made in it belong to group pkcs11
exec 9>>"$STATE/setup.lock"
chgrp pkcs11 "$STATE/setup.lock" && chmod 0660 "$STATE/setup.lock"
flock 9

want=$(mktemp)
trap 'rm -f "$want"' EXIT
{
  echo "version opencryptoki-3.1"
  echo "# written by secops.keylifecycle scripts/opencryptoki-slots.sh: slot 3 as shipped, slots ${FIRST_SLOT}+ for tests"
  printf 'slot 3\n{\nstdll = libpkcs11_sw.so\n}\n'
  for ((n = 0; n < count; n++)); do
    printf 'slot %d\n{\nstdll = libpkcs11_sw.so\ntokname = kltest%d\ndescription = "secops.keylifecycle test token %d"\n}\n' \
      $((FIRST_SLOT + n)) "$n" "$n"
  done
} > "$want"

conf_changed=false
if ! cmp -s "$want" "$CONF"; then
  [ -e "$CONF.orig" ] || [ ! -e "$CONF" ] || cp -p "$CONF" "$CONF.orig"
  install -m 0644 -o root -g root "$want" "$CONF"
  conf_changed=true
fi

# the folders the package (tmpfiles.d, init script) makes for its own tokens, made here for ours; /var/lock
# is a tmpfs on most machines, so the lock folders are made again after a reboot
folder() { install -d -m 0770 -o root -g pkcs11 "$@"; }
folder "$DATA" "$LOCKS" "$DATA/swtok" "$DATA/swtok/TOK_OBJ" "$LOCKS/swtok"
for ((n = 0; n < count; n++)); do
  folder "$DATA/kltest$n" "$DATA/kltest$n/TOK_OBJ" "$LOCKS/kltest$n"
done

# alive: the process exists and is not a zombie (a daemon whose parent, e.g. a container's init, does not reap it)
alive() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat")" != Z ]; }
running() { [ -s "$PIDFILE" ] && alive "$(cat "$PIDFILE")"; }
stop_daemon() {
  if running; then
    pid=$(cat "$PIDFILE")
    kill "$pid"
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then echo "opencryptoki-slots: pkcsslotd ($pid) did not stop" >&2; exit 1; fi
  fi
  rm -f "$PIDFILE"
}

start_daemon() {
  pkcsslotd 9>&-  # the daemon must not inherit (and so hold) the set-up lock
  for _ in $(seq 50); do running && break; sleep 0.1; done
  running || { echo "opencryptoki-slots: pkcsslotd did not start" >&2; exit 1; }
}

if $conf_changed || ! running; then
  if [ -d /run/systemd/system ] && systemctl cat pkcsslotd.service >/dev/null 2>&1; then
    systemctl restart pkcsslotd.service  # a machine booted with systemd: its unit owns the daemon
  else
    stop_daemon
    start_daemon
  fi
  echo "opencryptoki-slots: pkcsslotd started with slots 3 and ${FIRST_SLOT}..$((FIRST_SLOT + count - 1))"
fi
