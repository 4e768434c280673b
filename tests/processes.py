"""Test processes that stop themselves (SIGSTOP) at a chosen point, to be killed there as a crash would."""

from __future__ import annotations

import os
import signal
import time

import pytest


def kill_once_stopped(proc, what, timeout=60):
    """Wait until ``proc`` has stopped itself (state T in /proc), then SIGKILL it; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/%d/stat" % proc.pid, encoding="ascii") as handle:
            if handle.read().split(") ", 1)[1].startswith("T"):
                break
        if proc.poll() is not None:
            pytest.fail("%s ended before it stopped: %s %s" % ((what,) + proc.communicate()))
        time.sleep(0.05)
    else:
        pytest.fail("%s did not stop within %d s" % (what, timeout))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
