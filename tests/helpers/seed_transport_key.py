"""Test-only set-up: put an RSA transport key whose private half the test knows into a recipient's token.

usage: seed_transport_key.py MODULE TOKEN_LABEL PIN_FILE OBJECT_LABEL BITS OUT_PRIVATE_PEM

The key is made with ``cryptography`` outside any HSM and imported with C_CreateObject, so the
test can unwrap packages independently of the collection. A real enrollment generates the pair
inside the recipient's token, non-extractable (recipient_enroll); never do this outside tests.
"""

import sys

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, KeyType, ObjectClass


def _int(value):
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def main():
    module, token_label, pin_file, label, bits, out = sys.argv[1:7]
    with open(pin_file, encoding="utf-8") as handle:
        pin = handle.read().strip()
    key = rsa.generate_private_key(public_exponent=65537, key_size=int(bits))
    numbers = key.private_numbers()
    public = numbers.public_numbers
    token = pkcs11.lib(module).get_token(token_label=token_label)
    with token.open(user_pin=pin, rw=True) as session:
        common = {Attribute.TOKEN: True, Attribute.KEY_TYPE: KeyType.RSA, Attribute.LABEL: label,
                  Attribute.ID: b"\x5e\xed", Attribute.MODULUS: _int(public.n),
                  Attribute.PUBLIC_EXPONENT: _int(public.e)}
        session.create_object({**common, Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.WRAP: True,
                               Attribute.PRIVATE: False})
        session.create_object({**common, **{
            Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.PRIVATE: True, Attribute.UNWRAP: True,
            Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True, Attribute.PRIVATE_EXPONENT: _int(numbers.d),
            Attribute.PRIME_1: _int(numbers.p), Attribute.PRIME_2: _int(numbers.q),
            Attribute.EXPONENT_1: _int(numbers.dmp1), Attribute.EXPONENT_2: _int(numbers.dmq1),
            Attribute.COEFFICIENT: _int(numbers.iqmp)}})
    with open(out, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


if __name__ == "__main__":
    main()
