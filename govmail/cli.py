"""`govmail`: the project's command line.

    govmail validate [PROVINCE ...]        check data files (all by default); touches no host
    govmail lab up PROVINCE ... [--fresh]  boot lab containers (one per province host)
    govmail lab down [PROVINCE ...]        stop them and remove everything the lab made
    govmail lab status                     what runs in the lab
    govmail lab ssh HOST [COMMAND]         a shell (or a command) on a lab host
    govmail lab rebuild HOST               destroy a lab host, boot a bare one in its place (DR drill)
    govmail deploy PROVINCE ... [--dry-run]
                                           pyinfra inventories/<p>.py deploy.py, provinces in parallel
    govmail up PROVINCE ...                lab up + deploy: a running mail host per province
    govmail address PROVINCE NAME [--agency A] [--department D]
                                           the address the province's naming rule gives
    govmail import PROVINCE FILE.csv       people (name, agency, role[, department]) -> directory entries
    govmail hash-password                  prompt for a password, print its {BLF-CRYPT} hash
    govmail set-password ADDRESS           administrator's reset: prompt, check the province's policy,
                                           store on its host (the user changes it at first login)
    govmail hand-over ADDRESS --to NAME    a unit's mailbox to its new head (DN Art. 13.2, TN Art. 10.2)
    govmail passwd ADDRESS                 a user changes their own password (the host's password
                                           service, HTTPS); no administrator needed
    govmail restore ADDRESS                lift a mailbox's suspension for inactivity (LC Art. 8.3),
                                           or re-create a deleted one
    govmail backup run PROVINCE            back the mail host up now (the timer does it daily)
    govmail backup status [PROVINCE ...]   age and size of the last good backup, per mail host
    govmail backup list PROVINCE           the archives
    govmail backup restore-mailbox ADDRESS [--at TIME] [--folder NAME]
                                           one mailbox (or folder) as it was, merged into the live one
    govmail backup restore-host PROVINCE [--at TIME]
                                           after a rebuild: store, passwords, TLS, logs, all mail
    govmail dns PROVINCE                   the DNS records to publish (zone-file format)
    govmail directory PROVINCE             the directory for the portal (HTML, CSV, vCard)
    govmail notice PROVINCE TEXT --until T the outage notice on the web mail, mailed to everyone
    govmail verify PROVINCE ... [--out D]  the compliance checks on the province's hosts, read-only;
                                           HTML, Markdown, JUnit reports; exit 1 when a clause fails
    govmail coverage [--markdown]          every article of the five decisions: checked, not yet, not technical
    govmail report PROVINCE monthly|annual [--period P] [--mail]
                                           the operations / usage report, made on the host now
    govmail schema                         print the data-file reference (docs/data-file.md)
    govmail test [PYTEST ARGS]             unit tests, then the lab tests (boots the lab)
"""

from __future__ import annotations

import argparse
import getpass
import os
import subprocess
import sys

from . import admin, verifycli, webcli
from .data import ROOT, DataError, available_provinces, load_province
from .runner import deploy
from .targets import TargetError, current


def err(msg: str) -> None:
    print(f"govmail: {msg}", file=sys.stderr)


def province_key(value: str) -> str:
    """An argument naming a province: a key of group_data/ (`daknong`), never a path."""
    import re

    known = available_provinces()
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", value):
        raise argparse.ArgumentTypeError(
            f"{value[:80]!r} is not a province key; a key is the name of a data file in the data directory "
            f"without .yml (lower-case letters, digits, '-'), one of: {', '.join(known) or 'none'}")
    if value not in known:
        raise argparse.ArgumentTypeError(f"no province {value!r} in the data directory; known: {', '.join(known) or 'none'}")
    return value


def mail_address(value: str) -> str:
    from .text import address_problem

    why = address_problem(value.lower())
    if why:
        raise argparse.ArgumentTypeError(f"{value[:80]!r} is not a mail address: {why}")
    return value.lower()


def iso_time(value: str) -> str:
    import datetime

    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value[:40]!r} is not an ISO time such as 2026-11-20T12:00") from None
    return value


