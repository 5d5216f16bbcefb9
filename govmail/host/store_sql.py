"""The account store's SQL: its tables, and the views Dovecot and Postfix read (govmail/host/store.py
writes the store; nothing else holds SQL for it but the modules of its own package). Written once for
both engines: `schema(dialect)` and `views(dialect)` fill in what differs (govmail/host/store_db.py
Dialect). Standard library only.
"""

from .store_db import Dialect

REASONS = {
    "cancelled": "Hộp thư đã bị hủy; thư vẫn được lưu giữ. Mailbox cancelled: mail is kept. "
    "Contact the provincial mail administrator.",
    "removed": "Hộp thư không còn trong danh bạ. Mailbox no longer in the directory. "
    "Contact the provincial mail administrator.",
    "nopassword": "Chưa được cấp mật khẩu. No password issued yet: ask the provincial mail administrator.",
    "expired": "Mật khẩu đã hết hạn, hãy đổi mật khẩu tại / Password expired, change it at ",
    "mustchange": "Hãy đổi mật khẩu trước khi dùng hộp thư, tại / Change your password before first use, at ",
    "weakhash": "Mật khẩu được lưu theo cách không đủ an toàn, hãy đổi mật khẩu tại / Your password is stored in a "
    "weak form: change it at ",
    "deleted": "Hộp thư đã bị xóa. Mailbox deleted. Contact the provincial mail administrator.",
    "suspended": "Hộp thư bị tạm khóa do lâu không sử dụng; thư vẫn được lưu giữ. Mailbox suspended after a long "
    "time without login: mail is kept. Your agency can ask for it to be restored.",
}
# A strong password hash: bcrypt at cost 10 or more (govmail writes 11), Argon2, SHA-512 crypt. Any
# other ({PLAIN}, {SHA}, {MD5-CRYPT}, bcrypt at a lower cost ...) blocks the login until its owner
# changes the password ('weakhash'), except an issued one (below).
STRONG_GLOBS = ("{BLF-CRYPT}$2[aby]$[1-3][0-9]$*", "{ARGON2ID}*", "{ARGON2I}*", "{SHA512-CRYPT}$6$*")


def strong(d: Dialect) -> str:
    return "(" + " OR ".join(d.matches("a.password", g) for g in STRONG_GLOBS) + ")"

# An issued password not changed yet, hashed at bcrypt's lowest cost by the deploy (random, so no
# guess finds it); the host's `accounts strengthen` rehashes it at the full cost from the handout.
def issued(d: Dialect) -> str:
    return f"(a.must_change = 1 AND {d.matches('a.password', '{BLF-CRYPT}$2[aby]$0[4-9]$*')})"


# The mailboxes whose mail is on the mail host's disk (their homes, their post-login stamps): all of
# them, or with stores apart (meta `mail_host`) those the account store does not place on one. The
# host tools that touch a mailbox's files (the daily job, migrations) keep to these.
HERE = ("(store IS NULL OR NOT EXISTS (SELECT 1 FROM meta WHERE key = 'mail_host') "
        "OR store = (SELECT value FROM meta WHERE key = 'mail_host'))")


