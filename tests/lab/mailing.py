"""Mail as the lab tests send and find it: to port 25 as another mail server would (`send_25`,
`offer`, `rcpt_reply`), as a user's client on submission (`submission`), found by its Message-ID
(`count`, `delivered`). Tests that prove something of the SMTP dialogue itself (STARTTLS, AUTH, a
pipelined session) speak it themselves."""

from __future__ import annotations

import imaplib
import smtplib
import ssl
import time
import uuid
from email.message import EmailMessage

OUTSIDE_HELO = "mx.outside.test"
INSECURE = ssl._create_unverified_context()  # the lab's own certificates; TLS itself is tested in test_tls.py


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


def offer(h, m: EmailMessage, sender: str | None = None, timeout: float = 120) -> tuple[int, str]:
    """Send `m` over port 25 as another mail server would: (0, "") when accepted, else the refusal's
    (code, text), at whichever step the host refused it (MAIL, RCPT or DATA)."""
    with smtplib.SMTP(h.name, 25, timeout=timeout) as s:
        s.ehlo(OUTSIDE_HELO)
        try:
            s.send_message(m, from_addr=sender)
            return 0, ""
        except smtplib.SMTPRecipientsRefused as e:
            code, text = next(iter(e.recipients.values()))
            return code, text.decode(errors="replace")
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
            return e.smtp_code, e.smtp_error.decode(errors="replace")


def rcpt_reply(h, sender: str, rcpt: str, size: int | None = None) -> int:
    """The code port 25 answers RCPT TO:<rcpt> with (or MAIL FROM's, when that is refused)."""
    with smtplib.SMTP(h.name, 25, timeout=60) as s:
        s.ehlo(OUTSIDE_HELO)
        code, _ = s.mail(sender, options=[f"SIZE={size}"] if size else [])
        return s.rcpt(rcpt)[0] if code == 250 else code


def submission(h, user: str, password: str, port: int = 587) -> smtplib.SMTP:
    """A user's client logged in on submission (587 with STARTTLS); use it with `with`."""
    s = smtplib.SMTP(h.name, port, timeout=30)
    s.starttls(context=INSECURE)
    s.login(user, password)
    return s


def arrived(h, to: str, subject: str, timeout: float = 30, mailbox: str = "INBOX") -> str:
    """The text of the last message with this Subject in the mailbox, once it is there ('' if it
    never arrived in `timeout` seconds)."""
    for _ in range(int(timeout * 2)):
        uid = h.run(f"doveadm search -u {to} mailbox '{mailbox}' header Subject '{subject}'", check=False).stdout.split()
        if uid:
            return h.run(f"doveadm fetch -u {to} text mailbox '{mailbox}' uid {uid[-1]}").stdout
        time.sleep(0.5)
    return ""


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


def imap_login(h, user, pw) -> str:
    """An IMAP login over 993 (AUTHENTICATE PLAIN, UTF-8): "OK", or the server's refusal."""
    m = imaplib.IMAP4_SSL(h.name, 993, ssl_context=ssl._create_unverified_context())
    try:
        return m.authenticate("PLAIN", lambda _: b"\0" + user.encode() + b"\0" + pw.encode())[0]
    except imaplib.IMAP4.error as e:
        return str(e)
    finally:
        try:
            m.logout()
        except Exception:
            pass


def mx_records(domain: str) -> list[tuple[int, str]]:
    """(preference, host) of the domain's MX records as the lab resolver gives them (dnspython: no
    `dig` needed on the machine running the tests)."""
    import dns.resolver

    from govmail import lab

    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [lab.GATEWAY]
    return [(x.preference, str(x.exchange).rstrip(".")) for x in r.resolve(domain, "MX")]


def mx_hosts(domain: str) -> list[str]:
    """The domain's MX hosts as another mail server finds them in the lab's DNS: by preference, hosts
    of equal preference in random order (RFC 5321 5.1: spread the load)."""
    import random

    found = mx_records(domain)
    random.shuffle(found)
    return [name for _, name in sorted(found, key=lambda x: x[0])]


def relay(domain: str, m: EmailMessage, sender: str = "tester@outside.test", timeout: float = 10) -> str | None:
    """Hand `m` to the domain as a sending mail server does: each MX in turn until one accepts it.
    A host that does not answer or answers 4xx is passed over; a 5xx refusal raises. Returns the MX
    that took it, or None when none did (the sender keeps it and tries again later)."""
    for host in mx_hosts(domain):
        try:
            with smtplib.SMTP(host, 25, timeout=timeout, local_hostname=OUTSIDE_HELO) as s:
                s.send_message(m, from_addr=sender)
                return host
        except smtplib.SMTPResponseException as e:
            if e.smtp_code >= 500:
                raise
        except smtplib.SMTPRecipientsRefused as e:
            if min(code for code, _ in e.recipients.values()) >= 500:
                raise
        except (OSError, smtplib.SMTPServerDisconnected):
            pass
    return None
