#!/usr/bin/env python3
"""Mailbox move speed (`govmail move-mailbox`) beside a plain `doveadm backup` of the same mailbox.

    sudo python3 bench/move_rate.py [PROVINCE] [--messages N] [--size BYTES]

One run, one province of the lab with a store apart (default lamdong; brought up and deployed if
the lab does not run it). A person of the mail host gets N messages of SIZE bytes (written into the
Maildir, then indexed by Dovecot), then:

- the floor: one `doveadm backup` of that mailbox from the mail host to the store apart, as an
  operator would copy it by hand (its copy then removed, the store forgetting the mailbox);
- `govmail move-mailbox` of the same mailbox to the store apart (the data file given the person's
  agency there, in a copy of the data directory): every pass, the hold, the last copy, the switch,
  the catch-up, the check, the old copy put aside; and back to the mail host.

Prints the figures and what a login waited at most (the hold); the bench's messages and the copies
put aside are removed afterwards. Asserts nothing.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import lab_mail_host, timed  # noqa: E402

from govmail import lab  # noqa: E402
from govmail.data import data_dir  # noqa: E402
from govmail.host import contract  # noqa: E402

FILL = r"""
import os, sys, uuid
path, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(path + "/cur", exist_ok=True); os.makedirs(path + "/new", exist_ok=True); os.makedirs(path + "/tmp", exist_ok=True)
body = ("Van ban thu toc do chuyen hop thu / move bench line\r\n" * (size // 50 + 1))[:size]
for i in range(n):
    msg = (f"From: bench@outside.test\r\nTo: x\r\nSubject: bench-move {i}\r\n"
           f"Message-ID: <{uuid.uuid4().hex}@outside.test>\r\n\r\n{body}")
    with open(f"{path}/cur/{1800000000 + i}.bench{i}.move,S={len(msg)}:2,S", "w") as f:
        f.write(msg)
"""


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("province", nargs="?", default="lamdong")
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--size", type=int, default=8192, help="message size in bytes")
    a = ap.parse_args()
    cfg, ip, ssh = lab_mail_host(a.province)
    if not cfg.stores_apart:
        sys.exit(f"{a.province} has no store apart; this bench needs one")
    store = cfg.stores_apart[0]
    held = cfg.held_agencies()
    acc = [x for x in cfg.accounts if x.kind == "person" and x.status == "active" and cfg.store_of(x, held) == cfg.mail_host][-3]
    user, q = acc.address, shlex.quote(acc.address)
    local, _, domain = user.partition("@")
    home = f"{contract.PATHS['vmail']}/{domain}/{local}"
    hosts = lab.load_state()["hosts"]
    store_ssh = ["ssh", *lab.ssh_options(), f"root@{hosts[store]['ip']}"]
    tool = f"{contract.PATHS['lib']}/accounts"

    # The person's agency on the store apart, in a copy of the data (what an operator edits first).
    data = Path(tempfile.mkdtemp(prefix="govmail-move-bench-"))
    shutil.copytree(data_dir(), data / "data")
    yml = data / "data" / f"{a.province}.yml"
    listed = ", ".join(held)
    yml.write_text(yml.read_text().replace(f"agencies: [{listed}]", f"agencies: [{listed}, {cfg.agency_of(acc)}]"))

    timed(ssh + [f"doveadm user {q} >/dev/null && python3 -c {shlex.quote(FILL)} {home}/Maildir {a.messages} {a.size} "
                 f"&& chown -R vmail:vmail {home} && doveadm force-resync -u {q} INBOX && doveadm quota recalc -u {q}"])
    size = subprocess.run(ssh + [f"du -sm {home}/Maildir | cut -f1"], capture_output=True, text=True).stdout.strip()
    aside = []
    try:
        # The floor: doveadm alone, to an empty copy on the store apart.
        timed(ssh + [f"{tool} move {q} --begin {store}"])
        plain, _ = timed(ssh + [f"doveadm -o doveadm_port=0 backup -u {q} tcp:{hosts[store]['ip']}:{contract.PORTS['doveadm']}"])
        timed(ssh + [f"{tool} move {q} --abort"])
        timed(store_ssh + [f"rm -rf {home}"])
        env = {**os.environ, "GOVMAIL_DATA_DIR": str(data / "data")}
        there, r = timed(["govmail", "move-mailbox", user], env=env, cwd=ROOT)
        aside += re.findall(r"in (/\S+)$", r.stdout, re.M)
        back, r2 = timed(["govmail", "move-mailbox", user], cwd=ROOT)
        aside += re.findall(r"in (/\S+)$", r2.stdout, re.M)
    finally:
        subprocess.run(ssh + [f"{tool} move {q} --abort; doveadm expunge -u {q} mailbox INBOX header Subject bench-move; "
                              f"doveadm quota recalc -u {q}"], capture_output=True)
        for path in aside:  # the bench's own copies put aside (bench messages and the lab's test mail)
            for s in (ssh, store_ssh):
                subprocess.run(s + [f"case {shlex.quote(path)} in {contract.PATHS['vmail']}/.moved/*) rm -rf {shlex.quote(path)};; esac"],
                               capture_output=True)
        shutil.rmtree(data, ignore_errors=True)
    switched = re.search(r"switched ([\d.]+) s into the hold", r.stdout)
    print(f"\n{a.province}: {user}, {a.messages} messages of {a.size} bytes ({size} MiB on disk), "
          f"{cfg.mail_host} -> {store}")
    print(f"  plain doveadm backup (the floor)         {plain:7.1f} s  {a.messages / plain:7.0f} msg/s")
    print(f"  govmail move-mailbox, there              {there:7.1f} s  {a.messages / there:7.0f} msg/s  "
          f"({there / plain:.2f}x the floor; logins waited at most the 10 s hold, switched "
          f"{switched.group(1) if switched else '?'} s into it)")
    print(f"  govmail move-mailbox, back               {back:7.1f} s  {a.messages / back:7.0f} msg/s")


if __name__ == "__main__":
    main()
