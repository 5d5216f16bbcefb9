"""A mailbox's place during `govmail move-mailbox`, in the account store (govmail/host/mailbox_moves.py),
on both engines: where Dovecot routes its logins and deliveries at each step, how long logins wait,
and the steps a move refuses. The move itself (doveadm between hosts) is proven in the lab:
tests/lab/test_several_stores.py."""

import json
import time

import pytest

from govmail.cli import main as cli
from govmail.host import mailbox_moves as moves
from govmail.host import store as host_store
from govmail.host import store_db

MAIL, STORE2 = "mail.x.gov.vn", "store2.x.gov.vn"


@pytest.fixture
def db(host_paths, store_engine):
    accs = [{"address": a, "name": "Tên", "kind": "person", "owner": "stnmt", "role": "user", "quota_mb": 500,
             "status": "active", "password_hash": "{BLF-CRYPT}$2b$11$h", "store": where}
            for a, where in (("near@x.gov.vn", MAIL), ("far@x.gov.vn", STORE2))]
    (host_paths / "directory.json").write_text(json.dumps(
        {"domain": "x.gov.vn", "accounts": accs, "lists": {}, "policy": {"mail_host": MAIL}}))
    host_store.sync()
    return store_db.connect(store_engine[1])


def route(db, address):
    """(where a login goes, until when it waits, where a delivery goes) as Dovecot's passdb reads them."""
    return db.execute('SELECT login_store, delay_until, store FROM dovecot_passdb WHERE "user" = ?', (address,)).fetchone()


def test_a_move_sends_logins_to_the_new_store_after_its_hold_and_deliveries_where_the_mail_is(db):
    st = moves.begin("near@x.gov.vn", STORE2)
    assert (st["store"], st["moving"], st["held"]) == (MAIL, STORE2, False)
    # Copying: everything still goes where the mail is; the new store's userdb knows the mailbox.
    assert route(db, "near@x.gov.vn") == (MAIL, None, MAIL)
    assert db.execute("SELECT moving FROM dovecot_users WHERE \"user\" = 'near@x.gov.vn'").fetchone() == (STORE2,)
    before = int(time.time())
    st = moves.hold("near@x.gov.vn", 15)
    login, delay, delivery = route(db, "near@x.gov.vn")
    assert login == STORE2 and before + 15 <= delay <= int(time.time()) + 15 and delivery == MAIL
    assert route(db, "far@x.gov.vn") == (STORE2, None, STORE2)  # another mailbox is untouched
    st = moves.switch("near@x.gov.vn", STORE2)
    assert (st["store"], st["moving"], st["moved_from"]) == (STORE2, None, MAIL)
    # Switched: deliveries go to the new store; logins still wait for the catch-up; the old store's
    # Dovecot still knows the mailbox, for that copy.
    assert route(db, "near@x.gov.vn") == (STORE2, delay, STORE2)
    assert db.execute("SELECT moved_from FROM dovecot_users WHERE \"user\" = 'near@x.gov.vn'").fetchone() == (MAIL,)
    with pytest.raises(moves.MoveRefused, match="catch-up is not done"):
        moves.begin("near@x.gov.vn", MAIL)
    st = moves.release("near@x.gov.vn")
    assert (st["store"], st["moving"], st["moved_from"], st["hold_until"]) == (STORE2, None, None, None)
    assert route(db, "near@x.gov.vn") == (STORE2, None, STORE2)
    audit = [r[0] for r in db.execute("SELECT action FROM audit WHERE address = 'near@x.gov.vn' ORDER BY ts")]
    assert audit[-4:] == ["move-begin", "move-hold", "move-mailbox", "move-release"]
    # A later sync keeps it where its mail now is, whatever store the data names.
    host_store.sync()
    assert moves.state("near@x.gov.vn")["store"] == STORE2


def test_a_hold_that_ran_out_sends_logins_back_where_the_mail_is(db):
    moves.begin("near@x.gov.vn", STORE2)
    db.execute("UPDATE accounts SET hold_until = ? WHERE address = 'near@x.gov.vn'", (int(time.time()) - 1,))
    if db.dialect.name == "sqlite":
        db.commit()
    assert route(db, "near@x.gov.vn") == (MAIL, None, MAIL)


