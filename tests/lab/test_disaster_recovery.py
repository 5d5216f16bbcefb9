"""Disaster recovery, end to end: the mail host is destroyed and rebuilt from its data file and its last
backup, with nothing lost.

Deploy, create mail (Vietnamese subject, an attachment), a user's own password and Sieve filter, a
suspension and a quota; back up; destroy the container; boot a bare Debian 13 in its place; `pyinfra
inventories/<p>.py deploy.py`; `govmail backup restore-host`, while mail keeps arriving. Then every
message is back byte for byte, the user logs in with their password, the filter files mail again,
the suspension and quota hold, the TLS certificate is the one it had, the DKIM key is the published
one (what the host signs verifies against DNS), and the mail sent during the restore is there too.
It runs after the other lab tests (marker `after_the_others`): it rebuilds a host they share.
"""

from __future__ import annotations

import base64
import os
import re
import smtplib
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from govmail.lab import OUTSIDE_DOMAIN

from .conftest import PROVINCES, ROOT
from .mailing import arrived, imap_login, submission
from .managesieve import ManageSieve
from .test_dns import txt_records

pytestmark = pytest.mark.after_the_others(1)

HASHES = """
import hashlib, os, sys
root = "/var/vmail/%s/"
for d, _, files in os.walk(root):
    if d.endswith(("/cur", "/new")):
        for f in files:
            with open(os.path.join(d, f), "rb") as m:
                print(d[len(root):].split("/Maildir")[0], hashlib.sha256(m.read()).hexdigest())
"""


def message_hashes(h) -> set[str]:
    """(mailbox, sha256 of the message file) for every message of the province: what must survive."""
    return set(h.run("python3 -", input=HASHES % h.cfg.domain).stdout.split("\n")) - {""}


SIEVE_RULE = 'require ["fileinto", "mailbox"];\nif header :contains "subject" "[Báo cáo]" { fileinto :create "Bao cao"; }\n'

# Mail from another server (the province's own domain from elsewhere would fail DMARC).
SENDER = f"canbo@{OUTSIDE_DOMAIN}"


def send(h, to: str, subject: str, attachment: bytes | None = None, msgid: str | None = None) -> None:
    body = f"Subject: {subject}\r\nFrom: {SENDER}\r\nTo: {to}\r\nMIME-Version: 1.0\r\n"
    if msgid:  # the same on every retry of one message: a copy delivered twice can be told apart
        body += f"Message-ID: {msgid}\r\n"
    if attachment:
        b64 = base64.encodebytes(attachment).decode().replace("\n", "\r\n")
        body += ('Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n'
                 "Kèm theo công văn.\r\n--b\r\nContent-Type: application/pdf; name=\"cv.pdf\"\r\n"
                 "Content-Transfer-Encoding: base64\r\n\r\n" + b64 + "--b--\r\n")
    else:
        body += "Content-Type: text/plain; charset=utf-8\r\n\r\nNội dung.\r\n"
    s = smtplib.SMTP(h.name, 25, timeout=30)
    s.sendmail(SENDER, [to], body.encode())
    # Accepted: the message is the server's now. A connection lost at QUIT (a reload during the
    # restore ends idle smtpd processes) must not make the sender retry and send it twice.
    try:
        s.quit()
    except (smtplib.SMTPException, OSError):
        s.close()


def queue_ids(log: list[str], msgid: str) -> set[str]:
    """The Postfix queue IDs that carried a message (cleanup logs each one's Message-ID)."""
    return {m.group(1) for line in log if msgid in line and (m := re.search(r" ([0-9A-F]{8,}): message-id=", line))}


def delivery_story(h, address: str, subject: str) -> str:
    """What the host's logs say of each message whose subject holds `subject`: its copies in the
    mailbox (UID, Message-ID), and every log line of the Postfix queue IDs that carried it."""
    copies = h.run(f"doveadm -f tab fetch -u {address} 'uid guid hdr.message-id' mailbox INBOX "
                   f"header Subject '{subject}'", check=False).stdout
    log = h.run("cat /var/log/mail.log", check=False).stdout.splitlines()
    ids = set().union(*(queue_ids(log, mid) for mid in set(re.findall(r"<dr-[^>]+>", copies))))
    lines = [line for line in log if any(q in line for q in ids)
             or re.search(r"deferred|more than once|lost connection|Duplicate|reload|SIGHUP", line)]
    return f"copies in the mailbox:\n{copies}\nlog:\n" + "\n".join(lines[-200:])


