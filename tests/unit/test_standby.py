"""A store's standby copy (hosts[].standby): which mailboxes each pass copies, the guard that never
mirrors a store made anew over the standby, the failover's one transaction (govmail/host/standby.py,
govmail/host/mailbox_moves.py), the data's checks, and who knows which mailbox (Dovecot's userdb).
The copies, the failover and the recovery themselves run in the lab: tests/lab/test_several_stores.py."""

import json
import subprocess

import pytest

from govmail.data import DataError, load_province
from govmail.host import mailbox_moves as moves
from govmail.host import standby, store_db
from govmail.host import store as host_store

MAIL, STORE2 = "mail.x.gov.vn", "store2.x.gov.vn"
PAIR = {"store": STORE2, "standby": MAIL, "here": "standby", "peer": "10.0.0.2", "port": 12345}


@pytest.fixture
def db(host_paths, store_engine):
    accs = [{"address": a, "name": "Tên", "kind": "person", "owner": "sxd", "role": "user", "quota_mb": 500,
             "status": "active", "password_hash": "{BLF-CRYPT}$2b$11$h", "store": where}
            for a, where in (("near@x.gov.vn", MAIL), ("far@x.gov.vn", STORE2), ("far2@x.gov.vn", STORE2))]
    (host_paths / "directory.json").write_text(json.dumps(
        {"domain": "x.gov.vn", "accounts": accs, "lists": {}, "policy": {"mail_host": MAIL}}))
    host_store.sync()
    return store_db.connect(store_engine[1])


class Doveadm:
    """doveadm as the pass runs it: every copy succeeds unless its mailbox is in `failing`; each
    INBOX's GUID as `inbox` says; each mailbox's folders as `seen` says (a count moved by `touch`)."""

    def __init__(self):
        self.calls, self.failing, self.inbox, self.seen = [], set(), {}, {}

    def touch(self, user):
        """Mail delivered to, or changed in, the mailbox on its store."""
        self.seen[user] = self.seen.get(user, 0) + 1

    def __call__(self, argv, **kw):
        self.calls.append(argv)
        if "-F" in argv:  # the folders of every mailbox named on stdin
            rows = ["Username\tmailbox\tmessages\tuidnext\thighestmodseq\tguid"]  # as doveadm 2.4 says it
            for user in open(argv[argv.index("-F") + 1]).read().split():
                rows += [f"{user}\tINBOX\t{self.seen.get(user, 0)}\t9\t3\t{self.inbox.get(user, 'g-' + user)}",
                         f"{user}\tSent\t0\t1\t1\ts-{user}"]
            return subprocess.CompletedProcess(argv, 0, "\n".join(rows) + "\n", "")
        user = argv[argv.index("-u") + 1]
        if "status" in argv:
            return subprocess.CompletedProcess(argv, 0, f"mailbox\tguid\nINBOX\t{self.inbox.get(user, 'g-' + user)}\n", "")
        return subprocess.CompletedProcess(argv, 1 if user in self.failing else 0, "", "Error: refused")


def run_pass(tmp_path, doveadm, clock=1000.0):
    conf = tmp_path / "standby.json"
    conf.write_text(json.dumps({"pairs": [PAIR]}))
    return standby.sync(str(conf), str(tmp_path / "state.json"), str(tmp_path / "m.prom"), run=doveadm,
                        now=lambda: clock, events_path=str(tmp_path / "accepted.jsonl"),
                        read_path=str(tmp_path / "read.json"))


