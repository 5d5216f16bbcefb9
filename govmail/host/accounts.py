#!/usr/bin/python3
"""govmail account store on a mail host (installed as /usr/local/lib/govmail/accounts).

One SQLite database, /var/lib/govmail/accounts.sqlite, that Dovecot (passdb/userdb sql) and Postfix
(proxy:sqlite maps) both read. The data file says who exists; this store keeps what lives on the
host: passwords users set, when they set them, statuses. Python standard library only.

Rules that keep users' data safe:
- a password already in the store is never replaced by a sync: the data file's `password_hash`
  is an *initial* password only;
- a mailbox that disappears from the directory is not deleted: it is marked `removed`, its login
  is refused, Postfix stops accepting mail for it, and its mail stays on disk until purged;
- a cancelled mailbox keeps its password and mail; only its login is refused.

Commands:
  sync [--new-passwords FILE]   apply /etc/govmail/directory.json in one transaction; FILE holds
                                initial passwords made by the deploy for new mailboxes
                                ({address: {hash, password}}): stored, handed to the operator in
                                /root/govmail-initial-passwords (0600), and FILE is removed.
  set-password ADDRESS          read a hash ({BLF-CRYPT}...) on stdin and store it for ADDRESS: an
                                administrator's reset. Where the province requires it (DN Art.
                                12.1, LC Art. 7.3, TN Art. 9.1) the user must change it before
                                logging in; open sessions of the mailbox are ended.
  hand-over ADDRESS --to NAME   hand a unit's mailbox to a new head (DN Art. 13.2, TN Art. 10.2):
                                like set-password (hash on stdin), content kept, recorded.
  change-password ADDRESS       the user's own change: the current password then the new one, one
                                per line on stdin; checked against the province's policy.
                                (The password service, govmail-passwd, does the same over HTTPS.)
  list                          print the store as JSON (no hashes).
  daily [--dry-run] [--now T]   the daily job (govmail-daily.timer): mail a warning 14 days before
                                a password expires (LC Art. 4.2), once per password; suspend
                                mailboxes without login for the province's period and notify the
                                managing agency (DN Art. 7.3, LC Art. 8.1); delete suspended
                                mailboxes the province's period after the notice and notify the
                                agency and its superior (LC Art. 8.1); purge cancelled mailboxes
                                after the province's retention. T: unix time or ISO date, to run
                                as if it were then (without --now, the environment variable
                                GOVMAIL_CLOCK does the same, so a test can run the timer's own
                                unit at another date). --dry-run: list, do nothing.
  restore ADDRESS               lift the suspension of an inactive mailbox (LC Art. 8.3).
  audit [--limit N]             the latest account actions: when, who, what, which mailbox.
"""

import datetime
import hashlib
import json
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import sys
import time

DIRECTORY = "/etc/govmail/directory.json"
DB = "/var/lib/govmail/accounts.sqlite"
LEGACY_USERS = "/var/lib/govmail/dovecot-users"  # the passwd-file store of earlier versions
HANDOUT = "/root/govmail-initial-passwords"
# Postfix daemons keep no supplementary groups, so the store's group is postfix itself; Dovecot's
# auth service gets that group through `extra_groups`.
GROUP = "postfix"
SCHEMA_VERSION = 2

