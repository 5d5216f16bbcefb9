"""A merged province (issue 15): old addresses reach their owners one to one, the transition ends
at its date, and bad merger data is refused before any host is touched."""

import json
import shutil
import sqlite3
import time

import pytest

from govmail.data import DataError, load_province
from govmail.data import predecessors as merger
from govmail.host import store as host_store
from govmail.publish.dns import dnsmasq_lines, zone_text


def lamdong():
    return load_province("lamdong")


def test_every_old_address_maps_to_one_new_address_and_no_old_domain_is_a_catch_all():
    cfg = lamdong()
    assert cfg.former["haunv.stnmt@daknong.gov.vn"] == "haunv.snnmt@lamdong.gov.vn"
    # Two officials named Nguyễn Văn Hậu from two provinces: two old addresses, two new ones.
    assert cfg.former["haunv.stnmt@binhthuan.gov.vn"] == "haunva.snnmt@lamdong.gov.vn"
    # Units and lists are mapped the same way; several old units may fold into one.
    assert cfg.former["stnmt@daknong.gov.vn"] == cfg.former["snnptnt@daknong.gov.vn"] == "snnmt@lamdong.gov.vn"
    assert cfg.former["internal@daknong.gov.vn"] == "internal@lamdong.gov.vn"
    assert not any(old.startswith("@") for old in cfg.former)
    assert cfg.domains == ["lamdong.gov.vn", "daknong.gov.vn", "binhthuan.gov.vn"]


def test_the_transition_ends_at_midnight_vietnam_time_and_forwarding_runs_on_where_the_data_says():
    cfg = lamdong()
    end = merger.day_start("2027-07-01")
    assert end == 1814374800  # 2027-06-30 17:00 UTC
    assert merger.phase(cfg, "haunv.stnmt@daknong.gov.vn", end - 1) == "transition"
    assert merger.phase(cfg, "haunv.stnmt@daknong.gov.vn", end) == "moved"
    assert merger.phase(cfg, "haunv.stnmt@binhthuan.gov.vn", end) == "forward"
    assert merger.phase(cfg, "haunv.stnmt@binhthuan.gov.vn", merger.day_start("2028-01-01")) == "moved"


def data_file(tmp_path, text):
    """A copy of Lâm Đồng's data file, beside the national defaults."""
    shutil.copy(lamdong().file.parent / "defaults.yml", tmp_path / "defaults.yml")
    p = tmp_path / "lamdong.yml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("extra, message", [
    ("    - {name: Lê Văn Tám, address: tamlv.stc@lamdong.gov.vn, agency: stc, former: [tamlv@hanoi.gov.vn]}\n",
     "directory.people[20].former[0]: 'tamlv@hanoi.gov.vn' is not in the province's domain or a predecessor's; "
     "allowed domains: lamdong.gov.vn, daknong.gov.vn, binhthuan.gov.vn (name the old province under `predecessors`)"),
    ("    - {name: Lê Văn Tám, address: tamlv.stc@lamdong.gov.vn, agency: stc, former: [haunv.stnmt@daknong.gov.vn]}\n",
     "directory.people[20].former[0]: 'haunv.stnmt@daknong.gov.vn' is already a former address of "
     "directory.people[11]; an old address reaches one new address only"),
    ("    - {name: Lê Văn Tám, address: tamlv.stc@lamdong.gov.vn, agency: stc, former: [hoapt.stc@lamdong.gov.vn]}\n",
     "directory.people[20].former[0]: 'hoapt.stc@lamdong.gov.vn' is the current address of directory.people[1].address; "
     "an old address cannot also be in use"),
    ("    - {name: Lê Văn Tám, address: tamlv.stc@lamdong.gov.vn, agency: stc, former: [postmaster@daknong.gov.vn]}\n",
     "directory.people[20].former[0]: 'postmaster@daknong.gov.vn': role addresses of an old domain reach the "
     "postmaster by themselves; not an address to move"),
])
def test_a_bad_old_address_is_refused_with_its_key_path(tmp_path, extra, message):
    text = load_province("lamdong").file.read_text()
    text = text.replace("  lists:\n", extra + "  lists:\n", 1)
    p = data_file(tmp_path, text)
    with pytest.raises(DataError) as e:
        load_province(p, cache=False)
    assert [str(x).split(": ", 1)[1] for x in e.value.problems] == [message]


