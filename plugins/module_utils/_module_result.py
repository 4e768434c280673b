# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The one place where a typed error becomes ``fail_json``.

PRIVATE: not part of the public interface.
"""

from __future__ import annotations


def fail_with_error(module, exc, **result):
    """Fail the module with a KeyLifecycleError's message, kind, option and any audit events; with the checkpoint
    the token signed before the refusal (a token's first task pins its journal before its work), which the action
    plugin journals like a successful task's."""
    checkpoint = getattr(exc, "audit_checkpoint", None)
    if checkpoint is not None:
        result["audit_checkpoint"] = checkpoint
    module.fail_json(
        msg=exc.message,
        changed=bool(getattr(exc, "changed", False)),
        error_kind=exc.kind,
        error_option=exc.option,
        audit_events=list(getattr(exc, "audit_events", ())),
        **result
    )
