"""What users notice, proven with real clients (smtplib, imaplib, poplib) against each lab host.

TLS is verified for real: each test trusts the host's own (self-signed) certificate, fetched from
the host, and checks the host name against it.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import poplib
import smtplib
import ssl
import time
import uuid
from base64 import b64encode
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from govmail.data import MiB
from govmail.host.contract import PATHS

SUBJECT = "Thông báo lịch họp — Sở Tài nguyên và Môi trường"
BODY = "Kính gửi các đồng chí,\nĐề nghị dự họp lúc 8 giờ 30, thứ Hai, tại phòng họp số 2.\nTrân trọng.\n"


@pytest.fixture
def tls(host) -> ssl.SSLContext:
    pem = host.run(f"cat {PATHS['tls_cert']}").stdout
    ctx = ssl.create_default_context(cadata=pem)
    return ctx


def people(cfg, n=2):
    return [a for a in cfg.accounts if a.kind == "person" and a.status == "active"][:n]


@pytest.fixture
def sender(host):
    """An active person with a password set by the operator: (address, password)."""
    a = people(host.cfg, 1)[0]
    return a.address, host.set_password(a.address)


@pytest.fixture
def reader(host):
    a = people(host.cfg, 2)[1]
    return a.address, host.set_password(a.address)


def message(frm, to, subject=SUBJECT, body=BODY, attachment_mib=0) -> EmailMessage:
    m = EmailMessage()
    m["From"] = frm
    m["To"] = to
    m["Subject"] = subject
    m["Message-ID"] = make_msgid(idstring=uuid.uuid4().hex, domain=frm.rpartition("@")[2])
    m.set_content(body)
    if attachment_mib:
        m.add_attachment(b"\x00" * (attachment_mib * MiB), maintype="application", subtype="pdf", filename="bao-cao.pdf")
    return m


def submit(host, tls, user, pw, msg, port=587):
    if port == 465:
        s = smtplib.SMTP_SSL(host.name, 465, context=tls, timeout=60)
    else:
        s = smtplib.SMTP(host.name, port, timeout=60)
        s.starttls(context=tls)
    with s:
        s.login(user, pw)
        return s.send_message(msg)


def wait_imap(host, tls, user, pw, message_id, timeout=30) -> email.message.EmailMessage:
    end = time.monotonic() + timeout
    with imaplib.IMAP4_SSL(host.name, 993, ssl_context=tls) as m:
        m.login(user, pw)
        while True:
            m.select("INBOX")
            typ, data = m.search(None, "HEADER", "Message-ID", message_id)
            if data[0]:
                num = data[0].split()[-1]
                typ, got = m.fetch(num, "(RFC822)")
                return email.message_from_bytes(got[0][1], policy=email.policy.default)
            if time.monotonic() > end:
                raise AssertionError(f"{message_id} did not reach {user} over IMAP within {timeout} s")
            time.sleep(0.5)


def test_submission_587_starttls_delivers_vietnamese_mail_intact_over_imap_and_pop3(host, tls, sender, reader):
    msg = message(sender[0], reader[0])
    refused = submit(host, tls, *sender, msg, port=587)
    assert refused == {}
    got = wait_imap(host, tls, *reader, msg["Message-ID"])
    assert got["Subject"] == SUBJECT
    assert got.get_content().replace("\r\n", "\n") == BODY
    p = poplib.POP3_SSL(host.name, 995, context=tls, timeout=30)
    try:
        p.user(reader[0])
        p.pass_(reader[1])
        count, _ = p.stat()
        found = [
            email.message_from_bytes(b"\r\n".join(p.retr(i)[1]), policy=email.policy.default)
            for i in range(1, count + 1)
        ]
    finally:
        p.quit()
    match = [m for m in found if m["Message-ID"] == msg["Message-ID"]]
    # POP3 RETR ends at the last line break, so compare without it.
    assert match and match[0]["Subject"] == SUBJECT
    assert match[0].get_content().replace("\r\n", "\n").rstrip("\n") == BODY.rstrip("\n")


def test_submission_465_implicit_tls_delivers(host, tls, sender, reader):
    msg = message(sender[0], reader[0], subject="Gửi qua cổng 465")
    assert submit(host, tls, *sender, msg, port=465) == {}
    assert wait_imap(host, tls, *reader, msg["Message-ID"])["Subject"] == "Gửi qua cổng 465"


def attachment_provinces():
    from govmail.data import load_province

    from .conftest import PROVINCES

    return [p for p in PROVINCES if load_province(p).policy.attachment.max_mb]


@pytest.mark.parametrize("province", attachment_provinces())
def test_attachment_at_the_limit_is_accepted_and_one_mib_more_is_refused_at_smtp_time(province, lab_hosts, request):
    host = lab_hosts[province]
    pem = host.run(f"cat {PATHS['tls_cert']}").stdout
    tls = ssl.create_default_context(cadata=pem)
    sender_addr, reader_addr = (a.address for a in people(host.cfg, 2))
    pw = host.set_password(sender_addr)
    rpw = host.set_password(reader_addr)
    limit = host.cfg.policy.attachment.max_mb

    ok = message(sender_addr, reader_addr, subject=f"Tệp {limit} MB", attachment_mib=limit)
    assert submit(host, tls, sender_addr, pw, ok) == {}
    got = wait_imap(host, tls, reader_addr, rpw, ok["Message-ID"], timeout=60)
    att = next(got.iter_attachments())
    assert att.get_filename() == "bao-cao.pdf" and len(att.get_content()) == limit * MiB

    big = message(sender_addr, reader_addr, subject=f"Tệp {limit + 1} MB", attachment_mib=limit + 1)
    data = big.as_bytes().replace(b"\n", b"\r\n")
    with smtplib.SMTP(host.name, 587, timeout=120) as s:
        s.starttls(context=tls)
        s.login(sender_addr, pw)
        # Declared size: refused at MAIL FROM.
        code, reply = s.mail(sender_addr, [f"SIZE={len(data)}"])
        assert code == 552 and b"exceeds" in reply.lower(), (code, reply)
        s.rset()
        # Undeclared size: refused at the end of DATA, before anything is queued.
        assert s.mail(sender_addr)[0] == 250
        assert s.rcpt(reader_addr)[0] == 250
        code, reply = s.data(data)
        assert code == 552 and b"5.3.4" in reply and b"too big" in reply, (code, reply)


def test_full_mailbox_is_refused_at_rcpt_with_a_clear_reply(host):
    cfg = host.cfg
    target = min((a for a in cfg.accounts if a.kind == "person" and a.status == "active"), key=lambda a: a.quota_mb)
    other = next(a for a in people(cfg, 3) if a.address != target.address)
    fill = (target.quota_mb + 1) * MiB
    # Fill the mailbox past its quota on the host (quota not enforced for this one save).
    host.run(
        "python3 -c \"import sys; o=sys.stdout.buffer; o.write(b'Subject: filler\\n\\n'); "
        f"[o.write(b'x'*1023+b'\\n') for _ in range({fill // 1024})]\" | "
        f"doveadm -o quota_enforce=no save -u {target.address}"
    )
    try:
        with smtplib.SMTP(host.name, 25, timeout=60) as s:
            s.ehlo("client.lab.test")
            assert s.mail(other.address)[0] == 250
            code, reply = s.rcpt(target.address)
            assert code == 552 and b"5.2.2" in reply and b"full" in reply.lower(), (code, reply)
            # Others still receive.
            assert s.rcpt(other.address)[0] == 250
    finally:
        host.run(f"doveadm expunge -u {target.address} mailbox INBOX header Subject filler ; "
                 f"doveadm expunge -u {target.address} mailbox INBOX header Auto-Submitted auto-generated ; "
                 f"doveadm quota recalc -u {target.address}")


def test_auth_is_refused_without_tls(host):
    cfg = host.cfg
    user = people(cfg, 1)[0].address
    cred = b64encode(f"\0{user}\0not-the-password".encode()).decode()
    with smtplib.SMTP(host.name, 587, timeout=30) as s:
        s.ehlo("client.lab.test")
        assert "auth" not in s.esmtp_features, "AUTH offered before STARTTLS"
        code, reply = s.docmd("AUTH", f"PLAIN {cred}")
        assert code == 530 and b"STARTTLS" in reply, (code, reply)
    with smtplib.SMTP(host.name, 25, timeout=30) as s:
        s.ehlo("client.lab.test")
        assert "auth" not in s.esmtp_features, "AUTH offered on port 25"
    with imaplib.IMAP4(host.name, 143) as m:
        assert "LOGINDISABLED" in m.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            m.login(user, "not-the-password")
    p = poplib.POP3(host.name, 110, timeout=30)
    try:
        with pytest.raises(poplib.error_proto):
            p.user(user)
            p.pass_("not-the-password")
    finally:
        p.quit()


@pytest.mark.parametrize("outside", ["someone@gmail.com", "other-province"])
def test_unauthenticated_relay_to_another_domain_is_refused(host, lab_hosts, outside):
    cfg = host.cfg
    if outside == "other-province":
        others = [h.cfg for h in lab_hosts.values() if h.cfg.domain != cfg.domain]
        outside = people(others[0], 1)[0].address if others else "someone@example.gov.vn"
    with smtplib.SMTP(host.name, 25, timeout=30) as s:
        s.ehlo("client.lab.test")
        assert s.mail(people(cfg, 1)[0].address)[0] == 250
        code, reply = s.rcpt(outside)
        assert code == 554 and b"Relay access denied" in reply, (code, reply)


def test_list_delivers_to_every_member(host, tls, sender):
    cfg = host.cfg
    address, members = next(iter(cfg.aliases.items()))
    msg = message(sender[0], address, subject=f"Gửi danh sách {address}")
    assert submit(host, tls, *sender, msg) == {}
    mid = msg["Message-ID"]
    check = " ; ".join(
        f"doveadm search -u {m} mailbox INBOX header Message-ID '{mid}' | grep -q . || echo MISSING {m}"
        for m in members
    )
    end = time.monotonic() + 60
    while True:
        missing = host.run(check).stdout.split()
        if not missing or time.monotonic() > end:
            break
        time.sleep(1)
    assert not missing, f"{address}: not delivered to {' '.join(missing[1::2])}"


def test_owner_is_warned_by_mail_when_the_mailbox_passes_a_warning_level(host):
    cfg = host.cfg
    target = min((a for a in cfg.accounts if a.kind == "person" and a.status == "active"), key=lambda a: a.quota_mb)
    level = min(cfg.policy.quota.warn_percent)
    fill_kib = target.quota_mb * 1024 * (level + 5) // 100
    host.run(f"doveadm expunge -u {target.address} mailbox INBOX header Auto-Submitted auto-generated ; true")
    host.run(
        "python3 -c \"import sys; o=sys.stdout.buffer; o.write(b'Subject: filler\\n\\n'); "
        f"[o.write(b'x'*1023+b'\\n') for _ in range({fill_kib})]\" | doveadm save -u {target.address}"
    )
    try:
        end = time.monotonic() + 20
        while True:
            out = host.run(f"doveadm fetch -u {target.address} text mailbox INBOX header Auto-Submitted auto-generated").stdout
            if out.strip() or time.monotonic() > end:
                break
            time.sleep(0.5)
        assert out.strip(), f"no quota warning reached {target.address}"
        warning = email.message_from_string(out.split("text:\n", 1)[1], policy=email.policy.default)
        assert warning["Subject"] == f"Cảnh báo: hộp thư đã dùng {level}% dung lượng / Mailbox {level}% full"
        assert f"Hộp thư {target.address} đã sử dụng {level}% dung lượng" in warning.get_content()
    finally:
        host.run(f"doveadm expunge -u {target.address} mailbox INBOX header Subject filler ; "
                 f"doveadm expunge -u {target.address} mailbox INBOX header Auto-Submitted auto-generated ; "
                 f"doveadm quota recalc -u {target.address}")


def test_the_hosts_own_mail_to_root_reaches_the_postmaster(host):
    """System mail (`sendmail root`, as cron or unattended-upgrades send it) is read, not bounced."""
    subject = f"system notice {uuid.uuid4().hex[:8]}"
    host.run(f"printf 'Subject: {subject}\\n\\nfrom the host\\n' | /usr/sbin/sendmail -i root")
    end = time.monotonic() + 20
    while True:
        found = host.run(f"doveadm search -u {host.cfg.postmaster} mailbox INBOX header Subject '{subject}'",
                         check=False).stdout.strip()
        if found or time.monotonic() > end:
            break
        time.sleep(0.5)
    assert found, f"mail to root did not reach {host.cfg.postmaster}: " + host.run(
        "grep -F 'orig_to=<root>' /var/log/mail.log | tail -3", check=False).stdout
