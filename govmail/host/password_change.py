"""Passwords on the host: the province's rule, Dovecot's hashes, and the user's own change.

`password_problems` is the one implementation of the password rule (the operator's command line,
govmail/data/passwords.py, and the password service use it); `change_password` is the user's own
change, used by `accounts change-password` and the password service (govmail-passwd).
Standard library only.
"""

import subprocess
import time

from . import contract, store
from .store import REASONS

CLASS_NAMES = {"lower": "lower-case letter", "upper": "upper-case letter", "digit": "digit",
               "special": "special character"}


def password_problems(password, min_length, require, article=""):
    """Why `password` breaks the province's rule (empty: acceptable), the article cited once at the
    end. Unicode-aware: Vietnamese letters such as Đ or ẹ count as upper/lower case. The one
    implementation: the operator's CLI (govmail.passwords) and the host's password service use it."""
    out = []
    if len(password) < min_length:
        out.append(f"is shorter than {min_length} characters")
    tests = {"lower": str.islower, "upper": str.isupper, "digit": str.isdigit,
             "special": lambda c: not c.isalnum() and not c.isspace()}
    missing = [CLASS_NAMES[c] for c in require if not any(tests[c](ch) for ch in password)]
    if missing:
        out.append("has no " + ", no ".join(missing))
    if any(c in password for c in "\r\n\0"):
        out.append("contains a line break or NUL")
    if out and article:
        out[-1] += f" ({article})"
    return out




def doveadm_verify(password, hashed):
    """Dovecot's own check of a password against a stored hash (any scheme Dovecot accepts)."""
    r = subprocess.run(["doveadm", "pw", "-t", hashed], input=(password + "\n").encode(), capture_output=True)
    return r.returncode == 0




def doveadm_hash(password, rounds=contract.BCRYPT_COST):
    """Dovecot's bcrypt hash of `password`, checked by Dovecot before it is returned. Without a
    terminal, `doveadm pw` reads the password and its confirmation as two lines of stdin."""
    line = (password + "\n").encode()
    r = subprocess.run(["doveadm", "pw", "-s", "BLF-CRYPT", "-r", str(rounds)], input=line * 2, capture_output=True)
    hashed = r.stdout.decode().strip()
    if r.returncode != 0 or r.stderr.strip() or not hashed.startswith("{BLF-CRYPT}$") or not doveadm_verify(password, hashed):
        raise RuntimeError(f"doveadm pw could not hash the password: {r.stderr.decode().strip()[:200]}")
    return hashed


class ChangeRefused(Exception):
    """A user's password change refused; the message is safe to show the user."""


# Statuses whose owner may still change the password (an expired or issued password is changed
# exactly this way); the others say why not.
CHANGE_BLOCKED = {
    "cancelled": REASONS["cancelled"], "removed": REASONS["removed"], "suspended": REASONS["suspended"],
    "deleted": REASONS["deleted"], "nopassword": REASONS["nopassword"],
}


# Blocks a user lifts by changing the password: an issued (or reset) one and an expired one.
MUST_CHANGE = ("mustchange", "expired", "weakhash")


def login_status(address, current, db_path=None, verify=None):
    """Whether `current` is the password of `address` and, if so, what stands between it and a
    login: {"address", "must_change", "reason"} (reason: the block's name, or "" for none). Raises
    ChangeRefused for a wrong address or password. Web mail asks this after a refused login."""
    db = store.connect(db_path)
    address, (_, _, block) = _verified(db, address, current, verify or doveadm_verify)
    return {"address": address, "must_change": block in MUST_CHANGE, "reason": block or ""}


class NotAllowed(Exception):
    """The right password, of an account that may not do what it asks; the message says why."""


