"""A broken template never reaches a live file or stops a service."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIVE = "/etc/postfix/main.cf /etc/postfix/master.cf /etc/dovecot/dovecot.conf"


@pytest.mark.parametrize(
    "template,broken_line,live_file",
    [
        ("postfix/main.cf.j2", "smtpd_tls_security_levl = may", "/etc/postfix/main.cf"),
        ("dovecot/dovecot.conf.j2", "ssl_min_protocl = TLSv1.2", "/etc/dovecot/dovecot.conf"),
    ],
)
def test_a_template_that_does_not_validate_stops_the_deploy_and_changes_nothing(
    lab_hosts, tmp_path, template, broken_line, live_file
):
    province, h = next(iter(lab_hosts.items()))
    before = h.run(f"sha1sum {LIVE}").stdout
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    t = templates / template
    t.write_text(t.read_text() + f"\n# a typo an engineer might make\n{broken_line}\n")

    r = subprocess.run(
        [sys.executable, "-m", "pyinfra", "-y", f"inventories/{province}.py", "deploy.py"],
        cwd=ROOT, env=dict(os.environ, GOVMAIL_TEMPLATES=str(templates)), capture_output=True, text=True,
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0, "the deploy went on with a broken template"
    assert f"{live_file} NOT installed" in out and broken_line.split()[0] in out, out[-3000:]
    assert h.run(f"sha1sum {LIVE}").stdout == before, "a live configuration file changed"
    assert h.run(f"ls {live_file}.govmail-new", check=False).returncode != 0, "staged copy left behind"
    assert h.run("postfix status", check=False).returncode == 0
    assert h.run("systemctl is-active dovecot").stdout.strip() == "active"


def imap_greeting(h) -> str:
    import imaplib
    import ssl

    with imaplib.IMAP4_SSL(h.name, 993, ssl_context=ssl.create_default_context(cafile=h.cafile)) as m:
        return m.welcome.decode()


def test_a_deploy_that_stops_after_writing_a_file_applies_it_on_the_next_run(lab_hosts, tmp_path):
    """dovecot.conf changes, then a later file (rspamd's) does not validate and stops the deploy
    before Dovecot's reload; the next good deploy must reload Dovecot all the same."""
    province, h = next(iter(lab_hosts.items()))
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    dovecot = templates / "dovecot/dovecot.conf.j2"
    dovecot.write_text(dovecot.read_text() + '\nlogin_greeting = govmail pending-reload test\n')
    rspamd = templates / "rspamd/local.d/actions.conf.j2"
    good_rspamd = rspamd.read_text()
    rspamd.write_text(good_rspamd + "\nreject = {\n")

    def deploy():
        return subprocess.run(
            [sys.executable, "-m", "pyinfra", "-y", f"inventories/{province}.py", "deploy.py"],
            cwd=ROOT, env=dict(os.environ, GOVMAIL_TEMPLATES=str(templates)), capture_output=True, text=True)

    try:
        r = deploy()
        assert r.returncode != 0 and "actions.conf NOT installed" in r.stdout + r.stderr
        assert "pending-reload test" in h.run("cat /etc/dovecot/dovecot.conf").stdout  # written, not reloaded
        assert "pending-reload test" not in imap_greeting(h)
        markers = h.run("ls /var/lib/govmail/pending/").stdout.split()
        # Dovecot's file is in and waits for its reload; nothing of rspamd, whose file did not validate.
        assert "dovecot-reload" in markers and not [m for m in markers if m.startswith("rspamd")], markers
        rspamd.write_text(good_rspamd)
        r = deploy()
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        # Reloaded although dovecot.conf did not change in this run: the live greeting is the new one.
        assert "pending-reload test" in imap_greeting(h)
        assert h.run("ls /var/lib/govmail/pending/").stdout.strip() == ""
    finally:
        r = subprocess.run([sys.executable, "-m", "pyinfra", "-y", f"inventories/{province}.py", "deploy.py"],
                           cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]


def test_a_postfix_whose_smtpd_dies_is_not_taken_as_running_and_the_next_deploy_repairs_it(lab_hosts):
    """Once main.cf held another file: Postfix's master ran on and systemd said active while every
    smtpd died at start and clients hung. A deploy now takes Postfix as running only when port 25
    greets, so it sees the fault, puts the planned main.cf back and restarts Postfix."""
    import smtplib

    from govmail.services.postfix import SMTP_GREETS

    province, h = next(iter(lab_hosts.items()))
    h.run("echo '<?php' >> /etc/postfix/main.cf")
    assert h.run(SMTP_GREETS, check=False).returncode != 0
    assert h.run("systemctl is-active postfix").stdout.strip() == "active"  # what fooled the operator
    r = subprocess.run([sys.executable, "-m", "pyinfra", "-y", f"inventories/{province}.py", "deploy.py"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "restart postfix (not answering)" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    with smtplib.SMTP(h.ip, 25, timeout=30) as s:
        assert s.ehlo()[0] == 250


def test_a_message_handed_over_twice_lands_once_and_mail_without_a_message_id_is_always_kept(lab_hosts):
    """Postfix delivers at least once: stopped or crashed between Dovecot's save and its own record,
    it delivers the message again when it is back (seen in tests/lab/test_several_mx.py). The store
    keeps the first copy only (Sieve `duplicate`, before the user's filters); mail that carries no
    Message-ID cannot be told apart and is never dropped."""
    import smtplib
    import uuid

    from .mailing import count, send_25

    province, h = next(iter(lab_hosts.items()))
    user = next(a.address for a in h.cfg.accounts if a.kind == "person" and a.status == "active")
    msgid, subject = f"<twice-{uuid.uuid4().hex}@outside.test>", f"no-id-{uuid.uuid4().hex[:10]}"
    for _ in range(2):
        send_25(h, user, "Gửi hai lần", msgid=msgid)
    time.sleep(1)
    raw = f"From: a@outside.test\r\nTo: {user}\r\nSubject: {subject}\r\n\r\nx\r\n".encode()
    for _ in range(2):  # no Message-ID header at all (Postfix adds none to mail from other servers)
        with smtplib.SMTP(h.ip, 25, timeout=60) as s:
            s.sendmail("a@outside.test", [user], raw)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kept = len(h.run(f"doveadm search -u {user} mailbox INBOX header Subject {subject}").stdout.split("\n")) - 1
        if kept == 2 and count(h, user, msgid):
            break
        time.sleep(1)
    time.sleep(2)
    assert count(h, user, msgid) == 1
    assert kept == 2
