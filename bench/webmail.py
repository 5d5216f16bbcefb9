#!/usr/bin/env python3
"""Web mail speed as an official feels it, beside the floor of a bare IMAP client.

    sudo python3 bench/webmail.py [PROVINCE] [--rounds N]

One lab host (default laichau; brought up and deployed if needed), one mailbox holding one 50 kB
message with a Vietnamese subject. Each round, in Debian's Chromium (the tests' browser,
tests/lab/browser.py), from a fresh session:

- login -> inbox listed: the login page loaded, the form sent, until the message's row shows;
- open the message: until its subject shows in the message view;

and beside them the floor, a bare IMAP client on the controller (imaplib): connect over TLS, log in,
SELECT INBOX, FETCH the whole message. Prints the medians (and the slowest round); asserts nothing.
"""

from __future__ import annotations

import imaplib
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import lab_mail_host  # noqa: E402

from govmail.data.passwords import generate  # noqa: E402
from tests.lab.browser import Browser  # noqa: E402


def main() -> None:
    import argparse
    import os

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ap = argparse.ArgumentParser()
    ap.add_argument("province", nargs="?", default="laichau")
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    cfg, ip, ssh = lab_mail_host(a.province)
    user = [x for x in cfg.accounts if x.kind == "person" and x.status == "active" and x.role == "user"][-7].address
    # A usable password, set the way an operator and then the user would (no first-login block).
    issued = generate(cfg.policy.password)
    subprocess.run(["govmail", "set-password", "--from-env", user], env=dict(os.environ, GOVMAIL_PASSWORD=issued),
                   check=True, capture_output=True)
    pw = generate(cfg.policy.password) + "-Bench"
    subprocess.run(ssh + [f"/usr/local/lib/govmail/accounts change-password {user}"], input=f"{issued}\n{pw}\n",
                   text=True, check=True, capture_output=True)
    subject = f"Bench thư điện tử {int(time.time())}"
    body = ("Nội dung báo cáo. " * 2900)[:50000]
    msg = (f"From: bench@{cfg.domain}\nTo: {user}\nSubject: =?utf-8?b?"
           + __import__("base64").b64encode(subject.encode()).decode()
           + "?=\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + body + "\n")
    subprocess.run(ssh + [f"doveadm expunge -u {user} mailbox INBOX all; "
                          f"doveadm save -u {user} -m INBOX"], input=msg, text=True, check=True, capture_output=True)
    uid = subprocess.run(ssh + [f"doveadm -f flow search -u {user} mailbox INBOX all"], capture_output=True,
                         text=True).stdout.split()[-1]
    pem = Path("/tmp/govmail-bench-webmail.pem")
    pem.write_text(subprocess.run(ssh + ["cat /etc/govmail/tls/fullchain.pem"], capture_output=True, text=True).stdout)

    web_login, web_open, floor = [], [], []
    b = Browser("bench-webmail", [str(pem)])
    d = b.driver
    try:
        for _ in range(a.rounds):
            d.delete_all_cookies()
            t0 = time.monotonic()
            d.get(f"https://{cfg.mail_host}/")
            d.find_element(By.ID, "rcmloginuser").send_keys(user)
            d.find_element(By.ID, "rcmloginpwd").send_keys(pw)
            d.find_element(By.ID, "rcmloginsubmit").click()
            WebDriverWait(d, 60, 0.02).until(
                lambda d: subject in " ".join(e.text for e in d.find_elements(By.ID, "messagelist")))
            t1 = time.monotonic()
            d.get(f"https://{cfg.mail_host}/?_task=mail&_action=show&_uid={uid.split('/')[-1]}&_mbox=INBOX")
            WebDriverWait(d, 60, 0.02).until(
                lambda d: "Nội dung báo cáo" in " ".join(e.text for e in d.find_elements(By.ID, "messagebody")))
            t2 = time.monotonic()
            web_login.append(t1 - t0)
            web_open.append(t2 - t1)
            t3 = time.monotonic()
            m = imaplib.IMAP4_SSL(ip, 993, ssl_context=ssl._create_unverified_context())
            m.login(user, pw)
            m.select("INBOX")
            m.fetch("1", "(BODY.PEEK[])")
            m.logout()
            floor.append(time.monotonic() - t3)
    finally:
        b.close()
    med = statistics.median
    print(f"\n{a.province}: {a.rounds} rounds, one 50 kB message, {cfg.mail_host} (Roundcube, php-fpm, nginx)")
    print(f"  web mail: login -> inbox listed      median {med(web_login):6.3f} s   slowest {max(web_login):6.3f} s")
    print(f"  web mail: open the message           median {med(web_open):6.3f} s   slowest {max(web_open):6.3f} s")
    print(f"  IMAP: login + SELECT + FETCH (floor) median {med(floor):6.3f} s   slowest {max(floor):6.3f} s")
    print(f"  web login + open, against the floor: {(med(web_login) + med(web_open)) / med(floor):.0f}x")


if __name__ == "__main__":
    main()
