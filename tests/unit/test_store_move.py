"""A running one-host province moves its account store from SQLite to PostgreSQL with every
account, password, status and audit line kept; backups keep an SQLite copy of a PostgreSQL store,
and restoring it puts back exactly those rows (govmail/host/store_move.py)."""

import json
import os

import pytest

from govmail.host import store as host_store
from govmail.host import store_db, store_move

from .test_host_accounts import acc


@pytest.fixture
def pg(host_paths, postgresql_server, monkeypatch):
    """A province whose SQLite store has life in it (a password changed, a cancellation, a list, an
    audit trail), and a fresh PostgreSQL database as its configured store."""
    tmp = host_paths

    def sync(accs, lists=None):
        (tmp / "directory.json").write_text(json.dumps(
            {"domain": "x.gov.vn", "accounts": accs, "lists": lists or {}, "policy": {"user_max_age_days": 90}}))
        host_store.sync()

    sqlite = str(tmp / "accounts.sqlite")
    monkeypatch.setattr(host_store, "SQLITE", sqlite)
    monkeypatch.setattr(host_store, "READERS_CONF", ())
    people = [acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$issued-a"),
              acc("b@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$issued-b"),
              acc("c@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$issued-c")]
    sync(people, {"all@x.gov.vn": ["a@x.gov.vn", "b@x.gov.vn"]})
    host_store.set_password("b@x.gov.vn", "{BLF-CRYPT}$2b$11$changed-by-admin")
    people[2]["status"] = "cancelled"
    sync(people, {"all@x.gov.vn": ["a@x.gov.vn", "b@x.gov.vn"]})
    target = postgresql_server.new_database()
    monkeypatch.setattr(host_store, "DB", target)
    return sync, people, sqlite, target


def rows(target, sql):
    db = store_db.connect(target, readonly=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_the_first_sync_on_postgresql_moves_every_account_password_status_and_audit_line(pg):
    sync, people, sqlite, target = pg
    accounts = "SELECT address, password, status, password_set, must_change, created FROM accounts ORDER BY address"
    audit = "SELECT ts, actor, action, address, detail FROM audit ORDER BY " + "{}"
    before = rows(sqlite, accounts), rows(sqlite, audit.format("rowid"))
    sync(people, {"all@x.gov.vn": ["a@x.gov.vn", "b@x.gov.vn"]})
    assert rows(target, accounts) == before[0]
    # The audit log in its order, and the sync's own lines after it (nothing new: no change).
    assert rows(target, audit.format("id")) == before[1]
    assert ("b@x.gov.vn", "{BLF-CRYPT}$2b$11$changed-by-admin") in rows(target, "SELECT address, password FROM accounts")
    assert rows(target, "SELECT reason IS NOT NULL FROM dovecot_passdb WHERE login = 'c@x.gov.vn'") == [(True,)]
    assert rows(target, "SELECT value FROM meta WHERE key = 'user_max_age_days'") == [("90",)]
    # The file is kept aside; its old name links to it while Dovecot and Postfix still read it there
    # (until the deploy reloads them), so they never find it missing.
    assert os.path.islink(sqlite) and os.path.exists(sqlite + store_move.MOVED_SUFFIX)
    assert rows(sqlite, accounts) == before[0]
    conf = os.path.join(os.path.dirname(sqlite), "dovecot.conf")
    with open(conf, "w") as f:
        f.write(f"sqlite_path = {sqlite}\n")
    host_store.READERS_CONF = (conf,)
    try:
        sync(people, {"all@x.gov.vn": ["a@x.gov.vn", "b@x.gov.vn"]})
        assert os.path.islink(sqlite)  # still named by a reader
        with open(conf, "w") as f:
            f.write("sql_driver = pgsql\n")
        sync(people, {"all@x.gov.vn": ["a@x.gov.vn", "b@x.gov.vn"]})
    finally:
        host_store.READERS_CONF = ()
    assert not os.path.lexists(sqlite) and os.path.exists(sqlite + store_move.MOVED_SUFFIX)
    assert rows(target, accounts) == before[0]  # nothing moved twice


def test_a_move_that_fails_half_way_leaves_postgresql_empty_and_the_sqlite_file_in_place(pg, monkeypatch):
    sync, people, sqlite, target = pg
    real = store_move._copy

    def broken(src, dst):
        real(src, dst)
        raise OSError("disk full")

    monkeypatch.setattr(store_move, "_copy", broken)
    with pytest.raises(OSError):
        sync(people)
    assert rows(target, "SELECT count(*) FROM accounts") == [(0,)]
    assert os.path.exists(sqlite)
    monkeypatch.setattr(store_move, "_copy", real)
    sync(people, {"all@x.gov.vn": ["a@x.gov.vn", "b@x.gov.vn"]})
    assert len(rows(target, "SELECT * FROM accounts")) == 3


def test_a_backup_copy_of_a_postgresql_store_restores_exactly_its_rows(pg, tmp_path):
    sync, people, sqlite, target = pg
    sync(people, {"all@x.gov.vn": ["a@x.gov.vn", "b@x.gov.vn"]})
    everything = ["SELECT address, password, status, password_set FROM accounts ORDER BY address",
                  "SELECT * FROM aliases", "SELECT key, value FROM meta WHERE key NOT IN ('views', 'schema_version') "
                  "ORDER BY key", "SELECT ts, action, address FROM audit ORDER BY ts, action, address"]
    want = [rows(target, q) for q in everything]
    copy = str(tmp_path / "backup.sqlite")
    db = store_db.connect(target)
    store_move.export(db, host_store.connect(copy))
    assert [rows(copy, q) for q in everything] == want
    # Later changes (a password reset, a new mailbox) are undone by restoring the copy, in one go.
    host_store.set_password("a@x.gov.vn", "{BLF-CRYPT}$2b$11$after-the-backup")
    sync([*people, acc("d@x.gov.vn")])
    store_move.replace_all(copy, db)
    assert [rows(target, q) for q in everything] == want
