"""Fixtures the unit tests share."""

import os

import pytest

from govmail.host import store as host_store

from . import postgres


@pytest.fixture(scope="session")
def postgresql_server():
    """A PostgreSQL server for the session (tests/unit/postgres.py); CI must have one."""
    bindir = postgres.binaries()
    if bindir is None:
        if os.environ.get("GOVMAIL_REQUIRE_LAB"):
            pytest.fail("PostgreSQL's binaries are missing (Debian's `postgresql`: govmail.sh installs it)")
        pytest.skip("no PostgreSQL binaries on this machine (Debian's `postgresql`)")
    server = postgres.Server(bindir)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_engine(request, host_paths, monkeypatch):
    """The account store's engine for a test: its SQLite file in the scratch directory, or a fresh
    database of the session's PostgreSQL server. Returns (engine name, the store's target)."""
    if request.param == "postgresql":
        target = request.getfixturevalue("postgresql_server").new_database()
        monkeypatch.setattr(host_store, "DB", target)
    return request.param, host_store.DB


@pytest.fixture
def host_paths(tmp_path, monkeypatch):
    """The host account store's files (directory document, SQLite store, legacy users, hand-out)
    moved into a scratch directory, which is returned."""
    monkeypatch.setattr(host_store, "DIRECTORY", str(tmp_path / "directory.json"))
    monkeypatch.setattr(host_store, "DB", str(tmp_path / "accounts.sqlite"))
    monkeypatch.setattr(host_store, "LEGACY_USERS", str(tmp_path / "dovecot-users"))
    monkeypatch.setattr(host_store, "HANDOUT", str(tmp_path / "handout"))
    return tmp_path
