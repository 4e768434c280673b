# -*- coding: utf-8 -*-
# Copyright: secops.keylifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The restore drill's data: a record encrypted in the token with one key version (AES-GCM), and decrypted again.

Used by playbooks/restore_drill.yml only, to show that data encrypted before the loss of a token decrypts after its
restore; it is the application's side of the drill, not part of the collection's lifecycle. The key never leaves
the token; the PIN is read from a file readable only by its owner.

usage: drill_data.py MODULE TOKEN_LABEL PIN_FILE encrypt KEY_LABEL PLAINTEXT OUT_FILE
       drill_data.py MODULE TOKEN_LABEL PIN_FILE decrypt KEY_LABEL IN_FILE
Prints one JSON object: the key label, the ciphertext's SHA-256, and for decrypt the plaintext.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys


def _pin(path):
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SystemExit("PIN file %s is readable by others (mode %o); chmod 600 it." % (path, stat.S_IMODE(mode)))
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


def _key(session, label):
    import pkcs11  # pylint: disable=import-outside-toplevel
    from pkcs11 import ObjectClass  # pylint: disable=import-outside-toplevel

    key = session.get_key(object_class=ObjectClass.SECRET_KEY, label=label)
    # python-pkcs11 offers encrypt()/decrypt() only where the usage attribute is set; the token decides
    native = pkcs11._pkcs11  # pylint: disable=protected-access
    both = type("SecretKey", (native.SecretKey, native.EncryptMixin, native.DecryptMixin, native.Object), {})
    return both(key.wrapper)


def main(argv):
    import pkcs11  # pylint: disable=import-outside-toplevel
    from pkcs11 import Mechanism  # pylint: disable=import-outside-toplevel
    from pkcs11.mechanisms import GCMParams  # pylint: disable=import-outside-toplevel

    module, token_label, pin_file, operation, key_label = argv[:5]
    token = pkcs11.lib(module).get_token(token_label=token_label)
    with token.open(user_pin=_pin(pin_file)) as session:
        key = _key(session, key_label)
        if operation == "encrypt":
            plaintext, out_file = argv[5], argv[6]
            nonce = os.urandom(12)
            ciphertext = bytes(key.encrypt(plaintext.encode("utf-8"), mechanism=Mechanism.AES_GCM,
                                           mechanism_param=GCMParams(nonce)))
            with open(out_file, "w", encoding="ascii") as handle:
                json.dump({"key": key_label, "nonce": nonce.hex(), "ciphertext": ciphertext.hex()}, handle)
            print(json.dumps({"key": key_label, "sha256": hashlib.sha256(ciphertext).hexdigest()}))
            return 0
        with open(argv[5], encoding="ascii") as handle:
            sealed = json.load(handle)
        ciphertext = bytes.fromhex(sealed["ciphertext"])
        try:
            plaintext = bytes(key.decrypt(ciphertext, mechanism=Mechanism.AES_GCM,
                                          mechanism_param=GCMParams(bytes.fromhex(sealed["nonce"]))))
        except pkcs11.exceptions.PKCS11Error as exc:
            print(json.dumps({"key": key_label, "sha256": hashlib.sha256(ciphertext).hexdigest(),
                              "error": type(exc).__name__}))
            return 3
        print(json.dumps({"key": key_label, "sha256": hashlib.sha256(ciphertext).hexdigest(),
                          "plaintext": plaintext.decode("utf-8")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