def test_a_pass_copies_the_stores_mailboxes_one_way_and_keeps_when_each_was_copied(db, tmp_path):
    d = Doveadm()
    assert run_pass(tmp_path, d) == 0
    copies = [c for c in d.calls if "backup" in c]
    # The mail host receives (-R) from the store's doveadm server: only the store's mailboxes.
    assert [c[c.index("-u") + 1] for c in copies] == ["far2@x.gov.vn", "far@x.gov.vn"]
    assert all(c[:5] == ["doveadm", "-o", "doveadm_port=0", "backup", "-R"] and c[-1] == "tcp:10.0.0.2:12345"
               for c in copies)
    state = json.loads((tmp_path / "state.json").read_text())
    assert {k: state[STORE2]["far@x.gov.vn"][k] for k in ("copied", "inbox")} == {"copied": 1000, "inbox": "g-far@x.gov.vn"}
    assert 'govmail_standby_oldest_copy_seconds{store="store2.x.gov.vn",standby="mail.x.gov.vn"} 1000' in \
        (tmp_path / "m.prom").read_text()
    # A failed copy is tried again next minute (the unit does not fail: a reboot of the store would raise
    # JobFailed); the others' times move on, and the oldest says how far behind the standby is.
    d.failing = {"far@x.gov.vn"}
    d.touch("far@x.gov.vn")
    assert run_pass(tmp_path, d, clock=1100.0) == 0
    state = json.loads((tmp_path / "state.json").read_text())
    assert state[STORE2]["far@x.gov.vn"]["copied"] == 1000 and state[STORE2]["far2@x.gov.vn"]["copied"] == 1100
    assert "} 1000" in (tmp_path / "m.prom").read_text()  # the recovery point: the oldest copy


def test_a_store_whose_inbox_was_made_anew_is_never_mirrored_over_its_standby(db, tmp_path, capsys):
    d = Doveadm()
    run_pass(tmp_path, d)
    d.inbox["far@x.gov.vn"] = "a-new-guid"  # store2 rebuilt bare: its INBOX is another mailbox
    d.calls.clear()
    run_pass(tmp_path, d, clock=1100.0)
    assert "made anew" in capsys.readouterr().err
    assert [c[c.index("-u") + 1] for c in d.calls if "backup" in c] == []  # far2 unchanged: not copied again
    # The operator decides: `standby forget` copies it afresh at the next pass.
    standby.forget("far@x.gov.vn", str(tmp_path / "state.json"))
    assert run_pass(tmp_path, d, clock=1200.0) == 0


def test_mailboxes_moving_or_failed_over_are_left_to_the_move_and_the_recovery(db, tmp_path):
    moves.begin("far2@x.gov.vn", MAIL)
    d = Doveadm()
    run_pass(tmp_path, d)
    assert [c[c.index("-u") + 1] for c in d.calls if "backup" in c] == ["far@x.gov.vn"]
    moves.abort("far2@x.gov.vn")
    # The failover: every mailbox of the lost store on its standby, in one transaction.
    assert moves.on_store(STORE2) == ["far2@x.gov.vn", "far@x.gov.vn"]
    assert moves.fail_over(STORE2, MAIL) == ["far2@x.gov.vn", "far@x.gov.vn"]
    assert moves.on_store(STORE2) == []
    row = db.execute("SELECT store, failed_from FROM dovecot_users WHERE \"user\" = 'far@x.gov.vn'").fetchone()
    assert row == (MAIL, STORE2)
    assert db.execute("SELECT login_store, store FROM dovecot_passdb WHERE \"user\" = 'far@x.gov.vn'").fetchone() == \
        (MAIL, MAIL)
    d.calls.clear()
    run_pass(tmp_path, d)
    assert [c for c in d.calls if "backup" in c] == []  # the lost store's newest mail must not be overwritten
    with pytest.raises(moves.MoveRefused, match="failover store2.x.gov.vn --recover"):
        moves.begin("far@x.gov.vn", STORE2)
    assert [m["address"] for m in moves.failed_over(STORE2)] == ["far2@x.gov.vn", "far@x.gov.vn"]
    moves.recovered("far@x.gov.vn")
    assert [m["address"] for m in moves.failed_over(STORE2)] == ["far2@x.gov.vn"]
    audit = [r[0] for r in db.execute("SELECT action FROM audit WHERE address = 'far@x.gov.vn' ORDER BY ts")]
    assert audit[-2:] == ["failover", "failover-recovered"]


def test_the_standby_knows_the_stores_mailboxes_and_the_lost_store_keeps_knowing_them():
    from govmail.services.dovecot import _own

    cfg = load_province("lamdong")
    mail, store2 = cfg.mail_host, cfg.stores_apart[0]
    assert cfg.standbys == {store2: mail}
    assert f"store = '{store2}'" in _own(cfg, mail)  # the standby copies, for the copies and the failover
    assert f"failed_from = '{store2}'" in _own(cfg, store2)  # for --recover


