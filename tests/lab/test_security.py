"""Access hardening with real clients: who may send as whom, no open relay, TLS as testssl.sh sees it."""

from __future__ import annotations

import json
import shutil
import smtplib
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import PROVINCES
from .mailing import INSECURE, submission  # noqa: E402,F401 (shared; others import INSECURE from here)


def sender_reply(s, sender, rcpt) -> tuple[int, str]:
    """The reply to RCPT after MAIL FROM:<sender> (Postfix judges the sender at RCPT)."""
    s.rset()
    code, msg = s.mail(sender)
    if code != 250:
        return code, msg.decode()
    code, msg = s.rcpt(rcpt)
    return code, msg.decode()


def test_an_authenticated_user_sends_only_as_their_own_address_or_a_list_that_allows_them(host):
    h = host
    people = [a.address for a in h.cfg.accounts if a.kind == "person" and a.status == "active"]
    me, other = people[12], people[13]
    pw = h.set_password(me)
    with submission(h, me, pw) as s:
        assert sender_reply(s, me, other)[0] == 250
        code, msg = sender_reply(s, other, other)
        assert code == 553 and "not owned by user" in msg, msg
        assert sender_reply(s, "someone@outside.example", other)[0] == 553
        assert sender_reply(s, f"postmaster@{h.cfg.domain}", other)[0] == 553
    admin = h.cfg.postmaster
    with submission(h, admin, h.set_password(admin)) as s:
        assert sender_reply(s, f"postmaster@{h.cfg.domain}", other)[0] == 250  # allowed for the postmaster


def test_the_header_from_is_bound_to_the_login_too_refusals_name_the_rule_and_article(host):
    """The envelope sender is bound by Postfix; the `From:` a recipient reads is bound by rspamd's
    GOVMAIL_FROM: the login's own address, or one the data delegates to it (the postmaster's role
    addresses here; a list's or a unit's `senders:` alike). Anything else is refused at SMTP time."""
    from email.message import EmailMessage

    h = host
    people = [a.address for a in h.cfg.accounts if a.kind == "person" and a.status == "active"]
    me, director = people[14], people[0]
    admin = h.cfg.postmaster

    def send(login, pw, header_from) -> tuple[int, str]:
        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = header_from, login, "Kiểm tra người gửi"
        m.set_content("Nội dung thử.")
        with submission(h, login, pw) as s:
            try:
                s.send_message(m, from_addr=login, to_addrs=[login])
                return 250, ""
            except smtplib.SMTPDataError as e:
                return e.smtp_code, e.smtp_error.decode()

    pw, apw = h.set_password(me), h.set_password(admin)
    assert send(me, pw, f"Người thử <{me}>")[0] == 250
    code, msg = send(me, pw, f"Giám đốc Sở <{director}>")
    assert code == 554 and f"From: <{director}>" in msg and h.cfg.cite("sender") in msg, (code, msg)
    assert send(me, pw, f"{me}, {director}")[0] == 554  # a second author slipped in beside the login's own
    assert send(me, pw, f"postmaster@{h.cfg.domain}")[0] == 554
    assert send(admin, apw, f"Quản trị <postmaster@{h.cfg.domain}>")[0] == 250  # delegated by the data


RELAY_TRICKS = [
    "user@outside.example",
    "user%outside.example@{domain}",
    "outside.example!user@{domain}",
    '"user@outside.example"@{domain}',
    "<@{domain}:user@outside.example>",
    "user@[192.0.2.1]",
    "user@outside.example.",
    "user@outside.example@{domain}",
]


@pytest.mark.parametrize("sender", ["", "postmaster@{domain}", "someone@outside.example"])
def test_no_open_relay_whatever_the_address_trick(host, sender):
    h = host
    refused = {}
    with smtplib.SMTP(h.name, 25, timeout=30) as s:
        s.ehlo("relay-test.lab.test")
        for trick in RELAY_TRICKS:
            rcpt = trick.format(domain=h.cfg.domain)
            s.rset()
            code, _ = s.mail(sender.format(domain=h.cfg.domain) if sender else "<>")
            if code != 250:
                refused[rcpt] = code
                continue
            cmd = rcpt if rcpt.startswith("<") else f"<{rcpt}>"
            code, msg = s.docmd("RCPT", f"TO:{cmd}")
            refused[rcpt] = code
    assert all(code >= 500 for code in refused.values()), refused
    assert h.run("postqueue -j", check=False).stdout.count("outside.example") == 0


