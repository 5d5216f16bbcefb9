"""First login, the user's own password change, hand-over and the daily life-cycle job, on real hosts.

Users change passwords on the host's password service (HTTPS), with `govmail passwd`, or in a browser
form; Dovecot refuses IMAP/POP3 with the reason, Postfix refuses SMTP AUTH, until they do.
"""

from __future__ import annotations

import base64
import os
import poplib
import smtplib
import ssl
import subprocess
import time

import pytest

from govmail.data import load_province
from govmail.data.facts import password_url
from govmail.data.passwords import generate

from .conftest import PROVINCES
from .mailing import rcpt_reply
from .test_accounts import imap_login

TOOL = "/usr/local/lib/govmail/accounts"
INSECURE = ssl._create_unverified_context()


def smtp_auth(h, user, pw) -> int:
    """AUTH PLAIN on submission (587, STARTTLS), UTF-8 as real clients send it: the reply code."""
    with smtplib.SMTP(h.name, 587, timeout=30) as s:
        s.starttls(context=INSECURE)
        s.ehlo("client.lab.test")
        blob = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()
        return s.docmd("AUTH", "PLAIN " + blob)[0]


def pop3_login(h, user, pw) -> str:
    p = poplib.POP3_SSL(h.name, 995, context=INSECURE, timeout=30)
    try:
        p.user(user)
        return p.pass_(pw).decode()  # poplib sends UTF-8
    except poplib.error_proto as e:
        return str(e)
    finally:
        try:
            p.quit()
        except Exception:
            pass


def wait_for_mail(h, address, search) -> str:
    for _ in range(40):
        found = h.run(f"doveadm search -u {address} mailbox INBOX {search}", check=False).stdout.strip()
        if found:
            return found
        time.sleep(0.5)
    return ""


def first_login_provinces():
    return [p for p in PROVINCES if load_province(p).policy.password.change_at_first_login]


def person(h, n, role="user"):
    return [a for a in h.cfg.accounts if a.kind == "person" and a.status == "active" and a.role == role][n]


@pytest.mark.parametrize("province", first_login_provinces())
def test_an_issued_password_is_refused_on_imap_pop3_and_smtp_until_the_user_changes_it_with_govmail_passwd(
        province, lab_hosts):
    h = lab_hosts[province]
    a = person(h, 4).address
    issued = h.admin_reset(a)
    url = password_url(h.cfg)

    refused = imap_login(h, a, issued)
    assert refused != "OK" and "Change your password before first use" in refused and url in refused, refused
    refused = pop3_login(h, a, issued)
    assert "Change your password before first use" in refused, refused
    assert smtp_auth(h, a, issued) == 535

    # The user's own change, no administrator: `govmail passwd` against the host's password service,
    # verifying the host's certificate. A weak new password is refused with the province's rule.
    def passwd(current, new):
        return subprocess.run(
            ["govmail", "passwd", "--from-env", "--cafile", h.cafile, a],
            env=dict(os.environ, GOVMAIL_PASSWORD=current, GOVMAIL_NEW_PASSWORD=new), capture_output=True, text=True)

    r = passwd(issued, "yeu")
    assert r.returncode == 1 and "shorter than" in r.stderr and h.cfg.policy.password.article in r.stderr
    r = passwd(issued + "x", "Mật-khẩu-Mới-9")
    assert r.returncode == 1 and "Wrong address or current password" in r.stderr
    r = passwd(issued, "Mật-khẩu-Mới-9")
    assert r.returncode == 0, r.stderr

    assert imap_login(h, a, "Mật-khẩu-Mới-9") == "OK"
    assert pop3_login(h, a, "Mật-khẩu-Mới-9").startswith("+OK")
    assert smtp_auth(h, a, "Mật-khẩu-Mới-9") == 235
    assert imap_login(h, a, issued) != "OK"
    log = h.run(f"{TOOL} audit --limit 20").stdout
    assert f"{a} (self)\tpassword-changed\t{a}" in log


