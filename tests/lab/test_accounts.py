"""Account store on the host: data edits never lose a password or a message."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .mailing import imap_login, rcpt_reply

ROOT = Path(__file__).resolve().parents[2]


def deploy_with(province: str, data_dir: Path | None) -> None:
    env = dict(os.environ)
    if data_dir:
        env["GOVMAIL_DATA_DIR"] = str(data_dir)
    r = subprocess.run([sys.executable, "-m", "pyinfra", "-y", f"inventories/{province}.py", "deploy.py"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]


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
        assert rcpt_reply(h, f"postmaster@{h.cfg.domain}", person.address) == 250

        # 2. The line leaves the data file: not a deletion. Login refused, SMTP refuses, mail on disk.
        del people[i]
        f.write_text(yaml.safe_dump(d, allow_unicode=True, sort_keys=False))
        deploy_with(province, data)
        refused = imap_login(h, person.address, pw)
        assert refused != "OK" and "no longer in the directory" in refused, refused
        assert rcpt_reply(h, f"postmaster@{h.cfg.domain}", person.address) == 550
        assert h.run(f"doveadm search -u {person.address} mailbox INBOX ALL").stdout.strip()
    finally:
        # 3. Back in the data: the same password works and the old mail is there.
        deploy_with(province, None)
    assert imap_login(h, person.address, pw) == "OK"
    assert h.run(f"doveadm search -u {person.address} mailbox INBOX header Subject 'giữ lại'").stdout.strip()


def rotation_provinces():
    from govmail.data import load_province

    from .conftest import PROVINCES

    return [p for p in PROVINCES if load_province(p).policy.password.user_max_age_days]


@pytest.mark.parametrize("province", rotation_provinces())
def test_password_rotation_warns_by_mail_before_expiry_then_refuses_login_until_reset(province, lab_hosts):
    h = lab_hosts[province]
    pol = h.cfg.policy.password
    person = [a for a in h.cfg.accounts if a.kind == "person" and a.status == "active" and a.role == "user"][3]
    pw = h.set_password(person.address)
    [[t0]] = h.store(f"SELECT password_set FROM accounts WHERE address = '{person.address}'")

    # The daily job, run as if it were 10 days before expiry, mails one warning (and only one).
    when = t0 + (pol.user_max_age_days - 10) * 86400
    out = h.run(f"/usr/local/lib/govmail/accounts daily --now {when}").stdout
    assert person.address in out
    assert person.address not in h.run(f"/usr/local/lib/govmail/accounts daily --now {when + 86400}").stdout
    found = ""
    for _ in range(40):
        found = h.run(f"doveadm search -u {person.address} mailbox INBOX header Auto-Submitted auto-generated").stdout
        if found.strip():
            break
        time.sleep(0.5)
    assert found.strip(), "no expiry warning delivered"

    # Past the limit: login refused with the reason.
    h.store(f"UPDATE accounts SET password_set = password_set - {(pol.user_max_age_days + 1) * 86400} "
            f"WHERE address = '{person.address}'", write=True)
    refused = imap_login(h, person.address, pw)
    assert refused != "OK" and "Password expired" in refused, refused
    # An operator's reset restores it; the audit log says who did what.
    pw2 = h.set_password(person.address)
    assert imap_login(h, person.address, pw2) == "OK"
    log = h.run("/usr/local/lib/govmail/accounts audit --limit 1000").stdout
    assert f"password-reset\t{person.address}" in log and f"warn-expiry\t{person.address}" in log
