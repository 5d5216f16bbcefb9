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
  set-password ADDRESS          read a hash ({BLF-CRYPT}...) on stdin and store it for ADDRESS.
  list                          print the store as JSON (no hashes).
  daily [--dry-run] [--now T]   the daily job (govmail-daily.timer): mail a warning 14 days before
                                a password expires (LC Art. 4.2), once per password; suspend
                                mailboxes without login for the province's period and notify the
                                managing agency (DN Art. 7.3, LC Art. 8.1). T: unix time or ISO
                                date, to run as if it were then. --dry-run: list, do nothing.
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
SCHEMA_VERSION = 1

REASONS = {
    "cancelled": "Hộp thư đã bị hủy; thư vẫn được lưu giữ. Mailbox cancelled: mail is kept. "
    "Contact the provincial mail administrator.",
    "removed": "Hộp thư không còn trong danh bạ. Mailbox no longer in the directory. "
    "Contact the provincial mail administrator.",
    "nopassword": "Chưa được cấp mật khẩu. No password issued yet: ask the provincial mail administrator.",
    "expired": "Mật khẩu đã hết hạn. Password expired: ask the provincial mail administrator to reset it.",
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
    status       TEXT NOT NULL DEFAULT 'active',
    password     TEXT,
    password_set INTEGER,
    created      INTEGER NOT NULL,
    updated      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    address TEXT PRIMARY KEY,
    members TEXT NOT NULL
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
-- What Dovecot reads: NULL extra fields are not set. An expired password is refused like a
-- cancelled mailbox, with its own reason (LC Art. 4.2).
DROP VIEW IF EXISTS dovecot_passdb;
CREATE VIEW dovecot_passdb AS
    SELECT a.address AS user, a.password,
           CASE WHEN a.status = 'active' AND a.password IS NOT NULL
                     AND NOT (l.max_age > 0 AND a.password_set IS NOT NULL
                              AND CAST(strftime('%s','now') AS INTEGER) - a.password_set > l.max_age)
                THEN NULL ELSE 'y' END AS nologin,
           CASE WHEN a.status = 'cancelled' THEN '{cancelled}'
                WHEN a.status = 'removed' THEN '{removed}'
                WHEN a.status = 'suspended' THEN '{suspended}'
                WHEN a.password IS NULL THEN '{nopassword}'
                WHEN l.max_age > 0 AND a.password_set IS NOT NULL
                     AND CAST(strftime('%s','now') AS INTEGER) - a.password_set > l.max_age THEN '{expired}'
           END AS reason
    FROM accounts a JOIN password_limits l ON l.address = a.address;
""".format(**{k: v.replace("'", "''") for k, v in REASONS.items()})


def connect(path=None):
    path = path or DB
    os.makedirs(os.path.dirname(path), exist_ok=True)
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")  # readers need no write access (no -shm file)
    db.executescript(SCHEMA)
    want = hashlib.sha256(VIEWS.encode()).hexdigest()
    have = db.execute("SELECT value FROM meta WHERE key = 'views'").fetchone()
    if not have or have[0] != want:
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
    db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    return db


def actor():
    """Who acts: GOVMAIL_ACTOR (the deploy passes the operator's user@machine) or the local user."""
    return os.environ.get("GOVMAIL_ACTOR") or f"{pwd.getpwuid(os.getuid()).pw_name}@{socket.gethostname()}"


def audit(db, action, address=None, detail="", ts=None):
    db.execute("INSERT INTO audit VALUES (?,?,?,?,?)", (int(ts or time.time()), actor(), action, address, detail))


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
        for acc in directory["accounts"]:
            addr = acc["address"]
            seen.add(addr)
            status = "active" if acc["status"] == "active" else "cancelled"
            if addr in old:
                _, pw, old_status = old[addr]
                if old_status == "suspended" and status == "active":
                    status = "suspended"  # only `accounts restore` lifts a suspension
                if pw is None:
                    pw = acc.get("password_hash") or (new_pw.get(addr) or {}).get("hash")
                    if addr in new_pw:
                        handout.append((addr, new_pw[addr]["password"]))
                if old_status == "removed":
                    report["restored"].append(addr)
                db.execute(
                    "UPDATE accounts SET name=?, kind=?, owner=?, role=?, quota_mb=?, status=?, "
                    "password=?, password_set=COALESCE(password_set, CASE WHEN ? IS NULL THEN NULL ELSE ? END), "
                    "updated=? WHERE address=?",
                    (acc["name"], acc["kind"], acc["owner"], acc["role"], acc["quota_mb"], status, pw, pw, now, now,
                     addr),
                )
                report["kept"] += 1
            else:
                pw = legacy.get(addr)
                if pw:
                    report["migrated"] += 1
                else:
                    pw = acc.get("password_hash") or (new_pw.get(addr) or {}).get("hash")
                    if addr in new_pw:
                        handout.append((addr, new_pw[addr]["password"]))
                db.execute(
                    "INSERT INTO accounts (address, name, kind, owner, role, quota_mb, status, password, "
                    "password_set, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (addr, acc["name"], acc["kind"], acc["owner"], acc["role"], acc["quota_mb"], status, pw,
                     now if pw else None, now, now),
                )
                report["added"].append(addr)
            if status == "cancelled":
                report["cancelled"].append(addr)
        for addr, (_, _, old_status) in old.items():
            if addr not in seen and old_status != "removed":
                db.execute("UPDATE accounts SET status='removed', updated=? WHERE address=?", (now, addr))
                report["removed"].append(addr)
        for action in ("added", "cancelled", "removed", "restored"):
            for addr in report[action]:
                audit(db, action, addr, "sync from the data file", now)
        db.execute("DELETE FROM aliases")
        db.executemany(
            "INSERT INTO aliases VALUES (?, ?)", [(a, ",".join(m)) for a, m in directory["lists"].items()]
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


def set_password(address, hashed, db_path=None):
    if not hashed.startswith("{") or "\n" in hashed:
        sys.exit("accounts: refusing a malformed hash")
    db = connect(db_path)
    cur = db.execute(
        "UPDATE accounts SET password=?, password_set=?, updated=? WHERE address=?",
        (hashed, int(time.time()), int(time.time()), address),
    )
    if cur.rowcount != 1:
        sys.exit(f"accounts: {address} is not in the account store")
    audit(db, "password-set", address)
    print(json.dumps({"address": address, "password": "set"}))


def list_store(db_path=None):
    db = connect(db_path)
    rows = db.execute("SELECT address, kind, role, quota_mb, status, password IS NOT NULL, password_set FROM accounts "
                      "ORDER BY address")
    keys = ("kind", "role", "quota_mb", "status", "has_password", "password_set")
    print(json.dumps({r[0]: dict(zip(keys, r[1:])) for r in rows}, indent=1))


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
            "login is refused.\n",
            f"postmaster@{domain}",
        )
        db.execute("INSERT INTO notices VALUES (?, 'expiry', ?, ?)",
                   (address, str(db.execute("SELECT password_set FROM accounts WHERE address=?",
                                            (address,)).fetchone()[0]), now))
        audit(db, "warn-expiry", address, f"password expires {day}")  # real time: when it was sent
    actions += inactivity(db, domain, now, dry_run)
    print(json.dumps({"dry_run": dry_run, "now": now, "actions": actions}, ensure_ascii=False))


def last_login(address, created):
    """Unix time of the mailbox's last IMAP/POP3 login (its post-login stamp), or its creation."""
    local, _, dom = address.partition("@")
    try:
        return max(created, int(os.stat(os.path.join(HOMES, dom, local, STAMP)).st_mtime))
    except FileNotFoundError:
        return created


def inactivity(db, domain, now, dry_run):
    """Suspend mailboxes without login for the province's period (DN Art. 7.3, LC Art. 8.1) and notify."""
    meta = dict(db.execute("SELECT key, value FROM meta"))
    action, months = meta.get("inactivity_action", "none"), meta.get("inactivity_after_months")
    if action == "none" or not months:
        return []
    limit = float(months) * MONTH
    out = []
    rows = db.execute("SELECT address, owner, created, kind FROM accounts WHERE status = 'active'").fetchall()
    for address, owner, created, kind in rows:
        last = last_login(address, created)
        if now - last <= limit:
            continue
        since = datetime.datetime.fromtimestamp(last).strftime("%d/%m/%Y")
        item = {"action": "suspend", "address": address, "last_login": since}
        notify = f"{owner}@{domain}" if owner and meta.get("inactivity_notify_agency") == "1" else None
        if notify and notify != address:
            item["notify"] = notify
        out.append(item)
        if dry_run:
            continue
        db.execute("UPDATE accounts SET status = 'suspended', updated = ? WHERE address = ?", (int(time.time()), address))
        audit(db, "suspended", address, f"no login since {since} ({months} months: {meta.get('inactivity_article', '')})")
        if item.get("notify"):
            send_mail(
                item["notify"],
                f"Thông báo tạm khóa hộp thư {address} / Mailbox {address} suspended",
                f"Hộp thư {address} không được đăng nhập từ ngày {since} (quá {months} tháng) nên đã bị tạm khóa "
                f"theo {meta.get('inactivity_article', 'quy chế')}. Thư vẫn được lưu giữ. Cơ quan có thể đề nghị "
                "khôi phục hộp thư.\n\n"
                f"The mailbox {address} has had no login since {since} (over {months} months) and is suspended "
                f"under {meta.get('inactivity_article', 'the regulation')}. Its mail is kept. The agency may ask "
                "for it to be restored.\n",
                f"postmaster@{domain}",
            )
            audit(db, "notice-sent", address, f"suspension notice to {item['notify']}")
    return out


def restore(address, db_path=None):
    """Lift a suspension (LC Art. 8.3): login works again; the last-login clock starts from now."""
    db = connect(db_path)
    cur = db.execute("UPDATE accounts SET status = 'active', created = MAX(created, ?), updated = ? "
                     "WHERE address = ? AND status = 'suspended'", (int(time.time()), int(time.time()), address))
    if cur.rowcount != 1:
        row = db.execute("SELECT status FROM accounts WHERE address = ?", (address,)).fetchone()
        sys.exit(f"accounts: {address} is {'not in the account store' if not row else row[0] + ', not suspended'}")
    audit(db, "restored", address, "suspension lifted")
    print(json.dumps({"address": address, "status": "active"}))


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
    elif cmd == "list":
        list_store()
    elif cmd == "daily":
        now = None
        if "--now" in args:
            v = args[args.index("--now") + 1]
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
