"""The operations and usage reports, made by the host from its own logs: traffic with known counts
for every refusal reason is sent, and the report's figures for that window are exactly those; the
monthly and annual reports are written (CSV, HTML with charts) and mailed to the administrators by
the same program the timers run, and `govmail report` copies them here."""

from __future__ import annotations

import csv
import email
import email.policy
import imaplib
import io
import json
import smtplib
import ssl
import subprocess
import time
from email.message import EmailMessage

from govmail.data.facts import report_recipients as recipients
from govmail.lab import OUTSIDE_DOMAIN

from .browser import Browser
from .conftest import PROVINCES
from .mailing import offer, rcpt_reply, submission
from .test_accounts import imap_login
from .test_filtering import EICAR, ELF, GTUBE, message, with_attachment

# Lai Châu refuses mail forwarded in from outside as well as forwards out (LC Art. 12.5).
PROVINCE = "laichau" if "laichau" in PROVINCES else PROVINCES[0]
SENDER = f"canbo@{OUTSIDE_DOMAIN}"


def people(h):
    return [a for a in h.cfg.accounts if a.kind == "person" and a.status == "active"]


def gather(h, since, until) -> dict:
    return json.loads(h.run(f"/usr/local/lib/govmail/report gather --kind monthly --since {since} --until {until}").stdout)


