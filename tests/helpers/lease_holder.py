"""Take a token's lease with the collection's own code, then stop (SIGSTOP); release it if continued (SIGCONT).

usage: lease_holder.py COLLECTIONS_PATH MODULE TOKEN_LABEL PIN_FILE PURPOSE

Prints the holder id once the lease is held. A test either kills the stopped holder with SIGKILL (a holder that
died: its lease stays until it expires) or continues it (the holder releases the lease and exits), which holds a
task waiting for the lease for as long as the test needs. Test-only: nothing of this is in the collection.
"""

import os
import signal
import sys


def main():
    collections, module, label, pin_file, purpose = sys.argv[1:6]
    sys.path.insert(0, collections)
    # pylint: disable=import-outside-toplevel
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import ConnectionSettings
    from ansible_collections.secops.keylifecycle.plugins.module_utils._token_lease import TokenLease

    settings = ConnectionSettings(pkcs11_module=module, token_label=label, user_pin_file=pin_file)
    lease = TokenLease(settings, purpose, "mallory", host="dead-controller").acquire(0)
    print(lease.holder, flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
    lease.release()


if __name__ == "__main__":
    main()
