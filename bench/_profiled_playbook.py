"""ansible-playbook under cProfile, its worker processes too (bench/profile_task.py).

usage: python _profiled_playbook.py PREFIX ansible-playbook-arguments...
Writes PREFIX.main.prof (the playbook process: strategy, result processing, callbacks) and PREFIX.worker-<pid>.prof
for each forked worker (the action plugin, the journal, module transfer and execution wait, the result decode).
"""

from __future__ import annotations

import cProfile
import sys

from ansible.executor.process import worker


def main():
    prefix = sys.argv.pop(1)
    original = worker.WorkerProcess._run

    def profiled(self):
        profile = cProfile.Profile()
        try:
            return profile.runcall(original, self)
        finally:
            profile.dump_stats("%s.worker-%d.prof" % (prefix, self.pid or 0))

    worker.WorkerProcess._run = profiled
    from ansible.cli.playbook import main as playbook_main

    sys.argv[0] = "ansible-playbook"
    profile = cProfile.Profile()
    try:
        profile.runcall(playbook_main)
    finally:
        profile.dump_stats("%s.main.prof" % prefix)


if __name__ == "__main__":
    main()
