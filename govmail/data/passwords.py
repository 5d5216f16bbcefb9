"""Password policy checks and hashing (passlib) for the account store.

Hashes are bcrypt in Dovecot's `{BLF-CRYPT}` form, which Dovecot on Debian 13 verifies through
libxcrypt. Nothing here keeps a clear-text password anywhere but in memory.
"""

from __future__ import annotations

import secrets
import string

from passlib.hash import bcrypt

from ..host import contract
from ..host.password_change import password_problems
from .schema import PasswordPolicy

SPECIAL = "!#%&*+-=?@^_~"
CLASSES = {
    "lower": string.ascii_lowercase,
    "upper": string.ascii_uppercase,
    "digit": string.digits,
    "special": SPECIAL,
}
BCRYPT_ROUNDS = contract.BCRYPT_COST
# Initial passwords are random (14+ characters of 75 symbols, over 80 bits): no attacker can search
# that space, so the cost factor, which protects guessable human-chosen passwords, buys nothing there.
# The minimum cost makes 50,000 new mailboxes about a minute of hashing instead of hours; the host
# then rehashes them at BCRYPT_ROUNDS in the background (`accounts strengthen`), from its handout.
INITIAL_ROUNDS = 4


def hash_password(password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    return "{BLF-CRYPT}" + bcrypt.using(rounds=rounds, ident="2b").hash(password)


def verify(password: str, hashed: str) -> bool:
    if not hashed.startswith("{BLF-CRYPT}"):
        raise ValueError("only {BLF-CRYPT} hashes can be verified here")
    return bcrypt.verify(password, hashed[len("{BLF-CRYPT}"):])


def problems(password: str, policy: PasswordPolicy, admin: bool = False) -> list[str]:
    """Why `password` breaks the province's rule (empty list: it is acceptable). The same check the
    host's password service applies when a user changes their own password."""
    need = policy.admin_min_length if admin else policy.min_length
    return password_problems(password, need, policy.require, policy.article)


def generate(policy: PasswordPolicy, admin: bool = False) -> str:
    """A random password that meets the policy, with every character class, at least 14 long."""
    length = max(14, policy.admin_min_length if admin else policy.min_length)
    alphabet = string.ascii_letters + string.digits + SPECIAL
    while True:
        pw = "".join(secrets.choice(alphabet) for _ in range(length))
        if all(any(c in chars for c in pw) for chars in CLASSES.values()):
            return pw
