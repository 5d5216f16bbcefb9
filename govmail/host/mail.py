"""Mail the host tools send: notices of the daily job, backup reports, quota warnings.

One message builder and one `send_mail` (through the local Postfix, which delivers it like any
mail). Subjects are RFC 2047 encoded with compat32's Header: each encoded word separated by
folding white space, which every client decodes. Standard library only.
"""

import subprocess
from email.header import Header
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid

SENDMAIL = "/usr/sbin/sendmail"


def message(to: str, subject: str, body: str, sender: str) -> bytes:
    msg = MIMEText(body, "plain", "utf-8")
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    msg["Subject"] = Header(subject, "utf-8")
    msg["Auto-Submitted"] = "auto-generated"
    return msg.as_bytes()


def send_mail(to: str, subject: str, body: str, sender: str, check: bool = True) -> None:
    """Hand a notice to the local Postfix. `check`: raise if sendmail refuses it."""
    subprocess.run([SENDMAIL, "-i", "-f", sender, to], input=message(to, subject, body, sender), check=check)
