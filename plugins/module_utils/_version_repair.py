# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Repair of half-made versions, shared by key generation and key rotation.

PRIVATE: not part of the public interface.

A generation cut short between C_GenerateKey and its metadata object leaves key
objects labelled ``<name>:v<n>`` with no metadata. The next generation or rotation
of that key removes them first, one audited event per version.
"""

from __future__ import annotations

from ansible_collections.secops.keylifecycle.plugins.module_utils._audit_event import build_event


def remove_half_made(store, name, numbers, context, action):
    """Remove versions whose generation was cut short (key objects, no metadata), one audited event each."""
    events = []
    for number in numbers:
        key_id = store.discard_half_made(name, number)
        events.append(build_event(action, "success", context, reason="repair: removed half-made version",
                                  key={"name": name, "version": number, "id": key_id,
                                       "label": "%s:v%d" % (name, number), "token": store.token_label}))
    return events