# The province it rebuilds (tests/lab/conftest.py: no work runs beside it there).
TOUCHES = ["daknong" if "daknong" in PROVINCES else PROVINCES[0]]


def test_a_destroyed_mail_host_is_rebuilt_from_its_data_and_last_backup_with_nothing_lost(lab_hosts):
    province = TOUCHES[0]
    h = lab_hosts[province]
    people = [a for a in h.cfg.accounts if a.kind == "person" and a.status == "active"]
    user, idle, reader = people[20], people[21], people[22]

    # 1. State worth keeping.
    pw = h.set_password(user.address)  # changed by the user on the password page
    with ManageSieve(h.name) as ms:  # a filter the user made in their mail client
        ms.login(user.address, pw)
        ms.put_active("loc-thu", SIEVE_RULE)
    selector = f"{h.cfg.model.dkim.selector}._domainkey.{h.cfg.domain}"
    [published_dkim] = txt_records(selector)
    send(h, user.address, "Công văn khẩn: kế hoạch năm 2027", attachment=os.urandom(300_000))
    send(h, reader.address, "Giấy mời họp")
    h.store(f"UPDATE accounts SET status = 'suspended', status_since = {{now}} WHERE address = '{idle.address}'",
            write=True)
    for _ in range(40):
        if h.run(f"doveadm search -u {reader.address} mailbox INBOX header Subject 'Giấy mời họp'", check=False).stdout.strip():
            break
        time.sleep(0.5)
    before = message_hashes(h)
    assert any(line.startswith(f"{user.address.split('@')[0]} ") for line in before)
    cert = h.run("sha256sum /etc/govmail/tls/fullchain.pem").stdout.split()[0]
    # The web mail: its session key, and a user's settings in its own database.
    web_key = h.run("sha256sum /etc/govmail/webmail/des_key").stdout.split()[0]
    h.run("python3 -", input=(
        "import sqlite3\ndb = sqlite3.connect('/var/lib/dbconfig-common/sqlite3/roundcube/roundcube')\n"
        "db.execute(\"INSERT INTO users (username, mail_host, created, language, preferences) VALUES "
        f"('{user.address}', '127.0.0.1', datetime('now'), 'vi_VN', 's:9:\\\"khoi-phuc\\\";') "
        "ON CONFLICT (username, mail_host) DO UPDATE SET preferences = excluded.preferences\")\ndb.commit()\n"))
    quota = h.run(f"doveadm -f tab quota get -u {user.address}").stdout.splitlines()[1:]

    # 2. Back up, then lose the host.
    r = subprocess.run(["govmail", "backup", "run", province], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["govmail", "lab", "rebuild", h.name], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert h.run("test -e /var/lib/govmail/accounts.sqlite || test -e /etc/govmail/store.dsn",
                 check=False).returncode != 0  # bare indeed

    # 3. Rebuild: the main command on the bare host, then the restore while mail keeps arriving.
    r = subprocess.run([sys.executable, "-m", "pyinfra", "-y", f"inventories/{province}.py", "deploy.py"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    # The rebuild makes no DKIM key of its own: the published one waits for the restore, and DNS
    # (what `govmail dns` prints) keeps it meanwhile.
    assert "DKIM key" in r.stdout + r.stderr and "restore-host" in r.stdout + r.stderr
    assert h.run("ls /etc/govmail/dkim").stdout.strip() == ""
    assert txt_records(selector) == [published_dkim]
    during, errors, retried = [], [], []
    run = int(time.time())  # this run's subjects only

    def keep_sending():
        # As a sending MTA does: a transient failure (4xx, a dropped connection) is retried.
        for i in range(10):
            subject = f"Thư đến trong lúc khôi phục {run} {i}"
            for _attempt in range(5):
                try:
                    send(h, reader.address, subject, msgid=f"<dr-{run}-{i}@{OUTSIDE_DOMAIN}>")
                    during.append(subject)
                    break
                except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, ConnectionError) as e:
                    last = e
                except smtplib.SMTPRecipientsRefused as e:  # 4xx at RCPT (rspamd or Dovecot starting)
                    if any(code >= 500 for code, _ in e.recipients.values()):
                        errors.append(repr(e))
                        break
                    last = e
                except smtplib.SMTPResponseException as e:
                    if e.smtp_code >= 500:
                        errors.append(repr(e))
                        break
                    last = e
                retried.append(f"{subject}: {last!r}")
                time.sleep(1)
            else:
                errors.append(f"{subject}: still failing after 5 attempts: {last!r}")
            time.sleep(0.3)

    t = threading.Thread(target=keep_sending)
    t.start()
    r = subprocess.run(["govmail", "backup", "restore-host", province], capture_output=True, text=True)
    t.join()
    assert r.returncode == 0, r.stdout + r.stderr
    assert not errors, errors

    # 4. Nothing lost. (A delivery that met the restore's reload of Dovecot waits in Postfix's queue,
    # as any MTA's would: flush it rather than wait for the retry.)
    h.run("postqueue -f")
    for _ in range(60):
        n = h.run(f"doveadm search -u {reader.address} mailbox INBOX header Subject 'khôi phục {run}'", check=False).stdout
        if len(n.splitlines()) >= len(during):
            break
        time.sleep(0.5)
    after = message_hashes(h)
    missing = before - after
    assert not missing, f"{len(missing)} messages lost: {sorted(missing)[:5]}"
    # Mail sent during the restore is there, each message once. A second copy is allowed only where
    # SMTP itself makes one: the sender retried a message whose acceptance it never heard (two
    # queue entries, the first attempt ended by a lost connection). One queue entry delivered twice
    # would be the server's doing, and fails.
    story = f"retried: {retried}\n" + delivery_story(h, reader.address, f"khôi phục {run}")
    copies = Counter(re.findall(r"<dr-[^>]+>", h.run(
        f"doveadm -f tab fetch -u {reader.address} hdr.message-id mailbox INBOX header Subject 'khôi phục {run}'").stdout))
    assert set(copies) == {f"<dr-{run}-{i}@{OUTSIDE_DOMAIN}>" for i in range(10)} and len(during) == 10, story
    log = h.run("cat /var/log/mail.log").stdout.splitlines()
    for msgid, k in copies.items():
        if k > 1:
            i = msgid.split("-")[2].split("@")[0]
            lost = [r for r in retried if r.startswith(f"Thư đến trong lúc khôi phục {run} {i}: SMTPServerDisconnected")]
            assert len(queue_ids(log, msgid)) == k and lost, f"{msgid} delivered {k} times\n{story}"
    assert imap_login(h, user.address, pw) == "OK"  # the user's own password
    refused = imap_login(h, idle.address, "any")
    assert refused != "OK"
    assert h.run("/usr/local/lib/govmail/accounts list").stdout.count('"suspended"') >= 1
    assert h.run("sha256sum /etc/govmail/tls/fullchain.pem").stdout.split()[0] == cert
    assert h.run("sha256sum /etc/govmail/webmail/des_key").stdout.split()[0] == web_key
    prefs = h.run("python3 -c \"import sqlite3; print(sqlite3.connect('/var/lib/dbconfig-common/sqlite3/roundcube/"
                  f"roundcube').execute('SELECT preferences FROM users WHERE username = ?', ('{user.address}',))"
                  ".fetchall())\"").stdout
    assert "khoi-phuc" in prefs, prefs
    assert h.run(f"doveadm -f tab quota get -u {user.address}").stdout.splitlines()[1:] == quota
    assert "restored-host" in h.run("/usr/local/lib/govmail/accounts audit --limit 5").stdout

    # The user's Sieve filter is back and files mail as before.
    send(h, user.address, f"[Báo cáo] tuần {run}")
    assert arrived(h, user.address, f"tuần {run}", timeout=20, mailbox="Bao cao")

    # The DKIM key is the published one: DNS unchanged, and what the host signs now verifies
    # against it (rspamd checks a signed copy as if it came from elsewhere).
    assert txt_records(selector) == [published_dkim]
    with submission(h, user.address, pw) as s:
        s.sendmail(user.address, [reader.address],
                   f"From: {user.address}\r\nTo: {reader.address}\r\nSubject: Ký sau khôi phục {run}\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n\r\nNội dung.\r\n".encode())
    raw = arrived(h, reader.address, f"Ký sau khôi phục {run}", timeout=20)
    assert raw, "the signed message did not arrive"
    assert "DKIM-Signature:" in raw and f"d={h.cfg.domain}" in raw
    verdict = h.run(f"rspamc -i 198.51.100.7 -F {user.address} -r {reader.address} symbols", input=raw).stdout
    assert "R_DKIM_ALLOW" in verdict, verdict