def test_without_a_first_login_rule_an_issued_password_works_at_once(lab_hosts):
    free = [p for p in PROVINCES if not load_province(p).policy.password.change_at_first_login]
    if not free:
        pytest.skip("every province in this lab run has a first-login rule")
    h = lab_hosts[free[0]]
    a = person(h, 4).address
    assert imap_login(h, a, h.admin_reset(a)) == "OK"


def test_repeated_wrong_current_passwords_are_throttled(lab_hosts):
    h = lab_hosts[PROVINCES[0]]
    a = person(h, 6).address
    codes = [h.change_own_password(a, f"sai-{i}", "Mật-khẩu-Mới-9")[0] for i in range(6)]
    assert codes[:5] == [403] * 5 and codes[5] == 429
    assert "too many failures" in h.run("journalctl -u govmail-passwd --no-pager -n 50").stdout


def rotation_province():
    return next((p for p in PROVINCES if load_province(p).policy.password.user_max_age_days), None)


def test_an_expired_password_is_refused_with_where_to_change_it_and_its_user_changes_it(lab_hosts):
    province = rotation_province()
    if province is None:
        pytest.skip("no province with password rotation in this lab run")
    h = lab_hosts[province]
    a = person(h, 7).address
    pw = h.set_password(a)
    days = h.cfg.policy.password.user_max_age_days + 1
    h.store(f"UPDATE accounts SET password_set = password_set - {days * 86400} WHERE address = '{a}'", write=True)
    refused = imap_login(h, a, pw)
    assert "Password expired, change it at " + password_url(h.cfg) in refused, refused
    assert smtp_auth(h, a, pw) == 535
    status, result = h.change_own_password(a, pw, "Mật-khẩu-Mới-9")
    assert status == 200 and result["was"] == "expired", result
    assert imap_login(h, a, "Mật-khẩu-Mới-9") == "OK"


def hand_over_provinces():
    return [p for p in PROVINCES if load_province(p).key in ("daknong", "thainguyen")]


@pytest.mark.parametrize("province", hand_over_provinces())
def test_hand_over_gives_an_agency_mailbox_with_all_its_mail_to_the_new_head_and_locks_out_the_former(
        province, lab_hosts):
    h = lab_hosts[province]
    agency = next(a for a in h.cfg.accounts if a.kind == "agency").address
    former = h.set_password(agency)
    h.run(f"printf 'Subject: hồ sơ bàn giao\\n\\nnội dung\\n' | doveadm save -u {agency}")
    new = generate(h.cfg.policy.password) + "-Mới"
    r = subprocess.run(["govmail", "hand-over", agency, "--to", "Trần Văn Mới", "--from-env"],
                       env=dict(os.environ, GOVMAIL_PASSWORD=new), capture_output=True, text=True)
    assert r.returncode == 0 and "all of its mail kept" in r.stdout, r.stderr
    assert imap_login(h, agency, former) != "OK"  # the former head is out
    assert "Change your password" in imap_login(h, agency, new)  # the new head sets their own
    status, _ = h.change_own_password(agency, new, new + "2")
    assert status == 200 and imap_login(h, agency, new + "2") == "OK"
    assert h.run(f"doveadm search -u {agency} mailbox INBOX header Subject 'hồ sơ bàn giao'").stdout.strip()
    assert "hand-over\t" + agency + "\tto Trần Văn Mới; content kept" in h.run(f"{TOOL} audit --limit 20").stdout
    # A person's mailbox is not handed over: that is a reset.
    r = subprocess.run(["govmail", "hand-over", person(h, 0).address, "--to", "Ai đó", "--from-env"],
                       env=dict(os.environ, GOVMAIL_PASSWORD=new), capture_output=True, text=True)
    assert r.returncode == 2 and "personal mailbox" in r.stderr


MONTH = 30.44 * 86400
UNIT = "govmail-daily.service"


