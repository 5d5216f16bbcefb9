"""The host's account store never loses a password or a mailbox (run locally on temp files)."""

import json
import os
import sqlite3

import pytest

from govmail.host import accounts


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(accounts, "DIRECTORY", str(tmp_path / "directory.json"))
    monkeypatch.setattr(accounts, "DB", str(tmp_path / "accounts.sqlite"))
    monkeypatch.setattr(accounts, "LEGACY_USERS", str(tmp_path / "dovecot-users"))
    monkeypatch.setattr(accounts, "HANDOUT", str(tmp_path / "handout"))
    db = sqlite3.connect(tmp_path / "accounts.sqlite")

    def sync(accs, lists=None, new=None, policy=None):
        (tmp_path / "directory.json").write_text(json.dumps(
            {"domain": "x.gov.vn", "accounts": accs, "lists": lists or {}, "policy": policy or {}}))
        f = None
        if new:
            f = tmp_path / "new.json"
            f.write_text(json.dumps(new))
        accounts.sync(str(f) if f else None)
        return {r[0]: r for r in db.execute("SELECT user, password, nologin, reason FROM dovecot_passdb")}

    sync.db = db
    return sync, tmp_path


def acc(address, quota=500, status="active", password_hash=None, role="user"):
    return {"address": address, "name": "Tên", "kind": "person", "owner": "stnmt", "role": role,
            "quota_mb": quota, "status": status, "password_hash": password_hash}


def test_new_mailbox_gets_its_initial_password_and_the_operator_gets_the_clear_text(store):
    sync, tmp = store
    s = sync([acc("a@x.gov.vn")], new={"a@x.gov.vn": {"hash": "{BLF-CRYPT}$2b$h1", "password": "Pw-1"}})
    assert s["a@x.gov.vn"] == ("a@x.gov.vn", "{BLF-CRYPT}$2b$h1", None, None)
    assert (tmp / "handout").read_text().startswith("a@x.gov.vn\tPw-1\t")
    assert (tmp / "handout").stat().st_mode & 0o777 == 0o600
    assert (tmp / "accounts.sqlite").stat().st_mode & 0o777 == 0o640
    assert not (tmp / "new.json").exists()


def test_a_mailbox_without_a_password_cannot_log_in_and_says_why(store):
    sync, _ = store
    s = sync([acc("a@x.gov.vn")])
    assert s["a@x.gov.vn"][2] == "y" and "No password issued" in s["a@x.gov.vn"][3]


def test_a_changed_password_survives_every_later_sync(store):
    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$initial")])
    accounts.set_password("a@x.gov.vn", "{BLF-CRYPT}$2b$changed-by-user")
    s = sync([acc("a@x.gov.vn", quota=400, password_hash="{BLF-CRYPT}$2b$initial")])
    assert s["a@x.gov.vn"][1] == "{BLF-CRYPT}$2b$changed-by-user"
    assert sync.db.execute("SELECT quota_mb FROM accounts").fetchone() == (400,)