def host_name(value: str) -> str:
    from .text import domain_problem

    if domain_problem(value):
        raise argparse.ArgumentTypeError(f"{value[:80]!r} is not a host name such as mail.daknong.gov.vn")
    return value


def imap_endpoint(value: str) -> str:
    """HOST[:PORT] of an IMAP server: a host name and a port 1..65535."""
    host, _, port = value.partition(":")
    if not (port == "" or (port.isdigit() and 0 < int(port) < 65536)):
        raise argparse.ArgumentTypeError(f"{value[:80]!r}: the port must be a number 1..65535")
    return host_name(host) + (f":{port}" if port else "")


def _province(key: str):
    """The province's config, or None after printing every problem of its data."""
    try:
        return load_province(key)
    except DataError as e:
        err(str(e))
        return None


def cmd_validate(args) -> int:
    provinces = args.provinces or available_provinces()
    bad = 0
    for p in provinces:
        try:
            cfg = load_province(p, cache=False)  # asked to validate: validates, whatever was kept
        except DataError as e:
            bad += 1
            print(f"✗ {p}: {e}")
            continue
        for w in cfg.warnings:
            print(f"⚠ {w}")
        att = cfg.policy.attachment.max_mb
        print(
            f"✓ {p}: {cfg.domain}, {len(cfg.accounts)} mailboxes, {len(cfg.aliases)} lists, "
            f"quota {cfg.policy.quota.default_mb} MiB [{cfg.cite('quota')}], "
            f"attachments {str(att) + ' MiB' if att else 'not limited'} -> message limit "
            f"{cfg.message_size_limit:,} bytes [{cfg.cite('attachment')}]"
        )
    return 1 if bad else 0


def cmd_deploy(args) -> int:
    return deploy(args.provinces, args.dry_run)


def cmd_up(args) -> int:
    from .lab import LabError
    from .targets import lab

    if any(_province(p) is None for p in args.provinces):
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
    from . import lab
    from .targets import lab as lab_target

    try:
        if args.lab_cmd == "up":
            if any(_province(p) is None for p in args.provinces):
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


def cmd_hash_password(args) -> int:
    from .passwords import hash_password

    pw = getpass.getpass("Password: ")
    if pw != getpass.getpass("Again: "):
        err("the two entries differ")
        return 1
    print(hash_password(pw))
    return 0


def cmd_address(args) -> int:
    from .naming import NameClash, address_for, all_units, local_units, unit_of

    cfg = _province(args.province)
    if cfg is None:
        return 2
    m = cfg.model
    units = set(all_units(m))
    if args.agency and args.agency not in units:
        err(f"agency {args.agency!r} is not in the directory of {cfg.key}; known: {', '.join(sorted(units))}")
        return 2
    unit = unit_of(args.agency, args.department, local_units(m), cfg.policy.naming.unit_order)
    taken = {a.address for a in cfg.accounts} | set(cfg.aliases)
    try:
        print(address_for(args.name, unit, cfg.domain, cfg.policy.naming, taken))
    except NameClash as e:
        err(str(e))
        return 1
    return 0


def cmd_import(args) -> int:
    from .csvimport import CsvError, read_people
    from .naming import import_people, yaml_entry

    cfg = _province(args.province)
    if cfg is None:
        return 2
    try:
        rows, refused, cleaned = read_people(args.csv)
    except CsvError as e:
        err(str(e))
        return 2
    entries, problems = import_people(cfg, [r for _, r in rows], lines=[n for n, _ in rows], source=args.csv)
    print(f"# {len(entries)} people for directory.people of group_data/{cfg.key}.yml "
          f"(addresses by {cfg.policy.naming.article}); review, then paste under `people:`")
    for e in entries:
        print(yaml_entry(e))
    for w in cleaned:
        err(f"warning: {w}")
    for p in refused + problems:
        err(p)
    n = len(refused) + len(problems)
    print(f"govmail: {len(entries)} addresses assigned, {n} rows need a decision", file=sys.stderr)
    return 1 if n else 0