REASONS = {
    "cancelled": "Hộp thư đã bị hủy; thư vẫn được lưu giữ. Mailbox cancelled: mail is kept. "
    "Contact the provincial mail administrator.",
    "removed": "Hộp thư không còn trong danh bạ. Mailbox no longer in the directory. "
    "Contact the provincial mail administrator.",
    "nopassword": "Chưa được cấp mật khẩu. No password issued yet: ask the provincial mail administrator.",
    "expired": "Mật khẩu đã hết hạn, hãy đổi mật khẩu tại / Password expired, change it at ",
    "mustchange": "Hãy đổi mật khẩu trước khi dùng hộp thư, tại / Change your password before first use, at ",
    "deleted": "Hộp thư đã bị xóa. Mailbox deleted. Contact the provincial mail administrator.",
    "suspended": "Hộp thư bị tạm khóa do lâu không sử dụng; thư vẫn được lưu giữ. Mailbox suspended after a long "
    "time without login: mail is kept. Your agency can ask for it to be restored.",
}
HOMES = "/var/vmail"
STAMP = ".govmail-last-login"
MONTH = 30.44 * 86400

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    address      TEXT PRIMARY KEY,
    name         TEXT NOT NULL DEFAULT '',
    kind         TEXT NOT NULL DEFAULT 'person',
    owner        TEXT,
    role         TEXT NOT NULL DEFAULT 'user',
    quota_mb     INTEGER NOT NULL,
    -- active | cancelled | removed (the line left the data file) | suspended (inactivity)
    -- | deleted (its mail purged by the daily job after the province's period; the row stays)
    status       TEXT NOT NULL DEFAULT 'active',
    password     TEXT,
    password_set INTEGER,
    created      INTEGER NOT NULL,
    updated      INTEGER NOT NULL,
    -- 1: the password was issued or reset by an administrator; the user must change it first.
    must_change  INTEGER NOT NULL DEFAULT 0,
    -- when the current status began (the period before deletion or purge counts from it)
    status_since INTEGER,
    -- mailboxes of the managing unit and of its superior: who is told of a suspension or deletion
    manager      TEXT,
    superior     TEXT
);
CREATE TABLE IF NOT EXISTS aliases (
    address TEXT PRIMARY KEY,
    members TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS senders (
    address TEXT PRIMARY KEY,   -- a list's address
    logins  TEXT NOT NULL       -- comma-separated mailboxes that may send as it
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    ts      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    address TEXT,
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS notices (
    address TEXT NOT NULL,
    kind    TEXT NOT NULL,
    key     TEXT NOT NULL,
    ts      INTEGER NOT NULL,
    PRIMARY KEY (address, kind, key)
);
"""

# Views are re-created only when this text changes (its hash is kept in meta): re-creating them
# changes the schema under Dovecot's prepared statements, so it must not happen on every call.
VIEWS = """
-- Password age limit of each account, from the province's policy (meta), in seconds or NULL.
DROP VIEW IF EXISTS password_limits;
CREATE VIEW password_limits AS
    SELECT a.address,
           COALESCE(86400 * CAST((SELECT value FROM meta WHERE key =
               CASE a.role WHEN 'admin' THEN 'admin_max_age_days' ELSE 'user_max_age_days' END) AS INTEGER), 0)
               AS max_age
    FROM accounts a;
-- Why each account may not log in now, or NULL: the one rule Dovecot (below) and the password
-- service both apply.
DROP VIEW IF EXISTS login_blocks;
CREATE VIEW login_blocks AS
    SELECT a.address,
           CASE WHEN a.status != 'active' THEN a.status
                WHEN a.password IS NULL THEN 'nopassword'
                WHEN l.max_age > 0 AND a.password_set IS NOT NULL
                     AND CAST(strftime('%s','now') AS INTEGER) - a.password_set > l.max_age THEN 'expired'
                WHEN a.must_change = 1
                     AND (SELECT value FROM meta WHERE key = 'change_at_first_login') = '1' THEN 'mustchange'
           END AS block
    FROM accounts a JOIN password_limits l ON l.address = a.address;
-- What Dovecot reads: NULL extra fields are not set. A refused login carries its reason; an expired
-- password (LC Art. 4.2) and a first login (DN Art. 12.1, LC Art. 6.3, TN Art. 9.1) say where the
-- user changes it.
DROP VIEW IF EXISTS dovecot_passdb;
CREATE VIEW dovecot_passdb AS
    SELECT a.address AS user, a.password,
           CASE WHEN b.block IS NULL THEN NULL ELSE 'y' END AS nologin,
           CASE b.block
                WHEN 'cancelled' THEN '{cancelled}'
                WHEN 'removed' THEN '{removed}'
                WHEN 'suspended' THEN '{suspended}'
                WHEN 'deleted' THEN '{deleted}'
                WHEN 'nopassword' THEN '{nopassword}'
                WHEN 'expired' THEN '{expired}' || {url}
                WHEN 'mustchange' THEN '{mustchange}' || {url}
           END AS reason
    FROM accounts a JOIN login_blocks b ON b.address = a.address;
""".format(
    url="COALESCE((SELECT value FROM meta WHERE key = 'password_url'), 'govmail passwd')",
    **{k: v.replace("'", "''") for k, v in REASONS.items()},
)
# Columns added since the first release: (name, declaration). Added in place on upgrade.
ADDED_COLUMNS = [
    ("must_change", "INTEGER NOT NULL DEFAULT 0"),
    ("status_since", "INTEGER"),
    ("manager", "TEXT"),
    ("superior", "TEXT"),
]


def connect(path=None):
    path = path or DB
    os.makedirs(os.path.dirname(path), exist_ok=True)
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")  # readers need no write access (no -shm file)
    db.executescript(SCHEMA)
    have_cols = {r[1] for r in db.execute("PRAGMA table_info(accounts)")}
    missing = [(c, decl) for c, decl in ADDED_COLUMNS if c not in have_cols]
    for col, decl in missing:
        db.execute(f"ALTER TABLE accounts ADD COLUMN {col} {decl}")
    if missing:
        db.execute("UPDATE accounts SET status_since = updated WHERE status_since IS NULL AND status != 'active'")
    want = hashlib.sha256(VIEWS.encode()).hexdigest()
    have = db.execute("SELECT value FROM meta WHERE key = 'views'").fetchone()
    if missing or not have or have[0] != want:
        db.executescript("BEGIN;" + VIEWS + f"INSERT OR REPLACE INTO meta VALUES ('views', '{want}'); COMMIT;")
        if shutil.which("doveadm"):
            # Dovecot's auth workers keep statements prepared on the old views and do not re-prepare
            # them ("database schema has changed"): restart them. Harmless when Dovecot is not running.
            subprocess.run(["doveadm", "reload"], capture_output=True)
    os.chmod(path, 0o640)
    try:
        import grp

        os.chown(path, 0, grp.getgrnam(GROUP).gr_gid)
    except (KeyError, PermissionError):
        pass
    db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    return db


def actor():
    """Who acts: GOVMAIL_ACTOR (the deploy passes the operator's user@machine) or the local user."""
    return os.environ.get("GOVMAIL_ACTOR") or f"{pwd.getpwuid(os.getuid()).pw_name}@{socket.gethostname()}"


def audit(db, action, address=None, detail="", ts=None, who=None):
    db.execute("INSERT INTO audit VALUES (?,?,?,?,?)",
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


def sync(new_passwords_file=None, db_path=None):
    with open(DIRECTORY, encoding="utf-8") as f:
        directory = json.load(f)
    new_pw = {}
    if new_passwords_file:
        with open(new_passwords_file, encoding="utf-8") as f:
            new_pw = json.load(f)
    db = connect(db_path)
    now = int(time.time())
    legacy = legacy_hashes() if db.execute("SELECT count(*) FROM accounts").fetchone()[0] == 0 else {}
    report = {"added": [], "cancelled": [], "removed": [], "restored": [], "kept": 0, "migrated": 0}
    handout = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for key, value in (directory.get("policy") or {}).items():
            if value is None:
                db.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))
        old = {r[0]: r for r in db.execute("SELECT address, password, status FROM accounts")}
        seen = set()

        def issued(addr):
            """An initial password the operator issued (data file hash or made by the deploy)."""
            if addr in new_pw:
                handout.append((addr, new_pw[addr]["password"]))
            return acc.get("password_hash") or (new_pw.get(addr) or {}).get("hash")

        for acc in directory["accounts"]:
            addr = acc["address"]
            seen.add(addr)
            status = "active" if acc["status"] == "active" else "cancelled"
            if addr in old:
                _, pw, old_status = old[addr]
                if old_status == "deleted" or (old_status == "suspended" and status == "active"):
                    # Only `accounts restore` lifts a suspension or re-creates a deleted mailbox: a
                    # line still in the data file must not silently undo the daily job's work.
                    status = old_status
                must_change = None
                if pw is None and status != "deleted":
                    pw = issued(addr)
                    must_change = 1 if pw else None
                if old_status == "removed":
                    report["restored"].append(addr)
                if status == "cancelled" and old_status != "cancelled":
                    report["cancelled"].append(addr)
                db.execute(
                    "UPDATE accounts SET name=?, kind=?, owner=?, role=?, quota_mb=?, manager=?, superior=?, "
                    "status_since=CASE WHEN status = ? THEN status_since ELSE ? END, status=?, "
                    "password=?, password_set=COALESCE(password_set, CASE WHEN ? IS NULL THEN NULL ELSE ? END), "
                    "must_change=COALESCE(?, must_change), updated=? WHERE address=?",
                    (acc["name"], acc["kind"], acc["owner"], acc["role"], acc["quota_mb"], acc.get("manager"),
                     acc.get("superior"), status, now, status, pw, pw, now, must_change, now, addr),
                )
                report["kept"] += 1
            else:
                pw = legacy.get(addr)
                if pw:
                    report["migrated"] += 1  # in use before this store existed: no forced change
                else:
                    pw = issued(addr)
                db.execute(
                    "INSERT INTO accounts (address, name, kind, owner, role, quota_mb, status, password, "
                    "password_set, created, updated, must_change, status_since, manager, superior) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (addr, acc["name"], acc["kind"], acc["owner"], acc["role"], acc["quota_mb"], status, pw,
                     now if pw else None, now, now, 0 if addr in legacy else 1, now, acc.get("manager"),
                     acc.get("superior")),
                )
                report["added"].append(addr)
                if status == "cancelled":
                    report["cancelled"].append(addr)
        for addr, (_, _, old_status) in old.items():
            if addr not in seen and old_status not in ("removed", "deleted"):
                db.execute("UPDATE accounts SET status='removed', status_since=?, updated=? WHERE address=?",
                           (now, now, addr))
                report["removed"].append(addr)
        for action in ("added", "cancelled", "removed", "restored"):
            for addr in report[action]:
                audit(db, action, addr, "sync from the data file", now)
        db.execute("DELETE FROM aliases")
        db.executemany(
            "INSERT INTO aliases VALUES (?, ?)", [(a, ",".join(m)) for a, m in directory["lists"].items()]
        )
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
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else default


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


def doveadm_hash(password, rounds=11):
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


def change_password(address, current, new, source="", db_path=None, verify=None, make_hash=None):
    """The user changes their own password: the current one proves who they are. Raises
    ChangeRefused with a message for the user. Used by `accounts change-password` and by the
    password service (govmail-passwd)."""
    verify = verify or doveadm_verify
    make_hash = make_hash or doveadm_hash
    address = address.strip().lower()
    db = connect(db_path)
    row = db.execute("SELECT a.password, a.role, b.block FROM accounts a JOIN login_blocks b ON b.address = a.address "
                     "WHERE a.address = ?", (address,)).fetchone()
    if row is None or row[0] is None or not verify(current, row[0]):
        raise ChangeRefused("Sai địa chỉ hoặc mật khẩu hiện tại. Wrong address or current password.")
    hashed, role, block = row
    if block in CHANGE_BLOCKED:
        raise ChangeRefused(CHANGE_BLOCKED[block])
    admin = role == "admin"
    need = int(meta_value(db, "password_admin_min_length" if admin else "password_min_length", "8"))
    require = [c for c in meta_value(db, "password_require", "").split(",") if c]
    problems = password_problems(new, need, require, meta_value(db, "password_article", ""))
    if new == current:
        problems.insert(0, "is the same as the current password")
    if problems:
        raise ChangeRefused("Mật khẩu mới không đạt yêu cầu. The new password " + "; ".join(problems) + ".")
    now = int(time.time())
    db.execute("UPDATE accounts SET password=?, password_set=?, must_change=0, updated=? WHERE address=?",
               (make_hash(new), now, now, address))
    audit(db, "password-changed", address, "by the user" + (f" from {source}" if source else ""),
          who=f"{address} (self)")
    return {"address": address, "password": "changed", "was": block or "active"}


def list_store(db_path=None):
    db = connect(db_path)
    rows = db.execute("SELECT address, kind, role, quota_mb, status, password IS NOT NULL, password_set FROM accounts "
                      "ORDER BY address")
    keys = ("kind", "role", "quota_mb", "status", "has_password", "password_set")
    print(json.dumps({r[0]: dict(zip(keys, r[1:], strict=False)) for r in rows}, indent=1))


WARN_DAYS = 14


def send_mail(to, subject, body, sender):
    """Hand a notice to the local Postfix (sendmail), which delivers it like any mail."""
    from email.header import Header
    from email.mime.text import MIMEText
    from email.utils import formatdate, make_msgid

    msg = MIMEText(body, "plain", "utf-8")
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    msg["Subject"] = Header(subject, "utf-8")
    msg["Auto-Submitted"] = "auto-generated"
    subprocess.run(["/usr/sbin/sendmail", "-i", "-f", sender, to], input=msg.as_bytes(), check=True)


def daily(now=None, dry_run=False, db_path=None):
    """The daily job: warn by mail before a password expires (LC Art. 4.2). Idempotent: one
    warning per password. `now` (unix time) lets tests move the clock."""
    now = int(now or time.time())
    db = connect(db_path)
    with open(DIRECTORY, encoding="utf-8") as f:
        domain = json.load(f)["domain"]
    due = db.execute(
        "SELECT a.address, a.password_set + l.max_age AS expires FROM accounts a "
        "JOIN password_limits l ON l.address = a.address "
        "WHERE a.status = 'active' AND a.password_set IS NOT NULL AND l.max_age > 0 "
        "AND ? >= a.password_set + l.max_age - ? AND ? < a.password_set + l.max_age "
        "AND NOT EXISTS (SELECT 1 FROM notices n WHERE n.address = a.address AND n.kind = 'expiry' "
        "                AND n.key = CAST(a.password_set AS TEXT))",
        (now, WARN_DAYS * 86400, now),
    ).fetchall()
    actions = []
    for address, expires in due:
        day = datetime.datetime.fromtimestamp(expires).strftime("%d/%m/%Y")
        actions.append({"action": "warn-expiry", "address": address, "expires": day})
        if dry_run:
            continue
        send_mail(
            address,
            f"Mật khẩu hộp thư sắp hết hạn ({day}) / Your mail password expires on {day}",
            f"Mật khẩu của hộp thư {address} sẽ hết hạn ngày {day}. Hãy đổi mật khẩu trước ngày đó; "
            "sau ngày đó việc đăng nhập sẽ bị từ chối.\n\n"
            f"The password of {address} expires on {day}. Change it before then; after that day, "
            "login is refused.\n\n"
            f"Đổi mật khẩu / Change it at: {meta_value(db, 'password_url', 'govmail passwd')}\n",
            f"postmaster@{domain}",
        )
        db.execute("INSERT INTO notices VALUES (?, 'expiry', ?, ?)",
                   (address, str(db.execute("SELECT password_set FROM accounts WHERE address=?",
                                            (address,)).fetchone()[0]), now))
        audit(db, "warn-expiry", address, f"password expires {day}")  # real time: when it was sent
    actions += inactivity(db, domain, now, dry_run)
    actions += lifecycle(db, domain, now, dry_run)
    if actions and not dry_run:
        lines = "\n".join(f"{a['action']}\t{a['address']}" for a in actions)
        send_mail(f"postmaster@{domain}", f"govmail: {len(actions)} account actions today / hôm nay",
                  f"Việc đã làm / Done by the daily account job:\n\n{lines}\n\n"
                  "Nhật ký / Audit log: /usr/local/lib/govmail/accounts audit\n", f"postmaster@{domain}")
    print(json.dumps({"dry_run": dry_run, "now": now, "actions": actions}, ensure_ascii=False))


def last_login(address, created):
    """Unix time of the mailbox's last IMAP/POP3 login (its post-login stamp), or its creation."""
    local, _, dom = address.partition("@")
    try:
        return max(created, int(os.stat(os.path.join(HOMES, dom, local, STAMP)).st_mtime))
    except FileNotFoundError:
        return created


def notify(to, subject, body, domain):
    for addr in dict.fromkeys(a for a in to if a):  # each once, in order
        send_mail(addr, subject, body, f"postmaster@{domain}")


def inactivity(db, domain, now, dry_run):
    """Suspend mailboxes without login for the province's period (DN Art. 7.3, LC Art. 8.1) and
    notify the managing unit (LC Art. 8.1)."""
    meta = dict(db.execute("SELECT key, value FROM meta"))
    action, months = meta.get("inactivity_action", "none"), meta.get("inactivity_after_months")
    if action == "none" or not months:
        return []
    article = meta.get("inactivity_article", "")
    verb = {"revoke": ("thu hồi", "revoked"), "suspend": ("tạm khóa", "suspended")}.get(action, ("tạm khóa", "suspended"))
    limit = float(months) * MONTH
    out = []
    rows = db.execute("SELECT address, manager, created FROM accounts WHERE status = 'active'").fetchall()
    for address, manager, created in rows:
        last = last_login(address, created)
        if now - last <= limit:
            continue
        since = datetime.datetime.fromtimestamp(last).strftime("%d/%m/%Y")
        item = {"action": action, "address": address, "last_login": since}
        if manager and manager != address and meta.get("inactivity_notify_agency") == "1":
            item["notify"] = [manager]
        out.append(item)
        if dry_run:
            continue
        db.execute("UPDATE accounts SET status = 'suspended', status_since = ?, updated = ? WHERE address = ?",
                   (now, int(time.time()), address))
        audit(db, "suspended", address, f"{verb[1]}: no login since {since} ({months} months: {article})")
        if item.get("notify"):
            later = meta.get("inactivity_delete_after_months")
            notify(
                item["notify"],
                f"Thông báo {verb[0]} hộp thư {address} / Mailbox {address} {verb[1]}",
                f"Hộp thư {address} không được đăng nhập từ ngày {since} (quá {months} tháng) nên đã bị {verb[0]} "
                f"theo {article or 'quy chế'}. Thư vẫn được lưu giữ"
                + (f"; sau {later} tháng kể từ thông báo này, hộp thư sẽ bị xóa" if later else "")
                + ". Cơ quan có thể đề nghị khôi phục hộp thư.\n\n"
                f"The mailbox {address} has had no login since {since} (over {months} months) and is {verb[1]} "
                f"under {article or 'the regulation'}. Its mail is kept"
                + (f"; {later} months after this notice the mailbox is deleted" if later else "")
                + ". The agency may ask for it to be restored.\n",
                domain,
            )
            audit(db, "notice-sent", address, f"{verb[1]} notice to {', '.join(item['notify'])}")
    return out


def home_of(address):
    local, _, dom = address.partition("@")
    if not local or not dom or "/" in address or local.startswith("."):
        raise ValueError(f"unsafe address {address!r}")
    return os.path.join(HOMES, dom, local)


def delete_mail(db, address, now, why):
    """Remove the mailbox's mail and mark it deleted; the row stays, so the audit log and a later
    re-creation know it existed."""
    home = home_of(address)
    kick(address)
    if os.path.isdir(home):
        shutil.rmtree(home)
    db.execute("UPDATE accounts SET status = 'deleted', status_since = ?, password = NULL, password_set = NULL, "
               "updated = ? WHERE address = ?", (now, int(time.time()), address))
    audit(db, "deleted", address, why)


def lifecycle(db, domain, now, dry_run):
    """Delete what the province's periods say may go: suspended mailboxes the set number of months
    after the notice (LC Art. 8.1, with the agency and its superior notified; DN Art. 7.3), and
    cancelled or dropped mailboxes after the retention of cancelled mail (policy.cancellation)."""
    meta = dict(db.execute("SELECT key, value FROM meta"))
    out = []
    rules = []
    if meta.get("inactivity_delete_after_months"):
        rules.append(("suspended", float(meta["inactivity_delete_after_months"]), meta.get("inactivity_article", "")))
    if meta.get("cancelled_keep_months"):
        keep = float(meta["cancelled_keep_months"])
        rules += [("cancelled", keep, meta.get("cancelled_article", "")), ("removed", keep, meta.get("cancelled_article", ""))]
    for status, months, article in rules:
        rows = db.execute("SELECT address, manager, superior, COALESCE(status_since, updated) FROM accounts "
                          "WHERE status = ? AND ? - COALESCE(status_since, updated) > ?",
                          (status, now, months * MONTH)).fetchall()
        for address, manager, superior, since_ts in rows:
            since = datetime.datetime.fromtimestamp(since_ts).strftime("%d/%m/%Y")
            item = {"action": "delete", "address": address, "was": status, "since": since}
            to = []
            if status == "suspended":
                if meta.get("inactivity_notify_agency") == "1" and manager and manager != address:
                    to.append(manager)
                if meta.get("inactivity_notify_superior") == "1" and superior and superior != address:
                    to.append(superior)
            if to:
                item["notify"] = to
            out.append(item)
            if dry_run:
                continue
            delete_mail(db, address, now, f"{status} since {since}, kept {months:g} months ({article})")
            if to:
                notify(
                    to,
                    f"Thông báo xóa hộp thư {address} / Mailbox {address} deleted",
                    f"Hộp thư {address} đã bị tạm khóa từ ngày {since} do lâu không sử dụng và sau {months:g} "
                    f"tháng kể từ thông báo đã bị xóa khỏi hệ thống theo {article or 'quy chế'}.\n\n"
                    f"The mailbox {address}, suspended on {since} for lack of use, has been deleted "
                    f"{months:g} months after the notice, under {article or 'the regulation'}.\n",
                    domain,
                )
                audit(db, "notice-sent", address, f"deletion notice to {', '.join(to)}")
    return out


def restore(address, db_path=None):
    """Lift a suspension (LC Art. 8.3): login works again; the last-login clock starts from now.
    A deleted mailbox is re-created, empty and without a password (set one, or the next deploy
    issues one)."""
    db = connect(db_path)
    now = int(time.time())
    row = db.execute("SELECT status FROM accounts WHERE address = ?", (address,)).fetchone()
    if row is None or row[0] not in ("suspended", "deleted"):
        sys.exit(f"accounts: {address} is {'not in the account store' if not row else row[0] + ', not suspended or deleted'}")
    db.execute("UPDATE accounts SET status = 'active', status_since = NULL, created = MAX(created, ?), updated = ? "
               "WHERE address = ?", (now, now, address))
    audit(db, "restored" if row[0] == "suspended" else "re-created", address,
          "suspension lifted" if row[0] == "suspended" else "re-created empty after deletion")
    print(json.dumps({"address": address, "status": "active", "was": row[0]}))


def show_audit(limit=50, db_path=None):
    db = connect(db_path)
    for ts, who, action, address, detail in db.execute(
        "SELECT ts, actor, action, address, detail FROM audit ORDER BY rowid DESC LIMIT ?", (limit,)
    ):
        stamp = datetime.datetime.fromtimestamp(ts).isoformat(timespec="seconds")
        print(f"{stamp}\t{who}\t{action}\t{address or ''}\t{detail}")


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, args = argv[0], argv[1:]
    if cmd == "sync":
        f = args[args.index("--new-passwords") + 1] if "--new-passwords" in args else None
        sync(f)
    elif cmd == "set-password" and len(args) == 1:
        set_password(args[0].lower(), sys.stdin.read().strip())
    elif cmd == "hand-over" and len(args) == 3 and args[1] == "--to":
        hand_over(args[0].lower(), sys.stdin.read().strip(), args[2])
    elif cmd == "change-password" and len(args) == 1:
        lines = sys.stdin.read().split("\n")
        if len(lines) < 2:
            sys.exit("accounts: give the current password and the new one on two lines of stdin")
        try:
            print(json.dumps(change_password(args[0], lines[0], lines[1], source="command line")))
        except ChangeRefused as e:
            sys.exit(f"accounts: {e}")
    elif cmd == "list":
        list_store()
    elif cmd == "daily":
        v = args[args.index("--now") + 1] if "--now" in args else os.environ.get("GOVMAIL_CLOCK")
        now = None
        if v:
            now = int(v) if v.isdigit() else int(datetime.datetime.fromisoformat(v).timestamp())
        daily(now=now, dry_run="--dry-run" in args)
    elif cmd == "restore" and len(args) == 1:
        restore(args[0].lower())
    elif cmd == "audit":
        show_audit(int(args[args.index("--limit") + 1]) if "--limit" in args else 50)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
