"""Units without districts (2025 reform) and `govmail readdress`: every address that changes is
listed old -> new, written with the old one kept in `former:`, and the host renames the mailbox."""

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from govmail.data import DataError, load_province
from govmail.host import store as host_store
from govmail.merger import readdress

DATA = Path(__file__).resolve().parents[2] / "group_data"


def after_reform(text: str) -> str:
    """Lai Châu with Thành phố Lai Châu abolished: its wards directly under the province."""
    text = text.replace('''    - id: tplc
      name: Thành phố Lai Châu
      communes:
        - {id: tanphong, name: "Phường Tân Phong"}
        - {id: doankeet, name: "Phường Đoàn Kết"}
''', "")
    text = text.replace("  people:\n", '''  communes:
    - {id: tanphong, name: "Phường Tân Phong", departments: [{id: vp, name: Văn phòng HĐND và UBND}]}
    - {id: doankeet, name: "Phường Đoàn Kết"}
  people:
''', 1)
    return text.replace("agency: tplc}", "agency: tanphong}")


@pytest.fixture
def reformed(tmp_path):
    shutil.copy(DATA / "defaults.yml", tmp_path / "defaults.yml")
    old = tmp_path / "old.yml"
    shutil.copy(DATA / "laichau.yml", old)
    new = tmp_path / "laichau.yml"
    new.write_text(after_reform(old.read_text()))
    return new, old


def test_readdress_lists_every_person_and_unit_whose_address_changes_and_the_units_that_are_gone(reformed):
    new, old = reformed
    found, problems, gone = readdress.changes(new, old)
    pairs = {(c.what, c.old, c.new) for c in found}
    assert pairs == {
        ("person", "dathq.tplc@laichau.gov.vn", "dathq.tanphong@laichau.gov.vn"),
        ("person", "hoavt.tplc@laichau.gov.vn", "hoavt.tanphong@laichau.gov.vn"),
        ("unit", "tanphong.tplc@laichau.gov.vn", "tanphong@laichau.gov.vn"),
        ("unit", "doankeet.tplc@laichau.gov.vn", "doankeet@laichau.gov.vn"),
    }
    assert problems == [] and gone == ["tplc@laichau.gov.vn"]


def test_applied_the_old_addresses_become_aliases_and_nothing_is_lost(reformed):
    new, old = reformed
    found, _, _ = readdress.changes(new, old)
    text, by_hand = readdress.apply(new, found)
    assert by_hand == []
    readdress.write_checked(new, text)
    cfg = load_province(new, cache=False)
    assert cfg.former["dathq.tplc@laichau.gov.vn"] == "dathq.tanphong@laichau.gov.vn"
    assert cfg.former["tanphong.tplc@laichau.gov.vn"] == "tanphong@laichau.gov.vn"
    assert "vp.tanphong@laichau.gov.vn" in {a.address for a in cfg.accounts}
    before = {a.address for a in load_province(DATA / "laichau.yml", cache=False).accounts}
    after = {a.address for a in cfg.accounts} | set(cfg.former)
    assert before - after == {"tplc@laichau.gov.vn"}  # the one listed as gone, for a decision
    # A second run finds nothing more to do.
    assert readdress.changes(new, old)[0] == []


def test_parent_first_order_writes_the_parent_unit_first(tmp_path):
    shutil.copy(DATA / "defaults.yml", tmp_path / "defaults.yml")
    text = (DATA / "daknong.yml").read_text().replace("    check: error\n", "    check: error\n    unit_order: parent_first\n", 1)
    (tmp_path / "daknong.yml").write_text(text)
    with pytest.raises(DataError) as e:
        load_province(tmp_path / "daknong.yml", cache=False)
    # Staff of a district department now get <name>.<district>.<department>@.
    assert any("expected binhtv.gianghia.tnmt@daknong.gov.vn" in str(p) for p in e.value.problems), e.value
    found, problems, _ = readdress.changes(tmp_path / "daknong.yml", DATA / "daknong.yml")
    pairs = {(c.old, c.new) for c in found}
    assert ("binhtv.tnmt.gianghia@daknong.gov.vn", "binhtv.gianghia.tnmt@daknong.gov.vn") in pairs
    assert ("tnmt.gianghia@daknong.gov.vn", "gianghia.tnmt@daknong.gov.vn") in pairs
    assert ("vp.ubnd@daknong.gov.vn", "ubnd.vp@daknong.gov.vn") in pairs


def test_the_store_renames_a_readdressed_mailbox_keeping_its_password_and_mail(tmp_path, monkeypatch):
    monkeypatch.setattr(host_store, "DIRECTORY", str(tmp_path / "directory.json"))
    monkeypatch.setattr(host_store, "DB", str(tmp_path / "accounts.sqlite"))
    monkeypatch.setattr(host_store, "LEGACY_USERS", str(tmp_path / "legacy"))
    monkeypatch.setattr(host_store, "HANDOUT", str(tmp_path / "handout"))
    monkeypatch.setitem(host_store.contract.PATHS, "vmail", str(tmp_path / "vmail"))
    monkeypatch.setattr(host_store, "kick", lambda a: None)  # no Dovecot here: nobody to log out

    def sync(address, former):
        acc = {"address": address, "name": "Đạt", "kind": "person", "quota_mb": 100, "owner": None}
        (tmp_path / "directory.json").write_text(json.dumps(
            {"version": 4, "domain": "laichau.gov.vn", "accounts": [acc], "lists": {}, "former": former},
            ensure_ascii=False))
        host_store.sync(None)

    sync("dathq.tplc@laichau.gov.vn", [])
    db = sqlite3.connect(tmp_path / "accounts.sqlite")
    db.execute("UPDATE accounts SET password='{BLF-CRYPT}$2y$10$own'")
    db.commit()
    mail = tmp_path / "vmail" / "laichau.gov.vn" / "dathq.tplc" / "Maildir" / "cur"
    mail.mkdir(parents=True)
    (mail / "1.msg").write_text("thư cũ")
    sync("dathq.tanphong@laichau.gov.vn", [["dathq.tplc@laichau.gov.vn", "dathq.tanphong@laichau.gov.vn", None, None]])
    rows = db.execute("SELECT address, password, status FROM accounts").fetchall()
    assert rows == [("dathq.tanphong@laichau.gov.vn", "{BLF-CRYPT}$2y$10$own", "active")]
    moved = tmp_path / "vmail" / "laichau.gov.vn" / "dathq.tanphong" / "Maildir" / "cur" / "1.msg"
    assert moved.read_text() == "thư cũ"
    assert db.execute("SELECT user FROM dovecot_passdb WHERE login='dathq.tplc@laichau.gov.vn'").fetchall() == [
        ("dathq.tanphong@laichau.gov.vn",)]
