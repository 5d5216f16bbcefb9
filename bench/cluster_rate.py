#!/usr/bin/env python3
"""Delivery rate through every MX host of a province at once, beside the mail host's MX alone.

    sudo python3 bench/cluster_rate.py [PROVINCE] [--messages N] [--sessions S] [--size BYTES]

One run, one province of the lab with an MX host apart (default lamdong; brought up and deployed
if the lab does not run it). From the controller, as other mail servers would, S parallel SMTP
sessions send N messages to one mailbox:

- one MX (the floor): every session to the mail host's port 25;
- every MX: the sessions shared out among the province's MX hosts (half each with two).

Both go through the full chain (Postfix, rspamd + ClamAV, then Dovecot's LMTP: on the mail host
itself, or over the private network from the MX apart). The clock runs from the first connection
until Dovecot counts every message in the mailbox. The bench messages are removed afterwards. In
the lab every host shares the machine's cores, so a second MX adds no processors: the figure says
what the second host costs or gives on the same hardware; on separate machines each MX brings its
own. Prints figures; asserts nothing.
"""

from __future__ import annotations

import smtplib
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import lab_mail_host  # noqa: E402

from govmail import lab  # noqa: E402


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("province", nargs="?", default="lamdong")
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--size", type=int, default=4096, help="message size in bytes")
    a = ap.parse_args()
    cfg, ip, ssh = lab_mail_host(a.province)
    if len(cfg.mx_hosts) < 2:
        sys.exit(f"{a.province} has one MX host ({cfg.mail_host}); this bench needs a province with an MX apart")
    hosts = lab.load_state()["hosts"]
    mx_ips = [hosts[m]["ip"] for m in cfg.mx_hosts]
    rcpt = [x.address for x in cfg.accounts if x.kind == "person" and x.status == "active"][-4]
    body = ("Văn bản thử tốc độ / bench body line\r\n" * (a.size // 40 + 1))[: a.size]

    def count() -> int:
        r = subprocess.run(ssh + [f"doveadm -f flow mailbox status -u {rcpt} messages INBOX"],
                           capture_output=True, text=True)
        return int(r.stdout.split("=")[-1].strip() or 0)

    def session(target: str, n: int, tag: str, failures: list) -> None:
        try:
            with smtplib.SMTP(target, 25, local_hostname=f"mx.{lab.OUTSIDE_DOMAIN}", timeout=120) as s:
                for _ in range(n):
                    raw = (f"From: bench@{lab.OUTSIDE_DOMAIN}\r\nTo: {rcpt}\r\nSubject: bench {tag}\r\n"
                           f"Message-ID: <{uuid.uuid4().hex}@{lab.OUTSIDE_DOMAIN}>\r\n\r\n{body}").encode()
                    s.sendmail(f"bench@{lab.OUTSIDE_DOMAIN}", [rcpt], raw)
        except (OSError, smtplib.SMTPException) as e:
            failures.append(f"{target}: {e}")

    def run(targets: list[str], tag: str) -> float:
        start, failures = count(), []
        per = [a.messages // a.sessions + (i < a.messages % a.sessions) for i in range(a.sessions)]
        threads = [threading.Thread(target=session, args=(targets[i % len(targets)], per[i], tag, failures))
                   for i in range(a.sessions)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            sys.exit(f"{tag}: sending failed: {failures[:3]}")
        while count() < start + a.messages:
            if time.monotonic() - t0 > 900:
                sys.exit(f"{tag}: only {count() - start} of {a.messages} delivered after 15 min")
            time.sleep(0.2)
        return time.monotonic() - t0

    try:
        one = run([ip], "one-mx")
        every = run(mx_ips, "every-mx")
    finally:
        subprocess.run(ssh + [f"doveadm expunge -u {rcpt} mailbox INBOX header Subject bench && "
                              f"doveadm quota recalc -u {rcpt}"], capture_output=True)
    print(f"\n{a.province}: {a.messages} messages of {a.size} bytes over {a.sessions} SMTP sessions into {rcpt}")
    print(f"  through {len(mx_ips)} MX ({', '.join(cfg.mx_hosts)})  {every:7.1f} s  {a.messages / every:7.1f} msg/s")
    print(f"  through the mail host alone (the floor)  {one:7.1f} s  {a.messages / one:7.1f} msg/s")
    print(f"  {len(mx_ips)} MX give {one / every:.2f}x the rate of one on this machine")


if __name__ == "__main__":
    main()