def run_daily_unit_at(h, when: int):
    """Start the daily timer's service as systemd runs it, its clock set to `when` by a runtime drop-in."""
    dropin = f"/run/systemd/system/{UNIT}.d"
    assert h.run("systemctl is-enabled govmail-daily.timer").stdout.strip() == "enabled"
    h.run(f"mkdir -p {dropin} && printf '[Service]\\nEnvironment=GOVMAIL_CLOCK={when}\\n' > {dropin}/clock.conf"
          " && systemctl daemon-reload")
    try:
        r = h.run(f"systemctl start {UNIT}", check=False)
        assert r.returncode == 0, h.run(f"journalctl -u {UNIT} -n 30 --no-pager", check=False).stdout
    finally:
        h.run(f"rm -rf {dropin} && systemctl daemon-reload")


@pytest.mark.skipif("laichau" not in PROVINCES, reason="Lai Châu's rule (LC Art. 8.1) is not in this lab run")
def test_lai_chau_daily_job_suspends_after_6_months_notifies_then_deletes_12_months_after_the_notice(lab_hosts):
    h = lab_hosts["laichau"]
    idle = next(a for a in h.cfg.accounts if a.kind == "person" and a.manager and a.superior and a.status == "active"
                and a.manager != h.cfg.policy.inactivity.superior)
    busy = person(h, 8)
    assert busy.address != idle.address
    pw_idle, pw_busy = h.set_password(idle.address), h.set_password(busy.address)
    h.run(f"printf 'Subject: thư cũ\\n\\nnội dung\\n' | doveadm save -u {idle.address}")
    t0 = int(time.time())
    suspend_at, delete_at = t0 + int(7 * MONTH), t0 + int(19.5 * MONTH)
    # Everyone else "logged in" a day before the second run: only `idle` is idle.
    others = " ".join(a.address.split("@")[0] for a in h.cfg.accounts if a.address != idle.address)

    def everyone_else_logged_in():  # again after each real login, which stamps the real time
        h.run(f"cd /var/vmail/laichau.gov.vn && for l in {others}; do install -d -o vmail -g vmail $l && "
              f"touch -d @{delete_at - 86400} $l/.govmail-last-login && chown vmail:vmail $l/.govmail-last-login; "
              f"done; rm -f {idle.address.split('@')[0]}/.govmail-last-login")

    everyone_else_logged_in()
    listing = h.run(f"{TOOL} daily --dry-run --now {suspend_at}").stdout
    assert idle.address in listing and busy.address not in listing
    assert imap_login(h, idle.address, pw_idle) == "OK"  # a dry run changes nothing

    # 7 months: the timer's own unit, started with its clock 7 months ahead, suspends the idle mailbox
    # and tells the managing unit (LC Art. 8.1); an active mailbox still logs in.
    run_daily_unit_at(h, suspend_at)
    refused = imap_login(h, idle.address, pw_idle)
    assert refused != "OK" and "suspended" in refused
    assert imap_login(h, busy.address, pw_busy) == "OK"
    assert wait_for_mail(h, idle.manager, f"header Subject '{idle.address}'"), "no suspension notice"

    # 12 months after the notice: deleted; agency and superior told; mail gone; SMTP refuses it.
    everyone_else_logged_in()
    assert idle.address not in h.run(f"{TOOL} daily --now {delete_at - int(MONTH)}").stdout
    h.run(f"{TOOL} daily --now {delete_at}")
    assert h.run(f"test -d /var/vmail/laichau.gov.vn/{idle.address.split('@')[0]}", check=False).returncode != 0
    assert rcpt_reply(h, f"postmaster@{h.cfg.domain}", idle.address) == 550
    for told in (idle.manager, idle.superior):
        assert wait_for_mail(h, told, "header Subject 'deleted'"), f"no deletion notice to {told}"
    assert imap_login(h, busy.address, pw_busy) == "OK"
    log = h.run(f"{TOOL} audit --limit 50").stdout
    assert f"suspended\t{idle.address}" in log and f"deleted\t{idle.address}" in log
    assert f"govmail-daily.timer\tsuspended\t{idle.address}" in log, log

    # A deploy does not bring it back (still in the data file); `govmail restore` re-creates it.
    r = subprocess.run(["govmail", "restore", idle.address], capture_output=True, text=True)
    assert r.returncode == 0 and "re-created" in r.stdout, r.stderr
    assert imap_login(h, idle.address, h.set_password(idle.address)) == "OK"
