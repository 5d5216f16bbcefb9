"""The host's account store never loses a password or a mailbox (run locally on temp files).

The store's code is govmail/host/store.py, the daily job lifecycle.py, the user's change
password_change.py; each test patches the module that owns what it replaces."""

import json
import os
import sqlite3

import pytest

from govmail.host import lifecycle, password_change, store_db
from govmail.host import mail as host_mail
from govmail.host import store as host_store


@pytest.fixture
def store(host_paths, store_engine):
    tmp_path = host_paths
    db = store_db.connect(store_engine[1])

    def sync(accs, lists=None, new=None, policy=None):
        (tmp_path / "directory.json").write_text(json.dumps(
            {"domain": "x.gov.vn", "accounts": accs, "lists": lists or {}, "policy": policy or {}}))
        f = None
        if new:
            f = tmp_path / "new.json"
            f.write_text(json.dumps(new))
        host_store.sync(str(f) if f else None)
        return {r[0]: r for r in db.execute('SELECT "user", password, nologin, reason FROM dovecot_passdb')}

    sync.db = db
    sync.engine = store_engine[0]
    return sync, tmp_path


def acc(address, quota=500, status="active", password_hash=None, role="user"):
    return {"address": address, "name": "Tên", "kind": "person", "owner": "stnmt", "role": role,
            "quota_mb": quota, "status": status, "password_hash": password_hash,
            "manager": "stnmt@x.gov.vn", "superior": "ubnd@x.gov.vn"}


def test_new_mailbox_gets_its_initial_password_and_the_operator_gets_the_clear_text(store):
    sync, tmp = store
    s = sync([acc("a@x.gov.vn")], new={"a@x.gov.vn": {"hash": "{BLF-CRYPT}$2b$11$h1", "password": "Pw-1"}})
    assert s["a@x.gov.vn"] == ("a@x.gov.vn", "{BLF-CRYPT}$2b$11$h1", None, None)
    assert (tmp / "handout").read_text().startswith("a@x.gov.vn\tPw-1\t")
    assert (tmp / "handout").stat().st_mode & 0o777 == 0o600
    if sync.engine == "sqlite":  # the file Dovecot and Postfix read (PostgreSQL: its own roles)
        assert (tmp / "accounts.sqlite").stat().st_mode & 0o777 == 0o640
    assert not (tmp / "new.json").exists()


def test_a_mailbox_without_a_password_cannot_log_in_and_says_why(store):
    sync, _ = store
    s = sync([acc("a@x.gov.vn")])
    assert s["a@x.gov.vn"][2] == "y" and "No password issued" in s["a@x.gov.vn"][3]


def test_a_changed_password_survives_every_later_sync(store):
    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$initial")])
    host_store.set_password("a@x.gov.vn", "{BLF-CRYPT}$2b$11$changed-by-user")
    s = sync([acc("a@x.gov.vn", quota=400, password_hash="{BLF-CRYPT}$2b$11$initial")])
    assert s["a@x.gov.vn"][1] == "{BLF-CRYPT}$2b$11$changed-by-user"
    assert sync.db.execute("SELECT quota_mb FROM accounts").fetchone() == (400,)