def test_a_line_that_leaves_the_data_file_only_refuses_login_and_comes_back_intact(store):
    sync, _ = store
    both = [acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$a"), acc("b@x.gov.vn", password_hash="{BLF-CRYPT}$2b$b")]
    sync(both)
    s = sync(both[:1])
    assert s["b@x.gov.vn"][1:3] == ("{BLF-CRYPT}$2b$b", "y") and "no longer in the directory" in s["b@x.gov.vn"][3]
    assert s["a@x.gov.vn"][2] is None
    s = sync(both)
    assert s["b@x.gov.vn"] == ("b@x.gov.vn", "{BLF-CRYPT}$2b$b", None, None)


def test_a_cancelled_mailbox_keeps_its_password_and_cannot_log_in(store):
    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$a")])
    s = sync([acc("a@x.gov.vn", status="cancelled", password_hash="{BLF-CRYPT}$2b$a")])
    assert s["a@x.gov.vn"][1:3] == ("{BLF-CRYPT}$2b$a", "y") and "Mailbox cancelled" in s["a@x.gov.vn"][3]


def test_lists_are_replaced_by_each_sync(store):
    sync, _ = store
    sync([acc("a@x.gov.vn")], lists={"l@x.gov.vn": ["a@x.gov.vn"], "old@x.gov.vn": ["a@x.gov.vn"]})
    sync([acc("a@x.gov.vn")], lists={"l@x.gov.vn": ["a@x.gov.vn", "b@x.gov.vn"]})
    assert sync.db.execute("SELECT * FROM aliases").fetchall() == [("l@x.gov.vn", "a@x.gov.vn,b@x.gov.vn")]


def test_passwords_of_the_earlier_passwd_file_store_are_migrated(store):
    sync, tmp = store
    (tmp / "dovecot-users").write_text("# header\na@x.gov.vn:{BLF-CRYPT}$2b$old::::::userdb_quota_storage_size=500M\n")
    s = sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$data")])
    assert s["a@x.gov.vn"][1] == "{BLF-CRYPT}$2b$old"
    assert not (tmp / "dovecot-users").exists()


def test_set_password_refuses_a_malformed_hash_and_an_unknown_address(store):
    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$a")])
    with pytest.raises(SystemExit):
        accounts.set_password("a@x.gov.vn", "plain")
    with pytest.raises(SystemExit):
        accounts.set_password("z@x.gov.vn", "{BLF-CRYPT}$2b$z")


LC = {"user_max_age_days": 183, "admin_max_age_days": 92}
DAY = 86400


def test_a_password_past_its_age_limit_is_refused_at_login_with_the_reason(store):
    sync, _ = store
    both = [acc("u@x.gov.vn", password_hash="{BLF-CRYPT}$2b$u"), acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$a", role="admin")]
    sync(both, policy=LC)
    sync.db.execute("UPDATE accounts SET password_set = CAST(strftime('%s','now') AS INTEGER) - 100 * 86400")
    sync.db.commit()
    s = sync(both, policy=LC)
    assert s["u@x.gov.vn"][2] is None  # a user's password lasts 183 days
    assert s["a@x.gov.vn"][2] == "y" and "Password expired" in s["a@x.gov.vn"][3]  # an admin's 92
    accounts.set_password("a@x.gov.vn", "{BLF-CRYPT}$2b$new")
    assert sync.db.execute("SELECT nologin FROM dovecot_passdb WHERE user='a@x.gov.vn'").fetchone() == (None,)
    s = sync(both, policy={"user_max_age_days": None, "admin_max_age_days": None})
    assert all(r[2] is None for r in s.values())


def test_daily_job_warns_once_14_days_before_expiry_with_an_injected_clock(store, monkeypatch):
    sync, _ = store
    sent = []
    monkeypatch.setattr(accounts, "send_mail", lambda to, subject, body, sender: sent.append((to, subject)))
    sync([acc("u@x.gov.vn", password_hash="{BLF-CRYPT}$2b$u")], policy=LC)
    t0 = sync.db.execute("SELECT password_set FROM accounts").fetchone()[0]
    accounts.daily(now=t0 + 100 * DAY)
    assert sent == []
    accounts.daily(now=t0 + 175 * DAY, dry_run=True)
    assert sent == []
    accounts.daily(now=t0 + 175 * DAY)
    assert len(sent) == 1 and sent[0][0] == "u@x.gov.vn" and "expires" in sent[0][1]
    accounts.daily(now=t0 + 176 * DAY)
    assert len(sent) == 1  # once per password
    accounts.set_password("u@x.gov.vn", "{BLF-CRYPT}$2b$new")
    t1 = t0 + 180 * DAY  # the user changed it on day 180
    sync.db.execute("UPDATE accounts SET password_set = ?", (t1,))
    sync.db.commit()
    accounts.daily(now=t1 + 175 * DAY)
    assert len(sent) == 2  # the new password gets its own warning


def test_every_account_action_is_in_the_audit_log(store, monkeypatch, capsys):
    sync, _ = store
    monkeypatch.setenv("GOVMAIL_ACTOR", "ops@controller")
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$a"), acc("b@x.gov.vn", password_hash="{BLF-CRYPT}$2b$b")])
    sync([acc("a@x.gov.vn", status="cancelled", password_hash="{BLF-CRYPT}$2b$a")])
    accounts.set_password("a@x.gov.vn", "{BLF-CRYPT}$2b$x")
    rows = sync.db.execute("SELECT actor, action, address FROM audit ORDER BY rowid").fetchall()
    assert rows == [
        ("ops@controller", "added", "a@x.gov.vn"), ("ops@controller", "added", "b@x.gov.vn"),
        ("ops@controller", "cancelled", "a@x.gov.vn"), ("ops@controller", "removed", "b@x.gov.vn"),
        ("ops@controller", "password-set", "a@x.gov.vn"),
    ]
    capsys.readouterr()
    accounts.show_audit()
    assert "ops@controller\tpassword-set\ta@x.gov.vn" in capsys.readouterr().out


def test_the_schema_does_not_change_under_dovecot_on_every_call(store):
    # Re-creating views on each call broke Dovecot's prepared statements ("schema has changed").
    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$a")])
    before = sync.db.execute("PRAGMA schema_version").fetchone()
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$a")])
    accounts.set_password("a@x.gov.vn", "{BLF-CRYPT}$2b$b")
    assert sync.db.execute("PRAGMA schema_version").fetchone() == before


LC_INACTIVITY = {"inactivity_action": "suspend", "inactivity_after_months": 6, "inactivity_notify_agency": 1,
                 "inactivity_article": "LC Art. 8.1"}


def test_six_months_without_login_suspends_notifies_the_agency_and_restore_brings_it_back(store, monkeypatch):
    sync, tmp = store
    monkeypatch.setattr(accounts, "HOMES", str(tmp / "vmail"))
    sent = []
    monkeypatch.setattr(accounts, "send_mail", lambda to, subject, body, sender: sent.append((to, subject, body)))
    people = [acc("idle@x.gov.vn", password_hash="{BLF-CRYPT}$2b$i"), acc("busy@x.gov.vn", password_hash="{BLF-CRYPT}$2b$b")]
    sync(people, policy=LC_INACTIVITY)
    t0 = sync.db.execute("SELECT created FROM accounts").fetchone()[0]
    seven_months = t0 + int(7 * accounts.MONTH)
    stamp = tmp / "vmail" / "x.gov.vn" / "busy" / accounts.STAMP
    stamp.parent.mkdir(parents=True)
    stamp.touch()
    os.utime(stamp, (seven_months - 86400, seven_months - 86400))  # busy logged in yesterday

    accounts.daily(now=t0 + int(5 * accounts.MONTH))
    assert sent == [] and sync.db.execute("SELECT count(*) FROM accounts WHERE status='suspended'").fetchone() == (0,)
    accounts.daily(now=seven_months, dry_run=True)
    assert sent == []
    accounts.daily(now=seven_months)
    s = sync(people, policy=LC_INACTIVITY)  # a sync (active in the data) does not lift a suspension
    assert s["idle@x.gov.vn"][2] == "y" and "suspended" in s["idle@x.gov.vn"][3]
    assert s["busy@x.gov.vn"][2] is None
    [(to, subject, body)] = sent
    assert to == "stnmt@x.gov.vn" and "idle@x.gov.vn" in subject and "LC Art. 8.1" in body

    accounts.restore("idle@x.gov.vn")
    s = sync(people, policy=LC_INACTIVITY)
    assert s["idle@x.gov.vn"][2] is None and s["idle@x.gov.vn"][1] == "{BLF-CRYPT}$2b$i"
    accounts.daily(now=int(accounts.time.time()) + 86400)  # not suspended again at once
    assert len(sent) == 1
    with pytest.raises(SystemExit):
        accounts.restore("busy@x.gov.vn")  # not suspended


def test_no_inactivity_rule_suspends_nobody(store, monkeypatch):
    sync, tmp = store
    monkeypatch.setattr(accounts, "HOMES", str(tmp / "vmail"))
    sync([acc("idle@x.gov.vn", password_hash="{BLF-CRYPT}$2b$i")], policy={"inactivity_action": "none"})
    accounts.daily(now=int(accounts.time.time()) + 3 * 365 * 86400)
    assert sync.db.execute("SELECT status FROM accounts").fetchone() == ("active",)