def test_the_report_counts_each_refusal_reason_and_the_mail_in_and_out_exactly(lab_hosts):
    h = lab_hosts[PROVINCE]
    ps = people(h)
    to, full, user = ps[9].address, ps[10], ps[11].address
    pw = h.set_password(user)
    h.run("python3 -c \"import sys; o=sys.stdout.buffer; o.write(b'Subject: filler\\n\\n'); "
          f"[o.write(b'x'*1023+b'\\n') for _ in range({(full.quota_mb + 1) * 1024})]\" | "
          f"doveadm -o quota_enforce=no save -u {full.address}")
    time.sleep(3)  # the owner's quota warning is delivered
    since = time.time()
    h.run("fail2ban-client set govmail-dovecot banip 192.0.2.77")
    try:
        # Accepted: 2 from outside, 3 submitted by a user (one of them to another province's host).
        for i in range(2):
            assert offer(h, message(h, to, f"Báo cáo đếm {i}", "Kính gửi.\n")) == (0, "")
        other = next(p for p in PROVINCES if p != PROVINCE)
        with submission(h, user, pw) as s:
            for rcpt in (to, ps[12].address, people(lab_hosts[other])[0].address):
                s.sendmail(user, [rcpt], f"From: {user}\r\nTo: {rcpt}\r\nSubject: Gửi đi\r\n\r\nNội dung.\r\n".encode())
            # sender: as someone else (refused at RCPT, "not owned by user")
            s.rset()
            s.mail(ps[13].address)
            assert s.rcpt(to)[0] == 553
            # spam submitted by the user: refused at the end of DATA, and the user's misuse (BN Art. 13)
            s.rset()
            try:
                s.sendmail(user, [to], f"From: {user}\r\nTo: {to}\r\nSubject: Mua ngay\r\n\r\n{GTUBE}\r\n".encode())
                raise AssertionError("spam submitted by a user was accepted")
            except smtplib.SMTPDataError as e:
                assert e.smtp_code == 554, e
        # spam, virus, program
        assert offer(h, message(h, to, "Quảng cáo", f"Mua ngay!\n{GTUBE}\n"))[0] == 554
        assert offer(h, with_attachment(h, to, "Có virus", "cong-van.txt", EICAR))[0] == 554
        assert offer(h, with_attachment(h, to, "Chương trình", "huong-dan.exe", ELF))[0] == 554
        # size: announced over the limit
        assert rcpt_reply(h, SENDER, to, size=h.cfg.message_size_limit + 1) == 552
        # quota: a full mailbox (filled before the window: its warning mail is not counted)
        assert rcpt_reply(h, SENDER, full.address) == 552
        # unknown recipient
        assert rcpt_reply(h, SENDER, f"khong-co-ai@{h.cfg.domain}") == 550
        # forwarding in (where the province refuses it)
        forwarding = 0
        if h.cfg.policy.forwarding.refuse_inbound:
            m = EmailMessage()
            m["From"], m["To"], m["Subject"] = SENDER, to, "Chuyển tiếp"
            m["X-Forwarded-For"] = f"{SENDER} {to}"
            m.set_content("Kính gửi.\n")
            assert offer(h, m)[0] == 554
            forwarding = 1
        # authentication: 2 wrong IMAP logins, 1 wrong SMTP AUTH
        ctx = ssl._create_unverified_context()
        for _ in range(2):
            with imaplib.IMAP4_SSL(h.name, 993, ssl_context=ctx) as c:
                try:
                    c.login(user, "sai-mat-khau")
                except imaplib.IMAP4.error:
                    pass
        s = smtplib.SMTP(h.name, 587, timeout=30)
        s.starttls(context=ctx)
        s.ehlo()
        s.user, s.password = user, "sai-mat-khau"
        try:  # one attempt, one mechanism (login() would try PLAIN, then LOGIN: two failures)
            s.auth("PLAIN", s.auth_plain)
        except smtplib.SMTPAuthenticationError:
            pass
        s.close()
        time.sleep(4)  # Dovecot logs a failed session when it ends (its auth delay included)
    finally:
        h.run("fail2ban-client set govmail-dovecot unbanip 192.0.2.77")
        h.run(f"doveadm expunge -u {full.address} mailbox INBOX header Subject filler ; "
              f"doveadm expunge -u {full.address} mailbox INBOX header Auto-Submitted auto-generated ; "
              f"doveadm quota recalc -u {full.address}")
    until = time.time() + 1
    f = gather(h, since, until)
    assert f["refusals"] == {"spam": 2, "virus": 1, "program": 1, "size": 1, "quota": 1, "forwarding": forwarding,
                             "authentication": 3, "sender": 1, "sending_limit": 0, "unknown_recipient": 1, "relay": 0,
                             "other": 0}, f["refusals"]
    assert f["mail"]["received"] == 2 and f["mail"]["sent"] == 3, f["mail"]
    assert f["mail"]["delivered_local"] == 4 and f["mail"]["delivered_remote"] == 1, f["mail"]
    # The province's own mailbox used against the rules: listed with what was refused and a measure.
    assert [(c["account"], c["refusals"], c["total"]) for c in f["misuse"]] == [(user, {"spam": 1, "sender": 1}, 2)], \
        f["misuse"]
    assert f["misuse"][0]["agency"] != "-" and "tạm khóa hộp thư" in f["misuse"][0]["measure"]
    assert f["bans"] == {"govmail-dovecot": 1}, (f["bans"], since, until, h.run("tail -3 /var/log/fail2ban.log").stdout)
    assert f["services"]["postfix"]["availability"] == 1.0 and f["services"]["dovecot"]["failures"] == 0


