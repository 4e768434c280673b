# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Import guards for python-pkcs11 and cryptography: the one place module_utils imports them.

PRIVATE: not part of the public interface. Every other module_utils file takes the names it
uses from here (``from ..._dependencies import Attribute, ObjectClass``), so a host without a
library can still import the collection's code: the names are then None. (Controller-only
code that signs with a key file or the officer's token, ``plugin_utils/_policy_signing`` and
``_approval_signing``, imports what it needs where it signs and says what to install.) Modules call
``require_dependencies`` from ``main()`` so such a host gets ``missing_required_lib``'s
message (what to install, on which interpreter) instead of a traceback; controller code that
needs only ``cryptography`` (``audit_verify``) reports ``CRYPTOGRAPHY_IMPORT_ERROR`` itself.
"""

from __future__ import annotations

import traceback

#: what the rest of the collection imports from here
__all__ = [
    "pkcs11", "p11_exc", "DEFAULT", "MGF", "Attribute", "KeyType", "Mechanism", "ObjectClass", "encode_ecdsa_signature",
    "encode_named_curve_parameters", "InvalidSignature", "hashes", "serialization", "ec", "padding", "rsa",
    "decode_dss_signature", "HAS_PKCS11", "PKCS11_IMPORT_ERROR", "HAS_CRYPTOGRAPHY", "CRYPTOGRAPHY_IMPORT_ERROR",
    "require_dependencies",
]

try:
    import pkcs11
    import pkcs11.exceptions as p11_exc
    from pkcs11 import DEFAULT, MGF, Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11.util.ec import encode_ecdsa_signature, encode_named_curve_parameters
except ImportError:
    PKCS11_IMPORT_ERROR = traceback.format_exc()
    HAS_PKCS11 = False
    pkcs11 = p11_exc = DEFAULT = MGF = Attribute = KeyType = Mechanism = ObjectClass = None
    encode_ecdsa_signature = encode_named_curve_parameters = None
else:
    PKCS11_IMPORT_ERROR = None
    HAS_PKCS11 = True

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
except ImportError:
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
    HAS_CRYPTOGRAPHY = False
    InvalidSignature = hashes = serialization = ec = padding = rsa = decode_dss_signature = None
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
