"""The account store: one database that Dovecot and Postfix both read (SQLite on a one-host province,
PostgreSQL when several hosts read it: govmail/host/store_db.py).

Its tables, the views Dovecot (passdb/userdb) and Postfix (mailbox, alias and sender maps) read,
and every write to it: the sync from the directory document, an administrator's reset, a hand-over,
the user's own change, the audit log. Nothing outside this module and its views holds SQL for the
store. Rules that keep users' data safe:

- a password already in the store is never replaced by a sync: the data file's `password_hash`
  is an *initial* password only;
- a mailbox that disappears from the directory is not deleted: it is marked `removed`, its login
  is refused, Postfix stops accepting mail for it, and its mail stays on disk until purged;
- a cancelled mailbox keeps its password and mail; only its login is refused.

Standard library only.
"""

import datetime
import hashlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time

from . import contract

DIRECTORY = contract.PATHS["directory"]
# The SQLite file of a one-host province (and of every province before it moved to PostgreSQL).
SQLITE = contract.PATHS["store"]
DSN_FILE = contract.PATHS["store_dsn"]
# The configuration of the store's readers: what names the SQLite file while they read it.
READERS_CONF = ("/etc/dovecot/dovecot.conf", *(f"{contract.PATHS['postfix_maps']}/{m}.cf"
                                               for m in ("mailboxes", "aliases", "senders", "relocated")))


def configured_store() -> str:
    """Where this host's store is: the PostgreSQL connection string the deploy wrote to DSN_FILE
    (`account_store.engine: postgresql`), else the SQLite file."""
    try:
        with open(DSN_FILE, encoding="utf-8") as f:
            dsn = f.read().strip()
    except (FileNotFoundError, PermissionError):
        dsn = ""
    return dsn or SQLITE


DB = configured_store()
LEGACY_USERS = contract.PATHS["legacy_users"]
HANDOUT = contract.PATHS["initial_passwords"]
# Postfix daemons keep no supplementary groups, so the store's group is postfix itself; Dovecot's
# auth service gets that group through `extra_groups`.
GROUP = "postfix"
SCHEMA_VERSION = 2

from . import store_db  # noqa: E402
from .store_sql import ADDED_COLUMNS, REASONS, issued, schema, views  # noqa: E402,F401 (the store's SQL)

# Set a meta value (both engines: an upsert).
SET_META = "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"


def read_only(target=None):
    """A connection that only reads the store (its tables and views as they are)."""
    return store_db.connect(target or DB, readonly=True)


def connect(target=None):
    """A connection to the store (`target`: a path or a PostgreSQL connection string; default DB), its
    tables made or upgraded and its views current."""
    path = target or DB
    db = store_db.connect(path)
    sqlite = db.dialect.name == "sqlite"
    if sqlite:
        db.execute("PRAGMA journal_mode=DELETE")  # readers need no write access (no -shm file)
    db.executescript(schema(db.dialect))
    have_cols = db.columns("accounts")
    missing = [(c, decl) for c, decl in ADDED_COLUMNS if c not in have_cols]
    for col, decl in missing:
        db.execute(f"ALTER TABLE accounts ADD COLUMN {col} {decl}")
    if missing:
        db.execute("UPDATE accounts SET status_since = updated WHERE status_since IS NULL AND status != 'active'")
    text = views(db.dialect)
    want = hashlib.sha256(text.encode()).hexdigest()
    have = db.execute("SELECT value FROM meta WHERE key = 'views'").fetchone()
    if missing or not have or have[0] != want:
        db.write_script(text + SET_META.replace("?, ?", f"'views', '{want}'") + ";")
        if shutil.which("doveadm"):
            # Dovecot's auth workers keep statements prepared on the old views and do not re-prepare
            # them ("database schema has changed"): restart them. Harmless when Dovecot is not running.
            subprocess.run(["doveadm", "reload"], capture_output=True)
    if sqlite:
        os.chmod(path, 0o640)
        try:
            import grp

            os.chown(path, 0, grp.getgrnam(GROUP).gr_gid)
        except (KeyError, PermissionError):
            pass
    db.execute(SET_META, ("schema_version", str(SCHEMA_VERSION)))
    return db