def test_a_line_that_leaves_the_data_file_only_refuses_login_and_comes_back_intact(store):
    sync, _ = store
    both = [acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$a"), acc("b@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$b")]
    sync(both)
    s = sync(both[:1])
    assert s["b@x.gov.vn"][1:3] == ("{BLF-CRYPT}$2b$11$b", "y") and "no longer in the directory" in s["b@x.gov.vn"][3]
    assert s["a@x.gov.vn"][2] is None
    s = sync(both)
    assert s["b@x.gov.vn"] == ("b@x.gov.vn", "{BLF-CRYPT}$2b$11$b", None, None)


def test_a_cancelled_mailbox_keeps_its_password_and_cannot_log_in(store):
    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$a")])
    s = sync([acc("a@x.gov.vn", status="cancelled", password_hash="{BLF-CRYPT}$2b$11$a")])
    assert s["a@x.gov.vn"][1:3] == ("{BLF-CRYPT}$2b$11$a", "y") and "Mailbox cancelled" in s["a@x.gov.vn"][3]


def test_lists_are_replaced_by_each_sync(store):
    sync, _ = store
    sync([acc("a@x.gov.vn")], lists={"l@x.gov.vn": ["a@x.gov.vn"], "old@x.gov.vn": ["a@x.gov.vn"]})
    sync([acc("a@x.gov.vn")], lists={"l@x.gov.vn": ["a@x.gov.vn", "b@x.gov.vn"]})
    assert sync.db.execute("SELECT * FROM aliases").fetchall() == [("l@x.gov.vn", "a@x.gov.vn,b@x.gov.vn")]


def test_passwords_of_the_earlier_passwd_file_store_are_migrated(store):
    sync, tmp = store
    (tmp / "dovecot-users").write_text("# header\na@x.gov.vn:{BLF-CRYPT}$2b$11$old::::::userdb_quota_storage_size=500M\n")
    s = sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$data")])
    assert s["a@x.gov.vn"][1] == "{BLF-CRYPT}$2b$11$old"
    assert not (tmp / "dovecot-users").exists()


def test_set_password_refuses_a_malformed_hash_and_an_unknown_address(store):
    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$a")])
    with pytest.raises(SystemExit):
        host_store.set_password("a@x.gov.vn", "plain")
    with pytest.raises(SystemExit):
        host_store.set_password("z@x.gov.vn", "{BLF-CRYPT}$2b$11$z")


LC = {"user_max_age_days": 183, "admin_max_age_days": 92}
DAY = 86400


def test_a_password_past_its_age_limit_is_refused_at_login_with_the_reason(store):
    sync, _ = store
    both = [acc("u@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$u"), acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$a", role="admin")]
    sync(both, policy=LC)
    sync.db.execute(f"UPDATE accounts SET password_set = {sync.db.dialect.now} - 100 * 86400")
    sync.db.commit()
    s = sync(both, policy=LC)
    assert s["u@x.gov.vn"][2] is None  # a user's password lasts 183 days
    assert s["a@x.gov.vn"][2] == "y" and "Password expired" in s["a@x.gov.vn"][3]  # an admin's 92
    host_store.set_password("a@x.gov.vn", "{BLF-CRYPT}$2b$11$new")
    assert sync.db.execute("SELECT nologin FROM dovecot_passdb WHERE \"user\"='a@x.gov.vn'").fetchone() == (None,)
    s = sync(both, policy={"user_max_age_days": None, "admin_max_age_days": None})
    assert all(r[2] is None for r in s.values())


def test_daily_job_warns_once_14_days_before_expiry_with_an_injected_clock(store, monkeypatch):
    sync, _ = store
    sent = []
    monkeypatch.setattr(host_mail, "send_mail", lambda to, subject, body, sender: sent.append((to, subject)))
    sync([acc("u@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$u")], policy=LC)
    t0 = sync.db.execute("SELECT password_set FROM accounts").fetchone()[0]
    lifecycle.daily(now=t0 + 100 * DAY)
    assert sent == []
    lifecycle.daily(now=t0 + 175 * DAY, dry_run=True)
    assert sent == []
    lifecycle.daily(now=t0 + 175 * DAY)
    assert sent[0][0] == "u@x.gov.vn" and "expires" in sent[0][1]
    assert sent[1][0] == "postmaster@x.gov.vn"  # the day's summary for the operators
    sent.clear()
    lifecycle.daily(now=t0 + 176 * DAY)
    assert sent == []  # once per password
    host_store.set_password("u@x.gov.vn", "{BLF-CRYPT}$2b$11$new")
    t1 = t0 + 180 * DAY  # the user changed it on day 180
    sync.db.execute("UPDATE accounts SET password_set = ?", (t1,))
    sync.db.commit()
    lifecycle.daily(now=t1 + 175 * DAY)
    assert sent[0][0] == "u@x.gov.vn"  # the new password gets its own warning


def test_every_account_action_is_in_the_audit_log(store, monkeypatch, capsys):
    sync, _ = store
    monkeypatch.setenv("GOVMAIL_ACTOR", "ops@controller")
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$a"), acc("b@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$b")])
    sync([acc("a@x.gov.vn", status="cancelled", password_hash="{BLF-CRYPT}$2b$11$a")])
    host_store.set_password("a@x.gov.vn", "{BLF-CRYPT}$2b$11$x")
    rows = sync.db.execute(f"SELECT actor, action, address FROM audit ORDER BY {sync.db.dialect.seq}").fetchall()
    assert rows == [
        ("ops@controller", "added", "a@x.gov.vn"), ("ops@controller", "added", "b@x.gov.vn"),
        ("ops@controller", "cancelled", "a@x.gov.vn"), ("ops@controller", "removed", "b@x.gov.vn"),
        ("ops@controller", "password-reset", "a@x.gov.vn"),
    ]
    capsys.readouterr()
    host_store.show_audit()
    assert "ops@controller\tpassword-reset\ta@x.gov.vn" in capsys.readouterr().out


def test_the_schema_does_not_change_under_dovecot_on_every_call(store):
    # Re-creating views on each call broke Dovecot's prepared statements ("schema has changed").
    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$a")])
    # SQLite counts schema changes; PostgreSQL gives a re-created view a new oid.
    stamp = ("PRAGMA schema_version" if sync.engine == "sqlite" else
             "SELECT string_agg(oid::text, ',' ORDER BY relname) FROM pg_class WHERE relkind = 'v'")
    before = sync.db.execute(stamp).fetchone()
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$a")])
    host_store.set_password("a@x.gov.vn", "{BLF-CRYPT}$2b$11$b")
    assert sync.db.execute(stamp).fetchone() == before


LC_INACTIVITY = {"inactivity_action": "suspend", "inactivity_after_months": 6, "inactivity_notify_agency": 1,
                 "inactivity_article": "LC Art. 8.1"}


def test_six_months_without_login_suspends_notifies_the_agency_and_restore_brings_it_back(store, monkeypatch):
    sync, tmp = store
    monkeypatch.setattr(lifecycle, "HOMES", str(tmp / "vmail"))
    sent = []
    monkeypatch.setattr(host_mail, "send_mail", lambda to, subject, body, sender: sent.append((to, subject, body)))
    people = [acc("idle@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$i"), acc("busy@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$b")]
    sync(people, policy=LC_INACTIVITY)
    t0 = sync.db.execute("SELECT created FROM accounts").fetchone()[0]
    seven_months = t0 + int(7 * lifecycle.MONTH)
    stamp = tmp / "vmail" / "x.gov.vn" / "busy" / lifecycle.STAMP
    stamp.parent.mkdir(parents=True)
    stamp.touch()
    os.utime(stamp, (seven_months - 86400, seven_months - 86400))  # busy logged in yesterday

    lifecycle.daily(now=t0 + int(5 * lifecycle.MONTH))
    assert sent == [] and sync.db.execute("SELECT count(*) FROM accounts WHERE status='suspended'").fetchone() == (0,)
    lifecycle.daily(now=seven_months, dry_run=True)
    assert sent == []
    lifecycle.daily(now=seven_months)
    s = sync(people, policy=LC_INACTIVITY)  # a sync (active in the data) does not lift a suspension
    assert s["idle@x.gov.vn"][2] == "y" and "suspended" in s["idle@x.gov.vn"][3]
    assert s["busy@x.gov.vn"][2] is None
    [(to, subject, body), (summary_to, _, summary)] = sent
    assert to == "stnmt@x.gov.vn" and "idle@x.gov.vn" in subject and "LC Art. 8.1" in body
    assert summary_to == "postmaster@x.gov.vn" and "suspend\tidle@x.gov.vn" in summary

    lifecycle.restore("idle@x.gov.vn")
    s = sync(people, policy=LC_INACTIVITY)
    assert s["idle@x.gov.vn"][2] is None and s["idle@x.gov.vn"][1] == "{BLF-CRYPT}$2b$11$i"
    lifecycle.daily(now=int(lifecycle.time.time()) + 86400)  # not suspended again at once
    assert len(sent) == 2
    with pytest.raises(SystemExit):
        lifecycle.restore("busy@x.gov.vn")  # not suspended


def test_with_a_store_apart_each_host_suspends_only_the_mailboxes_on_its_own_disk(store, monkeypatch):
    """The mail host cannot see a store apart's last logins: its daily job leaves those mailboxes
    alone (never locked out for want of a stamp it cannot read); the store's own job keeps them."""
    sync, tmp = store
    monkeypatch.setattr(lifecycle, "HOMES", str(tmp / "vmail"))
    monkeypatch.setattr(host_mail, "send_mail", lambda *a, **k: None)
    near, far = acc("near@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$n"), acc("far@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$f")
    far["store"] = "store2.x.gov.vn"
    sync([near, far], policy={**LC_INACTIVITY, "mail_host": "mail.x.gov.vn"})
    t0 = sync.db.execute("SELECT min(created) FROM accounts").fetchone()[0]
    later = t0 + int(7 * lifecycle.MONTH)

    def status():
        return dict(sync.db.execute("SELECT address, status FROM accounts").fetchall())

    lifecycle.daily(now=later)  # the mail host's
    assert status() == {"near@x.gov.vn": "suspended", "far@x.gov.vn": "active"}
    lifecycle.daily(now=later, held_by="store2.x.gov.vn", domain="x.gov.vn")  # the store's
    assert status() == {"near@x.gov.vn": "suspended", "far@x.gov.vn": "suspended"}
    # A sync never moves a mailbox: the data saying another store leaves it where its mail is.
    far["store"] = "mail.x.gov.vn"
    sync([near, far], policy={**LC_INACTIVITY, "mail_host": "mail.x.gov.vn"})
    assert sync.db.execute("SELECT store FROM accounts WHERE address = 'far@x.gov.vn'").fetchone() == ("store2.x.gov.vn",)


def test_no_inactivity_rule_suspends_nobody(store, monkeypatch):
    sync, tmp = store
    monkeypatch.setattr(lifecycle, "HOMES", str(tmp / "vmail"))
    sync([acc("idle@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$i")], policy={"inactivity_action": "none"})
    lifecycle.daily(now=int(lifecycle.time.time()) + 3 * 365 * 86400)
    assert sync.db.execute("SELECT status FROM accounts").fetchone() == ("active",)


# ---------------------------------------------------------------- first login, own change, hand-over

FIRST_LOGIN = {"change_at_first_login": 1, "password_url": "https://mail.x.gov.vn:8443/",
               "password_min_length": 8, "password_admin_min_length": 10, "password_require": "lower,upper,digit,special",
               "password_article": "LC Art. 4.1"}


def fake_crypto(monkeypatch):
    """Hash = a bcrypt prefix + password, so tests run without doveadm; the lab runs the real thing."""
    monkeypatch.setattr(password_change, "doveadm_verify", lambda pw, h: h == "{BLF-CRYPT}$2b$11$" + pw)
    monkeypatch.setattr(password_change, "doveadm_hash", lambda pw, rounds=11: "{BLF-CRYPT}$2b$11$" + pw)
    monkeypatch.setattr(host_store, "kick", lambda address: None)


def test_an_issued_password_must_be_changed_before_login_and_the_reason_says_where(store, monkeypatch):
    sync, _ = store
    fake_crypto(monkeypatch)
    s = sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$Initial-1")], policy=FIRST_LOGIN)
    assert s["a@x.gov.vn"][2] == "y" and "https://mail.x.gov.vn:8443/" in s["a@x.gov.vn"][3]
    assert "Change your password before first use" in s["a@x.gov.vn"][3]
    result = password_change.change_password("a@x.gov.vn", "Initial-1", "Mới-đổi-2", source="10.0.0.9")
    assert result["was"] == "mustchange"
    s = sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$Initial-1")], policy=FIRST_LOGIN)
    assert s["a@x.gov.vn"][1:] == ("{BLF-CRYPT}$2b$11$Mới-đổi-2", None, None)  # and a re-deploy keeps it
    who = sync.db.execute(f"SELECT actor, action FROM audit ORDER BY {sync.db.dialect.seq} DESC LIMIT 1").fetchone()
    assert who == ("a@x.gov.vn (self)", "password-changed")
    # An administrator's reset asks for a change again (LC Art. 7.3).
    host_store.set_password("a@x.gov.vn", "{BLF-CRYPT}$2b$11$Reset-3")
    assert sync.db.execute("SELECT nologin FROM dovecot_passdb").fetchone() == ("y",)


def test_without_a_first_login_rule_an_issued_password_works_at_once(store):
    sync, _ = store
    s = sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$Initial-1")], policy={"change_at_first_login": 0})
    assert s["a@x.gov.vn"][2] is None


def test_a_users_change_is_refused_with_the_reason_when_it_breaks_the_policy(store, monkeypatch):
    sync, _ = store
    fake_crypto(monkeypatch)
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$Initial-1"), acc("b@x.gov.vn", role="admin",
          password_hash="{BLF-CRYPT}$2b$11$Initial-1")], policy=FIRST_LOGIN)
    with pytest.raises(password_change.ChangeRefused, match="Wrong address or current password"):
        password_change.change_password("a@x.gov.vn", "wrong", "Good-pass-1")
    with pytest.raises(password_change.ChangeRefused, match="Wrong address or current password"):
        password_change.change_password("nobody@x.gov.vn", "Initial-1", "Good-pass-1")
    with pytest.raises(password_change.ChangeRefused, match=r"has no digit \(LC Art. 4.1\)"):
        password_change.change_password("a@x.gov.vn", "Initial-1", "Good-pass!")
    with pytest.raises(password_change.ChangeRefused, match="shorter than 10 characters"):
        password_change.change_password("b@x.gov.vn", "Initial-1", "Adm-pas-1")  # administrators: 10
    with pytest.raises(password_change.ChangeRefused, match="same as the current"):
        password_change.change_password("a@x.gov.vn", "Initial-1", "Initial-1")
    assert sync.db.execute("SELECT password FROM accounts WHERE address='a@x.gov.vn'").fetchone() == ("{BLF-CRYPT}$2b$11$Initial-1",)


