"""Content filtering with rspamd, exercised by real SMTP clients."""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def message(h, to, subject, body) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = f"postmaster@{h.cfg.domain}", to, subject
    m.set_content(body)
    return m


def test_the_gtube_spam_test_message_is_refused_at_smtp_time_and_ordinary_mail_passes(host):
    h = host
    to = next(a.address for a in h.cfg.accounts if a.kind == "person" and a.status == "active")
    stamp = str(int(time.time()))
    with smtplib.SMTP(h.name, 25, timeout=60) as s:
        s.ehlo("client.lab.test")
        try:
            s.send_message(message(h, to, f"Quảng cáo {stamp}", f"Mua ngay!\n{GTUBE}\n"))
            refused = None
        except smtplib.SMTPDataError as e:
            refused = e
        s.send_message(message(h, to, f"Thư thường {stamp}", "Kính gửi anh chị, xin gửi lịch họp.\n"))
    assert refused is not None and refused.smtp_code == 554, refused
    for _ in range(40):
        if h.run(f"doveadm search -u {to} mailbox INBOX header Subject 'Thư thường {stamp}'", check=False).stdout.strip():
            break
        time.sleep(0.5)
    assert h.run(f"doveadm search -u {to} mailbox INBOX header Subject 'Thư thường {stamp}'").stdout.strip()
    assert not h.run(f"doveadm search -u {to} mailbox INBOX header Subject 'Quảng cáo {stamp}'", check=False).stdout.strip()
