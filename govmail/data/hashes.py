"""Which password hashes a data file may carry: strong schemes Dovecot verifies, parsed.

`hash_problem("{BLF-CRYPT}$2b$12$...")` is None for a hash govmail accepts and otherwise says why
not and what is allowed. Accepted (Dovecot on Debian 13 verifies them through libxcrypt or its
own Argon2): bcrypt (`{BLF-CRYPT}`, cost 10 or more), Argon2id/Argon2i (`{ARGON2ID}`,
`{ARGON2I}`, memory 19 MiB or more, 2 passes or more: the OWASP floor) and SHA512-crypt
(`{SHA512-CRYPT}`, 5000 rounds or more: glibc's default). A clear-text "hash" (`{PLAIN}`,
`{CLEAR}`, ...) would put the password itself in the repository; MD5, SHA1, SHA256-CRYPT and DES
crypt are refused as too weak. Each accepted hash is parsed with passlib (or, for Argon2, its PHC
string by rule), so a string no scheme can verify is refused too.
"""

from __future__ import annotations

import re
from typing import Optional

from passlib.hash import bcrypt, sha512_crypt

BCRYPT_MIN_COST = 10
SHA512_MIN_ROUNDS = 5000
ARGON2_MIN_MEMORY_KIB = 19 * 1024
ARGON2_MIN_PASSES = 2
ALLOWED = ("{BLF-CRYPT}$2b$<cost>$... (cost >= 10, `govmail hash-password`), {ARGON2ID}$argon2id$... "
           "(m >= 19456, t >= 2) or {SHA512-CRYPT}$6$rounds=<n>$... (n >= 5000)")
CLEAR = {"PLAIN", "CLEAR", "CLEARTEXT", "PLAIN-TRUNC", "PLAIN-MD5", "PLAIN-MD4", "LDAP-MD5", "CRAM-MD5", "DIGEST-MD5",
         "HEX", "BASE64"}
# scheme -> (passlib handler, name, least cost, what the cost is called)
_CRYPT = {"BLF-CRYPT": (bcrypt, "bcrypt", BCRYPT_MIN_COST, "cost"),
          "SHA512-CRYPT": (sha512_crypt, "SHA512-crypt", SHA512_MIN_ROUNDS, "rounds")}
_ARGON2 = re.compile(r"^\$argon2(id|i)\$v=19\$m=(\d{1,8}),t=(\d{1,4}),p=(\d{1,3})\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{16,}\Z")


def hash_problem(value: str) -> Optional[str]:
    m = re.match(r"^\{([A-Z0-9.-]{1,20})\}(.*)\Z", value, re.S)
    if not m:
        return f"must be a Dovecot hash with its scheme in braces; allowed: {ALLOWED}"
    scheme, body = m.groups()
    if scheme in CLEAR:
        return (f"{{{scheme}}} keeps the password itself (or an unsalted digest) in the data file; "
                f"allowed: {ALLOWED}")
    if scheme in _CRYPT:
        handler, label, floor, unit = _CRYPT[scheme]
        try:
            h = handler.from_string(body)
        except ValueError as e:
            return f"not a {label} hash ({e}); allowed: {ALLOWED}"
        if not h.checksum:  # a salt and a cost but no hash (passlib calls it a config string): matches nothing
            return f"a {label} salt without its hash (nothing after the salt); allowed: {ALLOWED}"
        if h.rounds < floor:
            return f"{label} {unit} {h.rounds} is below {floor}; allowed: {ALLOWED}"
        return None
    if scheme in ("ARGON2ID", "ARGON2I"):
        a = _ARGON2.match(body)
        if not a or a.group(1) != scheme[6:].lower():
            return f"not an {scheme} hash in PHC form ($argon2id$v=19$m=...,t=...,p=...$salt$hash); allowed: {ALLOWED}"
        if int(a.group(2)) < ARGON2_MIN_MEMORY_KIB or int(a.group(3)) < ARGON2_MIN_PASSES:
            return f"Argon2 parameters m={a.group(2)},t={a.group(3)} are below m={ARGON2_MIN_MEMORY_KIB},t=2; allowed: {ALLOWED}"
        return None
    return f"the scheme {{{scheme}}} is not accepted (too weak, or not one Dovecot verifies here); allowed: {ALLOWED}"