def admin_login(address, current, db_path=None, verify=None):
    """The address when `current` is the password of an administrator (`role: admin`) whose login
    nothing blocks: the monitor's published pages (govmail-passwd's /api/admin) let only these in.
    ChangeRefused for a wrong address or password, NotAllowed for anyone else."""
    db = store.connect(db_path)
    address, (_, role, block) = _verified(db, address, current, verify or doveadm_verify)
    if role != "admin":
        raise NotAllowed(f"{address} is not an administrator")
    if block:
        raise NotAllowed(f"{address} may not log in now ({block})")
    return address


def _verified(db, address, current, verify):
    """(the mailbox's address, (hash, role, block)) when `current` is its password; ChangeRefused
    otherwise. An old address in its transition (a merged province's, or a readdressed one) is its
    owner's."""
    address = address.strip().lower()
    moved = db.execute("SELECT new FROM former_phase WHERE old = ? AND phase = 'transition'", (address,)).fetchone()
    if moved:
        address = moved[0]
    row = db.execute("SELECT a.password, a.role, b.block FROM accounts a JOIN login_blocks b ON b.address = a.address "
                     "WHERE a.address = ?", (address,)).fetchone()
    if row is None or row[0] is None or not verify(current, row[0]):
        raise ChangeRefused("Sai địa chỉ hoặc mật khẩu hiện tại. Wrong address or current password.")
    return address, row


def change_password(address, current, new, source="", db_path=None, verify=None, make_hash=None):
    """The user changes their own password: the current one proves who they are. Raises
    ChangeRefused with a message for the user. Used by `accounts change-password` and by the
    password service (govmail-passwd)."""
    make_hash = make_hash or doveadm_hash
    db = store.connect(db_path)
    address, (hashed, role, block) = _verified(db, address, current, verify or doveadm_verify)
    if block in CHANGE_BLOCKED:
        raise ChangeRefused(CHANGE_BLOCKED[block])
    admin = role == "admin"
    need = int(store.meta_value(db, "password_admin_min_length" if admin else "password_min_length"))
    require = [c for c in store.meta_value(db, "password_require", "").split(",") if c]
    problems = password_problems(new, need, require, store.meta_value(db, "password_article", ""))
    if new == current:
        problems.insert(0, "is the same as the current password")
    if problems:
        raise ChangeRefused("Mật khẩu mới không đạt yêu cầu. The new password " + "; ".join(problems) + ".")
    now = int(time.time())
    db.execute("UPDATE accounts SET password=?, password_set=?, must_change=0, updated=? WHERE address=?",
               (make_hash(new), now, now, address))
    store.audit(db, "password-changed", address, "by the user" + (f" from {source}" if source else ""),
          who=f"{address} (self)")
    return {"address": address, "password": "changed", "was": block or "active"}




def strengthen(db_path=None, handout=None, make_hash=None, verify=None):
    """Rehash at the province's cost each issued password not changed yet and still at bcrypt's
    lowest cost (the deploy hashes new mailboxes' random passwords fast; store_sql.issued), from
    the handout file where the host keeps them for the operator. A row whose password changed
    meanwhile is left as it is (compare-and-swap). Returns (strengthened, left without a known
    password)."""
    make_hash, verify = make_hash or doveadm_hash, verify or doveadm_verify
    known = {}
    try:
        with open(handout or store.HANDOUT, encoding="utf-8") as f:
            for line in f:
                addr, _, rest = line.rstrip("\n").partition("\t")
                known.setdefault(addr, []).append(rest.rpartition("\t")[0])
    except FileNotFoundError:
        pass
    db = store.connect(db_path)
    rows = db.execute("SELECT a.address, a.password FROM accounts a WHERE " + store.issued(db.dialect)).fetchall()
    done, unknown = 0, 0
    for address, hashed in rows:
        pw = next((p for p in reversed(known.get(address, [])) if verify(p, hashed)), None)
        if pw is None:
            unknown += 1
            continue
        cur = db.execute("UPDATE accounts SET password=? WHERE address=? AND password=?",
                         (make_hash(pw), address, hashed))
        done += cur.rowcount
    if done:
        store.audit(db, "strengthened", None, f"{done} issued passwords rehashed at cost {contract.BCRYPT_COST}")
    return done, unknown