def test_an_expired_password_is_changed_by_its_user_but_a_cancelled_mailbox_cannot(store, monkeypatch):
    sync, _ = store
    fake_crypto(monkeypatch)
    pol = {**FIRST_LOGIN, "user_max_age_days": 183}
    people = [acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$Initial-1"), acc("c@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$Initial-1")]
    sync(people, policy=pol)
    sync.db.execute("UPDATE accounts SET must_change = 0, password_set = password_set - 200 * 86400")
    sync.db.commit()
    s = sync([people[0], {**people[1], "status": "cancelled"}], policy=pol)
    assert "Password expired, change it at https://mail.x.gov.vn:8443/" in s["a@x.gov.vn"][3]
    assert password_change.change_password("a@x.gov.vn", "Initial-1", "Mới-đổi-2")["was"] == "expired"
    with pytest.raises(password_change.ChangeRefused, match="Mailbox cancelled"):
        password_change.change_password("c@x.gov.vn", "Initial-1", "Mới-đổi-2")


def test_hand_over_resets_a_units_mailbox_keeps_it_and_refuses_a_persons(store, monkeypatch):
    sync, _ = store
    fake_crypto(monkeypatch)
    kicked = []
    monkeypatch.setattr(host_store, "kick", kicked.append)
    unit = {**acc("stnmt@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$Old-head-1"), "kind": "agency"}
    sync([unit, acc("a@x.gov.vn")], policy=FIRST_LOGIN)
    password_change.change_password("stnmt@x.gov.vn", "Old-head-1", "Old-head-2")
    host_store.hand_over("stnmt@x.gov.vn", "{BLF-CRYPT}$2b$11$New-head-1", "Trần Văn Mới")
    assert kicked == ["stnmt@x.gov.vn"]  # the old head's open sessions end
    row = sync.db.execute("SELECT password, must_change FROM accounts WHERE address='stnmt@x.gov.vn'").fetchone()
    assert row == ("{BLF-CRYPT}$2b$11$New-head-1", 1)
    assert sync.db.execute(f"SELECT action, detail FROM audit ORDER BY {sync.db.dialect.seq} DESC LIMIT 1").fetchone() == (
        "hand-over", "to Trần Văn Mới; content kept")
    with pytest.raises(SystemExit, match="personal mailbox"):
        host_store.hand_over("a@x.gov.vn", "{BLF-CRYPT}$2b$11$X-1", "Ai đó")


# ---------------------------------------------------------------- deletion after the province's periods

LC_LIFECYCLE = {**LC_INACTIVITY, "inactivity_delete_after_months": 12, "inactivity_notify_superior": 1,
                "cancelled_keep_months": 12, "cancelled_article": "govmail default"}


def test_a_suspended_mailbox_is_deleted_12_months_after_the_notice_and_agency_and_superior_are_told(store, monkeypatch):
    sync, tmp = store
    monkeypatch.setattr(lifecycle, "HOMES", str(tmp / "vmail"))
    monkeypatch.setattr(host_store, "kick", lambda a: None)
    sent = []
    monkeypatch.setattr(host_mail, "send_mail", lambda to, subject, body, sender: sent.append((to, subject)))
    people = [acc("idle@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$i")]
    sync(people, policy=LC_LIFECYCLE)
    mail = tmp / "vmail" / "x.gov.vn" / "idle" / "Maildir" / "cur" / "1.eml"
    mail.parent.mkdir(parents=True)
    mail.write_text("thư")
    t0 = sync.db.execute("SELECT created FROM accounts").fetchone()[0]
    suspended_at = t0 + int(7 * lifecycle.MONTH)
    lifecycle.daily(now=suspended_at)
    sent.clear()
    lifecycle.daily(now=suspended_at + int(11 * lifecycle.MONTH))
    assert sent == [] and mail.exists()
    lifecycle.daily(now=suspended_at + int(12.5 * lifecycle.MONTH), dry_run=True)
    assert sent == [] and mail.exists()
    lifecycle.daily(now=suspended_at + int(12.5 * lifecycle.MONTH))
    assert not mail.parent.parent.parent.exists()
    assert [t for t, _ in sent] == ["stnmt@x.gov.vn", "ubnd@x.gov.vn", "postmaster@x.gov.vn"]
    assert "deleted" in sent[0][1]
    s = sync(people, policy=LC_LIFECYCLE)
    assert s["idle@x.gov.vn"][1:3] == (None, "y") and "Mailbox deleted" in s["idle@x.gov.vn"][3]
    # Still in the data file as active: a deploy does not undo the deletion; `restore` re-creates
    # it empty, and the next sync issues it a new initial password.
    lifecycle.restore("idle@x.gov.vn")
    s = sync(people, policy=LC_LIFECYCLE, new={"idle@x.gov.vn": {"hash": "{BLF-CRYPT}$2b$11$n", "password": "n"}})
    assert s["idle@x.gov.vn"][1:3] == ("{BLF-CRYPT}$2b$11$i", None)  # the data file's initial hash


def test_cancelled_and_dropped_mailboxes_are_purged_after_the_retention_not_before(store, monkeypatch):
    sync, tmp = store
    monkeypatch.setattr(lifecycle, "HOMES", str(tmp / "vmail"))
    monkeypatch.setattr(host_store, "kick", lambda a: None)
    monkeypatch.setattr(host_mail, "send_mail", lambda *a: None)
    homes = {}
    for local in ("gone", "dropped", "stays"):
        homes[local] = tmp / "vmail" / "x.gov.vn" / local
        homes[local].mkdir(parents=True)
    everyone = [acc("gone@x.gov.vn"), acc("dropped@x.gov.vn"), acc("stays@x.gov.vn")]
    keep = {"cancelled_keep_months": 12, "cancelled_article": "govmail default"}
    sync(everyone, policy=keep)
    sync([{**everyone[0], "status": "cancelled"}, everyone[2]], policy=keep)
    t0 = int(lifecycle.time.time())
    lifecycle.daily(now=t0 + int(11 * lifecycle.MONTH))
    assert all(h.exists() for h in homes.values())
    lifecycle.daily(now=t0 + int(12.2 * lifecycle.MONTH))
    assert not homes["gone"].exists() and not homes["dropped"].exists() and homes["stays"].exists()
    rows = dict(sync.db.execute("SELECT address, status FROM accounts"))
    assert rows == {"gone@x.gov.vn": "deleted", "dropped@x.gov.vn": "deleted", "stays@x.gov.vn": "active"}


def test_a_store_of_the_first_release_is_upgraded_without_forcing_anyone_to_change(tmp_path, monkeypatch):
    path = tmp_path / "accounts.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE accounts (address TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL "
        "DEFAULT 'person', owner TEXT, role TEXT NOT NULL DEFAULT 'user', quota_mb INTEGER NOT NULL, status TEXT "
        "NOT NULL DEFAULT 'active', password TEXT, password_set INTEGER, created INTEGER NOT NULL, updated INTEGER "
        "NOT NULL);"
        "INSERT INTO accounts VALUES ('a@x.gov.vn','','person','stnmt','user',500,'active','{BLF-CRYPT}$2b$11$a',1,1,1);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('change_at_first_login', '1');")
    old.commit()
    db = host_store.connect(str(path))
    assert db.execute("SELECT user, password, nologin FROM dovecot_passdb").fetchall() == [
        ("a@x.gov.vn", "{BLF-CRYPT}$2b$11$a", None)]
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("2",)