def test_the_monthly_and_annual_reports_are_written_with_charts_mailed_and_copied_here(lab_hosts, tmp_path, request):
    h = lab_hosts[PROVINCE]
    this_month = time.strftime("%Y-%m", time.gmtime())
    admins = recipients(h.cfg)
    r = subprocess.run(["govmail", "report", PROVINCE, "monthly", "--period", this_month, "--mail", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    html = (tmp_path / f"{PROVINCE}-monthly-{this_month}.html").read_text()
    assert html.count('<img alt="') == 3 and "data:image/png;base64," in html  # matplotlib's charts
    rows = list(csv.reader(io.StringIO((tmp_path / f"{PROVINCE}-monthly-{this_month}.csv").read_text("utf-8-sig"))))
    assert ["refused", "spam", rows[[r[:2] for r in rows].index(["refused", "spam"])][2]] in rows
    # The misuse section (BN Art. 13): the user of the first test, who submitted spam and sent as another.
    spammer = people(h)[11].address
    assert '<table id="misuse">' in html and f"<tr><td>{spammer}</td>" in html
    assert any(r[:2] == ["misuse", spammer] and "spam " in r[2] and "sender " in r[2] and " → " in r[2] for r in rows), rows
    # Mailed to every administrator, from the postmaster, with the CSV and the HTML attached.
    subject = f"Báo cáo vận hành tháng {this_month}"
    for a in admins:
        got = ""
        for _ in range(60):
            got = h.run(f"doveadm search -u {a} mailbox INBOX header Subject '{subject}'", check=False).stdout
            if got.strip():
                break
            time.sleep(0.5)
        assert got.strip(), f"{a} did not get the report"
    uid = got.split()[-1]
    body = h.run(f"doveadm fetch -u {admins[-1]} text mailbox INBOX uid {uid}").stdout
    assert f"monthly-{this_month}.csv" in body and f"monthly-{this_month}.html" in body
    msg = email.message_from_string(body.split("\n", 1)[1], policy=email.policy.default)
    assert f"  {spammer} (" in msg.get_body(("plain",)).get_content()  # the misuse listed in the mail itself
    attached = {p.get_filename(): p.get_payload(decode=True) for p in msg.iter_attachments()}
    assert attached[f"monthly-{this_month}.html"].decode() == html  # the same page, whole
    assert msg["Auto-Submitted"] == "auto-generated"  # no vacation reply answers it

    year = time.strftime("%Y", time.gmtime())
    user = people(h)[11].address  # logs in: its mailbox counts as used this year
    assert imap_login(h, user, h.set_password(user)) == "OK"
    r = subprocess.run(["govmail", "report", PROVINCE, "annual", "--period", year, "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(io.StringIO((tmp_path / f"{PROVINCE}-annual-{year}.csv").read_text("utf-8-sig"))))
    assert sum(int(r[1]) for r in rows[1:]) == len([a for a in h.cfg.accounts if a.status in ("active", "suspended")])
    assert sum(int(r[4]) for r in rows[1:]) >= 3  # the mail the first test sent, by its agency
    assert sum(int(r[2]) for r in rows[1:]) >= 1 and all(int(r[2]) + int(r[3]) == int(r[1]) for r in rows[1:])

    b = Browser(request.node.name, [])
    try:
        for kind, period in (("monthly", this_month), ("annual", year)):
            b.driver.get((tmp_path / f"{PROVINCE}-{kind}-{period}.html").as_uri())
            assert all(b.driver.execute_script("return arguments[0].naturalWidth", i) > 100
                       for i in b.driver.find_elements("tag name", "img"))
            b.shot(f"{kind}-report")
            if kind == "monthly":
                b.driver.execute_script("document.getElementById('misuse-section').scrollIntoView()")
                b.shot("monthly-report-misuse")
    finally:
        b.close()


def test_a_hostile_agency_name_is_drawn_as_text_in_the_charts_and_escaped_in_the_page(lab_hosts):
    h = lab_hosts[PROVINCE]
    hostile = r"$\notacommand{$ <b>Sở</b> & 100%"  # invalid as TeX math: would stop the chart
    code = (
        "import json, sys; sys.path.insert(0, '/usr/local/lib/govmail')\n"
        "from govmail_host import report_render as r\n"
        "name = sys.stdin.readline().rstrip('\\n')\n"
        "f = {'kind': 'annual', 'period': '2026', 'host': 'h', 'name': name, 'articles': '', 'since': 0, 'until': 1,\n"
        "     'generated': 1, 'mail': {'received': 0, 'sent': 0}, 'refusals': dict.fromkeys(r.REASONS, 0), 'bans': {},\n"
        "     'agencies': [{'agency': name, 'mailboxes': 2, 'active': 1, 'inactive': 1, 'sent': 1, 'received': 1,\n"
        "                   'quota_used_mib': 1.0, 'quota_mib': 500}]}\n"
        "print(json.dumps({'charts': len(r.charts(f)), 'escaped': '&lt;b&gt;Sở&lt;/b&gt;' in r.to_html(f)}))\n"
    )
    out = h.run(f"python3 -c {__import__('shlex').quote(code)}", input=hostile + "\n").stdout
    assert json.loads(out) == {"charts": 2, "escaped": True}
