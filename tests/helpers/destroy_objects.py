"""Destroy objects on a token by label prefix, as an operator with the user PIN could: python-pkcs11 only.

usage: destroy_objects.py MODULE TOKEN_LABEL PIN_FILE PREFIX...  -> the labels destroyed, one per line
"""

import sys

import pkcs11
from pkcs11 import Attribute as A


def main():
    module, label, pin_file = sys.argv[1:4]
    prefixes = tuple(sys.argv[4:])
    with open(pin_file, encoding="utf-8") as handle:
        pin = handle.read().strip()
    token = pkcs11.lib(module).get_token(token_label=label)
    with token.open(user_pin=pin, rw=True) as session:
        for obj in list(session.get_objects({})):
            name = obj[A.LABEL]
            if name.startswith(prefixes):
                obj.destroy()
                print(name)


if __name__ == "__main__":
    main()