def test_a_move_refuses_what_would_lose_track_of_the_mail(db):
    with pytest.raises(moves.MoveRefused, match="already on"):
        moves.begin("far@x.gov.vn", STORE2)
    moves.begin("near@x.gov.vn", STORE2)
    with pytest.raises(moves.MoveRefused, match="being moved to store2"):
        moves.begin("near@x.gov.vn", "store3.x.gov.vn")
    with pytest.raises(moves.MoveRefused, match="not being moved to store3"):
        moves.switch("near@x.gov.vn", "store3.x.gov.vn")
    with pytest.raises(moves.MoveRefused, match="allowed 1 to 240"):
        moves.hold("near@x.gov.vn", 600)  # Dovecot ignores a delay_until over 5 minutes ahead
    with pytest.raises(moves.MoveRefused, match="not a host name"):
        moves.begin("far@x.gov.vn", "x'; DROP TABLE accounts; --")
    with pytest.raises(moves.MoveRefused, match="not in the account store"):
        moves.state("nobody@x.gov.vn")
    st = moves.abort("near@x.gov.vn")
    assert (st["store"], st["moving"]) == (MAIL, None)
    with pytest.raises(moves.MoveRefused, match="not being moved"):
        moves.hold("near@x.gov.vn", 10)


@pytest.mark.parametrize("argv, says", [
    (["move-mailbox"], "name the mailboxes to move"),
    (["move-mailbox", "a@daknong.gov.vn", "--agency", "stnmt"], "not both"),
    (["move-mailbox", "--agency", "stnmt"], "--agency needs --province"),
    (["move-mailbox", "--agency", "stnmt", "--province", "daknong"], "has one store"),
    (["move-mailbox", "--agency", "nope", "--province", "lamdong"], "no mailbox of an agency 'nope'"),
    (["move-mailbox", "--agency", "sxd", "--province", "lamdong", "--to", "db2.lamdong.gov.vn"], "not a store of lamdong"),
    (["move-mailbox", "--agency", "sxd", "--province", "lamdong", "--to", "mail.lamdong.gov.vn"], "change hosts[].agencies"),
])
def test_a_move_the_data_does_not_allow_is_refused_before_any_host_is_touched(argv, says, capsys):
    assert cli(argv) == 2
    assert says in capsys.readouterr().err


def test_a_hold_longer_than_dovecot_waits_is_refused_by_the_command_line(capsys):
    with pytest.raises(SystemExit):
        cli(["move-mailbox", "--agency", "sxd", "--province", "lamdong", "--hold", "900"])
    assert "a hold is 5 to 120 seconds" in capsys.readouterr().err


def test_a_deploy_without_a_host_that_still_holds_mailboxes_is_refused(db, tmp_path):
    from govmail.data import load_province
    from govmail.service import Refused
    from govmail.services.accounts import stranded

    moves.begin("near@x.gov.vn", STORE2)
    assert moves.places() == {"stores": {MAIL: 1, STORE2: 1}, "moving": {STORE2: 1}, "moved_from": {}}
    cfg = load_province("lamdong")
    answer = json.dumps({"stores": {cfg.mail_host: 20, "store3.lamdong.gov.vn": 2}, "moving": {}})
    with pytest.raises(Refused, match="2 mailboxes hold store3.lamdong.gov.vn .* no longer has as a store"):
        stranded(cfg, answer)
    with pytest.raises(Refused, match="are being moved to store3"):
        stranded(cfg, json.dumps({"stores": {}, "moving": {"store3.lamdong.gov.vn": 1}}))
    with pytest.raises(Refused, match="were just moved from store3"):
        stranded(cfg, json.dumps({"stores": {}, "moved_from": {"store3.lamdong.gov.vn": 1}}))
    stranded(cfg, json.dumps({"stores": {cfg.mail_host: 20, cfg.stores_apart[0]: 1, "": 3}, "moving": {}}))
    stranded(cfg, "")  # a host tool of an earlier version answers nothing


def test_a_second_move_or_failover_of_the_province_waits_for_the_first_to_end(tmp_path, monkeypatch, capsys):
    """Two moves at once would copy one mailbox twice over: the second is told, before any host."""
    from govmail.cli import move

    monkeypatch.setenv("GOVMAIL_LOG_DIR", str(tmp_path))
    first = move._one_at_a_time("lamdong")
    assert first is not None
    assert cli(["move-mailbox", "--agency", "sxd", "--province", "lamdong"]) == 1
    assert "another `govmail move-mailbox` (pid " in capsys.readouterr().err
    # A failover waits for it too (and a move for a failover): two would bring one message over twice.
    assert cli(["failover", "store2.lamdong.gov.vn", "--recover"]) == 1
    assert "another `govmail move-mailbox` (pid " in capsys.readouterr().err
    first.close()
    second = move._one_at_a_time("lamdong", "failover")
    assert cli(["move-mailbox", "--agency", "sxd", "--province", "lamdong"]) == 1
    said = capsys.readouterr().err
    assert "another `govmail failover` (pid " in said and ") of lamdong runs; wait for it to end" in said
    second.close()
    assert move._one_at_a_time("lamdong") is not None
