# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Small file helpers for controller-side state (cursors, the journal registry, reports).

PRIVATE: not part of the public interface.
"""

from __future__ import annotations

import os


def write_atomically(path, text, mode=0o666, durable=False):
    """Replace ``path`` with ``text`` in one step: a reader sees the old or the new content, never a part.

    The temporary file is per process, so two writers at once do not clobber each other's halves. ``mode`` is
    given to os.open (the umask applies); ``durable`` fsyncs the content before the rename.
    """
    temporary = "%s.%d.tmp" % (path, os.getpid())
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temporary, path)


def read_text(path):
    """The text of ``path``, or None where it cannot be read as UTF-8 (absent, unreadable, binary)."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeError):
        return None
