#!/usr/bin/env python3
"""Mail arriving while a deploy changes the configuration: none lost, none delivered twice.

    sudo python3 bench/deploy_under_load.py [PROVINCE] [--messages N] [--sessions S]

One lab host (default daknong; brought up and deployed if needed). A sender on the mail host
delivers N messages (default 3,000) over S parallel SMTP sessions to the host's lab address, port
25, each with its own Message-ID, and behaves like an MTA: whatever goes wrong before the server's
final 250 (a 4xx, a connection cut), it sends the same message again. Meanwhile the deploy runs
twice with a changed attachment limit (main.cf changes: Postfix applies it) and back.

At the end Dovecot's index of the mailbox is read: the distinct Message-IDs (0 lost when all N
are there) and the copies (0 delivered twice when there are exactly N). Prints the figures beside
their floors; asserts nothing. The bench's messages are removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import lab_mail_host  # noqa: E402

from govmail.cli.deploy import pyinfra_command  # noqa: E402
from govmail.data import data_dir  # noqa: E402

SENDER = r'''
import smtplib, sys, threading, time
from email.message import EmailMessage
host, rcpt, tag, n, sessions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
retries = [0]
lock = threading.Lock()

def one(i, s):
    m = EmailMessage()
    m["From"], m["To"] = f"bench@outside.test", rcpt
    m["Subject"] = f"{tag} {i}"
    m["Message-ID"] = f"<{tag}-{i}@outside.test>"
    m.set_content("Thư thử tải / load test\n")
    while True:
        try:
            if s[0] is None:
                s[0] = smtplib.SMTP(host, 25, timeout=60)
            s[0].send_message(m)
            return
        except Exception:
            with lock:
                retries[0] += 1
            try:
                s[0].close()
            except Exception:
                pass
            s[0] = None
            time.sleep(0.5)

def worker(k):
    s = [None]
    for i in range(k, n, sessions):
        one(i, s)
        if i % 50 == k % 50:  # a new session now and then, as MTAs do
            try:
                s[0].quit()
            except Exception:
                pass
            s[0] = None

ts = [threading.Thread(target=worker, args=(k,)) for k in range(sessions)]
[t.start() for t in ts]
[t.join() for t in ts]
print(retries[0])
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("province", nargs="?", default="daknong")
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--sessions", type=int, default=8)
    a = ap.parse_args()
    cfg, ip, ssh = lab_mail_host(a.province)
    rcpt = [x.address for x in cfg.accounts if x.kind == "person" and x.status == "active"][-4]
    tag = f"load{int(time.time())}"

    # The same province with another attachment limit: main.cf's message_size_limit changes.
    changed = Path(tempfile.mkdtemp(prefix="govmail-load-")) / "group_data"
    shutil.copytree(data_dir(), changed)
    d = yaml.safe_load((changed / f"{a.province}.yml").read_text())
    att = d.setdefault("policy", {}).setdefault("attachment", {})
    att["max_mb"] = (cfg.policy.attachment.max_mb or 20) - 1
    (changed / f"{a.province}.yml").write_text(yaml.safe_dump(d, allow_unicode=True, sort_keys=False))

    out: dict = {}

    def send() -> None:
        r = subprocess.run(ssh + [f"python3 - {ip} {rcpt} {tag} {a.messages} {a.sessions}"], input=SENDER,
                           capture_output=True, text=True)
        out["retries"], out["rc"], out["err"] = r.stdout.strip(), r.returncode, r.stderr[-2000:]

    t0 = time.monotonic()
    sender = threading.Thread(target=send)
    sender.start()
    deploys = []
    time.sleep(5)
    for data in (changed, data_dir()):  # the change, and back
        t = time.monotonic()
        r = subprocess.run(pyinfra_command(a.province), cwd=ROOT, capture_output=True, text=True,
                           env=dict(os.environ, GOVMAIL_DATA_DIR=str(data)))
        if r.returncode:
            sys.exit(f"deploy failed:\n{r.stdout[-3000:]}")
        # pyinfra logs each host's plan on stderr: "...; activate: postfix: reload".
        reloads = [line.split("activate:", 1)[1].strip() for line in (r.stdout + r.stderr).splitlines()
                   if "activate:" in line]
        deploys.append((time.monotonic() - t, reloads))
    sender.join()
    if out.get("rc"):
        sys.exit(f"the sender failed: {out['err']}")
    sent = time.monotonic() - t0

    def mailbox() -> list[str]:
        r = subprocess.run(ssh + [f"doveadm fetch -u {rcpt} hdr.message-id mailbox INBOX header Subject {tag}"],
                           capture_output=True, text=True)
        return [x.split(":", 1)[1].strip() for x in r.stdout.splitlines() if x.lower().startswith("hdr.message-id:")]

    end = time.monotonic() + 600
    while len(ids := mailbox()) < a.messages and time.monotonic() < end:
        time.sleep(2)
    time.sleep(5)  # anything still queued arrives too, so copies are counted
    ids = mailbox()
    subprocess.run(ssh + [f"doveadm expunge -u {rcpt} mailbox INBOX header Subject {tag} && "
                          f"doveadm quota recalc -u {rcpt}"], capture_output=True)
    shutil.rmtree(changed.parent)
    lost, twice = a.messages - len(set(ids)), len(ids) - len(set(ids))
    print(f"\n{a.province}: {a.messages} messages over {a.sessions} SMTP sessions into {rcpt} while the deploy "
          f"changed the attachment limit and back")
    for i, (secs, what) in enumerate(deploys, 1):
        print(f"  deploy {i}: {secs:5.1f} s, {what[0] if what else 'nothing to activate'}")
    print(f"  sending took {sent:.0f} s; the sender sent again {out.get('retries')} times (4xx or cut sessions)")
    print(f"  lost:              {lost:5d}   (floor: 0)")
    print(f"  delivered twice:   {twice:5d}   (floor: 0)")


if __name__ == "__main__":
    main()
