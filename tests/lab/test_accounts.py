"""Account store on the host: data edits never lose a password or a message."""

from __future__ import annotations

import imaplib
import os
import shutil
import smtplib
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def deploy_with(province: str, data_dir: Path | None) -> None:
    env = dict(os.environ)
    if data_dir:
        env["GOVMAIL_DATA_DIR"] = str(data_dir)
    r = subprocess.run([sys.executable, "-m", "pyinfra", "-y", f"inventories/{province}.py", "deploy.py"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]


def imap_login(h, user, pw) -> str:
    m = imaplib.IMAP4_SSL(h.name, 993, ssl_context=__import__("ssl")._create_unverified_context())
    try:
        return m.authenticate("PLAIN", lambda _: b"\0" + user.encode() + b"\0" + pw.encode())[0]
    except imaplib.IMAP4.error as e:
        return str(e)
    finally:
        try:
            m.logout()
        except Exception:
            pass


def rcpt(h, address) -> int:
    with smtplib.SMTP(h.name, 25, timeout=30) as s:
        s.ehlo("client.lab.test")
        s.mail(f"postmaster@{h.cfg.domain}")
        return s.rcpt(address)[0]


def test_cancelling_or_dropping_a_mailbox_refuses_login_keeps_its_mail_and_restoring_brings_it_back(lab_hosts, tmp_path):
    province, h = next(iter(lab_hosts.items()))
    person = [a for a in h.cfg.accounts if a.kind == "person" and a.status == "active"][-1]
    pw = h.set_password(person.address)
    h.run(f"printf 'Subject: giữ lại\\n\\nthư cũ\\n' | doveadm save -u {person.address}")
    assert imap_login(h, person.address, pw) == "OK"

    data = tmp_path / "group_data"
    shutil.copytree(ROOT / "group_data", data)
    f = data / f"{province}.yml"
    d = yaml.safe_load(f.read_text())
    people = d["directory"]["people"]
    i = next(n for n, p in enumerate(people) if p["address"] == person.address)
    try:
        # 1. Cancelled in the data: login refused with the reason; mail kept; mail still accepted.
        people[i]["status"] = "cancelled"
        f.write_text(yaml.safe_dump(d, allow_unicode=True, sort_keys=False))
        deploy_with(province, data)
        refused = imap_login(h, person.address, pw)
        assert refused != "OK" and "Mailbox cancelled" in refused, refused
        assert rcpt(h, person.address) == 250

        # 2. The line leaves the data file: not a deletion. Login refused, SMTP refuses, mail on disk.
        del people[i]
        f.write_text(yaml.safe_dump(d, allow_unicode=True, sort_keys=False))
        deploy_with(province, data)
        refused = imap_login(h, person.address, pw)
        assert refused != "OK" and "no longer in the directory" in refused, refused
        assert rcpt(h, person.address) == 550
        assert h.run(f"doveadm search -u {person.address} mailbox INBOX ALL").stdout.strip()
    finally:
        # 3. Back in the data: the same password works and the old mail is there.
        deploy_with(province, None)
    assert imap_login(h, person.address, pw) == "OK"
    assert h.run(f"doveadm search -u {person.address} mailbox INBOX header Subject 'giữ lại'").stdout.strip()