@pytest.mark.parametrize("standby, says", [
    ("backup.lamdong.gov.vn", "is not another host that holds mailboxes"),
    ("store2.lamdong.gov.vn", "is not another host that holds mailboxes"),
])
def test_a_standby_must_be_another_store(tmp_path, standby, says):
    import shutil

    from govmail.data import ROOT

    shutil.copytree(ROOT / "group_data", tmp_path / "data")
    yml = tmp_path / "data" / "lamdong.yml"
    yml.write_text(yml.read_text().replace("standby: mail.lamdong.gov.vn", f"standby: {standby}"))
    with pytest.raises(DataError) as e:
        load_province(yml, cache=False)
    assert says in str(e.value) and "hosts[" in str(e.value)


def test_the_mail_hosts_own_mailboxes_have_no_standby(tmp_path):
    """Every login and delivery goes through the mail host's Dovecot proxy: with it lost, no standby of its
    mailboxes could be reached; refused with the data's line and what to do instead."""
    import shutil

    from govmail.data import ROOT

    shutil.copytree(ROOT / "group_data", tmp_path / "data")
    yml = tmp_path / "data" / "lamdong.yml"
    yml.write_text(yml.read_text().replace("    roles: [mail, proxy]\n",
                                           "    roles: [mail, proxy]\n    standby: store2.lamdong.gov.vn\n"))
    with pytest.raises(DataError) as e:
        load_province(yml, cache=False)
    assert "hosts[0].standby" in str(e.value) and "proxy" in str(e.value) and "lamdong.yml:" in str(e.value)


def test_the_standby_copies_are_known_to_the_standby_but_not_iterated_as_its_own():
    """The mail host's `doveadm -A` (quota figures, reports, compliance) goes through its own mailboxes
    only; store2's copies on it are store2's (a lookup of one still finds it: the copies, the failover)."""
    from govmail.services.dovecot import _own

    cfg = load_province("lamdong")
    mail, store2 = cfg.mail_host, cfg.stores_apart[0]
    assert f"store = '{store2}'" in _own(cfg, mail) and f"store = '{store2}'" not in _own(cfg, mail, copies=False)


def test_a_message_already_brought_over_is_known_by_its_message_id_though_its_guid_changed():
    """`doveadm save` gives a message a GUID of its own: a recovery or a move's catch-up run again
    after a stop half-way must not save it twice (govmail/cli/move.py missing_on)."""
    from govmail.cli.move import missing_on

    lost = {"g1": ("INBOX", "<a@x>"), "g2": ("INBOX", "<b@x>"), "g3": ("Sent", "")}
    standby = {"g1": ("INBOX", "<a@x>"), "new-guid": ("INBOX", "<b@x>")}
    assert missing_on(lost, standby) == {"g3": "Sent"}  # g2 saved already; g3 has no Message-ID: by GUID
    assert missing_on(lost, {}) == {"g1": "INBOX", "g2": "INBOX", "g3": "Sent"}


def event(user, when="2026-12-07T05:13:56.137714Z", **more):
    fields = {"protocol": "lmtp", "status_code": 250, "rcpt_to": user, "user": user, **more}
    return json.dumps({"start_time": when, "end_time": when, "fields": fields}) + "\n"


def run_delivered(tmp_path, doveadm, clock=2000.0):
    conf = tmp_path / "standby.json"
    conf.write_text(json.dumps({"pairs": [PAIR]}))
    return standby.delivered(str(conf), str(tmp_path / "state.json"), str(tmp_path / "m.prom"),
                             str(tmp_path / "accepted.jsonl"), str(tmp_path / "read.json"), run=doveadm,
                             now=lambda: clock)


def test_after_deliveries_only_the_mailboxes_delivered_to_on_the_store_are_copied_each_once(db, tmp_path):
    events = tmp_path / "accepted.jsonl"
    # Dovecot's lines: a store2 mailbox twice, the mail host's own, a stranger, a line that is no JSON,
    # and one still being written.
    events.write_text(event("far@x.gov.vn") + event("near@x.gov.vn") + "not json\n" + event("FAR@x.gov.vn")
                      + event("nobody@x.gov.vn") + event("far2@x.gov.vn")[:30])
    d = Doveadm()
    assert run_delivered(tmp_path, d) == 0
    assert [c[c.index("-u") + 1] for c in d.calls if "backup" in c] == ["far@x.gov.vn"]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state[STORE2]["far@x.gov.vn"]["copied"] == 2000
    # The line being written is read once it is whole; nothing already read is copied again.
    with events.open("a") as f:
        f.write(event("far2@x.gov.vn")[30:])
    d.calls.clear()
    run_delivered(tmp_path, d)
    assert [c[c.index("-u") + 1] for c in d.calls if "backup" in c] == ["far2@x.gov.vn"]
    d.calls.clear()
    run_delivered(tmp_path, d)
    assert d.calls == []


