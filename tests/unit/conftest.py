"""Fixtures the unit tests share."""

import pytest

from govmail.host import store as host_store


@pytest.fixture
def host_paths(tmp_path, monkeypatch):
    """The host account store's files (directory document, SQLite store, legacy users, hand-out)
    moved into a scratch directory, which is returned."""
    monkeypatch.setattr(host_store, "DIRECTORY", str(tmp_path / "directory.json"))
    monkeypatch.setattr(host_store, "DB", str(tmp_path / "accounts.sqlite"))
    monkeypatch.setattr(host_store, "LEGACY_USERS", str(tmp_path / "dovecot-users"))
    monkeypatch.setattr(host_store, "HANDOUT", str(tmp_path / "handout"))
    return tmp_path
