"""Mail as the lab tests send and find it: one message to port 25 from outside, found by its Message-ID."""

from __future__ import annotations

import smtplib
import time
import uuid
from email.message import EmailMessage


def send_25(h, to: str, subject: str, body: str = "Nội dung thử / test body\n", sender: str = "tester@outside.test",
            msgid: str | None = None) -> str:
    """One message from another mail server (port 25, no login) to `to` on host `h`; returns its
    Message-ID. A refusal raises smtplib's error with the host's reply."""
    msgid = msgid or f"<{uuid.uuid4().hex}@outside.test>"
    m = EmailMessage()
    m["From"], m["To"], m["Subject"], m["Message-ID"] = sender, to, subject, msgid
    m.set_content(body)
    with smtplib.SMTP(h.ip, 25, timeout=60) as s:
        s.send_message(m)
    return msgid


def count(h, address: str, msgid: str, mailbox: str = "*") -> int:
    """How many messages with this Message-ID the mailbox holds (every folder by default)."""
    r = h.run(f"doveadm search -u {address} mailbox '{mailbox}' header Message-ID '{msgid}'", check=False)
    return len([x for x in r.stdout.splitlines() if x.strip()])


def delivered(h, address: str, msgid: str, timeout: float = 60, mailbox: str = "*") -> int:
    """Wait until the message is in the mailbox; the number of copies there."""
    end = time.monotonic() + timeout
    while True:
        n = count(h, address, msgid, mailbox)
        if n or time.monotonic() > end:
            return n
        time.sleep(0.5)
