"""Automatic forwarding out of and into the state mail system (policy.forwarding; LC Art. 12.5).

A user installs a Sieve filter the way a mail client does (ManageSieve on 4190); mail then arrives
over SMTP from another server. Lists are covered by the data validation (tests/unit/test_schema.py).
"""

from __future__ import annotations

import json
import smtplib
import time
from email.message import EmailMessage

from govmail.lab import OUTSIDE_DOMAIN

from .conftest import PROVINCES
from .managesieve import ManageSieve
from .test_filtering import delivered


def inbound(h, to, subject, sender=None, headers=None) -> tuple[int, str]:
    m = EmailMessage()
    sender = sender or f"canbo@{OUTSIDE_DOMAIN}"
    m["From"], m["To"], m["Subject"] = sender, to, subject
    for k, v in (headers or {}).items():
        m[k] = v
    m.set_content("Kính gửi,\nxin chuyển thư.\n")
    with smtplib.SMTP(h.name, 25, timeout=60) as s:
        s.ehlo("mx.outside.test")
        try:
            s.send_message(m, from_addr=sender)
            return 0, ""
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error.decode(errors="replace")


def test_a_sieve_redirect_leaves_the_state_system_never_and_the_message_stays_in_the_inbox(host, lab_hosts):
    h = host
    people = [a.address for a in h.cfg.accounts if a.kind == "person" and a.status == "active"]
    user, colleague = people[7], people[8]
    pw = h.set_password(user)
    stamp = str(int(time.time()))
    with ManageSieve(h.name) as ms:
        ms.login(user, pw)
        ms.put_active("chuyen-tiep", f'redirect "canbo@{OUTSIDE_DOMAIN}";\n')
    assert inbound(h, user, f"Ra ngoài {stamp}") == (0, "")
    got = delivered(h, user, f"Ra ngoài {stamp}")
    assert got, "the message a refused redirect could not forward must stay in the INBOX"
    queue = [json.loads(line) for line in h.run("postqueue -j").stdout.splitlines() if line.strip()]
    assert not [q for q in queue if any(OUTSIDE_DOMAIN in r["address"] for r in q["recipients"])]
    log = h.run(f"grep 'sieve-out' /var/log/mail.log | grep 'canbo@{OUTSIDE_DOMAIN}' | tail -n 1").stdout
    assert "Automatic forwarding outside the state mail system is forbidden" in log, log

    # Forwards between state domains keep working: to a colleague, and to another province's host.
    targets = [colleague]
    other = next((lab_hosts[p] for p in PROVINCES if p != h.province), None)
    if other:
        targets.append(next(a.address for a in other.cfg.accounts if a.kind == "person" and a.status == "active"))
    with ManageSieve(h.name) as ms:
        ms.login(user, pw)
        ms.put_active("chuyen-tiep", "".join(f'redirect "{t}";\n' for t in targets))
    assert inbound(h, user, f"Trong nhà nước {stamp}") == (0, "")
    assert delivered(h, colleague, f"Trong nhà nước {stamp}"), "forward to a colleague lost"
    if other:
        assert delivered(other, targets[1], f"Trong nhà nước {stamp}", timeout=60), "forward to another province lost"
    with ManageSieve(h.name) as ms:
        ms.login(user, pw)
        ms.put_active("chuyen-tiep", "keep;\n")


def test_mail_forwarded_automatically_from_outside_is_refused_where_the_province_says_so(host):
    h = host
    fw = h.cfg.policy.forwarding
    to = next(a.address for a in h.cfg.accounts if a.kind == "person" and a.status == "active")
    stamp = str(int(time.time()))
    forwarded = [
        ("header", dict(sender=f"canbo@{OUTSIDE_DOMAIN}", headers={"X-Forwarded-For": f"canbo@{OUTSIDE_DOMAIN} {to}"})),
        ("srs", dict(sender=f"SRS0=HHH=TT=daknong.gov.vn=a@{OUTSIDE_DOMAIN}")),
    ]
    for case, kw in forwarded:
        code, text = inbound(h, to, f"Chuyển tiếp {case} {stamp}", **kw)
        if fw.refuse_inbound:
            assert code == 554 and "Automatic forwarding into the state mail system" in text and fw.article in text, (case, text)
        else:
            assert code == 0, (case, text)
    # Ordinary mail from outside, and forwards from another state mailbox, are not affected.
    assert inbound(h, to, f"Thư thường {stamp}", sender=f"canbo@{OUTSIDE_DOMAIN}") == (0, "")
    assert inbound(h, to, f"Từ tỉnh bạn {stamp}", headers={"X-Forwarded-For": "vanphong@bacninh.gov.vn"}) == (0, "")
