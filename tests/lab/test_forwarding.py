"""Automatic forwarding out of and into the state mail system (policy.forwarding; LC Art. 12.5).

A user installs a Sieve filter the way a mail client does (ManageSieve on 4190); mail then arrives
over SMTP from another server. Lists are covered by the data validation (tests/unit/test_schema.py).
"""

from __future__ import annotations

import json
import time
from email.message import EmailMessage

from govmail.lab import OUTSIDE_DOMAIN

from .conftest import PROVINCES
from .mailing import arrived, offer
from .managesieve import ManageSieve, ManageSieveError


def inbound(h, to, subject, sender=None, headers=None) -> tuple[int, str]:
    m = EmailMessage()
    sender = sender or f"canbo@{OUTSIDE_DOMAIN}"
    m["From"], m["To"], m["Subject"] = sender, to, subject
    for k, v in (headers or {}).items():
        m[k] = v
    m.set_content("Kính gửi,\nxin chuyển thư.\n")
    return offer(h, m, sender)


REFUSED = "Không được tự động chuyển thư ra ngoài hệ thống thư công vụ"


def test_a_filter_that_sends_outside_is_refused_when_saved_whatever_the_client_sends(host):
    """ManageSieve itself refuses the script (the web mail stores through it too): a redirect, with
    :copy, written in a text: block or with encoded characters, built from variables, a notify
    mailto:, as a literal or as a quoted string, PUTSCRIPT or CHECKSCRIPT; nothing is stored."""
    h = host
    people = [a.address for a in h.cfg.accounts if a.kind == "person" and a.status == "active"]
    user = people[7]
    pw = h.set_password(user)
    article = h.cfg.policy.forwarding.article
    out = f"canbo@{OUTSIDE_DOMAIN}"
    scripts = {
        "redirect": f'redirect "{out}";\n',
        "copy": f'require ["copy"];\nredirect :copy "{out}";\n',
        "text-block": f"redirect text:\n{out}\n.\n;\n",
        "encoded": 'require ["encoded-character"];\nredirect "canbo@outside${hex:2e}test";\n',
        "variables": f'require ["variables"];\nset "a" "{out}";\nredirect "${{a}}";\n',
        "notify": f'require ["enotify"];\nnotify :message "Thư mới" "mailto:{out}";\n',
        "notify-cc": f'require ["enotify"];\nnotify "mailto:{people[8]}?cc={out}";\n',
        "disabled-rule": f'require ["copy"];\n# rule:[fw]\nif false # true\n{{\n\tredirect :copy "{out}";\n}}\n',
    }
    with ManageSieve(h.name) as ms:
        ms.login(user, pw)
        before = ms.names()
        for name, script in scripts.items():
            # A quoted string holds no line break: scripts that need one (text:, # comments) go as literals only.
            for how in ("literal", "check", "quoted")[: 2 if "text:" in script or "#" in script else 3]:
                try:
                    if how == "literal":
                        ms.put_active(f"thu-{name}", script)
                    elif how == "check":
                        ms.check(script)
                    else:
                        ms.put_quoted(f"thu-{name}", script)
                    raise AssertionError(f"{name} ({how}): stored")
                except ManageSieveError as e:
                    assert REFUSED in str(e) and article in str(e), (name, how, str(e))
        assert ms.names() == before, "a refused script was stored"
        # In the state domains, and a reply to the sender: accepted and stored.
        ms.put_active("noi-bo", f'require ["vacation", "copy"];\nredirect :copy "{people[8]}";\n'
                                f'vacation :days 1 "Tôi đi vắng.";\n')
        assert "noi-bo" in ms.names()
        ms.put_active("noi-bo", "keep;\n")
    log = h.run("journalctl -u govmail-sieve-guard --no-pager -n 50").stdout
    assert f"redirect {out} (outside the state domains)" in log, log[-1500:]
    # Dovecot saw the client's own address (the guard tells it), not the loopback.
    controller = h.run("echo $SSH_CLIENT").stdout.split()[0]
    login = h.run(f"grep 'managesieve-login: Logged in: user=<{user}>' /var/log/mail.log | tail -n 1").stdout
    assert f"rip={controller}" in login and "TLS" in login, login


def test_a_sieve_redirect_leaves_the_state_system_never_and_the_message_stays_in_the_inbox(host, lab_hosts):
    """A script that ManageSieve never saw (put by an administrator, or stored before govmail checked
    scripts) may still redirect outside: Postfix refuses that mail, and the message stays in the INBOX."""
    h = host
    people = [a.address for a in h.cfg.accounts if a.kind == "person" and a.status == "active"]
    user, colleague = people[7], people[8]
    pw = h.set_password(user)
    stamp = str(int(time.time()))
    h.run(f"doveadm sieve put -a -u {user} chuyen-tiep", input=f'redirect "canbo@{OUTSIDE_DOMAIN}";\n')
    assert inbound(h, user, f"Ra ngoài {stamp}") == (0, "")
    got = arrived(h, user, f"Ra ngoài {stamp}")
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
    assert arrived(h, colleague, f"Trong nhà nước {stamp}"), "forward to a colleague lost"
    if other:
        assert arrived(other, targets[1], f"Trong nhà nước {stamp}", timeout=60), "forward to another province lost"
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
