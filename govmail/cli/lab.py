"""The lab's commands: `up` (lab and deploy), `lab up|down|status|ssh|rebuild|dns-switch`, `test`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from ..data import ROOT, load_province
from .args import err, host_name, province, province_key
from .deploy import deploy


def register(sub) -> None:
    p = sub.add_parser("up", help="boot the lab for provinces and deploy them")
    p.add_argument("provinces", nargs="+", type=province_key)
    p.add_argument("--fresh", action="store_true", help="new containers from the image (drops their state)")
    p.set_defaults(fn=cmd_up)

    p = sub.add_parser("lab", help="the local lab of containers")
    lsub = p.add_subparsers(dest="lab_cmd", required=True)
    q = lsub.add_parser("up")
    q.add_argument("provinces", nargs="+", type=province_key)
    q.add_argument("--fresh", action="store_true")
    q = lsub.add_parser("down")
    q.add_argument("provinces", nargs="*", type=province_key)
    q.add_argument("--image", action="store_true", help="also delete the cached Debian image")
    lsub.add_parser("status")
    q = lsub.add_parser("rebuild", help="destroy a lab host and boot a bare one in its place")
    q.add_argument("host", type=host_name)
    q = lsub.add_parser("dns-switch", help="the lab's DNS switch of a merger: the predecessors' domains to the "
                        "merged province's host (the runbook's DNS step)")
    q.add_argument("province", type=province_key)
    q.add_argument("--back", action="store_true", help="give the domains back to the old hosts")
    q = lsub.add_parser("ssh")
    q.add_argument("host", type=host_name)
    q.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_lab)

    p = sub.add_parser("test", help="run all tests (the lab tests boot and deploy the lab)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_test)


def cmd_up(args) -> int:
    from ..lab import LabError
    from ..targets import lab

    if any(province(p) is None for p in args.provinces):
        return 2
    try:
        lab().up(args.provinces, fresh=args.fresh)
    except LabError as e:
        err(str(e))
        return 1
    rc = deploy(args.provinces)
    if rc == 0:
        for p in args.provinces:
            cfg = load_province(p)
            print(
                f"  {cfg.mail_host}: SMTP 25, submission 587/465, IMAP 993, POP3 995. "
                f"Initial passwords: govmail lab ssh {cfg.mail_host} cat /root/govmail-initial-passwords"
            )
    return rc


def cmd_lab(args) -> int:
    from .. import lab
    from ..targets import lab as lab_target

    try:
        if args.lab_cmd == "up":
            if any(province(p) is None for p in args.provinces):
                return 2
            lab_target().up(args.provinces, fresh=args.fresh)
        elif args.lab_cmd == "down":
            lab_target().down(args.provinces or None, keep_image=not args.image)
        elif args.lab_cmd == "status":
            rows = lab.status()
            if not rows:
                print("the lab is not running")
            for r in rows:
                print(f"{r['host']:32} {r['province']:12} {r['ip']:12} {'running' if r['running'] else 'STOPPED'}")
        elif args.lab_cmd == "rebuild":
            lab_target().rebuild(args.host)
        elif args.lab_cmd == "dns-switch":
            lab_target().switch_dns(args.province, back=args.back)
        elif args.lab_cmd == "ssh":
            state = lab.load_state()
            h = state["hosts"].get(args.host)
            if not h:
                err(f"no lab host {args.host!r}; running: {', '.join(state['hosts']) or 'none'}")
                return 2
            os.execvp("ssh", ["ssh", *lab.ssh_options(), f"root@{h['ip']}", *args.command])
    except lab.LabError as e:
        err(str(e))
        return 1
    return 0


def cmd_test(args) -> int:
    from ..lab import DEPLOY_FAILURE as failure

    env = dict(os.environ)
    failure.unlink(missing_ok=True)
    r = subprocess.run([sys.executable, "-m", "pytest", "tests", *args.pytest_args], cwd=ROOT, env=env)
    if failure.exists():
        print("\ngovmail test: the lab deploy failed; the end of each province's deploy log:\n")
        print(failure.read_text())
    return r.returncode
