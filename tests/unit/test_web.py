"""The web side without a host: the filters of its file syntaxes (PHP, nginx, XML), the directory
for the portal, `govmail notice`'s arguments, and whom the password service counts a request for."""

import argparse
import csv
import io
import xml.etree.ElementTree as ET

import pytest

from govmail.cli import publish as webcli
from govmail.data import load_province
from govmail.data.text import UnsafeValue, nginx, php, xml
from govmail.host.passwd_service import basic_credentials, effective_client
from govmail.publish import portal
from govmail.service import Context
from govmail.services import web, webmail


def test_php_strings_escape_quotes_and_backslashes_and_refuse_control_characters():
    assert php("it's a \\ test") == "it\\'s a \\\\ test"
    with pytest.raises(UnsafeValue):
        php("a\nb")


def test_nginx_values_refuse_variables_braces_and_semicolons():
    assert nginx('say "hi"') == 'say \\"hi\\"'
    for bad in ("$host", "a;b", "a{b", "a}b", "a\nb"):
        with pytest.raises(UnsafeValue):
            nginx(bad)


def test_xml_text_escapes_markup():
    assert xml('<a href="x">&\'</a>') == "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"


def test_folding_ignores_case_and_vietnamese_diacritics():
    assert portal.fold("Nguyễn Văn Hậu") == "nguyen van hau"
    assert portal.fold("ĐẶNG Đức") == "dang duc"


@pytest.mark.parametrize("parts", [("Nguyễn Văn Hậu", "Sở Tài chính", "", "Trưởng phòng", "hau@x.gov.vn"),
                                   ("\u0301Ấ", "ΟΔΥΣΣΕΥΣ", "ΣΑΣ", "a\u0323\u0302", "İstanbul ǅ"),
                                   ("", "", "\u200dĐ", "e\u0301\u0301", "Σ")])
def test_folding_part_by_part_gives_the_folding_of_the_whole(parts):
    # The directory folds its values one by one (a 50,000-entry directory repeats them): the search
    # text must be the same as folding the joined line, combining marks and Greek's final sigma included.
    portal.fold.cache_clear()
    assert portal.fold_words(*parts) == portal.fold.__wrapped__(" ".join(parts))


def test_vcard_lines_fold_at_75_octets_whatever_their_characters():
    for line in ("x" * 75, "x" * 76, "đ" * 18, "đ" * 38, "🙂" * 18, "🙂" * 19, "a" + "ữ" * 30):
        folded = portal._fold_line(line)
        assert folded.replace("\r\n ", "") == line
        assert all(len(p.encode()) <= 75 for p in folded.split("\r\n"))
        assert folded == line if len(line.encode()) <= 75 else "\r\n " in folded


@pytest.mark.parametrize("key", ["thainguyen", "lamdong", "binhthuan"])
def test_the_directory_lists_every_active_mailbox_once_with_its_unit_and_no_secret(key):
    cfg = load_province(key)
    entries = portal.entries(cfg)
    assert sorted(e.address for e in entries) == sorted(a.address for a in cfg.accounts if a.status == "active")
    rows = list(csv.reader(io.StringIO(portal.to_csv(cfg).decode("utf-8-sig"))))
    assert len(rows) == len(entries) + 1 and rows[0][-1].startswith("Địa chỉ")
    text = b"".join(portal.files(cfg).values()).decode()
    for a in cfg.accounts:
        if a.password_hash:
            assert a.password_hash not in text
    assert "BLF-CRYPT" not in text and "quota" not in text.lower()
    # Grouped: all of a unit's entries together.
    seen, last = set(), None
    for e in entries:
        if e.unit != last:
            assert e.unit not in seen, f"{e.unit} appears in two places"
            seen.add(e.unit)
            last = e.unit


def test_a_spreadsheet_formula_in_a_name_stays_text_and_vcard_values_are_escaped_and_folded():
    cfg = load_province("laichau")
    e = portal.Entry("=HYPERLINK(\"http://evil\")", "a@laichau.gov.vn", "Sở; Ban, Phòng", "", "Trưởng\nphòng " * 8,
                     "person")
    row = list(csv.reader(io.StringIO(portal.to_csv(cfg, [e]).decode("utf-8-sig"))))[1]
    assert row[0].startswith("'=")
    card = portal.to_vcard(cfg, [e]).decode()
    assert "ORG:Lai Châu;Sở\\; Ban\\, Phòng" in card.replace("\r\n ", "")
    assert all(len(line.encode()) <= 75 for line in card.split("\r\n"))
    assert "\nphòng" not in card.replace("\r\n", "")


def test_the_directory_page_escapes_what_it_shows():
    cfg = load_province("laichau")
    e = portal.Entry("<script>alert(1)</script>", "a@laichau.gov.vn", "U", "", "", "person")
    page = portal.to_html(cfg, [e]).decode()
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page


def test_every_web_file_renders_for_every_province_and_the_autoconfig_is_xml():
    for key in ("bacninh", "daknong", "laichau", "thainguyen", "lamdong", "binhthuan"):
        cfg = load_province(key)
        ctx = Context(cfg=cfg, host_name=cfg.mail_host, roles=("mail",), probes={})
        files = {f.dest: f.content for f in web.service(ctx).files + webmail.service(ctx).files}
        root = ET.fromstring(files["/var/lib/govmail/www/mail/config-v1.1.xml"])
        assert {d.text for d in root.iter("domain")} == set(cfg.domains)
        ET.fromstring(files["/var/lib/govmail/www/autodiscover.xml"])
        assert f"server_name {cfg.mail_host} autoconfig.{cfg.domain}".encode() in files["/etc/nginx/conf.d/govmail.conf"]
        assert b"$config['language'] = 'vi_VN';" in files["/etc/roundcube/config.inc.php"]


def test_notice_arguments_are_typed():
    assert webcli.notice_text("  Bảo trì   máy chủ ") == "Bảo trì máy chủ"
    for bad in ("", "x" * 501, "a\x1bb"):
        with pytest.raises(argparse.ArgumentTypeError):
            webcli.notice_text(bad)
    t = webcli.recovery_time("2026-12-03T08:00")
    assert t.utcoffset().total_seconds() == 7 * 3600
    assert webcli.recovery_time("2026-12-03T08:00+00:00").utcoffset().total_seconds() == 0
    with pytest.raises(argparse.ArgumentTypeError):
        webcli.recovery_time("tomorrow")


def test_only_the_web_mail_on_the_loopback_may_name_the_client_and_only_as_an_address():
    assert effective_client("127.0.0.1", "10.1.2.3") == "10.1.2.3"
    assert effective_client("10.9.9.9", "10.1.2.3") == "10.9.9.9"
    assert effective_client("127.0.0.1", "user:evil") == "127.0.0.1"
    assert effective_client("::1", "") == "::1"


def test_the_admin_pages_login_header_is_read_strictly():
    import base64

    def basic(raw: bytes) -> str:
        return "Basic " + base64.b64encode(raw).decode()

    assert basic_credentials(basic("Quản.Trị@x.gov.vn:mật:khẩu".encode())) == ("quản.trị@x.gov.vn", "mật:khẩu")
    assert basic_credentials("basic " + base64.b64encode(b"a@x.gov.vn:pw").decode()) == ("a@x.gov.vn", "pw")
    for bad in ("", "Bearer abc", "Basic", "Basic !!!notbase64", basic(b"no-colon"), basic(b":pw"), basic(b"a@x:"),
                basic(b"\xff\xfe:pw"), "Basic " + "A" * 5000):
        assert basic_credentials(bad) is None, bad