# {time}: a column of seconds since the epoch; {audit_id}: the audit log's row number where the engine
# has none of its own.
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
    password_set {time},
    created      {time} NOT NULL,
    updated      {time} NOT NULL,
    -- 1: the password was issued or reset by an administrator; the user must change it first.
    must_change  INTEGER NOT NULL DEFAULT 0,
    -- when the current status began (the period before deletion or purge counts from it)
    status_since {time},
    -- mailboxes of the managing unit and of its superior: who is told of a suspension or deletion
    manager      TEXT,
    superior     TEXT,
    -- the host that holds its mail (a store apart behind the mail host's proxy); NULL: the mail host.
    -- Set when the mailbox is made, never by a later sync (its mail stays where it is); changed only
    -- by `govmail move-mailbox` once the mail is on the other host.
    store        TEXT,
    -- during `govmail move-mailbox`: the host its mail is being copied to (its Dovecot knows the
    -- mailbox meanwhile), and until when its logins wait for the last copy (seconds since the epoch;
    -- the proxy's `delay_until`; deliveries never wait: the move's catch-up copies what came meanwhile).
    moving       TEXT,
    hold_until   {time},
    -- after the switch, until the move's last catch-up is done: the host the mail left (its Dovecot
    -- still knows the mailbox, for that copy only; nothing routes there)
    moved_from   TEXT,
    -- after `govmail failover`: the lost store its mail was served from until then (`store` is now
    -- its standby). Its Dovecot still knows the mailbox, so that the mail it took after the last
    -- copy is brought over once it is back (`--recover`), which clears this.
    failed_from  TEXT
);
CREATE TABLE IF NOT EXISTS aliases (
    address TEXT PRIMARY KEY,
    members TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS senders (
    address TEXT PRIMARY KEY,   -- a list's address
    logins  TEXT NOT NULL       -- comma-separated mailboxes that may send as it
);
CREATE TABLE IF NOT EXISTS former (
    old           TEXT PRIMARY KEY,  -- an address given up (a predecessor province's, or a readdressed one)
    new           TEXT NOT NULL,     -- the address it reaches now
    ends          {time},           -- end of the transition (unix time); NULL: never
    forward_until {time}            -- after it, forwarded until then; NULL: relocated at once
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    {audit_id}
    ts      {time} NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    address TEXT,
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS notices (
    address TEXT NOT NULL,
    kind    TEXT NOT NULL,
    key     TEXT NOT NULL,
    ts      {time} NOT NULL,
    PRIMARY KEY (address, kind, key)
);
"""

# Views are re-created only when this text changes (its hash is kept in meta): re-creating them
# changes the schema under Dovecot's prepared statements, so it must not happen on every call.
VIEWS = """
-- Password age limit of each account, from the province's policy (meta), in seconds or NULL.
DROP VIEW IF EXISTS password_limits{cascade};
CREATE VIEW password_limits AS
    SELECT a.address,
           COALESCE(86400 * CAST((SELECT value FROM meta WHERE key =
               CASE a.role WHEN 'admin' THEN 'admin_max_age_days' ELSE 'user_max_age_days' END) AS INTEGER), 0)
               AS max_age
    FROM accounts a;
-- Why each account may not log in now, or NULL: the one rule Dovecot (below) and the password
-- service both apply.
DROP VIEW IF EXISTS login_blocks{cascade};
CREATE VIEW login_blocks AS
    SELECT a.address,
           CASE WHEN a.status != 'active' THEN a.status
                WHEN a.password IS NULL THEN 'nopassword'
                WHEN l.max_age > 0 AND a.password_set IS NOT NULL
                     AND {now} - a.password_set > l.max_age THEN 'expired'
                WHEN NOT {strong} AND NOT {issued} THEN 'weakhash'
                WHEN a.must_change = 1
                     AND (SELECT value FROM meta WHERE key = 'change_at_first_login') = '1' THEN 'mustchange'
           END AS block
    FROM accounts a JOIN password_limits l ON l.address = a.address;
-- What Dovecot reads: NULL extra fields are not set. A refused login carries its reason; an expired
-- password (LC Art. 4.2) and a first login (DN Art. 12.1, LC Art. 6.3, TN Art. 9.1) say where the
-- user changes it.
-- The phase of each old address now: `transition` (an alias; its owner logs in and sends with it),
-- `forward` (an alias only) or `moved` (refused 5.1.6 naming the new address).
DROP VIEW IF EXISTS former_phase{cascade};
CREATE VIEW former_phase AS
    SELECT old, new,
           CASE WHEN ends IS NULL OR {now} < ends THEN 'transition'
                WHEN forward_until IS NOT NULL AND {now} < forward_until THEN 'forward'
                ELSE 'moved'
           END AS phase
    FROM former;
DROP VIEW IF EXISTS dovecot_passdb_own{cascade};
CREATE VIEW dovecot_passdb_own AS
    SELECT a.address AS "user", a.password, a.store,
           -- where a login goes: during a move's hold the host the mail is moving to (the login waits
           -- until the hold ends, `delay_until`: by then the mail is there); else where it is
           CASE WHEN a.moving IS NOT NULL AND a.hold_until > {now} THEN a.moving ELSE a.store END AS login_store,
           CASE WHEN a.hold_until > {now} THEN a.hold_until END AS delay_until,
           CASE WHEN b.block IS NULL THEN NULL ELSE 'y' END AS nologin,
           CASE b.block
                WHEN 'cancelled' THEN '{cancelled}'
                WHEN 'removed' THEN '{removed}'
                WHEN 'suspended' THEN '{suspended}'
                WHEN 'deleted' THEN '{deleted}'
                WHEN 'nopassword' THEN '{nopassword}'
                WHEN 'expired' THEN '{expired}' || {url}
                WHEN 'mustchange' THEN '{mustchange}' || {url}
                WHEN 'weakhash' THEN '{weakhash}' || {url}
           END AS reason
    FROM accounts a JOIN login_blocks b ON b.address = a.address;
-- Looked up by `login`, the name the user typed: during a transition an old address logs in to
-- its new mailbox (Dovecot takes the returned `user` as the user name from then on).
DROP VIEW IF EXISTS dovecot_passdb{cascade};
CREATE VIEW dovecot_passdb AS
    SELECT "user" AS login, * FROM dovecot_passdb_own
    UNION ALL
    SELECT f.old AS login, p.* FROM former_phase f JOIN dovecot_passdb_own p ON p."user" = f.new
    WHERE f.phase = 'transition';
-- What Dovecot's userdb reads: the quota of each mailbox, and the mailboxes that have mail on disk.
DROP VIEW IF EXISTS dovecot_userdb{cascade};
CREATE VIEW dovecot_userdb AS SELECT address AS "user", quota_mb || 'M' AS quota_storage_size, store, moving, moved_from,
    failed_from FROM accounts;
DROP VIEW IF EXISTS dovecot_users{cascade};
CREATE VIEW dovecot_users AS SELECT address AS "user", store, moving, moved_from, failed_from FROM accounts
    WHERE status != 'deleted';
-- What Postfix reads (proxy:sqlite maps in /etc/postfix/govmail): mailboxes that take mail (a
-- removed or deleted one does not), lists and their members, and who may send as an address
-- (a mailbox as itself while active; a list as the logins the data allows).
DROP VIEW IF EXISTS postfix_mailboxes{cascade};
CREATE VIEW postfix_mailboxes AS
    SELECT address FROM accounts WHERE status NOT IN ('removed', 'deleted');
DROP VIEW IF EXISTS postfix_aliases{cascade};
CREATE VIEW postfix_aliases AS
    SELECT address, members FROM aliases
    UNION ALL SELECT old, new FROM former_phase
    -- Only to a mailbox that takes mail, or a list: mail to an old address whose new mailbox was
    -- removed or deleted is refused at RCPT (unknown), not accepted and bounced later.
    WHERE phase != 'moved' AND (new IN (SELECT address FROM postfix_mailboxes) OR new IN (SELECT address FROM aliases));
DROP VIEW IF EXISTS postfix_held{cascade};
DROP VIEW IF EXISTS postfix_relocated{cascade};
CREATE VIEW postfix_relocated AS SELECT old AS address, new FROM former_phase WHERE phase = 'moved';
DROP VIEW IF EXISTS postfix_senders_own{cascade};
CREATE VIEW postfix_senders_own AS
    SELECT address, address AS logins FROM accounts WHERE status = 'active'
    UNION ALL SELECT address, logins FROM senders;
DROP VIEW IF EXISTS postfix_senders{cascade};
CREATE VIEW postfix_senders AS
    SELECT address, logins FROM postfix_senders_own
    UNION ALL SELECT f.old, s.logins FROM former_phase f JOIN postfix_senders_own s ON s.address = f.new
    WHERE f.phase = 'transition';
"""


def schema(d: Dialect) -> str:
    return SCHEMA.format(time="BIGINT" if d.name == "postgresql" else "INTEGER", audit_id=d.audit_id)


def views(d: Dialect) -> str:
    return VIEWS.format(
        url="COALESCE((SELECT value FROM meta WHERE key = 'password_url'), 'govmail passwd')",
        strong=strong(d), issued=issued(d), now=d.now, cascade=d.cascade,
        **{k: v.replace("'", "''") for k, v in REASONS.items()},
    )


# Columns added since the first release: (name, declaration). Added in place on upgrade.
ADDED_COLUMNS = [
    ("must_change", "INTEGER NOT NULL DEFAULT 0"),
    ("status_since", "INTEGER"),
    ("manager", "TEXT"),
    ("superior", "TEXT"),
    ("store", "TEXT"),
    ("moving", "TEXT"),
    ("hold_until", "BIGINT"),
    ("moved_from", "TEXT"),
    ("failed_from", "TEXT"),
]