def test_web_mail_learns_that_a_right_password_must_change_and_a_wrong_one_learns_nothing(store):
    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2y$10$x")], policy={"change_at_first_login": 1})
    sync.db.execute("UPDATE accounts SET must_change = 1 WHERE address = 'a@x.gov.vn'")
    sync.db.commit()
    ok = lambda pw, h: pw == "right"  # noqa: E731 - doveadm's check stands in
    s = password_change.login_status("A@x.gov.vn", "right", verify=ok)
    assert s == {"address": "a@x.gov.vn", "must_change": True, "reason": "mustchange"}
    with pytest.raises(password_change.ChangeRefused):
        password_change.login_status("a@x.gov.vn", "wrong", verify=ok)
    with pytest.raises(password_change.ChangeRefused):
        password_change.login_status("nobody@x.gov.vn", "right", verify=ok)


def test_a_weak_hash_blocks_the_login_until_its_owner_changes_the_password(store, monkeypatch):
    sync, _ = store
    fake_crypto(monkeypatch)
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$Initial-1"), acc("b@x.gov.vn")],
         policy={"change_at_first_login": 0, "password_url": "https://mail.x.gov.vn/"})
    # Written into the store by hand, or brought by a migration: a clear-text "hash".
    sync.db.execute("UPDATE accounts SET password='{PLAIN}hunter2hunter2', must_change=0 WHERE address='b@x.gov.vn'")
    sync.db.commit()
    row = {r[0]: r for r in sync.db.execute('SELECT "user", password, nologin, reason FROM dovecot_passdb')}
    assert row["a@x.gov.vn"][2] is None
    assert row["b@x.gov.vn"][2] == "y" and "weak form: change it at https://mail.x.gov.vn/" in row["b@x.gov.vn"][3]
    monkeypatch.setattr(password_change, "doveadm_verify",
                        lambda pw, h: h in ("{BLF-CRYPT}$2b$11$" + pw, "{PLAIN}" + pw))
    status = password_change.login_status("b@x.gov.vn", "hunter2hunter2")
    assert status == {"address": "b@x.gov.vn", "must_change": True, "reason": "weakhash"}
    assert password_change.change_password("b@x.gov.vn", "hunter2hunter2", "Mới-đổi-22")["was"] == "weakhash"
    row = sync.db.execute("SELECT nologin FROM dovecot_passdb WHERE \"user\"='b@x.gov.vn'").fetchone()
    assert row == (None,)


