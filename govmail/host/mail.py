"""Mail the host tools send: notices of the daily job, backup reports, quota warnings, the outage
notice, the monthly and annual reports.

One message builder (`message`) and one way out (`send`, through the local Postfix, which delivers
it like any mail; on a store apart, through the mail host's). Subjects are RFC 2047 encoded with compat32's Header: each encoded word separated
by folding white space, which every client decodes. Every message says it is automatic
(Auto-Submitted: auto-generated, RFC 3834), so no vacation reply answers it. Standard library only.
"""

import os
import smtplib
import subprocess
from email import encoders
from email.header import Header
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid

SENDMAIL = "/usr/sbin/sendmail"


def message(to: str, subject: str, body: str, sender: str, attachments=()) -> bytes:
    """`to`: the To header (an address, several joined with ", ", or "undisclosed-recipients:;").
    `attachments`: (file name, text subtype such as "csv" or "html", content) each."""
    msg = MIMEText(body, "plain", "utf-8")
    if attachments:
        text, msg = msg, MIMEMultipart()
        msg.attach(text)
        for name, subtype, content in attachments:
            part = MIMEBase("text", subtype)
            part.set_payload(content)
            encoders.encode_base64(part)
            part.add_header("Content-Disposition", "attachment", filename=name)
            msg.attach(part)
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    msg["Subject"] = Header(subject, "utf-8")
    msg["Auto-Submitted"] = "auto-generated"
    return msg.as_bytes()


def send(msg: bytes, sender: str, recipients: list[str], check: bool = True) -> None:
    """Hand a message to the local Postfix for `recipients` (the envelope; the headers may say
    otherwise). `check`: raise if sendmail refuses it. A store apart has no Postfix: its Dovecot's
    `submission_host` (the mail host's listener for it) takes the message."""
    if os.path.exists(SENDMAIL):
        subprocess.run([SENDMAIL, "-i", "-f", sender, "--", *recipients], input=msg, check=check)
        return
    try:
        where = subprocess.run(["doveconf", "-h", "submission_host"], capture_output=True, text=True,
                               check=True).stdout.strip()
        host, _, port = where.rpartition(":")
        with smtplib.SMTP(host, int(port), timeout=60) as s:
            s.sendmail(sender, recipients, msg)
    except (OSError, ValueError, subprocess.CalledProcessError, smtplib.SMTPException):
        if check:
            raise


def send_mail(to: str, subject: str, body: str, sender: str, check: bool = True) -> None:
    """A plain notice to one address."""
    send(message(to, subject, body, sender), sender, [to], check=check)
