"""Independent AES-GCM through PKCS#11 for the tests (python-pkcs11 only, no collection code).

usage: gcm.py MODULE TOKEN_LABEL PIN_FILE encrypt|decrypt KEY_LABEL HEX_NONCE HEX_DATA
Prints the hex result, or "refused: <error>" and exits 3 when the token refuses the operation.
"""

import sys

import pkcs11
from pkcs11 import Mechanism, ObjectClass
from pkcs11.mechanisms import GCMParams


def main():
    module, label, pin_file, operation, key_label, nonce, data = sys.argv[1:8]
    with open(pin_file, encoding="utf-8") as handle:
        pin = handle.read().strip()
    token = pkcs11.lib(module).get_token(token_label=label)
    with token.open(user_pin=pin) as session:
        key = session.get_key(object_class=ObjectClass.SECRET_KEY, label=key_label)
        params = GCMParams(bytes.fromhex(nonce))
        try:
            # python-pkcs11 gives encrypt()/decrypt() only to keys whose usage attribute is set; give the
            # object both, so that the token, not the library, decides whether the operation is allowed.
            native = pkcs11._pkcs11  # pylint: disable=protected-access
            both = type("SecretKey", (native.SecretKey, native.EncryptMixin, native.DecryptMixin, native.Object), {})
            key = both(key.wrapper)
            if operation == "encrypt":
                out = key.encrypt(bytes.fromhex(data), mechanism=Mechanism.AES_GCM, mechanism_param=params)
            else:
                out = key.decrypt(bytes.fromhex(data), mechanism=Mechanism.AES_GCM, mechanism_param=params)
        except pkcs11.exceptions.PKCS11Error as exc:
            print("refused: %s %s" % (type(exc).__name__, exc))
            sys.exit(3)
    print(bytes(out).hex())


if __name__ == "__main__":
    main()