def test_a_predecessor_domain_twice_a_forward_before_the_transition_and_an_unknown_decision_are_refused(tmp_path):
    text = load_province("lamdong").file.read_text()
    text = text.replace("    domain: binhthuan.gov.vn\n", "    domain: daknong.gov.vn\n")
    text = text.replace('    forward_until: "2028-01-01"', '    forward_until: "2027-01-01"')
    text = text.replace("    article: DN Art. 8.3\n", "    article: LD Art. 8.3\n")
    p = data_file(tmp_path, text)
    with pytest.raises(DataError) as e:
        load_province(p, cache=False)
    got = [str(x) for x in e.value.problems]
    line = [i + 1 for i, x in enumerate(text.split("\n")) if x == "    domain: daknong.gov.vn"][1]
    assert any(f":{line}: predecessors[1].domain: 'daknong.gov.vn' is already the domain of predecessors[0].domain" in g
               for g in got), got
    assert any("predecessors[1].forward_until: 2027-01-01 is not after transition_until 2027-07-01" in g for g in got)
    assert any("policy.content.article: 'LD Art. 8.3' cites LD, which is not a decision of `regulations` or of a "
               "predecessor's `regulations`; known: DN" in g for g in got), got


def test_govmail_dns_prints_a_zone_for_every_old_domain_with_its_own_dkim_selector():
    cfg = lamdong()
    zone = zone_text(cfg, "203.0.113.5", {"lamdong.gov.vn": "v=DKIM1; k=rsa; p=AAA",
                                           "daknong.gov.vn": "v=DKIM1; k=rsa; p=BBB"})
    assert "$ORIGIN lamdong.gov.vn." in zone and "$ORIGIN daknong.gov.vn." in zone and "$ORIGIN binhthuan.gov.vn." in zone
    dak = zone.split("$ORIGIN daknong.gov.vn.")[1].split("$ORIGIN")[0]
    assert "IN MX    10 mail.lamdong.gov.vn." in dak and '"v=spf1 mx -all"' in dak
    assert 'lamdong._domainkey' in dak and '"v=DKIM1; k=rsa; p=BBB"' in dak
    assert "rua=mailto:postmaster@daknong.gov.vn" in dak
    assert "no key known yet" in zone.split("$ORIGIN binhthuan.gov.vn.")[1]
    # In the lab, an old domain whose old host still runs keeps its own records: only the merged
    # host's key is served beside them.
    lines = dnsmasq_lines(cfg, {"daknong.gov.vn": "v=DKIM1; k=rsa; p=BBB"}, frozenset({"daknong.gov.vn"}))
    dak_lines = [x for x in lines if "daknong.gov.vn" in x]
    assert dak_lines == ['txt-record=lamdong._domainkey.daknong.gov.vn,"v=DKIM1; k=rsa; p=BBB"']
    assert "mx-host=binhthuan.gov.vn,mail.lamdong.gov.vn,10" in lines


@pytest.fixture
def store(host_paths):
    return host_paths