@pytest.mark.skipif(not shutil.which("testssl"), reason="testssl.sh is not installed (./govmail.sh installs it)")
def test_testssl_finds_no_weak_protocol_or_cipher_on_any_tls_port(lab_hosts, tmp_path):
    h = lab_hosts[PROVINCES[0]]
    # 443: the web mail (nginx); the password service's API on its own port.
    # (4190, ManageSieve: this testssl has no STARTTLS for it; `verify --active` probes it, test_verify.py.)
    ports = {465: [], 587: ["--starttls", "smtp"], 993: [], 995: [], h.cfg.model.password_change.port: [], 443: []}

    def run(port):
        out = tmp_path / f"{port}.json"
        subprocess.run(["testssl", "--quiet", "--color", "0", "--warnings", "off", "-p", "-s", "-f", "-U",
                        "--jsonfile", str(out), *ports[port], f"{h.ip}:{port}"], capture_output=True, text=True,
                       timeout=900)
        return port, json.loads(out.read_text())

    with ThreadPoolExecutor(len(ports)) as ex:
        results = dict(ex.map(run, ports))
    bad = {}
    for port, findings in results.items():
        by_id = {f["id"]: f for f in findings}
        for proto in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
            assert proto in by_id, f"port {port}: testssl did not test {proto}"
            if "not offered" not in by_id[proto]["finding"]:
                bad.setdefault(port, []).append(f"{proto}: {by_id[proto]['finding']}")
        assert "offered" in by_id["TLS1_2"]["finding"] or "offered" in by_id.get("TLS1_3", {}).get("finding", "")
        for f in findings:
            if f["severity"] in ("HIGH", "CRITICAL") or (
                    f["id"].startswith("cipherlist_") and f["id"] in ("cipherlist_NULL", "cipherlist_aNULL",
                                                                      "cipherlist_EXPORT", "cipherlist_LOW",
                                                                      "cipherlist_3DES_IDEA")
                    and "not offered" not in f["finding"]):
                bad.setdefault(port, []).append(f"{f['id']}: {f['finding']}")
    assert not bad, bad
    # ManageSieve (4190; this testssl has no STARTTLS for sieve): openssl s_client, old protocols refused.
    for proto, ok in (("-tls1_2", True), ("-tls1_1", False), ("-tls1", False)):
        r = subprocess.run(["openssl", "s_client", "-starttls", "sieve", proto, "-connect", f"{h.ip}:4190"],
                           input="", capture_output=True, text=True, timeout=60)
        assert ("BEGIN CERTIFICATE" in r.stdout or "Server certificate" in r.stdout) == ok, (proto, r.stdout[-500:])


ATTACK = """
import imaplib, ssl, sys
host, user, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl._create_unverified_context()
for i in range(n):
    try:
        m = imaplib.IMAP4_SSL(host, 993, ssl_context=ctx, timeout=15)
    except OSError as e:
        print("blocked after", i, e)
        break
    try:
        m.login(user, "wrong-password-%d" % i)
    except (imaplib.IMAP4.error, OSError) as e:  # refused, or cut off by the ban
        print("attempt", i, e)
    try:
        m.logout()
    except Exception:
        pass
"""
PROBE = "python3 -c \"import socket,sys; socket.create_connection((sys.argv[1], 993), timeout=5)\" {host}"


def test_repeated_failed_logins_get_the_client_banned_from_the_mail_ports_until_the_ban_expires(lab_hosts):
    h = lab_hosts[PROVINCES[0]]
    bf = h.cfg.policy.bruteforce
    from govmail import lab

    attacker_ip = lab.load_state()["hosts"][h.cfg.backup_host]["ip"]  # another lab host attacks
    victim = next(a.address for a in h.cfg.accounts if a.kind == "person")
    jail = "govmail-dovecot"
    # The data's ban lasts bf.bantime_minutes; shortened here to see it end. (fail2ban counts a ban from
    # the time of the last failure in the log, so it must outlast the journal reader's lag.)
    h.run(f"fail2ban-client set {jail} bantime 60")
    try:
        h.backup_run(f"python3 - {h.name} {victim} {bf.maxretry + 1}", input=ATTACK)
        for _ in range(30):
            if attacker_ip in h.run(f"fail2ban-client status {jail}").stdout:
                break
            time.sleep(1)
        assert attacker_ip in h.run(f"fail2ban-client status {jail}").stdout, "not banned"
        assert h.backup_run(PROBE.format(host=h.name), check=False).returncode != 0  # IMAPS closed to it
        # The machine the operator works from is not affected.
        assert socket.create_connection((h.name, 993), timeout=5)
        for _ in range(120):
            if attacker_ip not in h.run(f"fail2ban-client status {jail}").stdout:
                break
            time.sleep(1)
        assert attacker_ip not in h.run(f"fail2ban-client status {jail}").stdout, "the ban did not expire"
        assert h.backup_run(PROBE.format(host=h.name), check=False).returncode == 0
    finally:
        h.run(f"fail2ban-client set {jail} unbanip {attacker_ip}", check=False)
        h.run(f"fail2ban-client set {jail} bantime {bf.bantime_minutes * 60}", check=False)