def actor():
    """Who acts: GOVMAIL_ACTOR (the deploy passes the operator's user@machine) or the local user."""
    return os.environ.get("GOVMAIL_ACTOR") or f"{pwd.getpwuid(os.getuid()).pw_name}@{socket.gethostname()}"



def audit(db, action, address=None, detail="", ts=None, who=None):
    db.execute("INSERT INTO audit (ts, actor, action, address, detail) VALUES (?,?,?,?,?)",
               (int(ts or time.time()), who or actor(), action, address, detail))



def legacy_hashes(path=None):
    """Passwords of the passwd-file store of earlier versions, so that moving to SQLite loses none."""
    path = path or LEGACY_USERS
    out = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("#") or ":" not in line:
                    continue
                addr, h = line.split(":", 2)[:2]
                if h.startswith("{"):
                    out[addr] = h
    except FileNotFoundError:
        pass
    return out


def read_directory():
    with open(DIRECTORY, encoding="utf-8") as f:
        return contract.check_directory(json.load(f))


def sync(new_passwords_file=None, db_path=None):
    directory = read_directory()
    new_pw = {}
    if new_passwords_file:
        with open(new_passwords_file, encoding="utf-8") as f:
            new_pw = json.load(f)
    db = connect(db_path)
    if db.dialect.name == "postgresql" and db_path is None and os.path.exists(SQLITE):
        from . import store_move

        if os.path.islink(SQLITE):
            store_move.retire_link(SQLITE, READERS_CONF)
        else:
            moved = store_move.move(SQLITE, db)
            if moved is not None:
                print(json.dumps({"moved_to_postgresql": moved}))
    now = int(time.time())
    legacy = legacy_hashes() if db.execute("SELECT count(*) FROM accounts").fetchone()[0] == 0 else {}
    report = {"added": [], "cancelled": [], "removed": [], "restored": [], "kept": 0, "migrated": 0}
    handout = []
    db.begin_write()
    try:
        for key, value in (directory.get("policy") or {}).items():
            if value is None:
                db.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                db.execute(SET_META, (key, str(value)))
        rename_moved(db, directory, now)
        old = {r[0]: r for r in db.execute("SELECT address, password, status, password_set, "
                                            + ", ".join(DATA_COLUMNS) + " FROM accounts")}
        seen = set()
        added = []  # new rows, written together (one round trip per thousand on PostgreSQL)

        def issued(addr):
            """An initial password the operator issued (data file hash or made by the deploy)."""
            if addr in new_pw:
                handout.append((addr, new_pw[addr]["password"]))
            return acc.get("password_hash") or (new_pw.get(addr) or {}).get("hash")

        for acc in directory["accounts"]:
            addr = acc["address"]
            seen.add(addr)
            if addr in old:
                _, pw, old_status, pw_set, *data = old[addr]
                status = wanted_status(acc, old_status)
                must_change = None
                if pw is None and status != "deleted":
                    pw = issued(addr)
                    must_change = 1 if pw else None
                if old_status == "removed":
                    report["restored"].append(addr)
                if status == "cancelled" and old_status != "cancelled":
                    report["cancelled"].append(addr)
                report["kept"] += 1
                if (status == old_status and pw == old[addr][1] and must_change is None
                        and (pw is None or pw_set is not None) and data == [acc.get(c) for c in DATA_COLUMNS]):
                    continue  # nothing to write: a sync of 50,000 unchanged mailboxes writes no row
                db.execute(
                    "UPDATE accounts SET name=?, kind=?, owner=?, role=?, quota_mb=?, manager=?, superior=?, "
                    "status_since=CASE WHEN status = ? THEN status_since ELSE ? END, status=?, "
                    "password=?, password_set=COALESCE(password_set, CASE WHEN ? IS NULL THEN NULL ELSE ? END), "
                    "must_change=COALESCE(?, must_change), updated=? WHERE address=?",
                    (acc["name"], acc["kind"], acc["owner"], acc["role"], acc["quota_mb"], acc.get("manager"),
                     acc.get("superior"), status, now, status, pw, pw, now, must_change, now, addr),
                )
            else:
                status = wanted_status(acc, None)
                pw = legacy.get(addr)
                if pw:
                    report["migrated"] += 1  # in use before this store existed: no forced change
                else:
                    pw = issued(addr)
                added.append((addr, acc["name"], acc["kind"], acc["owner"], acc["role"], acc["quota_mb"], status, pw,
                              now if pw else None, now, now, 0 if addr in legacy else 1, now, acc.get("manager"),
                              acc.get("superior"), acc.get("store")))
                report["added"].append(addr)
                if status == "cancelled":
                    report["cancelled"].append(addr)
        db.executemany("INSERT INTO accounts (address, name, kind, owner, role, quota_mb, status, password, "
                       "password_set, created, updated, must_change, status_since, manager, superior, store) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", added)
        for addr, row in old.items():
            if addr not in seen and row[2] not in ("removed", "deleted"):
                db.execute("UPDATE accounts SET status='removed', status_since=?, updated=? WHERE address=?",
                           (now, now, addr))
                report["removed"].append(addr)
        who = actor()
        db.executemany("INSERT INTO audit (ts, actor, action, address, detail) VALUES (?,?,?,?,?)",
                       [(now, who, action, addr, "sync from the data file")
                        for action in ("added", "cancelled", "removed", "restored") for addr in report[action]])
        db.execute("DELETE FROM aliases")
        db.executemany(
            "INSERT INTO aliases VALUES (?, ?)", [(a, ",".join(m)) for a, m in directory["lists"].items()]
        )
        db.execute("DELETE FROM former")
        db.executemany("INSERT INTO former VALUES (?, ?, ?, ?)", [tuple(r) for r in directory.get("former", [])])
        db.execute("DELETE FROM senders")
        db.executemany(
            "INSERT INTO senders VALUES (?, ?)", [(a, ",".join(m)) for a, m in directory.get("senders", {}).items()]
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if report["migrated"]:
        os.unlink(LEGACY_USERS)  # every hash is in the database now
    if handout:
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        fd = os.open(HANDOUT, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            for addr, pw in handout:
                f.write(f"{addr}\t{pw}\t{stamp}\n")
        os.chmod(HANDOUT, 0o600)
    if new_passwords_file:
        os.unlink(new_passwords_file)
    print(json.dumps({k: (len(v) if isinstance(v, list) else v) for k, v in report.items()}))


def wanted_status(acc, old_status):
    """The status a sync gives an account of the directory, whose store row has `old_status` (None:
    no row yet)."""
    status = "active" if acc["status"] == "active" else "cancelled"
    if old_status == "deleted" or (old_status == "suspended" and status == "active"):
        # Only `accounts restore` lifts a suspension or re-creates a deleted mailbox: a line still in
        # the data file must not silently undo the daily job's work.
        return old_status
    return status


# The columns of an account row that come from the data file (a sync writes them).
DATA_COLUMNS = ("name", "kind", "owner", "role", "quota_mb", "manager", "superior")


def differences(directory=None, db_path=None):
    """What in the store differs from the directory document, as a sync would put it back: an
    account's data columns (a quota set to 0 by hand), its status, a missing or extra account, the
    lists, the senders, the former addresses, the policy. Read-only; [] when they agree."""
    directory = directory or read_directory()
    db = read_only(db_path)
    out = []
    rows = {r[0]: r for r in db.execute("SELECT address, status, " + ", ".join(DATA_COLUMNS) + " FROM accounts")}
    former = {r[0] for r in directory.get("former", [])}
    for acc in directory["accounts"]:
        row = rows.get(acc["address"])
        if row is None:
            if acc["address"] not in former:
                out.append(f"{acc['address']}: not in the store")
            continue
        if row[1] != wanted_status(acc, row[1]):
            out.append(f"{acc['address']}: status {row[1]}, the data says {wanted_status(acc, row[1])}")
        for col, have in zip(DATA_COLUMNS, row[2:], strict=True):
            if have != acc.get(col):
                out.append(f"{acc['address']}: {col} {have!r}, the data says {acc.get(col)!r}")
    listed = {a["address"] for a in directory["accounts"]}
    for addr, row in rows.items():
        if addr not in listed and row[1] not in ("removed", "deleted"):
            out.append(f"{addr}: {row[1]} in the store, not in the data")
    tables = {
        "lists": (dict(db.execute("SELECT * FROM aliases")), {a: ",".join(m) for a, m in directory["lists"].items()}),
        "senders": (dict(db.execute("SELECT * FROM senders")),
                    {a: ",".join(m) for a, m in directory.get("senders", {}).items()}),
        "former addresses": ({tuple(r) for r in db.execute("SELECT * FROM former")},
                             {tuple(r) for r in directory.get("former", [])}),
    }
    for what, (have, want) in tables.items():
        if have != want:
            changed = sorted(str(k) for k in (set(have) ^ set(want)) |
                             {k for k in set(have) & set(want) if isinstance(have, dict) and have[k] != want[k]})
            out.append(f"{what} differ from the data: {', '.join(changed[:8])}")
    meta = dict(db.execute("SELECT key, value FROM meta"))
    for key, value in (directory.get("policy") or {}).items():
        if meta.get(key) != (None if value is None else str(value)):
            out.append(f"policy {key}: {meta.get(key)!r} in the store, the data says {value!r}")
    return out


def rename_moved(db, directory, now):
    """A mailbox readdressed in the data (its new address has the old one in `former:`, `govmail
    readdress`) is renamed in place, not re-created: its row (password, status, dates) takes the
    new address and its mail directory moves with it."""
    wanted = {a["address"] for a in directory["accounts"]}
    have = {r[0] for r in db.execute("SELECT address FROM accounts")}
    for old, new, *_ in directory.get("former", []):
        if new in wanted and new not in have and old in have:
            kick(old)
            src, dst = (os.path.join(contract.PATHS["vmail"], *reversed(a.split("@", 1))) for a in (old, new))
            if os.path.isdir(src) and not os.path.exists(dst):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.rename(src, dst)
            db.execute("UPDATE accounts SET address=?, updated=? WHERE address=?", (new, now, old))
            db.execute("UPDATE notices SET address=? WHERE address=?", (new, old))
            audit(db, "renamed", new, f"was {old} (readdressed; mail kept)", now)
            have.discard(old)
            have.add(new)


def import_password(address, hashed, password_set, must_change, db_path=None):
    """A migrated mailbox's password hash from its old host (`migrate run`), so its user is not made
    to change it again. Taken while the mailbox's password here is the one the deploy issued or an
    earlier migration brought (a later change on the old host comes across at the next run); never
    over a password set here by its user or an administrator. True when taken."""
    db = connect(db_path)
    last = db.execute(f"SELECT action FROM audit WHERE address = ? AND action IN ('password-changed', "
                      f"'password-reset', 'hand-over', 'password-migrated') ORDER BY ts DESC, {db.dialect.seq} DESC LIMIT 1",
                      (address,)).fetchone()
    if last and last[0] != "password-migrated":
        return False
    now = int(time.time())
    cur = db.execute("UPDATE accounts SET password=?, password_set=?, must_change=?, updated=? WHERE address=? "
                     "AND COALESCE(password, '') != ?",
                     (hashed, password_set or now, 1 if must_change else 0, now, address, hashed))
    if cur.rowcount:
        audit(db, "password-migrated", address, "hash from the predecessor's host", now)
    return cur.rowcount > 0


def kick(address):
    """End the open IMAP/POP3 sessions of a mailbox (after a reset or hand-over)."""
    if shutil.which("doveadm"):
        subprocess.run(["doveadm", "kick", address], capture_output=True)



def set_password(address, hashed, db_path=None, action="password-reset", detail=""):
    """An administrator sets a password: the user must change it at first login where the province
    says so (the store's view enforces that only when the policy is on)."""
    if not hashed.startswith("{") or "\n" in hashed:
        sys.exit("accounts: refusing a malformed hash")
    db = connect(db_path)
    now = int(time.time())
    row = db.execute("SELECT status FROM accounts WHERE address=?", (address,)).fetchone()
    if row is None:
        sys.exit(f"accounts: {address} is not in the account store")
    if row[0] == "deleted":
        sys.exit(f"accounts: {address} was deleted; put it back in the data file as active to re-create it")
    db.execute("UPDATE accounts SET password=?, password_set=?, must_change=1, updated=? WHERE address=?",
               (hashed, now, now, address))
    audit(db, action, address, detail)
    kick(address)
    must = meta_value(db, "change_at_first_login") == "1"
    print(json.dumps({"address": address, "password": "set", "must_change": must}))



def hand_over(address, hashed, to, db_path=None):
    """DN Art. 13.2, TN Art. 10.2: a unit's mailbox passes, with all of its content, to the new head."""
    db = connect(db_path)
    row = db.execute("SELECT kind FROM accounts WHERE address=?", (address,)).fetchone()
    if row and row[0] == "person":
        sys.exit(f"accounts: {address} is a personal mailbox; only a unit's mailbox is handed over "
                 "(use set-password to reset a person's password)")
    set_password(address, hashed, db_path, action="hand-over", detail=f"to {to}; content kept")



def meta_value(db, key, default=None):
    """A policy value of the store's `meta` table; when it has none, `default`, or the contract's
    (contract.POLICY_DEFAULTS, as text)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row:
        return row[0]
    if default is None and contract.POLICY_DEFAULTS.get(key) is not None:
        return str(contract.POLICY_DEFAULTS[key])
    return default



def list_store(db_path=None):
    db = connect(db_path)
    rows = db.execute("SELECT address, kind, role, quota_mb, status, CASE WHEN password IS NULL THEN 0 ELSE 1 END, "
                      "password_set FROM accounts ORDER BY address")
    keys = ("kind", "role", "quota_mb", "status", "has_password", "password_set")
    print(json.dumps({r[0]: dict(zip(keys, r[1:], strict=False)) for r in rows}, indent=1))


def stored_addresses(db_path=None):
    """Addresses that have a password, and deleted ones (no initial password to issue for them): what
    the deploy asks before it makes initial passwords."""
    db = connect(db_path)
    return [r[0] for r in db.execute("SELECT address FROM accounts WHERE password IS NOT NULL OR status = 'deleted'")]


def mailbox_addresses(db_path=None, held_by=None):
    """Addresses whose mail is on disk: every account but the deleted ones (read-only); `held_by`:
    only those a store apart holds (column `store`)."""
    db = read_only(db_path)
    if held_by:
        return [r[0] for r in db.execute("SELECT address FROM accounts WHERE status != 'deleted' AND store = ? "
                                         "ORDER BY address", (held_by,))]
    return [r[0] for r in db.execute("SELECT address FROM accounts WHERE status != 'deleted' ORDER BY address")]


def show_audit(limit=50, db_path=None):
    db = connect(db_path)
    for ts, who, action, address, detail in db.execute(
        f"SELECT ts, actor, action, address, detail FROM audit ORDER BY {db.dialect.seq} DESC LIMIT ?", (limit,)
    ):
        stamp = datetime.datetime.fromtimestamp(ts).isoformat(timespec="seconds")
        print(f"{stamp}\t{who}\t{action}\t{address or ''}\t{detail}")



