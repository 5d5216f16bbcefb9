#!/usr/bin/env python3
"""Migration throughput of `govmail migrate`, from a govmail host and from an IMAP server, beside a
plain `doveadm backup` of the same data (the floor).

    sudo python3 bench/migration.py [--mb 1024] [--size BYTES] [--mailboxes N]

One run in the lab: Đắk Nông (the old host) and Lâm Đồng (the merged one) are brought up and
deployed if needed. About `--mb` MiB of mail is generated straight into the Maildirs of N Đắk Nông
mailboxes that Lâm Đồng's data maps (messages of `--size` bytes, random text), then copied to their
new mailboxes three times, each into emptied mailboxes:

- govmail host: `govmail migrate lamdong --from daknong` (dsync over SSH, plus Sieve, passwords,
  last logins, for every mapped mailbox);
- IMAP server: `govmail migrate ... --imap mail.daknong.gov.vn:993 --passwords` (Dovecot's imapc, into a
  mirror, then imported once each);
- the floor: `doveadm backup -R` over the same SSH forced command, mailbox by mailbox, nothing else;
- several into one: the same amount per mailbox in two Đắk Nông unit mailboxes that both map to
  Lâm Đồng's snnmt@, each copied into its own folder (mirrored, then imported), set beside the floor's
  rate.

Prints messages/s and MB/s for each; asserts nothing. The bench mail is removed from both hosts
afterwards, and the merged host's access to the old one revoked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import timed  # noqa: E402

from govmail import lab  # noqa: E402
from govmail.data import load_province  # noqa: E402
from govmail.targets import lab as lab_target  # noqa: E402

GENERATE = r'''
import os, random, string, sys, time
local, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cur = f"/var/vmail/daknong.gov.vn/{local}/Maildir/cur"
os.makedirs(cur, exist_ok=True)
rnd = random.Random(local)
line = lambda: "".join(rnd.choices(string.ascii_letters + string.digits + " ", k=76))
body = "\r\n".join(line() for _ in range(size // 78))
now = int(time.time())
for i in range(n):
    name = f"{now}.bench{i}.{local}:2,S"
    with open(os.path.join(cur, name), "w") as f:
        f.write(f"From: vanthu@outside.test\r\nTo: {local}@daknong.gov.vn\r\nSubject: bench-migrate {i}\r\n"
                f"Message-ID: <bench-{local}-{i}-{now}@outside.test>\r\nDate: Tue, 01 Dec 2026 08:00:00 +0700\r\n\r\n"
                f"{i} {body}\r\n")
'''


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024, help="MiB of mail to generate in all")
    ap.add_argument("--size", type=int, default=100_000, help="bytes per message")
    ap.add_argument("--mailboxes", type=int, default=4, help="old mailboxes to spread it over (quota: 500 MiB each)")
    a = ap.parse_args()
    cfg = load_province("lamdong")
    state = lab.load_state()
    if not {cfg.mail_host, "mail.daknong.gov.vn"} <= set(state.get("hosts", {})):
        from govmail.cli.deploy import deploy

        lab_target().up(["daknong", "lamdong"])
        if deploy(["daknong", "lamdong"]):
            sys.exit("deploy failed")
        state = lab.load_state()
    ssh_old = ["ssh", *lab.ssh_options(), f"root@{state['hosts']['mail.daknong.gov.vn']['ip']}"]
    ssh_new = ["ssh", *lab.ssh_options(), f"root@{state['hosts'][cfg.mail_host]['ip']}"]
    persons = {x.address for x in cfg.accounts if x.kind == "person"}
    people = [(o, n) for o, n in sorted(cfg.former.items())
              if o.endswith("@daknong.gov.vn") and n in persons][: a.mailboxes]
    per = max(1, a.mb * 1024 * 1024 // a.size // len(people))
    total_msgs = per * len(people)
    print(f"generating {total_msgs} messages of {a.size} bytes ({total_msgs * a.size / 1e6:.0f} MB) in "
          f"{len(people)} Đắk Nông mailboxes", file=sys.stderr)
    passwords = {}
    for old, _ in people:
        local = old.split("@")[0]
        timed(ssh_old + [f"python3 - {local} {per} {a.size} && chown -R vmail:vmail /var/vmail/daknong.gov.vn/{local} "
                         f"&& doveadm force-resync -u {old} INBOX && doveadm quota recalc -u {old}"], input=GENERATE)
        # A password the user set (an issued one must be changed first): for the IMAP source.
        issued, own = "Bench-Issued-1a", "Bench-Own-2b!"
        h = timed(ssh_old + [f"doveadm pw -s BLF-CRYPT -r 10 -p {issued}"])[1].stdout.strip()
        timed(ssh_old + [f"/usr/local/lib/govmail/accounts set-password {old}"], input=h)
        timed(ssh_old + [f"/usr/local/lib/govmail/accounts change-password {old}"], input=f"{issued}\n{own}\n")
        passwords[old] = own

    def empty() -> None:
        """The new mailboxes as a first migration finds them: no mail directory at all."""
        for _, new in people:
            local = new.split("@")[0]
            timed(ssh_new + [f"doveadm kick {new} >/dev/null; rm -rf /var/vmail/lamdong.gov.vn/{local}/Maildir && "
                             f"doveadm quota recalc -u {new}"])
        # ... and never copied: the migration tool refuses a second method on a copied mailbox.
        timed(ssh_new + ["rm -f /var/lib/govmail/migrate-state.json"])

    only = [x for old, _ in people for x in ("--only", old)]

    def govmail(*args: str) -> float:
        return timed(["govmail", "migrate", "lamdong", "--from", "daknong", *only, *args])[0]

    units = [o for o, n in sorted(cfg.former.items()) if o.endswith("@daknong.gov.vn") and n == "snnmt@lamdong.gov.vn"]
    per_unit = per * 3 // 4  # both into one mailbox: within its quota
    for old in units:
        timed(ssh_old + [f"python3 - {old.split('@')[0]} {per_unit} {a.size} && chown -R vmail:vmail "
                         f"/var/vmail/daknong.gov.vn/{old.split('@')[0]} && doveadm force-resync -u {old} INBOX"],
              input=GENERATE)

    def empty_folders() -> None:
        timed(ssh_new + ["doveadm kick snnmt@lamdong.gov.vn >/dev/null; doveadm mailbox delete -r -s -u "
                         "snnmt@lamdong.gov.vn 'Thư cũ' >/dev/null 2>&1; rm -rf /var/vmail/.govmail-migrate "
                         "/var/lib/govmail/migrate-state.json; doveadm quota recalc -u snnmt@lamdong.gov.vn"])

    results = {}
    try:
        empty()
        results["govmail host (dsync over SSH, with Sieve, passwords, last logins)"] = govmail()
        empty()
        t0 = time.monotonic()
        for old, new in people:
            timed(ssh_new + [f"doveadm backup -R -u {new} ssh -i /etc/govmail/migrate/id_ed25519 -o BatchMode=yes "
                             "-o UserKnownHostsFile=/etc/govmail/migrate/known_hosts root@mail.daknong.gov.vn "
                             f"dsync {old}"])
        results["floor: plain doveadm backup of the same mailboxes"] = time.monotonic() - t0
        empty()
        with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
            f.write("".join(f"{o},{p}\n" for o, p in passwords.items()))
        try:
            results["IMAP server (imapc, the users' own passwords)"] = govmail(
                "--imap", "mail.daknong.gov.vn:993", "--insecure", "--passwords", f.name)
        finally:
            os.unlink(f.name)
        empty_folders()
        several = timed(["govmail", "migrate", "lamdong", "--from", "daknong",
                         *[x for o in units for x in ("--only", o)]])[0]
    finally:
        empty()
        empty_folders()
        for old in units:
            subprocess.run(ssh_old + [f"doveadm expunge -u {old} mailbox '*' header Subject bench-migrate && "
                                      f"doveadm purge -u {old}"], capture_output=True)
        for old, _ in people:
            subprocess.run(ssh_old + [f"doveadm expunge -u {old} mailbox '*' header Subject bench-migrate && "
                                      f"doveadm purge -u {old} && doveadm quota recalc -u {old}"], capture_output=True)
        from govmail.merger.migrate import revoke

        revoke(cfg, lab_target(), "mail.daknong.gov.vn")  # the merged host's key off the old host
    mb = total_msgs * a.size / 1e6
    print(f"\nmigration of {total_msgs} messages ({mb:.0f} MB) in {len(people)} mailboxes, Đắk Nông -> Lâm Đồng")
    for what, secs in results.items():
        print(f"  {what:68} {secs:7.1f} s {total_msgs / secs:8.1f} msg/s {mb / secs:6.1f} MB/s")
    n, floor = per_unit * len(units), results["floor: plain doveadm backup of the same mailboxes"]
    print(f"\nseveral into one: {n} messages ({n * a.size / 1e6:.0f} MB) of {len(units)} unit mailboxes into folders of "
          "snnmt@lamdong.gov.vn")
    print(f"  {'govmail host, each into its own folder (mirror, then import)':68} {several:7.1f} s "
          f"{n / several:8.1f} msg/s   = {total_msgs / floor / (n / several):.2f} x the floor's time per message")


if __name__ == "__main__":
    main()