def test_issued_passwords_are_rehashed_at_the_full_cost_unless_their_owner_changed_them(store, monkeypatch):
    from passlib.hash import bcrypt

    sync, tmp = store
    low = {a: "{BLF-CRYPT}" + bcrypt.using(rounds=4, ident="2b").hash(pw) for a, pw in
           (("a@x.gov.vn", "Issued-A-1"), ("b@x.gov.vn", "Issued-B-1"), ("c@x.gov.vn", "Issued-C-1"))}
    sync([acc(a) for a in low], new={a: {"hash": h, "password": f"Issued-{a[0].upper()}-1"} for a, h in low.items()},
         policy={"change_at_first_login": 0})
    # Issued at the lowest cost, not changed yet: they log in (no guess finds a random password).
    assert [r[0] for r in sync.db.execute("SELECT nologin FROM dovecot_passdb")] == [None, None, None]
    host_store.set_password("b@x.gov.vn", "{BLF-CRYPT}$2b$11$changed-by-the-admin")
    sync.db.execute("UPDATE accounts SET must_change=1 WHERE address='b@x.gov.vn'")
    sync.db.commit()
    (tmp / "handout").write_text((tmp / "handout").read_text().replace("c@x.gov.vn", "c@x.gov.vn-lost"))

    def verify(pw, h):
        return bcrypt.verify(pw, h.removeprefix("{BLF-CRYPT}")) if h.startswith("{BLF-CRYPT}$2b$04$") else False

    done, unknown = password_change.strengthen(make_hash=lambda pw: "{BLF-CRYPT}$2b$11$strong-" + pw, verify=verify)
    assert (done, unknown) == (1, 1)
    got = dict(sync.db.execute("SELECT address, password FROM accounts"))
    assert got["a@x.gov.vn"] == "{BLF-CRYPT}$2b$11$strong-Issued-A-1"
    assert got["b@x.gov.vn"] == "{BLF-CRYPT}$2b$11$changed-by-the-admin"
    assert got["c@x.gov.vn"] == low["c@x.gov.vn"]


