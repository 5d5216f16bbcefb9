"""Copying the account store between its engines, every row as it is (passwords, statuses, dates,
the audit log in its order):

- `move`: a running one-host province's SQLite store into its new, empty PostgreSQL store, at the
  first sync after `account_store.engine: postgresql` (govmail/host/store.py); the SQLite file is
  then renamed `.moved-to-postgresql`, kept, and read by nothing;
- `export`: a PostgreSQL store into an SQLite file, which the backup keeps whatever the engine
  (govmail/host/backup.py), so one restore path reads every backup;
- `replace_all`: every row of a PostgreSQL store replaced by an SQLite file's (restore-host).

Each runs in one transaction on the PostgreSQL side: all rows, or none. Standard library only (and
psycopg2 through store_db where the store is PostgreSQL).
"""

from __future__ import annotations

import os

from . import store_db

# Every table, in an order that respects nothing but readability (the store has no foreign keys).
TABLES = ("accounts", "aliases", "senders", "former", "meta", "audit", "notices")
# Meta keys that belong to one engine's copy: the hash of its own views, its schema version.
ENGINE_META = ("views", "schema_version")
MOVED_SUFFIX = ".moved-to-postgresql"


def _copy(src, dst) -> dict:
    """Insert every row of `src`'s tables into `dst` (inside the caller's transaction): rows per table."""
    counts = {}
    for table in TABLES:
        cols = [c for c in _ordered_columns(src, table) if c in dst.columns(table) and c != "id"]
        order = f" ORDER BY {src.dialect.seq}" if table == "audit" else ""
        where = " WHERE key NOT IN ('views', 'schema_version')" if table == "meta" else ""
        rows = src.execute(f"SELECT {', '.join(cols)} FROM {table}{where}{order}").fetchall()
        if rows:
            dst.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
        counts[table] = len(rows)
    return counts


def _ordered_columns(db, table: str) -> list[str]:
    """A table's columns in their declared order."""
    cur = db.execute(f"SELECT * FROM {table} WHERE 1 = 0")
    return [d[0] for d in cur.description]


def _write_from(sqlite_path: str, db, body):
    """`body(src)` in one write transaction of `db`, with the SQLite file at `sqlite_path` open
    read-only as `src`: committed, unless it returns None (rolled back) or raises."""
    src = store_db.connect(sqlite_path, readonly=True)
    try:
        db.begin_write()
        try:
            out = body(src)
            db.execute("ROLLBACK" if out is None else "COMMIT")
            return out
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        src.close()


def move(sqlite_path: str, db) -> dict | None:
    """Copy the SQLite store at `sqlite_path` into the PostgreSQL store `db` (schema made, views
    current) when `db` has no account yet, then rename the file. None when `db` already had accounts
    (the move was done: the file is only renamed if it is still there)."""
    counts = _write_from(sqlite_path, db, lambda src: None if db.execute("SELECT count(*) FROM accounts").fetchone()[0]
                         else _copy(src, db))
    if (counts is not None or _same_accounts(sqlite_path, db)) and not os.path.islink(sqlite_path):
        # Dovecot and Postfix read the file until the deploy has reloaded them (moments later): its
        # old name stays, a link to the kept copy, so they never find it missing (sqlite would make
        # an empty one) — `retire_link` removes it once nothing names it.
        moved = sqlite_path + MOVED_SUFFIX
        try:
            os.rename(sqlite_path, moved)
            os.symlink(os.path.basename(moved), sqlite_path)
        except FileNotFoundError:
            pass  # another sync moved it at the same moment
    return counts


def retire_link(sqlite_path: str, readers_conf) -> bool:
    """Remove the link left at the SQLite store's old name once no reader's configuration (the
    files `readers_conf`) names it any more. True when removed."""
    if not os.path.islink(sqlite_path):
        return False
    for path in readers_conf:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                if sqlite_path in f.read():
                    return False
        except FileNotFoundError:
            continue
    os.unlink(sqlite_path)
    return True


def _same_accounts(sqlite_path: str, db) -> bool:
    """Whether PostgreSQL already holds every account of the SQLite file (a move whose rename did not happen)."""
    try:
        src = store_db.connect(sqlite_path, readonly=True)
    except Exception:
        return False
    try:
        have = {r[0] for r in db.execute("SELECT address FROM accounts")}
        return {r[0] for r in src.execute("SELECT address FROM accounts")} <= have
    finally:
        src.close()


def export(db, dst) -> dict:
    """Copy every row of the store `db` into `dst`, a new, empty SQLite store (store.connect of a new
    file: its tables and views made), and close it."""
    try:
        dst.begin_write()
        counts = _copy(db, dst)
        dst.execute("COMMIT")
    finally:
        dst.close()
    return counts


def replace_all(sqlite_path: str, db) -> dict:
    """Replace every row of the PostgreSQL store `db` with the SQLite file's, in one transaction."""
    def replace(src):
        for table in TABLES:
            db.execute(f"DELETE FROM {table}" + (" WHERE key NOT IN ('views', 'schema_version')" if table == "meta" else ""))
        return _copy(src, db)

    return _write_from(sqlite_path, db, replace)
