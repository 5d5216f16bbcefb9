"""The govmail command line, as an engineer types it (no host involved)."""

import shutil
from pathlib import Path

from govmail.cli import main
from govmail.data import available_provinces

DATA = Path(__file__).resolve().parents[2] / "group_data"


def test_validate_all_shipped_provinces(capsys):
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    # One line per data file in group_data/: a new province's file counts as well.
    assert out.count("✓") == len(available_provinces()) and "DN Art. 5.2" in out


def test_validate_reports_a_bad_file_and_fails(tmp_path, capsys):
    shutil.copy(DATA / "defaults.yml", tmp_path)
    text = (DATA / "daknong.yml").read_text().replace("max_mb: 500", "max_mb: lots")
    (tmp_path / "daknong.yml").write_text(text)
    assert main(["validate", str(tmp_path / "daknong.yml")]) == 1
    assert "policy.quota.max_mb: 'lots'" in capsys.readouterr().out


def test_address_prints_the_rule_address(capsys):
    assert main(["address", "bacninh", "Trần Văn Minh", "--agency", "stnmt"]) == 0
    assert capsys.readouterr().out.strip() == "minhtv.stnmt@bacninh.gov.vn"


def test_address_refuses_an_unknown_agency(capsys):
    assert main(["address", "bacninh", "Trần Văn Minh", "--agency", "nowhere"]) == 2
    assert "'nowhere' is not in the directory" in capsys.readouterr().err


def test_import_prints_directory_lines_and_exits_1_when_a_row_needs_a_decision(tmp_path, capsys):
    csv = tmp_path / "people.csv"
    csv.write_text("Họ và tên,agency,role\nNguyễn Văn Hậu,stnmt,user\nĐỗ Thị Đào,stnmt,admin\n")
    assert main(["import", "bacninh", str(csv)]) == 1  # Nguyễn Văn Hậu clashes: BN decides by hand
    out, errs = capsys.readouterr()
    assert "- {name: Đỗ Thị Đào, address: daodt.stnmt@bacninh.gov.vn, agency: stnmt, role: admin}" in out
    assert "BN Art. 4.b" in errs
    assert main(["import", "daknong", str(csv)]) == 0
    assert "haunvb.stnmt@daknong.gov.vn" in capsys.readouterr().out


def test_passwd_needs_a_server_for_a_domain_it_has_no_data_for(capsys, monkeypatch):
    monkeypatch.setenv("GOVMAIL_PASSWORD", "x")
    monkeypatch.setenv("GOVMAIL_NEW_PASSWORD", "y")
    assert main(["passwd", "--from-env", "someone@elsewhere.gov.vn"]) == 2
    assert "--server https://HOST:PORT/" in capsys.readouterr().err


def test_passwd_checks_the_provinces_rule_before_sending_anything(capsys, monkeypatch):
    monkeypatch.setenv("GOVMAIL_PASSWORD", "Khởi-tạo-123")
    monkeypatch.setenv("GOVMAIL_NEW_PASSWORD", "yeu")
    # --server points nowhere: the refusal must come before any connection.
    assert main(["passwd", "--from-env", "--server", "https://127.0.0.1:9/", "haunv.stnmt@laichau.gov.vn"]) == 1
    err = capsys.readouterr().err
    assert "shorter than 8 characters" in err and "no upper-case letter, no digit, no special character" in err
    assert "LC Art. 4.1" in err