def test_the_store_check_names_each_row_a_hand_changed_and_a_sync_puts_it_back(store):
    sync, _ = store
    sync([acc("a@x.gov.vn"), acc("b@x.gov.vn")], lists={"l@x.gov.vn": ["a@x.gov.vn"]})
    assert host_store.differences() == []
    sync.db.execute("UPDATE accounts SET quota_mb=0 WHERE address='a@x.gov.vn'")
    sync.db.execute("UPDATE accounts SET status='cancelled' WHERE address='b@x.gov.vn'")
    sync.db.execute("INSERT INTO aliases VALUES ('x@x.gov.vn', 'b@x.gov.vn')")
    sync.db.commit()
    assert host_store.differences() == [
        "a@x.gov.vn: quota_mb 0, the data says 500", "b@x.gov.vn: status cancelled, the data says active",
        "lists differ from the data: x@x.gov.vn"]
    sync([acc("a@x.gov.vn"), acc("b@x.gov.vn")], lists={"l@x.gov.vn": ["a@x.gov.vn"]})
    assert host_store.differences() == []


def test_only_an_active_administrator_whose_login_nothing_blocks_opens_the_monitors_pages(store):
    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2y$10$x"),
          acc("b@x.gov.vn", role="admin", password_hash="{BLF-CRYPT}$2y$10$x"),
          acc("c@x.gov.vn", role="admin", status="cancelled", password_hash="{BLF-CRYPT}$2y$10$x")],
         policy={"change_at_first_login": 1})
    sync.db.execute("UPDATE accounts SET must_change = 0")
    sync.db.commit()
    ok = lambda pw, h: pw == "right"  # noqa: E731 - doveadm's check stands in
    assert password_change.admin_login(" B@x.gov.vn", "right", verify=ok) == "b@x.gov.vn"
    with pytest.raises(password_change.ChangeRefused):
        password_change.admin_login("b@x.gov.vn", "wrong", verify=ok)
    with pytest.raises(password_change.NotAllowed, match="not an administrator"):
        password_change.admin_login("a@x.gov.vn", "right", verify=ok)
    with pytest.raises(password_change.NotAllowed, match="cancelled"):
        password_change.admin_login("c@x.gov.vn", "right", verify=ok)
    sync.db.execute("UPDATE accounts SET must_change = 1 WHERE address = 'b@x.gov.vn'")
    sync.db.commit()
    with pytest.raises(password_change.NotAllowed, match="mustchange"):  # an issued password: changed first
        password_change.admin_login("b@x.gov.vn", "right", verify=ok)


