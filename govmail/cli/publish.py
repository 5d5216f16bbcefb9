"""Commands of the web side: `govmail directory` (the portal's directory) and `govmail notice`
(the outage notice on the web mail's login page, mailed to every mailbox)."""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path

from ..data import load_province
from ..host import contract
from ..targets import current
from .args import province, province_key

VN = datetime.timezone(datetime.timedelta(hours=7))  # Vietnam's time, for times without an offset
NOTICE_MAX = 500


def notice_text(value: str) -> str:
    text = " ".join(value.split())
    if not text:
        raise argparse.ArgumentTypeError("the notice is empty")
    if len(text) > NOTICE_MAX:
        raise argparse.ArgumentTypeError(f"the notice has {len(text)} characters; at most {NOTICE_MAX}")
    if any(ord(c) < 32 or 0x7f <= ord(c) < 0xa0 for c in text):
        raise argparse.ArgumentTypeError("the notice contains a control character")
    return text


def recovery_time(value: str) -> datetime.datetime:
    """An ISO time; without an offset it is Vietnam's time (UTC+7)."""
    try:
        t = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value[:40]!r} is not a time such as 2026-12-03T08:00 "
                                         "(Vietnam time unless an offset is given)") from None
    return t if t.tzinfo else t.replace(tzinfo=VN)


def register(sub) -> None:
    p = sub.add_parser("dns", help="the DNS records a province publishes (zone-file format)")
    p.add_argument("province", type=province_key)
    p.set_defaults(fn=cmd_dns)

    p = sub.add_parser("directory", help="write the directory for the provincial portal: index.html, CSV, vCard "
                       "(also served at https://<mail host>/directory/)")
    p.add_argument("province", type=province_key)
    p.add_argument("--out", type=Path, help="directory to write into (default ./directory-<province>)")
    p.set_defaults(fn=cmd_directory)

    p = sub.add_parser("notice", help="show an outage or maintenance notice on the web mail's login page and mail "
                       "it to every mailbox (BN Art. 13, TN Art. 16.5); --clear withdraws it")
    p.add_argument("province", type=province_key)
    p.add_argument("text", nargs="?", type=notice_text, help="what is wrong, in Vietnamese (and English)")
    p.add_argument("--until", type=recovery_time, help="expected recovery, e.g. 2026-12-03T08:00 (Vietnam time)")
    p.add_argument("--clear", action="store_true", help="withdraw the notice")
    p.set_defaults(fn=cmd_notice)


def cmd_directory(args) -> int:
    from ..publish import portal

    cfg = load_province(args.province)
    out = args.out or Path(f"directory-{cfg.key}")
    out.mkdir(parents=True, exist_ok=True)
    files = portal.files(cfg)
    for name, content in files.items():
        (out / name).write_bytes(content)
    print(f"{len(portal.entries(cfg))} addresses of {cfg.model.name} written to {out}/ "
          f"({', '.join(files)}); the host serves the same at https://{cfg.mail_host}/directory/")
    return 0


def cmd_notice(args) -> int:
    cfg = load_province(args.province)
    tool = f"{contract.PATHS['lib']}/accounts notice"
    if args.clear:
        if args.text or args.until:
            print("govmail: --clear takes no text and no --until", file=sys.stderr)
            return 2
        cmd, stdin = f"{tool} clear", None
    else:
        if not args.text or not args.until:
            print("govmail: give the notice's text and --until (the expected recovery), or --clear", file=sys.stderr)
            return 2
        if args.until <= datetime.datetime.now(datetime.timezone.utc):
            print(f"govmail: --until {args.until.isoformat()} is in the past", file=sys.stderr)
            return 2
        shown = args.until.astimezone(VN).strftime("%H:%M %d/%m/%Y (UTC+7)")
        cmd = (f"{tool} set --until-ts {int(args.until.timestamp())} --until {shlex.quote(shown)} "
               f"--sender {shlex.quote(cfg.postmaster)}")
        stdin = args.text
    r = current().run(cfg.mail_host, cmd, input=stdin)
    if r.returncode != 0:
        print(f"govmail: {cfg.mail_host}: {(r.stderr.strip() or 'the notice could not be set')[-300:]}", file=sys.stderr)
        return 1
    print(f"{cfg.mail_host}: {r.stdout.strip()}")
    return 0


def cmd_dns(args) -> int:
    from ..publish.dns import zone_text

    cfg = province(args.province)
    if cfg is None:
        return 2
    target = current()
    keys = {d: target.published.dkim_record(cfg, d) for d, _ in cfg.dkim_keys}
    print(zone_text(cfg, target.host_address(cfg), keys), end="")
    return 0
