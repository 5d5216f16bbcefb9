#!/usr/bin/env python3
"""Backup, restore and disaster-recovery figures for one province (printed, never asserted).

    sudo python3 bench/backup_restore.py [PROVINCE] [--gb N]     (default daknong, 1 GB)

1. fresh lab (mail host + backup host), cold deploy (the foundation's figure, for comparison);
2. N GB of generated mail (100 KiB messages, incompressible attachments) spread over 20 mailboxes;
3. first backup (everything goes over), then a second with nothing changed (deduplicated);
4. full rebuild: destroy the mail host, boot a bare one, deploy, `backup restore-host`, until
   every message is served again; the restore alone is also given.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import timed  # noqa: E402

from govmail import lab  # noqa: E402
from govmail.data import load_province  # noqa: E402
from govmail.targets import lab as lab_target  # noqa: E402

GENERATE = r"""
import os, sys, base64, time, random
domain, users, total = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
size, n = 100 * 1024, 0
body = base64.encodebytes(os.urandom(size * 3 // 4)).decode()
while n * size < total:
    u = users[n % len(users)]
    d = f"/var/vmail/{domain}/{u}/Maildir"
    for sub in ("cur", "new", "tmp"):
        os.makedirs(f"{d}/{sub}", exist_ok=True)
    msg = (f"Subject: Bench {n}\nMessage-ID: <bench{n}@lab.test>\nMIME-Version: 1.0\n"
           "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
           + body[: -20] + f"{n:020d}\n")
    with open(f"{d}/new/{int(time.time())}.bench{n}.{random.random()}", "w") as f:
        f.write(msg)
    n += 1
print(n)
"""


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("province", nargs="?", default="daknong")
    ap.add_argument("--gb", type=float, default=1.0)
    a = ap.parse_args()
    province, gb = a.province, a.gb
    cfg = load_province(province)
    pyinfra = [sys.executable, "-m", "pyinfra", "-y", f"inventories/{province}.py", "deploy.py"]
    gm = [sys.executable, "-m", "govmail.cli"]

    state = lab_target().up([province], fresh=True)
    ip = state["hosts"][cfg.mail_host]["ip"]
    ssh = ["ssh", *lab.ssh_options(), f"root@{ip}"]
    cold, _ = timed(pyinfra, cwd=ROOT)

    users = [a.address.split("@")[0] for a in cfg.accounts if a.kind == "person"][:20]
    total = int(gb * 2**30)
    t_gen, r = timed(ssh + ["python3", "-", cfg.domain, ",".join(users), str(total)], input=GENERATE)
    messages = int(r.stdout.strip())
    timed(ssh + [f"chown -R vmail:vmail /var/vmail/{cfg.domain} && doveadm force-resync -A '*'"])

    first, _ = timed(gm + ["backup", "run", province], cwd=ROOT)
    again, _ = timed(gm + ["backup", "run", province], cwd=ROOT)

    t0 = time.monotonic()
    timed(gm + ["lab", "rebuild", cfg.mail_host], cwd=ROOT)
    t_boot = time.monotonic() - t0
    t_deploy, _ = timed(pyinfra, cwd=ROOT)
    t_restore, _ = timed(gm + ["backup", "restore-host", province], cwd=ROOT)
    rebuild = time.monotonic() - t0
    served = int(subprocess.run(ssh + ["doveadm search -A mailbox INBOX header Subject Bench | wc -l"],
                                capture_output=True, text=True).stdout.strip() or 0)

    print(f"\n{province}: {gb:g} GB of mail, {messages:,} messages in {len(users)} mailboxes "
          f"(generated in {t_gen:.0f} s)")
    print(f"  cold deploy (bare host -> serving, for comparison)  {cold:7.1f} s")
    print(f"  first backup (all data to the backup host)          {first:7.1f} s   "
          f"({gb * 1024 / first:.0f} MiB/s)")
    print(f"  second backup, nothing changed                      {again:7.1f} s")
    print(f"  restore-host alone                                  {t_restore:7.1f} s   "
          f"({gb * 1024 / t_restore:.0f} MiB/s)")
    print(f"  full rebuild: destroy, boot bare ({t_boot:.0f} s), deploy ({t_deploy:.0f} s), restore  {rebuild:7.1f} s")
    print(f"  messages served after the rebuild: {served:,} of {messages:,}")


if __name__ == "__main__":
    main()
