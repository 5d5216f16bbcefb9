#!/usr/bin/env python3
"""How far a store's standby copy trails the store under a burst of mail: the recovery point under load.

    sudo python3 bench/standby_lag.py [PROVINCE] [--messages N] [--sessions S] [--size BYTES]

One run, one province of the lab with a store's standby (`hosts[].standby`; default lamdong: store2's
mailboxes copied to the mail host). From the controller, as other mail servers would, S parallel SMTP
sessions send N messages through every MX host to one mailbox of that store, twice:

- with the copies after each delivery (govmail-standby-deliveries.service, as deployed);
- with the minute's pass alone (that unit stopped for the run, started again after): the floor the
  delivery trigger improves on.

Every half second the bench counts the messages in the store's INBOX and in the standby's copy (each
host's own Dovecot); it prints when the store had them all, when the copy had them all, and the most
messages the copy was behind the store at one count: what losing the store at that moment would
have cost (until `govmail failover --recover` brings it back with its disk). The bench messages are
removed from both afterwards. Prints figures; asserts nothing.
"""

from __future__ import annotations

import shlex
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
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--sessions", type=int, default=6)
    ap.add_argument("--size", type=int, default=4096, help="message size in bytes")
    a = ap.parse_args()
    cfg, _ip, _ssh = lab_mail_host(a.province)
    if not cfg.standbys:
        sys.exit(f"{a.province} has no store with a standby (hosts[].standby); this bench needs one")
    store, standby = next(iter(cfg.standbys.items()))
    held = cfg.held_agencies()
    rcpt = next(x.address for x in cfg.accounts if x.status == "active" and cfg.store_of(x, held) == store)
    hosts = lab.load_state()["hosts"]
    mx_ips = [hosts[m]["ip"] for m in cfg.mx_hosts]
    body = ("Văn bản thử / standby bench line\r\n" * (a.size // 34 + 1))[: a.size]

    def ssh(host: str, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", *lab.ssh_options(), f"root@{hosts[host]['ip']}", command],
                              capture_output=True, text=True, timeout=120)

    def count(host: str) -> int:
        r = ssh(host, f"doveadm -o doveadm_port=0 -f flow mailbox status -u {shlex.quote(rcpt)} messages INBOX")
        try:
            return int(r.stdout.split("=")[-1].strip())
        except ValueError:
            return -1

    def session(target: str, n: int, tag: str, failures: list) -> None:
        try:
            with smtplib.SMTP(target, 25, local_hostname=f"mx.{lab.OUTSIDE_DOMAIN}", timeout=120) as s:
                for _ in range(n):
                    raw = (f"From: bench@{lab.OUTSIDE_DOMAIN}\r\nTo: {rcpt}\r\nSubject: standby bench {tag}\r\n"
                           f"Message-ID: <{uuid.uuid4().hex}@{lab.OUTSIDE_DOMAIN}>\r\n\r\n{body}").encode()
                    s.sendmail(f"bench@{lab.OUTSIDE_DOMAIN}", [rcpt], raw)
        except (OSError, smtplib.SMTPException) as e:
            failures.append(f"{target}: {e}")

    def burst(tag: str) -> tuple[float, float, int]:
        start_store, start_copy = count(store), count(standby)
        per = [a.messages // a.sessions + (i < a.messages % a.sessions) for i in range(a.sessions)]
        failures: list = []
        threads = [threading.Thread(target=session, args=(mx_ips[i % len(mx_ips)], per[i], tag, failures))
                   for i in range(a.sessions)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        behind, on_store, on_copy = 0, None, None
        while on_copy is None:
            n_store, n_copy = count(store) - start_store, count(standby) - start_copy
            behind = max(behind, n_store - n_copy)
            now = time.monotonic() - t0
            if on_store is None and n_store >= a.messages:
                on_store = now
            if on_store is not None and n_copy >= a.messages:
                on_copy = now
            if now > 900:
                sys.exit(f"{tag}: after 15 min the store has {n_store}, the copy {n_copy} of {a.messages}")
            time.sleep(0.5)
        for t in threads:
            t.join()
        if failures:
            sys.exit(f"{tag}: sending failed: {failures[:3]}")
        return on_store, on_copy, behind

    copier = cfg.standby_copier(store)
    try:
        trigger = burst("after-deliveries")
        ssh(copier, "systemctl stop govmail-standby-deliveries.service")
        minute = burst("minute-pass")
    finally:
        ssh(copier, "systemctl start govmail-standby-deliveries.service")
        ssh(store, f"doveadm -o doveadm_port=0 expunge -u {shlex.quote(rcpt)} mailbox INBOX header Subject "
                   f"'standby bench' && doveadm -o doveadm_port=0 quota recalc -u {shlex.quote(rcpt)}")
        ssh(copier, "systemctl start govmail-standby.service")
    print(f"\n{a.province}: {a.messages} messages of {a.size} bytes over {a.sessions} SMTP sessions through "
          f"{len(mx_ips)} MX into {rcpt} on {store}, its standby copy on {standby}")
    for name, (on_store, on_copy, behind) in (("copies after each delivery", trigger),
                                              ("the minute's pass alone (the floor)", minute)):
        print(f"  {name:37s} all on the store {on_store:6.1f} s, all on the copy {on_copy:6.1f} s "
              f"({on_copy - on_store:4.1f} s later); at most {behind} messages behind")


if __name__ == "__main__":
    main()