def test_the_deliveries_file_is_cut_back_once_read_and_a_new_one_is_read_from_its_start(db, tmp_path, monkeypatch):
    events = tmp_path / "accepted.jsonl"
    monkeypatch.setattr(standby, "EVENTS_KEEP", 100)
    events.write_text(event("far@x.gov.vn") * 3)
    d = Doveadm()
    run_delivered(tmp_path, d)
    assert events.stat().st_size == 0  # read to its end and longer than EVENTS_KEEP
    # Dovecot goes on appending to it (O_APPEND): read from its start.
    events.write_text(event("far2@x.gov.vn"))
    d.calls.clear()
    run_delivered(tmp_path, d)
    assert [c[c.index("-u") + 1] for c in d.calls if "backup" in c] == ["far2@x.gov.vn"]
    # Short, but not written for a minute: cut back too (its lines name senders and recipients).
    monkeypatch.setattr(standby, "EVENTS_KEEP", 1 << 20)
    events.write_text(events.read_text() + event("far@x.gov.vn"))
    run_delivered(tmp_path, d)
    assert events.stat().st_size > 0  # written just now: the writer may be at it
    import os
    os.utime(events, (events.stat().st_mtime - 120,) * 2)
    run_delivered(tmp_path, d)
    assert events.stat().st_size == 0
    # Another file in its place (removed, made again): read from its start too.
    events.unlink()
    events.write_text(event("far@x.gov.vn"))
    d.calls.clear()
    run_delivered(tmp_path, d)
    assert [c[c.index("-u") + 1] for c in d.calls if "backup" in c] == ["far@x.gov.vn"]


def test_the_host_that_copies_has_its_dovecot_write_each_delivery_and_a_unit_that_reads_them(tmp_path):
    from govmail.host import contract

    from .test_db import host_services
    cfg = load_province("lamdong")
    (store, to), = cfg.standbys.items()
    for name in [*cfg.stores_apart, cfg.mail_host]:
        svcs = host_services(cfg, name, tmp_path)
        conf = next(f for f in svcs["dovecot"].files if f.dest == "/etc/dovecot/dovecot.conf").content.decode()
        mine = cfg.standby_copier(store) == name
        assert ("event_exporter govmail_deliveries" in conf) == mine, name
        assert ("standby" in svcs) == mine, name
        if mine:
            assert f"event_exporter_file_path = {contract.PATHS['standby_deliveries']}\n" in conf
            # the mail host writes only the deliveries its proxy hands to store2, not the province's every one
            ip = f"10.9.0.{[h.name for h in cfg.model.hosts].index(store) + 2}"  # test_db.host_services's
            assert f'status_code=250 AND (dest_host="{ip}")\n' in conf
            unit = next(f for f in svcs["standby"].files if f.dest.endswith("govmail-standby-deliveries.service"))
            assert "standby follow\n" in unit.content.decode()
            assert "govmail-standby-deliveries.service" in [u.name for u in svcs["standby"].units]


