"""A merged province (Lâm Đồng, with Đắk Nông and Bình Thuận folded in): old addresses keep working
through the transition and say where their owner went after it (issue 15)."""

from __future__ import annotations

import imaplib
import json
import re
import smtplib
import time

import pytest

from .conftest import PROVINCES
from .mailing import INSECURE, arrived, submission

pytestmark = pytest.mark.skipif("lamdong" not in PROVINCES, reason="needs the merged province lamdong in the lab")

OLD = "haunv.stnmt@daknong.gov.vn"  # Nguyễn Văn Hậu of Đắk Nông
NEW = "haunv.snnmt@lamdong.gov.vn"
FORWARDED = "haunv.stnmt@binhthuan.gov.vn"  # the other Nguyễn Văn Hậu: Bình Thuận forwards longer
FORWARDED_NEW = "haunva.snnmt@lamdong.gov.vn"
SENDER = "vanthu@outside.test"  # a sender from outside the lab zones: resolves, publishes no DMARC


@pytest.fixture(scope="module")
def ld(lab_hosts):
    return lab_hosts["lamdong"]


def send_25(h, sender, rcpt, subject) -> tuple[int, str]:
    """Mail from another state domain's server, as port 25 sees it: (RCPT reply code, text)."""
    with smtplib.SMTP(h.name, 25, timeout=60) as s:
        s.ehlo("mx.outside.test")
        s.mail(sender)
        code, text = s.rcpt(rcpt)
        if code == 250:
            s.data(f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nKính gửi anh.\r\n".encode())
        return code, text.decode()


def set_phase(h, old: str, ends_in: int, forward_in: int | None) -> None:
    """Move an old address's clock: the end of its transition (and of its forwarding) `ends_in`
    seconds from now, as the store's views see the time (a test cannot wait for 2027)."""
    fwd = "NULL" if forward_in is None else f"{{now}} + {forward_in}"
    h.store(f"UPDATE former SET ends = {{now}} + {ends_in}, forward_until = {fwd} WHERE old = '{old}'", write=True)


def test_mail_to_an_old_address_or_an_old_list_reaches_its_owner_in_the_merged_province(ld):
    stamp = int(time.time())
    assert send_25(ld, SENDER, OLD, f"Gửi địa chỉ cũ {stamp}")[0] == 250
    assert arrived(ld, NEW, f"Gửi địa chỉ cũ {stamp}", timeout=60)
    # An old list address reaches the merged list's members.
    assert send_25(ld, SENDER, "internal.stnmt@daknong.gov.vn", f"Gửi danh sách cũ {stamp}")[0] == 250
    assert arrived(ld, "longpx.snnmt@lamdong.gov.vn", f"Gửi danh sách cũ {stamp}", timeout=60)
    # An old domain is no catch-all: an address nobody had is refused.
    code, text = send_25(ld, SENDER, "khongco@daknong.gov.vn", "x")
    assert code == 550, text


def test_the_owner_logs_in_and_sends_with_the_old_or_the_new_address_during_the_transition(ld):
    pw = ld.set_password(NEW)
    for login in (OLD, NEW):
        imap = imaplib.IMAP4_SSL(ld.name, 993, ssl_context=INSECURE)
        imap.login(login, pw)
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK"
        imap.logout()
    with submission(ld, OLD, pw) as s:
        # Logged in with the old address, the owner sends as either (RCPT only: no mail leaves).
        for sender in (OLD, NEW):
            s.rset()
            assert s.mail(sender)[0] == 250 and s.rcpt(SENDER)[0] == 250, sender
        # ... and not as a colleague's old address.
        s.rset()
        assert s.mail("longpx.stnmt@daknong.gov.vn")[0] == 250 and s.rcpt(SENDER)[0] == 553


def test_mail_from_an_old_address_is_signed_for_the_old_domain_and_passes_dmarc_elsewhere(ld, lab_hosts):
    other = next(lab_hosts[p] for p in ("laichau", "thainguyen", "bacninh") if p in lab_hosts)
    to = [a.address for a in other.cfg.accounts if a.kind == "person" and a.status == "active"][3]
    pw = ld.set_password(NEW)
    subject = f"Thư từ địa chỉ cũ {int(time.time())}"
    with submission(ld, NEW, pw) as s:
        s.sendmail(OLD, [to], (f"From: {OLD}\r\nTo: {to}\r\nSubject: {subject}\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n\r\nThư vẫn đi từ địa chỉ cũ.\r\n").encode())
    got = arrived(other, to, subject, timeout=90)
    assert got, f"not delivered from {OLD} to {to}"
    results = " ".join(re.findall(r"^Authentication-Results:.*(?:\n[ \t].*)*", got, re.M))
    assert "dkim=pass" in results and "header.d=daknong.gov.vn" in results and "dmarc=pass" in results, results


def test_after_the_transition_an_old_address_is_refused_5_1_6_naming_the_new_one_or_still_forwarded(ld):
    pw = ld.set_password(NEW)
    try:
        set_phase(ld, OLD, -60, None)
        set_phase(ld, FORWARDED, -60, 3600)
        code, text = send_25(ld, SENDER, OLD, "sau chuyển tiếp")
        assert code == 550 and "5.1.6" in text and NEW in text, text
        # Login with the old address no longer opens the mailbox; the new address still does.
        imap = imaplib.IMAP4_SSL(ld.name, 993, ssl_context=INSECURE)
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(OLD, pw)
        imap.logout()
        imap = imaplib.IMAP4_SSL(ld.name, 993, ssl_context=INSECURE)
        imap.login(NEW, pw)
        imap.logout()
        # Bình Thuận's addresses are forwarded for longer (forward_until), then refused too.
        stamp = int(time.time())
        assert send_25(ld, SENDER, FORWARDED, f"Chuyển tiếp thêm {stamp}")[0] == 250
        assert arrived(ld, FORWARDED_NEW, f"Chuyển tiếp thêm {stamp}", timeout=60)
        set_phase(ld, FORWARDED, -120, -60)
        code, text = send_25(ld, SENDER, FORWARDED, "hết chuyển tiếp")
        assert code == 550 and "5.1.6" in text and FORWARDED_NEW in text, text
    finally:
        # The data file's dates again (the sync writes them from the directory document).
        ld.run("/usr/local/lib/govmail/accounts sync >/dev/null")
    assert send_25(ld, SENDER, OLD, "lại trong chuyển tiếp")[0] == 250


def test_mail_to_an_old_address_whose_new_mailbox_is_gone_is_refused_at_rcpt_not_bounced_later(ld):
    """A new mailbox deleted by the inactivity rule (or removed) while its old address is still in the
    data: mail to the old address is refused during the SMTP dialogue (5.1.1), so the sending server
    tells its user at once and no bounce is made here."""
    def queued() -> set[str]:
        return {json.loads(line)["queue_id"] for line in ld.run("postqueue -j").stdout.splitlines() if line.strip()}

    before = queued()
    try:
        ld.store(f"UPDATE accounts SET status = 'deleted' WHERE address = '{NEW}'", write=True)
        code, text = send_25(ld, SENDER, OLD, "đến hộp thư đã xóa")
        assert code == 550 and "5.1.1" in text, (code, text)
        # Nothing queued, nothing to bounce (a message of before may have left the queue meanwhile: the
        # count went 1 -> 0 in a CI run).
        assert queued() <= before
    finally:
        ld.store(f"UPDATE accounts SET status = 'active' WHERE address = '{NEW}'", write=True)
    assert send_25(ld, SENDER, OLD, "lại nhận được")[0] == 250


def test_the_merged_hosts_certificate_covers_the_old_mail_names(ld):
    import socket
    import ssl

    ctx = ssl.create_default_context(cafile=ld.cafile)
    for name in ("mail.lamdong.gov.vn", "mail.daknong.gov.vn", "mail.binhthuan.gov.vn"):
        with socket.create_connection((ld.ip, 993), timeout=30) as raw, ctx.wrap_socket(raw, server_hostname=name):
            pass  # the handshake verified the name
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection((ld.ip, 993), timeout=30) as raw, \
                ctx.wrap_socket(raw, server_hostname="mail.laichau.gov.vn"):
            pass
