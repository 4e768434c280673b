# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Import guards for python-pkcs11 and cryptography.

PRIVATE: not part of the public interface. Modules call ``require_dependencies``
from ``main()`` so a host without the libraries gets ``missing_required_lib``'s
message (what to install, on which interpreter) instead of a traceback.
"""

from __future__ import annotations

import traceback

try:
    import pkcs11  # noqa: F401, pylint: disable=unused-import
except ImportError:
    PKCS11_IMPORT_ERROR = traceback.format_exc()
    HAS_PKCS11 = False
else:
    PKCS11_IMPORT_ERROR = None
    HAS_PKCS11 = True

try:
    import cryptography  # noqa: F401, pylint: disable=unused-import
except ImportError:
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
    HAS_CRYPTOGRAPHY = False
else:
    CRYPTOGRAPHY_IMPORT_ERROR = None
    HAS_CRYPTOGRAPHY = True


def require_dependencies(module):
    """Fail the module with installation advice when a library is missing."""
    # Imported here: basic is only needed on this failure path, and keeping the
    # import local lets the rest of module_utils be used without Ansible.
    from ansible.module_utils.basic import missing_required_lib

    if not HAS_PKCS11:
        module.fail_json(
            msg=missing_required_lib("python-pkcs11", url="https://pypi.org/project/python-pkcs11/"),
            exception=PKCS11_IMPORT_ERROR,
        )
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(
            msg=missing_required_lib("cryptography", url="https://pypi.org/project/cryptography/"),
            exception=CRYPTOGRAPHY_IMPORT_ERROR,
        )
