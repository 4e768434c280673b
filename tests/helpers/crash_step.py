"""Run one rotation or destruction with the collection's own code, and stop dead at a chosen step.

usage: crash_step.py COLLECTIONS_PATH MODULE TOKEN_LABEL PIN_FILE rotate|destroy KEY METHOD WHEN NTH

At the NTH call of TokenKeyStore.METHOD (before or after it runs, WHEN), the process stops itself
(SIGSTOP) so that the test can kill it with SIGKILL at exactly that point, as a crash or an
operator's kill -9 would. Test-only: nothing of this is in the collection.
"""

import os
import signal
import sys


def main():
    collections, module, label, pin_file, operation, key, method, when, nth = sys.argv[1:10]
    sys.path.insert(0, collections)
    # pylint: disable=import-outside-toplevel
    from ansible_collections.secops.keylifecycle.plugins.module_utils import _key_store
    from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import AuditContext
    from ansible_collections.secops.keylifecycle.plugins.module_utils._hsm import ConnectionSettings, open_session
    from ansible_collections.secops.keylifecycle.plugins.module_utils._keys import utc_now
    from ansible_collections.secops.keylifecycle.plugins.module_utils._policy import BASELINE

    original = getattr(_key_store.TokenKeyStore, method)
    calls = {"n": 0}

    def stop_here():
        sys.stdout.write("stopping\n")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGSTOP)

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == int(nth) and when == "before":
            stop_here()
        result = original(*args, **kwargs)
        if calls["n"] == int(nth) and when == "after":
            stop_here()
        return result

    setattr(_key_store.TokenKeyStore, method, wrapper)
    context = AuditContext("crash-test", "test", "crash-run", host="crash")
    settings = ConnectionSettings(pkcs11_module=module, token_label=label, user_pin_file=pin_file)
    with open_session(settings) as session:
        store = _key_store.TokenKeyStore(session, label).load()
        if operation == "rotate":
            from ansible_collections.secops.keylifecycle.plugins.module_utils._key_rotation import (
                apply_rotation, plan_rotation)
            plans = plan_rotation(store, [key], False, True, BASELINE, utc_now())
            apply_rotation(store, plans, context, "scheduled", BASELINE, check_mode=False)
        else:
            from ansible_collections.secops.keylifecycle.plugins.module_utils._approvals import ApprovalOutcome
            from ansible_collections.secops.keylifecycle.plugins.module_utils._key_destruction import (
                apply_destruction, plan_destruction)
            plans = plan_destruction(store, None, None, True, BASELINE, utc_now())
            apply_destruction(store, plans, context, ApprovalOutcome(required=0, break_glass=False),
                              check_mode=False)
    sys.stdout.write("finished without stopping\n")


if __name__ == "__main__":
    main()