def test_a_delivery_during_a_long_pass_is_copied_before_the_pass_goes_on(db, tmp_path):
    """A pass over thousands of mailboxes takes minutes: a delivery meanwhile is copied between two of its
    mailboxes (the copy after deliveries, finding the pass's lock, leaves it to the pass)."""
    events = tmp_path / "accepted.jsonl"

    class Delivering(Doveadm):
        def __call__(self, argv, **kw):
            if "backup" in argv and argv[argv.index("-u") + 1] == "far2@x.gov.vn" and not events.exists():
                events.write_text(event("far2@x.gov.vn"))  # a message for far2 while its copy runs
            return super().__call__(argv, **kw)

    d = Delivering()
    run_pass(tmp_path, d)
    assert [c[c.index("-u") + 1] for c in d.calls if "backup" in c] == ["far2@x.gov.vn", "far2@x.gov.vn",
                                                                         "far@x.gov.vn"]
    # Read: the next copy after deliveries has nothing to do.
    d.calls.clear()
    run_delivered(tmp_path, d)
    assert d.calls == []
    # While a pass holds the lock, the copy after deliveries leaves its mailboxes to it.
    import fcntl
    events.write_text(events.read_text() + event("far@x.gov.vn"))
    with open(str(tmp_path / "state.json") + ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert run_delivered(tmp_path, d) == 0
    assert d.calls == []


def test_the_status_verify_reads_says_which_mailboxes_have_no_copy_and_how_old_the_oldest_is(db, tmp_path):
    conf, state = tmp_path / "standby.json", tmp_path / "state.json"
    d = Doveadm()
    d.failing = {"far@x.gov.vn"}
    run_pass(tmp_path, d, clock=1000.0)
    said = standby.status(str(conf), str(state), now=lambda: 1300.0)
    assert said == {STORE2: {"standby": MAIL, "mailboxes": 2, "never": ["far@x.gov.vn"], "oldest": 300}}


def test_the_standby_is_a_compliance_clause_checked_where_the_copies_run():
    from govmail.compliance.clauses import clauses

    cfg = load_province("lamdong")
    (c,) = [c for c in clauses(cfg) if c.check == "mailbox_standby_current"]
    assert c.hosts(cfg) == [cfg.mail_host] and c.article == cfg.policy.operation.article
    assert "store2.lamdong.gov.vn -> mail.lamdong.gov.vn" in c.text
    assert not [c for c in clauses(load_province("daknong")) if c.check == "mailbox_standby_current"]


def test_a_mailbox_unchanged_on_its_store_is_not_copied_again_until_the_hour(db, tmp_path, capsys):
    """A store of thousands of quiet mailboxes: the pass asks the store once for every mailbox's folders
    and copies only those that changed since their copy (a delivery, an expunge, a flag); the others' copies
    are as current as the question. Each is still copied once an hour (a copy altered on the standby's side)."""
    d = Doveadm()
    run_pass(tmp_path, d, clock=1000.0)
    assert len([c for c in d.calls if "backup" in c]) == 2 and len([c for c in d.calls if "-F" in c]) == 1
    d.calls.clear()
    d.touch("far2@x.gov.vn")
    run_pass(tmp_path, d, clock=1060.0)
    # one question for the pass, one copy; no INBOX GUID question (the status gave it)
    assert [c[c.index("-u") + 1] if "-u" in c else "-F" for c in d.calls] == ["-F", "far2@x.gov.vn"]
    assert "(1 unchanged since their last copy)" in capsys.readouterr().out
    state = json.loads((tmp_path / "state.json").read_text())[STORE2]
    assert state["far@x.gov.vn"]["copied"] == 1060 and state["far2@x.gov.vn"]["copied"] == 1060
    # The hour since their last whole copy: copied again, changed or not.
    d.calls.clear()
    run_pass(tmp_path, d, clock=1000.0 + standby.RECOPY_EVERY)
    assert [c[c.index("-u") + 1] for c in d.calls if "backup" in c] == ["far@x.gov.vn"]
    # A store made anew changes its INBOX's GUID: never skipped, and the guard holds.
    d.inbox["far2@x.gov.vn"] = "a-new-guid"
    d.calls.clear()
    run_pass(tmp_path, d, clock=1100.0 + standby.RECOPY_EVERY)
    assert [c for c in d.calls if "backup" in c] == [] and "made anew" in capsys.readouterr().err


def test_the_follower_copies_what_was_delivered_since_its_last_look_and_only_then(db, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(standby, "delivered", lambda **kw: calls.append(kw) or 0)
    monkeypatch.setattr(standby.time, "sleep", lambda _s: None)
    events, read = tmp_path / "accepted.jsonl", tmp_path / "read.json"
    kw = {"events_path": str(events), "read_path": str(read), "rounds": 2}
    standby.follow(**kw)  # no file yet
    events.write_text("")
    standby.follow(**kw)  # an empty one
    assert calls == []
    events.write_text(event("far@x.gov.vn"))
    standby.follow(**kw, every=0)
    assert len(calls) == 2  # not read (delivered is a stand-in here): looked at again
    read.write_text(json.dumps({"offset": events.stat().st_size}))
    calls.clear()
    standby.follow(**kw)
    assert calls == []