def cmd_dns(args) -> int:
    from .dns import zone_text

    cfg = _province(args.province)
    if cfg is None:
        return 2
    target = current()
    keys = {d: target.published.dkim_record(cfg, d) for d, _ in cfg.dkim_keys}
    print(zone_text(cfg, target.host_address(cfg), keys), end="")
    return 0


def cmd_schema(args) -> int:
    from .docs import data_file_reference

    print(data_file_reference(), end="")
    return 0


def cmd_test(args) -> int:
    from .lab import DEPLOY_FAILURE as failure

    env = dict(os.environ)
    failure.unlink(missing_ok=True)
    r = subprocess.run([sys.executable, "-m", "pytest", "tests", *args.pytest_args], cwd=ROOT, env=env)
    if failure.exists():
        print("\ngovmail test: the lab deploy failed; the end of each province's deploy log:\n")
        print(failure.read_text())
    return r.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="govmail", description="Provincial mail servers as code.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("validate", help="check province data files; touches no host")
    p.add_argument("provinces", nargs="*", type=province_key)
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("deploy", help="deploy provinces (pyinfra), in parallel")
    p.add_argument("provinces", nargs="+", type=province_key)
    p.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    p.set_defaults(fn=cmd_deploy)

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

    p = sub.add_parser("hash-password", help="print the {BLF-CRYPT} hash of a prompted password")
    p.set_defaults(fn=cmd_hash_password)

    p = sub.add_parser("set-password", help="set a mailbox's password on its host (prompted)")
    p.add_argument("address", type=mail_address)
    p.add_argument("--from-env", action="store_true", help="read it from GOVMAIL_PASSWORD (for scripts)")
    p.set_defaults(fn=admin.cmd_set_password)

    p = sub.add_parser("hand-over", help="hand a unit's mailbox to its new head: password reset, mail kept")
    p.add_argument("address", type=mail_address)
    p.add_argument("--to", required=True, help="full name of the new head (recorded in the audit log)")
    p.add_argument("--from-env", action="store_true", help="read the password from GOVMAIL_PASSWORD")
    p.set_defaults(fn=admin.cmd_hand_over)

    p = sub.add_parser("passwd", help="change your own mail password (the host's password service)")
    p.add_argument("address", type=mail_address)
    p.add_argument("--server", help="the password service, e.g. https://mail.laichau.gov.vn:8443/ (default: "
                   "from the province's data)")
    p.add_argument("--cafile", help="CA certificate(s) to trust (a self-signed host's certificate)")
    p.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    p.add_argument("--from-env", action="store_true",
                   help="read GOVMAIL_PASSWORD (current) and GOVMAIL_NEW_PASSWORD (for scripts)")
    p.set_defaults(fn=admin.cmd_passwd)

    p = sub.add_parser("address", help="the address a person gets by the province's naming rule")
    p.add_argument("province", type=province_key)
    p.add_argument("name", help="full Vietnamese name, e.g. 'Nguyễn Văn Hậu'")
    p.add_argument("--agency", help="agency or district id")
    p.add_argument("--department", help="department id (district departments are part of the address)")
    p.set_defaults(fn=cmd_address)

    p = sub.add_parser("import", help="CSV of (full name, agency, role[, department]) -> directory entries")
    p.add_argument("province", type=province_key)
    p.add_argument("csv")
    p.set_defaults(fn=cmd_import)

    p = sub.add_parser("readdress", help="addresses that change under a new unit structure (old -> new); --apply "
                       "writes them, old addresses kept as `former:`")
    p.add_argument("province", type=province_key)
    p.add_argument("--from", dest="old", metavar="OLD.yml", help="the data file before the restructuring (units' "
                   "old addresses): e.g. `git show HEAD:group_data/<province>.yml > old.yml`")
    p.add_argument("--apply", action="store_true", help="write the data file (validated first)")
    p.set_defaults(fn=lambda a: __import__("govmail.readdress", fromlist=["cmd"]).cmd(a))

    p = sub.add_parser("migrate", help="copy a merged province's mailboxes from a predecessor's host (incremental)")
    p.add_argument("province", type=province_key)
    p.add_argument("--from", dest="source", required=True, type=province_key, help="the predecessor's key")
    p.add_argument("--imap", metavar="HOST[:PORT]", type=imap_endpoint, help="copy from this IMAP server instead (993: TLS)")
    p.add_argument("--master-user", help="IMAP master login (its password in GOVMAIL_IMAP_PASSWORD)")
    p.add_argument("--passwords", metavar="FILE.csv", help="IMAP: each user's own password (old address,password)")
    p.add_argument("--insecure", action="store_true", help="IMAP: do not verify the server's certificate")
    p.add_argument("--dry-run", action="store_true", help="list the mailboxes and their sizes; change nothing")
    p.add_argument("--final", action="store_true", help="the catch-up after the DNS switch; then revoke access")
    p.add_argument("--keep-access", action="store_true", help="with --final: leave the key on the old host")
    p.add_argument("--only", metavar="OLD_ADDRESS", action="append", type=mail_address,
                   help="copy only this old mailbox (repeat for more); the others are not touched")
    p.add_argument("--leave-unmapped", action="store_true",
                   help="with --final: end the migration although old mailboxes with mail are not mapped")
    p.set_defaults(fn=lambda a: __import__("govmail.migrate", fromlist=["cmd"]).cmd(a))

    p = sub.add_parser("restore", help="lift an inactive mailbox's suspension (LC Art. 8.3), re-create a deleted one")
    p.add_argument("address", type=mail_address)
    p.set_defaults(fn=admin.cmd_restore)

    p = sub.add_parser("backup", help="backups on the province's backup host: run, status, list, restore")
    bsub = p.add_subparsers(dest="backup_cmd", required=True)
    q = bsub.add_parser("run", help="back a province's mail host up now")
    q.add_argument("provinces", nargs="+", type=province_key)
    q = bsub.add_parser("status", help="age and size of the last good backup (all provinces by default)")
    q.add_argument("provinces", nargs="*", type=province_key)
    q = bsub.add_parser("list", help="the archives of a province's mail host")
    q.add_argument("provinces", nargs="+", type=province_key)
    q = bsub.add_parser("restore-mailbox", help="one mailbox (or folder) as it was, merged into the live one")
    q.add_argument("address", type=mail_address)
    q.add_argument("--at", type=iso_time, help="ISO time, e.g. 2026-11-20T12:00 (default: the last archive)")
    q.add_argument("--folder", help="only this folder, e.g. INBOX or Sent")
    q = bsub.add_parser("restore-host", help="after a rebuild: store, TLS, logs and all mail from the archive")
    q.add_argument("provinces", nargs=1, type=province_key)
    q.add_argument("--at", type=iso_time, help="ISO time (default: the last archive)")
    p.set_defaults(fn=admin.cmd_backup)

    p = sub.add_parser("dns", help="the DNS records a province publishes (zone-file format)")
    p.add_argument("province", type=province_key)
    p.set_defaults(fn=cmd_dns)

    webcli.register(sub, province_key)
    verifycli.register(sub, province_key)

    p = sub.add_parser("schema", help="print the data-file reference")
    p.set_defaults(fn=cmd_schema)

    p = sub.add_parser("test", help="run all tests (the lab tests boot and deploy the lab)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_test)

    args = ap.parse_args(argv)
    if args.cmd in ("deploy", "up"):
        os.chdir(ROOT)
    try:
        return args.fn(args)
    except TargetError as e:
        err(str(e))
        return 2
    except DataError as e:
        err(str(e))
        return 2
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except OSError as e:
        err(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")
        return 1
    except Exception as e:  # a bug of govmail, not of the input: one line, the traceback on request
        if os.environ.get("GOVMAIL_DEBUG"):
            raise
        err(f"internal error: {type(e).__name__}: {e} (GOVMAIL_DEBUG=1 shows where)")
        return 70


if __name__ == "__main__":
    sys.exit(main())
