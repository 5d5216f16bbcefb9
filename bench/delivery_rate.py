#!/usr/bin/env python3
"""Delivery rate through the full filtering chain, beside the same host with filtering bypassed.

    sudo python3 bench/delivery_rate.py [PROVINCE] [--messages N] [--sessions S] [--size BYTES]

One run, one lab host (default daknong; the lab is brought up and deployed if needed). Postfix's
`smtp-source` on the mail host sends N messages over S parallel SMTP sessions to the host's own
lab address (not loopback: rspamd treats the client as any other server), to one mailbox:

- filtered: port 25 as deployed: Postfix -> rspamd (spam, attachments, ClamAV, SPF/DKIM/DMARC) ->
  Dovecot LMTP (quota, Sieve) -> Maildir;
- bypassed (the floor): a temporary port 2525 listener without the milter, same delivery path.

The clock runs from the first connection until the last message is in the mailbox (Dovecot's own
count), so queueing and delivery are both inside the figure. The temporary listener and the bench
messages are removed afterwards (the next deploy would restore master.cf anyway). Prints figures;
asserts nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import lab_mail_host, timed  # noqa: E402

from govmail import lab  # noqa: E402

BYPASS = ("2525/inet=2525 inet n - y - - smtpd -o syslog_name=postfix/bench-bypass -o smtpd_milters= "
          "-o smtpd_recipient_restrictions=permit_mynetworks,reject_unauth_destination")


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("province", nargs="?", default="daknong")
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--size", type=int, default=4096, help="message size in bytes")
    a = ap.parse_args()
    cfg, ip, ssh = lab_mail_host(a.province)
    rcpt = [x.address for x in cfg.accounts if x.kind == "person" and x.status == "active"][-5]

    def count() -> int:
        r = subprocess.run(ssh + [f"doveadm -f flow mailbox status -u {rcpt} messages INBOX"],
                           capture_output=True, text=True)
        return int(r.stdout.split("=")[-1].strip() or 0)

    def run(port: int, tag: str) -> float:
        start = count()
        t0 = time.monotonic()
        timed(ssh + [f"smtp-source -c -s {a.sessions} -m {a.messages} -l {a.size} -S 'bench {tag}' "
                     f"-f bench@{lab.OUTSIDE_DOMAIN} -t {rcpt} {ip}:{port} >/dev/null"])
        while count() < start + a.messages:
            if time.monotonic() - t0 > 900:
                sys.exit(f"{tag}: only {count() - start} of {a.messages} delivered after 15 min")
            time.sleep(0.2)
        return time.monotonic() - t0

    timed(ssh + [f"postconf -Me '{BYPASS}' && postfix reload"])
    try:
        time.sleep(1)
        bypassed = run(2525, "bypassed")
        filtered = run(25, "filtered")
    finally:
        timed(ssh + ["postconf -MX 2525/inet && postfix reload"])
        subprocess.run(ssh + [f"doveadm expunge -u {rcpt} mailbox INBOX header Subject bench && "
                              f"doveadm quota recalc -u {rcpt}"], capture_output=True)
    print(f"\n{a.province}: {a.messages} messages of {a.size} bytes over {a.sessions} SMTP sessions "
          f"into {rcpt}")
    print(f"  full chain (Postfix, rspamd + ClamAV, Dovecot LMTP)  {filtered:7.1f} s  "
          f"{a.messages / filtered:7.1f} msg/s")
    print(f"  filtering bypassed (the floor)                       {bypassed:7.1f} s  "
          f"{a.messages / bypassed:7.1f} msg/s")
    print(f"  cost of filtering: {filtered / bypassed:.1f}x the time of bare delivery")


if __name__ == "__main__":
    main()
