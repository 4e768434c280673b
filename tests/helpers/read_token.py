"""Independent reader of a PKCS#11 token for the tests: python-pkcs11 only, no collection code.

usage: read_token.py MODULE TOKEN_LABEL PIN_FILE  -> JSON list of objects on stdout
Each object: class, label, id (hex), and the boolean attributes that exist for its class;
metadata (CKO_DATA) objects also carry their application and JSON value.
For AES keys that may encrypt, "kcv" is computed here with AES-ECB of a zero block.
"""

import json
import sys

import pkcs11
from pkcs11 import Attribute as A
from pkcs11 import Mechanism, ObjectClass

BOOLEAN = {
    ObjectClass.SECRET_KEY: ["TOKEN", "PRIVATE", "SENSITIVE", "EXTRACTABLE", "LOCAL", "ALWAYS_SENSITIVE",
                             "NEVER_EXTRACTABLE", "ENCRYPT", "DECRYPT", "WRAP", "UNWRAP", "SIGN", "VERIFY",
                             "DERIVE", "MODIFIABLE"],
    ObjectClass.PRIVATE_KEY: ["TOKEN", "PRIVATE", "SENSITIVE", "EXTRACTABLE", "LOCAL", "ALWAYS_SENSITIVE",
                              "NEVER_EXTRACTABLE", "DECRYPT", "UNWRAP", "SIGN", "DERIVE", "MODIFIABLE"],
    ObjectClass.PUBLIC_KEY: ["TOKEN", "PRIVATE", "ENCRYPT", "WRAP", "VERIFY", "LOCAL"],
    ObjectClass.DATA: ["TOKEN", "PRIVATE"],
}


def main():
    module, label, pin_file = sys.argv[1:4]
    with open(pin_file, encoding="utf-8") as handle:
        pin = handle.read().strip()
    token = pkcs11.lib(module).get_token(token_label=label)
    out = []
    with token.open(user_pin=pin) as session:
        for obj in list(session.get_objects({})):
            cls = obj[A.CLASS]
            entry = {"class": cls.name, "label": obj[A.LABEL]}
            for name in BOOLEAN.get(cls, []):
                entry[name.lower()] = bool(obj[getattr(A, name)])
            if cls != ObjectClass.DATA:
                entry["id"] = bytes(obj[A.ID]).hex()
            if cls == ObjectClass.SECRET_KEY:
                entry["value_len"] = obj[A.VALUE_LEN]
                if entry["encrypt"]:
                    entry["kcv"] = bytes(obj.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))[:3].hex()
            if cls == ObjectClass.PUBLIC_KEY and obj[A.KEY_TYPE] == pkcs11.KeyType.RSA:
                entry["modulus_bits"] = len(obj[A.MODULUS]) * 8
            if cls == ObjectClass.DATA:
                entry["application"] = obj[A.APPLICATION]
                value = bytes(obj[A.VALUE])
                json_applications = ("secops.keylifecycle", "secops.keylifecycle.recipient")
                entry["value"] = json.loads(value.decode()) if entry["application"] in json_applications \
                    else value.hex()
            out.append(entry)
    json.dump(sorted(out, key=lambda e: (e["label"], e["class"])), sys.stdout)


if __name__ == "__main__":
    main()
