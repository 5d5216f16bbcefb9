"""The attachment inspector (govmail/host/inspector.py): programs found at any depth, by content."""

import gzip
import io
import tarfile
import zipfile

import pytest

from govmail.host.inspector import Inspector

ELF = b"\x7fELF\x02\x01\x01" + b"\0" * 120
PE = b"MZ\x90\x00" + b"\0" * 56 + b"\x80\0\0\0" + b"\0" * 64 + b"PE\0\0" + b"\0" * 100
PDF = b"%PDF-1.7\n" + b"0" * 200
RULES = {"blocked": ["exe", "bat"], "depth": 3, "too_deep": "refuse", "unreadable": "refuse", "encrypted": "flag",
         "macros": "refuse"}


def zip_of(**files) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name.replace("__", "."), data)
    return buf.getvalue()


def tgz_of(name: str, data: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


def verdict(name, data, **rules):
    return Inspector(dict(RULES, **rules)).inspect(name, data)


def test_a_program_inside_a_zip_inside_a_zip_is_refused_naming_its_path():
    v = verdict("ho-so.zip", zip_of(tai_lieu__zip=zip_of(chay__bin=ELF)))
    assert v["verdict"] == "refuse" and v["path"] == "ho-so.zip/tai_lieu.zip/chay.bin"
    assert "Linux program (ELF)" in v["reason"]


def test_a_program_renamed_txt_inside_a_zip_is_refused_by_its_content():
    v = verdict("bao-cao.zip", zip_of(ghi_chu__txt=PE))
    assert v["verdict"] == "refuse" and "ghi_chu.txt" in v["reason"] and "Windows program" in v["reason"]


def test_a_blocked_name_deep_inside_is_refused():
    v = verdict("a.zip", zip_of(b__zip=zip_of(cai_dat__bat=b"echo off")))
    assert v["verdict"] == "refuse" and v["reason"] == '"a.zip/b.zip/cai_dat.bat": .bat files are not accepted'


def test_scripts_in_a_tar_gz_and_office_macros_are_programs():
    assert "script (#!)" in verdict("x.tar.gz", tgz_of("run.sh.txt", b"#!/bin/sh\nrm -rf ~\n"))["reason"]
    docm = zip_of(**{"[Content_Types]__xml": b"<Types/>", "word/vbaProject__bin": b"\xd0\xcf\x11\xe0"})
    assert "macros" in verdict("hop.docm", docm)["reason"]
    assert verdict("hop.docx", zip_of(**{"[Content_Types]__xml": b"<Types/>", "word/document__xml": b"<w/>"}))[
        "verdict"] == "ok"
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100 + "_VBA_PROJECT".encode("utf-16-le") + b"\0" * 50
    assert verdict("cu.doc", ole)["verdict"] == "refuse"
    assert verdict("cu.doc", ole, macros="flag")["verdict"] == "flag"


def test_an_archive_nested_past_the_depth_is_handled_as_the_province_says():
    deep = zip_of(l2__zip=zip_of(l3__zip=zip_of(l4__zip=zip_of(x__pdf=PDF))))
    v = verdict("l1.zip", deep)
    assert v["verdict"] == "refuse" and "l1.zip/l2.zip/l3.zip/l4.zip" in v["reason"] and "deeper than 3" in v["reason"]
    assert verdict("l1.zip", deep, too_deep="flag")["verdict"] == "flag"
    assert verdict("l1.zip", deep, depth=4)["verdict"] == "ok"


def test_clean_nested_archives_pass():
    assert verdict("ok.zip", zip_of(a__zip=zip_of(bao_cao__pdf=PDF), b__txt=b"Kinh gui"))["verdict"] == "ok"


def test_a_zip_bomb_or_a_corrupt_archive_is_unreadable_and_handled_as_the_province_says():
    bomb = zip_of(zeros__bin=b"\0" * (64 * 1024 * 1024))
    assert len(bomb) < 100_000
    v = verdict("bomb.zip", bomb, max_bytes=16 * 1024 * 1024)
    assert v["verdict"] == "refuse" and "more than 16,777,216 bytes" in v["reason"]
    assert verdict("x.zip", b"PK\x03\x04garbage")["verdict"] == "refuse"
    assert verdict("x.zip", b"PK\x03\x04garbage", unreadable="flag")["verdict"] == "flag"
    assert verdict("x.rar", b"Rar!\x1a\x07\x00" + b"\0" * 40, unreadable="allow")["verdict"] == "ok"


@pytest.mark.parametrize("rule,expect", [("flag", "flag"), ("refuse", "refuse"), ("allow", "ok")])
def test_a_password_protected_file_deep_inside_follows_the_encrypted_rule(rule, expect):
    raw = bytearray(zip_of(secret__pdf=PDF))
    raw[6] |= 1
    raw[raw.rfind(b"PK\x01\x02") + 8] |= 1
    # The attachment's own encryption is judged by rspamd; one level down, by the inspector.
    assert verdict("kin.zip", bytes(raw), encrypted=rule)["verdict"] == "ok"
    assert verdict("ngoai.zip", zip_of(kin__zip=bytes(raw)), encrypted=rule)["verdict"] == expect


def test_a_hostile_member_name_reaches_the_verdict_as_one_clean_line():
    """Names inside an archive come from the sender; the verdict becomes the SMTP reply text."""
    v = verdict("a.zip", zip_of(**{'x\r\n250 OK"\\__exe': b"MZ"}))
    assert v["verdict"] == "refuse" and "\r" not in v["reason"] and "\n" not in v["reason"]
    assert "a.zip/x??250 OK??.exe" in v["reason"]