def test_the_metrics_count_the_mailboxes_of_the_store_by_status_on_either_engine(store, monkeypatch):
    from govmail.host import metrics

    sync, tmp = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$a"), acc("b@x.gov.vn", status="cancelled")])
    f = metrics.Facts()
    metrics.accounts(f)
    assert f.lines == []  # no store file where the host keeps it: a host without a store says nothing
    monkeypatch.setattr(metrics, "STORE_FILES", (str(tmp / "directory.json"),))  # a store on this host
    metrics.accounts(f)
    assert 'govmail_accounts{status="active"} 1' in f.lines and 'govmail_accounts{status="cancelled"} 1' in f.lines
    assert 'govmail_accounts{status="deleted"} 0' in f.lines


def test_accounts_sql_reads_the_same_on_both_engines_and_a_write_by_hand_is_audited(store):
    from govmail.host import accounts as host_tool

    sync, _ = store
    sync([acc("a@x.gov.vn", password_hash="{BLF-CRYPT}$2b$11$strong"), acc("b@x.gov.vn", password_hash="{SHA}weak")])
    rows = host_tool.run_sql("SELECT a.address, {scheme}, {strong}, {now} > 0 FROM accounts a ORDER BY a.address")
    assert [(a, scheme, bool(strong), bool(now)) for a, scheme, strong, now in rows] == \
        [("a@x.gov.vn", "{BLF-CRYPT} cost 11", True, True), ("b@x.gov.vn", "{SHA}", False, True)]
    with pytest.raises(Exception, match="(?i)read.?only"):  # read-only unless --write
        host_tool.run_sql("UPDATE accounts SET quota_mb = 1")
    assert host_tool.run_sql("UPDATE accounts SET quota_mb = 7 WHERE address = 'a@x.gov.vn'", write=True) == [{"rows": 1}]
    assert host_tool.run_sql("SELECT quota_mb FROM accounts WHERE address = 'a@x.gov.vn'") == [[7]]
    assert host_tool.run_sql("SELECT action, detail FROM audit WHERE action = 'sql-by-hand'") == \
        [["sql-by-hand", "UPDATE accounts SET quota_mb = 7 WHERE address = 'a@x.gov.vn'"]]