def test_the_store_applies_each_phase_from_the_clock_alias_login_send_then_forward_then_5_1_6(store):
    now = int(time.time())
    acc = {"address": "b@new.gov.vn", "name": "B", "kind": "person", "quota_mb": 100, "owner": None,
           "password_hash": "{BLF-CRYPT}$2y$10$x"}
    doc = {"version": 4, "domain": "new.gov.vn", "accounts": [acc], "lists": {}, "senders": {},
           "former": [["b@old1.gov.vn", "b@new.gov.vn", now + 3600, None],
                      ["b@old2.gov.vn", "b@new.gov.vn", now - 60, now + 3600],
                      ["b@old3.gov.vn", "b@new.gov.vn", now - 60, None],
                      ["b.x@new.gov.vn", "b@new.gov.vn", None, None]]}
    (store / "directory.json").write_text(json.dumps(doc))
    host_store.sync()
    db = sqlite3.connect(store / "accounts.sqlite")

    def one(sql, *args):
        return [r[0] for r in db.execute(sql, args)]

    assert one("SELECT members FROM postfix_aliases WHERE address=?", "b@old1.gov.vn") == ["b@new.gov.vn"]
    assert one("SELECT members FROM postfix_aliases WHERE address=?", "b@old2.gov.vn") == ["b@new.gov.vn"]
    assert one("SELECT members FROM postfix_aliases WHERE address=?", "b@old3.gov.vn") == []
    assert one("SELECT new FROM postfix_relocated WHERE address=?", "b@old3.gov.vn") == ["b@new.gov.vn"]
    assert one("SELECT new FROM postfix_relocated WHERE address=?", "b@old2.gov.vn") == []
    # Login with an old address in transition (or a readdressed one) opens the new mailbox.
    assert one("SELECT user FROM dovecot_passdb WHERE login=?", "b@old1.gov.vn") == ["b@new.gov.vn"]
    assert one("SELECT user FROM dovecot_passdb WHERE login=?", "b.x@new.gov.vn") == ["b@new.gov.vn"]
    assert one("SELECT user FROM dovecot_passdb WHERE login=?", "b@old2.gov.vn") == []
    assert one("SELECT logins FROM postfix_senders WHERE address=?", "b@old1.gov.vn") == ["b@new.gov.vn"]
    assert one("SELECT logins FROM postfix_senders WHERE address=?", "b@old2.gov.vn") == []
    # The new mailbox deleted (or removed): its old addresses are no longer known, so Postfix refuses
    # their mail at RCPT instead of taking it and bouncing it later.
    db.execute("UPDATE accounts SET status='deleted' WHERE address='b@new.gov.vn'")
    db.commit()
    assert one("SELECT members FROM postfix_aliases WHERE address=?", "b@old1.gov.vn") == []
    assert one("SELECT address FROM postfix_mailboxes WHERE address=?", "b@new.gov.vn") == []


def test_the_old_hosts_forced_command_runs_nothing_but_export_dsync_and_sieve(capsys):
    from govmail.host import migrate

    for command in ("rm -rf /", "dsync ../../etc/shadow", "dsync a@b.vn; reboot", "export now", ""):
        assert migrate.source(command) == 2, command
    assert capsys.readouterr().err.count("refused") == 5


def test_an_imap_password_file_with_a_line_break_or_control_character_is_refused(tmp_path):
    from govmail.merger.migrate import read_passwords

    f = tmp_path / "p.csv"
    f.write_text('address,password\na@daknong.gov.vn,"x\nimapc_host = evil"\n')
    with pytest.raises(ValueError, match=r"p.csv:2: a control character"):
        read_passwords(str(f))
    f.write_text("a@daknong.gov.vn,Mật-khẩu 1\n")
    assert read_passwords(str(f)) == {"a@daknong.gov.vn": "Mật-khẩu 1"}


def test_a_migrated_password_follows_the_old_host_until_someone_sets_one_on_the_new_host(store):
    acc = {"address": "b@new.gov.vn", "name": "B", "kind": "person", "quota_mb": 100, "owner": None,
           "password_hash": "{BLF-CRYPT}$2y$10$issued"}
    (store / "directory.json").write_text(json.dumps({"version": 4, "domain": "new.gov.vn", "accounts": [acc],
                                                      "lists": {}}))
    host_store.sync()
    db = sqlite3.connect(store / "accounts.sqlite")

    def pw():
        return db.execute("SELECT password, must_change FROM accounts").fetchone()

    assert host_store.import_password("b@new.gov.vn", "{BLF-CRYPT}$2y$10$old1", 1700000000, 0)
    assert pw() == ("{BLF-CRYPT}$2y$10$old1", 0)  # the issued one replaced: no forced change
    assert host_store.import_password("b@new.gov.vn", "{BLF-CRYPT}$2y$10$old2", 1700000100, 0)  # changed there
    assert not host_store.import_password("b@new.gov.vn", "{BLF-CRYPT}$2y$10$old2", 1700000100, 0)  # no change
    host_store.audit(db, "password-changed", "b@new.gov.vn", "by the user")
    db.commit()
    assert not host_store.import_password("b@new.gov.vn", "{BLF-CRYPT}$2y$10$old3", 1700000200, 0)
    assert pw()[0] == "{BLF-CRYPT}$2y$10$old2"  # the user's own change here is never overwritten


