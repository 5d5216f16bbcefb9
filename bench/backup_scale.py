#!/usr/bin/env python3
"""Backup time against the number of mailboxes (printed, never asserted).

    sudo python3 bench/backup_scale.py [N]        (default N = 5000)

On a fresh Đắk Nông lab (mail host + backup host) with a directory of N people (as
bench/directory_scale.py builds it), each mailbox holding a few small messages:
  1. first backup: every mailbox copied by `doveadm backup` into the staging mirror, all to borg;
  2. second backup, nothing changed: only the mailboxes' change signatures are read;
  3. backup after 1% of the mailboxes received a message: only those are copied.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import timed  # noqa: E402
from directory_scale import big_data, deploy  # noqa: E402

from govmail import lab  # noqa: E402
from govmail.data import load_province  # noqa: E402
from govmail.targets import lab as lab_target  # noqa: E402

FILL = r"""
import os, sys, time, random, pwd
domain, per, users = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
vm = pwd.getpwnam("vmail")
for u in users:
    d = f"/var/vmail/{domain}/{u}/Maildir"
    for sub in ("cur", "new", "tmp"):
        os.makedirs(f"{d}/{sub}", exist_ok=True)
    for i in range(per):
        name = f"{d}/new/{time.time():.6f}.bench{i}.{random.random()}"
        with open(name, "w") as f:
            f.write(f"Subject: Bench {u} {i}\nMessage-ID: <{u}.{i}.{random.random()}@lab.test>\n\n"
                    + "Nội dung thư.\n" * 100)
    for root, dirs, files in os.walk(f"/var/vmail/{domain}/{u}"):
        for x in [root] + [os.path.join(root, f) for f in files]:
            os.chown(x, vm.pw_uid, vm.pw_gid)
print(len(users))
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    tmp = Path(tempfile.mkdtemp(prefix="govmail-bench-"))
    data = tmp / "group_data"
    big_data(n, data)
    os.environ["GOVMAIL_DATA_DIR"] = str(data)
    cfg = load_province("daknong")
    state = lab_target().up(["daknong"], fresh=True)
    deploy(data)
    ssh = ["ssh", *lab.ssh_options(), f"root@{state['hosts'][cfg.mail_host]['ip']}"]
    gm = [sys.executable, "-m", "govmail.cli"]

    people = [a.address.split("@")[0] for a in cfg.accounts if a.kind == "person"]
    timed(ssh + ["python3", "-", cfg.domain, "3", ",".join(people)], input=FILL)

    first, r1 = timed(gm + ["backup", "run", "daknong"], cwd=ROOT)
    again, r2 = timed(gm + ["backup", "run", "daknong"], cwd=ROOT)
    changed = people[:: 100]
    timed(ssh + ["python3", "-", cfg.domain, "1", ",".join(changed)], input=FILL)
    third, r3 = timed(gm + ["backup", "run", "daknong"], cwd=ROOT)
    shutil.rmtree(tmp)

    def copied(r) -> str:
        line = next((x for x in r.stdout.splitlines() if x.startswith("{")), "{}")
        j = json.loads(line)
        return f"{j.get('mailboxes_copied', '?'):,} of {j.get('mailboxes', '?'):,} mailboxes copied"

    print(f"\nbackup scaling on one lab host (Đắk Nông rules, {len(people):,} mailboxes, 3 messages each)")
    print(f"  first backup (every mailbox copied)          {first:7.1f} s   ({copied(r1)})")
    print(f"  second backup, nothing changed               {again:7.1f} s   ({copied(r2)})")
    print(f"  after mail to 1% of the mailboxes            {third:7.1f} s   ({copied(r3)})")


if __name__ == "__main__":
    main()
