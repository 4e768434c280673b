# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Small file helpers for controller-side state (cursors, the journal registry, reports).

PRIVATE: not part of the public interface.
"""

from __future__ import annotations

import os
import tempfile


def write_atomically(path, text, mode=0o600, durable=False):
    """Replace ``path`` with ``text`` in one step: a reader sees the old or the new content, never a part.

    The temporary file is created new beside ``path`` (O_EXCL, a random name: a link planted there is never
    followed, two writers at once never share one) and given ``mode`` exactly, on the open file, before the
    rename; ``durable`` fsyncs the content first. A link at ``path`` itself is replaced, not followed.
    """
    directory, name = os.path.split(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=".%s." % name, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise


def read_text(path):
    """The text of ``path``, or None where it cannot be read as UTF-8 (absent, unreadable, binary)."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeError):
        return None