def test_a_mailbox_copied_by_one_method_is_not_copied_by_another_which_would_double_its_mail(tmp_path, monkeypatch,
                                                                                            capsys):
    from govmail.host import migrate

    monkeypatch.setattr(migrate, "STATE", str(tmp_path / "state.json"))
    # A state file of govmail before several-into-one: {new: {from, method}} is read as it was meant.
    (tmp_path / "state.json").write_text(json.dumps(
        {"b@new.gov.vn": {"from": "b@old.gov.vn", "method": "govmail:mail.old.gov.vn", "last": 1}}))
    assert migrate.load_state()["sources"]["b@old.gov.vn"] == {
        "new": "b@new.gov.vn", "method": "govmail:mail.old.gov.vn", "mode": "direct", "last": 1}

    class Store:  # the merged host's store: the new mailbox exists, on this host
        def execute(self, *a):
            return [("b@new.gov.vn", None)]

    monkeypatch.setattr(migrate.store, "connect", lambda: Store())
    plan = {"version": 2, "source": {"kind": "imap", "host": "imap.old.gov.vn"},
            "pairs": [{"old": "b@old.gov.vn", "new": "b@new.gov.vn"}], "passwords": {"b@old.gov.vn": "x"}}
    assert migrate.run(plan) == 1  # not copied: the run says so and fails
    out = json.loads(capsys.readouterr().out)
    assert "copied before to b@new.gov.vn by govmail:mail.old.gov.vn" in out["skipped"]
    assert "copy it again the same way (from mail.old.gov.vn)" in out["todo"]
    plan["version"] = 1
    assert migrate.run(plan) == 2
    assert "deploy this govmail version to it first" in capsys.readouterr().out


def test_several_old_mailboxes_for_one_new_each_get_a_folder_and_a_list_is_an_alias():
    from govmail.data import load_province
    from govmail.merger.migrate import pairs_for

    cfg = load_province("lamdong")
    pred = next(p for p in cfg.model.predecessors if p.key == "daknong")
    pairs = {p["old"]: p for p in pairs_for(cfg, pred)}
    assert pairs["stnmt@daknong.gov.vn"]["several"] and pairs["snnptnt@daknong.gov.vn"]["several"]
    # ubnd@ of Đắk Nông and of Bình Thuận (another predecessor) go into one mailbox: several too.
    assert pairs["ubnd@daknong.gov.vn"]["several"]
    assert not pairs["skhdt@daknong.gov.vn"]["several"] and not pairs["skhdt@daknong.gov.vn"]["list"]
    assert pairs["internal@daknong.gov.vn"]["list"]


def test_the_folder_of_an_old_mailbox_holds_no_dot_and_never_takes_anothers_name():
    from govmail.host.migrate_copy import folder_name, uid_set

    assert folder_name("stnmt@daknong.gov.vn", "daknong") == "Thư cũ/stnmt@daknong"
    assert folder_name("vp.ubnd@daknong.gov.vn", "daknong") == "Thư cũ/vp-ubnd@daknong"
    assert folder_name("vp-ubnd@daknong.gov.vn", "daknong", {"Thư cũ/vp-ubnd@daknong"}) == "Thư cũ/vp-ubnd@daknong-2"
    assert uid_set([9, 1, 2, 3, 7, 10]) == "1:3,7,9:10" and uid_set([4]) == "4"


def test_an_old_mailbox_keeps_the_way_it_was_first_copied(tmp_path, monkeypatch):
    """A mailbox copied into the new one before the data mapped a second old mailbox there stays as it
    was; the newcomer goes into a folder, never into the same mailbox by dsync (UIDs would clash)."""
    from govmail.host import migrate

    state = {"version": 2, "sources": {"a@old.gov.vn": {"new": "n@new.gov.vn", "method": "m", "mode": "direct"}}}
    assert migrate.mode_for({"old": "a@old.gov.vn", "new": "n@new.gov.vn", "several": True}, state, "m") == \
        ("direct", None)
    assert migrate.mode_for({"old": "b@old.gov.vn", "new": "n@new.gov.vn", "predecessor": "old"}, state, "m") == \
        ("folder", "Thư cũ/b@old")
    assert migrate.mode_for({"old": "c@old.gov.vn", "new": "x@new.gov.vn"}, state, "m") == ("direct", None)
