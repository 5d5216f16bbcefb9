"""The account store's two engines behind one connection: SQLite (one host, the default) and
PostgreSQL (several hosts read it: issue 29).

A store is named by where it is: a file path (SQLite) or a libpq connection string
(`postgresql://...` or `host=... dbname=...`: PostgreSQL, through Debian's python3-psycopg2). Every
caller writes SQL once, with `?` for its parameters, in the subset both engines read (upserts as
`INSERT ... ON CONFLICT (...) DO UPDATE`); what differs (the clock, pattern matching, view drops,
the audit log's order, a writer's lock) comes from `Dialect`. Standard library only, and psycopg2
where the store is PostgreSQL.
"""

from __future__ import annotations

import os
import re
import sqlite3


class Dialect:
    """The SQL that differs between the engines."""

    def __init__(self, name: str):
        self.name = name
        pg = name == "postgresql"
        # the time now, in whole seconds since the epoch
        self.now = "CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)" if pg else "CAST(strftime('%s','now') AS INTEGER)"
        # dropping a view the next one depends on (PostgreSQL refuses without CASCADE)
        self.cascade = " CASCADE" if pg else ""
        # the audit log's insertion order
        self.seq = "id" if pg else "rowid"
        # a column of the audit log that numbers its rows (SQLite has its rowid)
        self.audit_id = "id BIGSERIAL PRIMARY KEY," if pg else ""

    def matches(self, column: str, glob: str) -> str:
        """`column` matches the shell pattern `glob` (*, [set]; no ? or escapes), as SQL."""
        if self.name != "postgresql":
            return f"{column} GLOB '{glob}'"
        out = "^"
        i = 0
        while i < len(glob):
            c = glob[i]
            if c == "*":
                out += ".*"
            elif c == "[":
                j = glob.index("]", i)
                out += glob[i:j + 1]
                i = j
            elif c.isalnum() or c in "-_":
                out += c
            else:
                out += "\\" + c
            i += 1
        return f"{column} ~ '{out}$'"


def is_postgresql(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://")) or "dbname=" in target


class _SQLite(sqlite3.Connection):
    dialect = Dialect("sqlite")

    def begin_write(self) -> None:
        """Start a transaction that holds the store's write lock until COMMIT or ROLLBACK."""
        self.execute("BEGIN IMMEDIATE")

    def write_script(self, script: str) -> None:
        """Run several statements as one write transaction: all of them, or none."""
        try:
            self.executescript("BEGIN IMMEDIATE;" + script + "COMMIT;")
        except BaseException:
            if self.in_transaction:
                self.execute("ROLLBACK")
            raise

    def columns(self, table: str) -> set:
        return {r[1] for r in self.execute(f"PRAGMA table_info({table})")}


class _PostgreSQL:
    """A psycopg2 connection in autocommit mode (BEGIN and COMMIT are the caller's, as with SQLite),
    answering the sqlite3 calls the store makes."""

    dialect = Dialect("postgresql")
    # Writers take this advisory lock for their transaction: one writer at a time, as SQLite's
    # BEGIN IMMEDIATE gives (readers never wait).
    WRITE_LOCK = 7_290_429

    def __init__(self, dsn: str, readonly: bool = False):
        import psycopg2

        self.raw = psycopg2.connect(dsn, connect_timeout=10, application_name="govmail")
        self.raw.autocommit = True
        if readonly:
            self.execute("SET default_transaction_read_only = on")

    @staticmethod
    def _sql(sql: str) -> str:
        # psycopg2 takes %s for a parameter and %% for a percent sign; the store writes ? and %.
        return sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, params=()):
        cur = self.raw.cursor()
        if params:
            cur.execute(self._sql(sql), tuple(params))
        else:
            cur.execute(sql)
        return cur

    def executemany(self, sql: str, rows):
        """Many rows, a thousand to a round trip (psycopg2's own executemany makes one per row: 50,000
        new mailboxes took seconds)."""
        from psycopg2.extras import execute_batch, execute_values

        cur = self.raw.cursor()
        rows = [tuple(r) for r in rows]
        m = re.fullmatch(r"(.*\bVALUES\s*)\((\?\s*,\s*)*\?\)\s*", sql, re.S)
        if m:  # an INSERT: a thousand rows to one statement
            execute_values(cur, m.group(1).replace("%", "%%") + "%s", rows, page_size=1000)
        else:
            execute_batch(cur, self._sql(sql), rows, page_size=1000)
        return cur

    def executescript(self, script: str):
        return self.execute(script)

    def begin_write(self) -> None:
        self.execute("BEGIN")
        self.execute("SELECT pg_advisory_xact_lock(?)", (self.WRITE_LOCK,))

    def write_script(self, script: str) -> None:
        """Run several statements as one write transaction: all of them, or none."""
        self.begin_write()
        try:
            self.execute(script)
            self.execute("COMMIT")
        except BaseException:
            self.execute("ROLLBACK")
            raise

    def columns(self, table: str) -> set:
        return {r[0] for r in self.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ?", (table,))}

    def commit(self) -> None:
        """Nothing to do: every statement outside BEGIN ... COMMIT is committed (as with SQLite here)."""

    def close(self) -> None:
        self.raw.close()


def connect(target: str, readonly: bool = False):
    """A connection to the store at `target` (a path: SQLite; a connection string: PostgreSQL)."""
    if is_postgresql(target):
        return _PostgreSQL(target, readonly)
    if readonly:
        return sqlite3.connect(f"file:{target}?mode=ro", uri=True, timeout=30, factory=_SQLite)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    return sqlite3.connect(target, timeout=30, isolation_level=None, factory=_SQLite)
