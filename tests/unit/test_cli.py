"""The govmail command line, as an engineer types it (no host involved)."""

import shutil
from pathlib import Path

from govmail.cli import main
from govmail.data import available_provinces, load_province

DATA = Path(__file__).resolve().parents[2] / "group_data"


def test_validate_all_shipped_provinces(capsys):
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    # One line per data file in group_data/: a new province's file counts as well.
    assert out.count("✓") == len(available_provinces()) and "DN Art. 5.2" in out


def test_validate_reports_a_bad_file_and_fails(tmp_path, capsys, monkeypatch):
    shutil.copy(DATA / "defaults.yml", tmp_path)
    text = (DATA / "daknong.yml").read_text().replace("max_mb: 500", "max_mb: lots")
    (tmp_path / "daknong.yml").write_text(text)
    monkeypatch.setenv("GOVMAIL_DATA_DIR", str(tmp_path))
    assert main(["validate", "daknong"]) == 1
    assert "policy.quota.max_mb: 'lots'" in capsys.readouterr().out


def test_a_province_argument_is_a_key_of_the_data_directory_never_a_path(capsys):
    import pytest

    for arg in ("group_data/", "../../etc/passwd", str(DATA / "daknong.yml"), "DakNong", "nowhere"):
        with pytest.raises(SystemExit) as e:
            main(["validate", arg])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "bacninh, binhthuan, daknong" in err and arg[:40] in err


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
    assert '- {name: "Đỗ Thị Đào", address: "daodt.stnmt@bacninh.gov.vn", agency: "stnmt", role: "admin"}' in out
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


def test_import_refuses_hostile_cells_and_cleans_stray_spaces(tmp_path, capsys):
    """HR spreadsheets are hostile input: a cell with a line break, quotes, markup or a formula gets
    its row refused with file:line and column; stray spaces are cleaned with a warning; no value can
    become YAML syntax in the printed entries."""
    csv = tmp_path / "people.csv"
    csv.write_text(
        "Họ và tên,agency,role\n"
        '"Nguyễn Văn\nHậu",stnmt,user\n'                       # lines 2-3: a line break inside a cell
        '"Trần ""Văn"" An",stnmt,user\n'                      # 4: quotes
        "<script>alert(1)</script>,stnmt,user\n"               # 5: markup
        "=HYPERLINK(\"http://x\"),stnmt,user\n"                # 6: a formula
        "Lê Thị Hoa,stnmt,admin; password_hash: x\n"          # 7: symbols in the role
        "  Phạm   Văn  Bình ,stnmt,user\n"                    # 8: stray spaces: cleaned
        "Hoàng Thị Mai,stnmt,user,,,,extra\n",                # 9: too many columns
        encoding="utf-8")
    assert main(["import", "daknong", str(csv)]) == 1
    out, errs = capsys.readouterr()
    assert f"{csv}:3: column name: holds a line break" in errs
    assert f"{csv}:4: column name:" in errs and "holds '\"'" in errs
    assert f"{csv}:5: column name:" in errs and f"{csv}:6: column name:" in errs and "formula" in errs
    assert f"{csv}:7: column role:" in errs
    assert f"{csv}:9: 7 columns" in errs
    assert f"warning: {csv}:8: column name: spaces cleaned" in errs
    entries = [line for line in out.splitlines() if line.startswith("    - {")]
    assert entries == ['    - {name: "Phạm Văn Bình", address: "binhpv.stnmt@daknong.gov.vn", agency: "stnmt"}']
    assert "Traceback" not in errs


def test_import_refuses_a_file_that_is_not_csv_text_with_one_message(tmp_path, capsys):
    for name, data, expect in (("nul.csv", b"ab,c\n\0x,y\n", ":2: holds a NUL byte"),
                               ("latin1.csv", b"name\nL\xea Th\xe9,stnmt\n", ":2: not UTF-8 text"),
                               ("quote.csv", b'"unterminated,stnmt\n', "malformed CSV")):
        f = tmp_path / name
        f.write_bytes(data)
        assert main(["import", "daknong", str(f)]) == 2
        errs = capsys.readouterr().err
        assert expect in errs and "Traceback" not in errs, errs


def test_a_hostile_imap_source_is_refused_before_any_host_is_touched():
    import subprocess
    import sys

    for bad in ("mail.x.vn:99999", "mail.x.vn\nimapc_host = evil", "mail x.vn", "h:1:2"):
        r = subprocess.run([sys.executable, "-m", "govmail.cli", "migrate", "lamdong", "--from", "daknong",
                            "--imap", bad, "--dry-run"], capture_output=True, text=True)
        assert r.returncode == 2 and "--imap" in r.stderr and "Traceback" not in r.stderr, (bad, r.stderr)


def test_backup_status_says_none_failed_late_or_ok_before_the_facts():
    from govmail.cli.admin import backup_status_line

    cfg = load_province("laichau")
    ok = {"last_ok": "2026-12-05 02:30", "age_hours": 2.0, "late": False, "failed": False, "archives": 3,
          "original_size": 2**20}
    assert " ok " in backup_status_line(cfg, ok) and "3 archives on" in backup_status_line(cfg, ok)
    assert " NONE " in backup_status_line(cfg, {"last_ok": None, "late": True, "archives": 0})
    failed = dict(ok, failed=True, last_error="2026-12-05 03:00", error="borg: Connection refused")
    assert " FAILED " in backup_status_line(cfg, failed) and "Connection refused" in backup_status_line(cfg, failed)
    assert " LATE " in backup_status_line(cfg, dict(ok, late=True, age_hours=30.0))
    unreadable = dict(ok, archives=None, repo_error="Repository does not exist")
    assert "not readable: Repository does not exist" in backup_status_line(cfg, unreadable)
