"""The host's account tool never loses a password or a mailbox (run locally on temp files)."""

import json

import pytest

from govmail.host import accounts


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(accounts, "DIRECTORY", str(tmp_path / "directory.json"))
    monkeypatch.setattr(accounts, "USERS", str(tmp_path / "users"))
    monkeypatch.setattr(accounts, "HANDOUT", str(tmp_path / "handout"))

    def sync(accs, new=None):
        (tmp_path / "directory.json").write_text(json.dumps({"accounts": accs}))
        f = None
        if new:
            f = tmp_path / "new.json"
            f.write_text(json.dumps(new))
        accounts.sync(str(f) if f else None)
        return accounts.read_store(str(tmp_path / "users"))

    return sync, tmp_path


def acc(address, quota=500, status="active", password_hash=None):
    return {"address": address, "quota_mb": quota, "status": status, "password_hash": password_hash}


def test_new_mailbox_gets_its_initial_password_and_the_operator_gets_the_clear_text(store):
    sync, tmp = store
    s = sync([acc("a@x.gov.vn")], new={"a@x.gov.vn": {"hash": "{BLF-CRYPT}$2b$h1", "password": "Pw-1"}})
    assert s["a@x.gov.vn"]["hash"] == "{BLF-CRYPT}$2b$h1"
    assert s["a@x.gov.vn"]["fields"] == {"userdb_quota_storage_size": "500M"}
    assert (tmp / "handout").read_text().startswith("a@x.gov.vn\tPw-1\t")
    assert (tmp / "handout").stat().st_mode & 0o777 == 0o600
    assert not (tmp / "new.json").exists()


def test_a_changed_password_survives_every_later_sync(store):
    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$initial")])
    accounts.set_password("a@x.gov.vn", "{BLF-CRYPT}$2b$changed-by-user")
    s = sync([acc("a@x.gov.vn", quota=400, password_hash="{BLF-CRYPT}$2b$initial")])
    assert s["a@x.gov.vn"]["hash"] == "{BLF-CRYPT}$2b$changed-by-user"
    assert s["a@x.gov.vn"]["fields"]["userdb_quota_storage_size"] == "400M"


def test_a_line_that_leaves_the_data_file_only_refuses_login(store):
    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$a"), acc("b@x.gov.vn", password_hash="{BLF-CRYPT}$2b$b")])
    s = sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$a")])
    assert s["b@x.gov.vn"]["hash"] == "{BLF-CRYPT}$2b$b"
    assert s["b@x.gov.vn"]["fields"]["nologin"] == "y"
    assert "a@x.gov.vn" in s and "nologin" not in s["a@x.gov.vn"]["fields"]


def test_a_cancelled_mailbox_keeps_its_password_and_cannot_log_in(store):
    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$a")])
    s = sync([acc("a@x.gov.vn", status="cancelled", password_hash="{BLF-CRYPT}$2b$a")])
    assert s["a@x.gov.vn"]["hash"] == "{BLF-CRYPT}$2b$a"
    assert s["a@x.gov.vn"]["fields"]["nologin"] == "y" and " " not in s["a@x.gov.vn"]["fields"]["reason"]


def test_set_password_refuses_a_malformed_hash(store):
    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$a")])
    with pytest.raises(SystemExit):
        accounts.set_password("a@x.gov.vn", "plain:text")
