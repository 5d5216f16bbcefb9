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
    govmail schema                         print the data-file reference (docs/data-file.md)
    govmail test [PYTEST ARGS]             unit tests, then the lab tests (boots the lab)
"""

from __future__ import annotations

import argparse
import getpass
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .data import ROOT, DataError, available_provinces, load_province


def err(msg: str) -> None:
    print(f"govmail: {msg}", file=sys.stderr)


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
            cfg = load_province(p)
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


def _deploy_one(province: str, dry: bool, log_dir: Path) -> tuple[str, int, float, Path]:
    log = log_dir / f"deploy-{province}.log"
    # A dry run is pyinfra's change detection without -y: it lists what would change and stops.
    flag = "--dry" if dry else "-y"
    cmd = [sys.executable, "-m", "pyinfra", flag, f"inventories/{province}.py", "deploy.py"]
    t = time.monotonic()
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return province, r.returncode, time.monotonic() - t, log


def detected_changes(log: Path) -> list[str]:
    """Operations a dry run says would change (pyinfra's "Detected changes" table)."""
    lines = log.read_text(errors="replace").splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if "Detected changes" in l) + 2
    except StopIteration:
        return []
    out = []
    for line in lines[start:]:
        if not line.strip():
            break
        cols = [c for c in line.strip().split("  ") if c.strip()]
        if len(cols) >= 3 and (cols[-1].strip() != "-" or cols[-2].strip() != "-"):
            kind = "would change" if cols[-2].strip() != "-" else "would run if an earlier change happens"
            out.append(f"{cols[0].strip()}: {kind}")
    return out


def summary_line(log: Path) -> str:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if "Grand total" in line:
            parts = line.split()
            # Grand total <ops> <success> <error> <nochange>
            return f"{parts[2]} operations: {parts[3]} changed, {parts[4]} failed, {parts[5]} unchanged"
    return "no summary (see log)"


def deploy(provinces: list[str], dry: bool = False) -> int:
    if any(_province(p) is None for p in provinces):
        return 2
    from .lab import LAB_DIR

    log_dir = Path(os.environ.get("GOVMAIL_LOG_DIR", LAB_DIR / "logs" if os.geteuid() == 0 else "/tmp"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"govmail: {'dry run of ' if dry else ''}deploying {', '.join(provinces)} (logs in {log_dir})", flush=True)
    rc = 0
    with ThreadPoolExecutor(max_workers=len(provinces)) as ex:
        for province, code, secs, log in ex.map(lambda p: _deploy_one(p, dry, log_dir), provinces):
            mark = "✓" if code == 0 else "✗"
            if dry and code == 0:
                found = detected_changes(log)
                real = [c for c in found if c.endswith(": would change")]
                print(f"{mark} {province}: {len(real) or 'no'} operations would change", flush=True)
                for c in found if real else []:
                    print(f"    {c}")
                continue
            print(f"{mark} {province}: {secs:.0f} s, {summary_line(log)}", flush=True)
            if code:
                rc = 1
                tail = log.read_text(errors="replace").splitlines()[-25:]
                print("\n".join("    " + t for t in tail))
    return rc


def cmd_deploy(args) -> int:
    return deploy(args.provinces, args.dry_run)


def cmd_up(args) -> int:
    from . import lab

    if any(_province(p) is None for p in args.provinces):
        return 2
    lab.up(args.provinces, fresh=args.fresh)
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

    try:
        if args.lab_cmd == "up":
            lab.up(args.provinces, fresh=args.fresh)
        elif args.lab_cmd == "down":
            lab.down(args.provinces or None, keep_image=not args.image)
        elif args.lab_cmd == "status":
            rows = lab.status()
            if not rows:
                print("the lab is not running")
            for r in rows:
                print(f"{r['host']:32} {r['province']:12} {r['ip']:12} {'running' if r['running'] else 'STOPPED'}")
        elif args.lab_cmd == "rebuild":
            lab.rebuild(args.host)
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


def _host_ssh(name: str) -> list[str]:
    """The ssh command prefix for a host: the lab's key and address, or the real host by name."""
    if os.environ.get("GOVMAIL_TARGET", "lab") == "lab":
        from . import lab

        h = lab.load_state()["hosts"].get(name)
        if not h:
            raise LookupError(f"{name} is not in the lab (govmail lab up ...)")
        return ["ssh", *lab.ssh_options(), f"root@{h['ip']}"]
    return ["ssh", f"{os.environ.get('GOVMAIL_SSH_USER', 'root')}@{name}"]


def _mailbox_host(address: str):
    """(province config, account, ssh command prefix for its host), or None after saying why not."""
    domain = address.rpartition("@")[2]
    cfg = next((c for c in map(load_province, available_provinces()) if c.domain == domain), None)
    acc = next((a for a in cfg.accounts if a.address == address), None) if cfg else None
    try:
        if cfg is None:
            raise LookupError(f"no province has the domain {domain!r}")
        if acc is None:
            raise LookupError(f"{address} is not in the directory of {cfg.key}")
        return cfg, acc, _host_ssh(cfg.mail_host)
    except LookupError as e:
        err(str(e))
        return None


def _account_tool(ssh: list[str], args: str, input: str | None = None) -> subprocess.CompletedProcess:
    from .services.accounts import operator

    return subprocess.run([*ssh, f"GOVMAIL_ACTOR={operator()} /usr/local/lib/govmail/accounts {args}"],
                          input=input, text=True, capture_output=True)


def _new_password(args, cfg, acc, prompt: str) -> str | None:
    """A password for an administrator's reset (prompted, or GOVMAIL_PASSWORD with --from-env),
    checked against the province's policy; None after saying what is wrong."""
    from . import passwords

    pw = os.environ.get("GOVMAIL_PASSWORD") if args.from_env else None
    if pw is None:
        pw = getpass.getpass(prompt)
        if pw != getpass.getpass("Again: "):
            err("the two entries differ")
            return None
    bad = passwords.problems(pw, cfg.policy.password, admin=acc.role == "admin")
    if bad:
        err("password refused: " + "; ".join(bad))
        return None
    return pw


def _first_login_note(cfg) -> str:
    from .services.accounts import password_url

    if not cfg.policy.password.change_at_first_login:
        return ""
    return (f"; the user must change it before first use ({cfg.policy.password.article}) at "
            f"{password_url(cfg)} or with `govmail passwd`")


def cmd_set_password(args) -> int:
    from . import passwords

    address = args.address.lower()
    found = _mailbox_host(address)
    if found is None:
        return 2
    cfg, acc, ssh = found
    pw = _new_password(args, cfg, acc, f"New password for {address}: ")
    if pw is None:
        return 1
    r = _account_tool(ssh, f"set-password {address}", input=passwords.hash_password(pw))
    if r.returncode != 0:
        err(r.stderr.strip() or "could not store the password")
        return 1
    print(f"password of {address} set on {cfg.mail_host}{_first_login_note(cfg)}")
    return 0


def cmd_hand_over(args) -> int:
    import shlex

    from . import passwords

    address = args.address.lower()
    found = _mailbox_host(address)
    if found is None:
        return 2
    cfg, acc, ssh = found
    if acc.kind == "person":
        err(f"{address} is a personal mailbox; hand-over is for a unit's mailbox ({cfg.domain} agencies, "
            "departments, districts, communes). To reset a person's password: govmail set-password")
        return 2
    pw = _new_password(args, cfg, acc, f"Password for {args.to}, new holder of {address}: ")
    if pw is None:
        return 1
    r = _account_tool(ssh, f"hand-over {address} --to {shlex.quote(args.to)}", input=passwords.hash_password(pw))
    if r.returncode != 0:
        err(r.stderr.strip() or "could not hand the mailbox over")
        return 1
    print(f"{address} handed over to {args.to} on {cfg.mail_host}: all of its mail kept, the former holder's "
          f"sessions ended, password reset{_first_login_note(cfg)}")
    return 0


def cmd_passwd(args) -> int:
    import json
    import ssl
    import urllib.error
    import urllib.request

    from . import passwords
    from .services.accounts import password_url

    address = args.address.strip().lower()
    domain = address.rpartition("@")[2]
    cfg = next((c for c in map(load_province, available_provinces()) if c.domain == domain), None)
    url = args.server or (password_url(cfg) if cfg else None)
    if not url:
        err(f"no province data for {domain!r} here: give the password page with --server https://HOST:PORT/")
        return 2
    if args.from_env:
        current, new = os.environ.get("GOVMAIL_PASSWORD"), os.environ.get("GOVMAIL_NEW_PASSWORD")
        if not current or not new:
            err("--from-env needs GOVMAIL_PASSWORD (current) and GOVMAIL_NEW_PASSWORD (new)")
            return 2
    else:
        current = getpass.getpass(f"Current password of {address}: ")
        new = getpass.getpass("New password: ")
        if new != getpass.getpass("New password again: "):
            err("the two entries differ")
            return 1
    acc = cfg.account(address) if cfg and address in {a.address for a in cfg.accounts} else None
    if cfg and acc:
        bad = passwords.problems(new, cfg.policy.password, admin=acc.role == "admin")
        if bad:
            err("new password refused: " + "; ".join(bad))
            return 1
    ctx = ssl.create_default_context(cafile=args.cafile)
    if args.insecure:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    req = urllib.request.Request(
        url.rstrip("/") + "/api/password", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"user": address, "password": current, "new_password": new}).encode(),
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=60) as r:
            result = json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            result = json.loads(e.read())
        except ValueError:
            result = {"ok": False, "error": f"HTTP {e.code}"}
    except (urllib.error.URLError, OSError) as e:
        err(f"cannot reach the password service at {url}: {getattr(e, 'reason', e)}")
        return 1
    if not result.get("ok"):
        err(result.get("error", "refused"))
        return 1
    print(f"password of {address} changed")
    return 0


def cmd_restore(args) -> int:
    address = args.address.lower()
    found = _mailbox_host(address)
    if found is None:
        return 2
    cfg, _, ssh = found
    r = _account_tool(ssh, f"restore {address}")
    if r.returncode != 0:
        err(r.stderr.strip() or "could not restore the mailbox")
        return 1
    import json

    was = json.loads(r.stdout or "{}").get("was")
    if was == "deleted":
        print(f"{address} re-created on {cfg.mail_host}, empty and without a password: "
              f"govmail set-password {address} (or the next deploy issues one)")
    else:
        print(f"{address} restored on {cfg.mail_host}: login works again, its mail is as it was")
    return 0


def cmd_address(args) -> int:
    from .naming import NameClash, address_for, unit_of

    cfg = _province(args.province)
    if cfg is None:
        return 2
    m = cfg.model
    units = {u.id for u in [*m.directory.agencies, *m.directory.districts]}
    if args.agency and args.agency not in units:
        err(f"agency {args.agency!r} is not in the directory of {cfg.key}; known: {', '.join(sorted(units))}")
        return 2
    unit = unit_of(args.agency, args.department, {d.id for d in m.directory.districts})
    taken = {a.address for a in cfg.accounts} | set(cfg.aliases)
    try:
        print(address_for(args.name, unit, cfg.domain, cfg.policy.naming, taken))
    except NameClash as e:
        err(str(e))
        return 1
    return 0


def cmd_import(args) -> int:
    import csv

    from .naming import import_people, yaml_entry

    cfg = _province(args.province)
    if cfg is None:
        return 2
    with open(args.csv, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if rows and rows[0] and rows[0][0].strip().lower() in ("name", "full name", "họ và tên", "ho va ten"):
        rows = rows[1:]
    fields = ["name", "agency", "role", "department"]
    entries, problems = import_people(cfg, [dict(zip(fields, r)) for r in rows if any(c.strip() for c in r)])
    print(f"# {len(entries)} people for directory.people of group_data/{cfg.key}.yml "
          f"(addresses by {cfg.policy.naming.article}); review, then paste under `people:`")
    for e in entries:
        print(yaml_entry(e))
    for p in problems:
        err(p)
    print(f"govmail: {len(entries)} addresses assigned, {len(problems)} rows need a decision", file=sys.stderr)
    return 1 if problems else 0


def _backup_tool(cfg, args: str, stream: bool = False) -> subprocess.CompletedProcess:
    from .services.accounts import operator

    cmd = [*_host_ssh(cfg.mail_host), f"GOVMAIL_ACTOR={operator()} /usr/local/lib/govmail/backup {args}"]
    if stream:
        return subprocess.run(cmd, text=True)
    return subprocess.run(cmd, text=True, capture_output=True)


def cmd_backup(args) -> int:
    try:
        return _backup(args)
    except LookupError as e:  # a host not in the lab
        err(str(e))
        return 2


def _backup(args) -> int:
    import json
    import shlex

    if args.backup_cmd == "restore-mailbox":
        address = args.address.lower()
        found = _mailbox_host(address)
        if found is None:
            return 2
        cfg = found[0]
        extra = (f" --at {shlex.quote(args.at)}" if args.at else "") + (
            f" --folder {shlex.quote(args.folder)}" if args.folder else "")
        r = _backup_tool(cfg, f"restore-mailbox {address}{extra}")
        if r.returncode != 0:
            err(r.stderr.strip() or "restore failed")
            return 1
        done = json.loads(r.stdout)
        print(f"{address}: {done['folder']} restored from {done['archive']}, merged with its current mail")
        return 0
    provinces = args.provinces or ([] if args.backup_cmd != "status" else available_provinces())
    rc = 0
    for p in provinces:
        cfg = _province(p)
        if cfg is None:
            return 2
        if not cfg.backup_host:
            print(f"{p}: no backup host in the data ({cfg.file.name}: hosts[].roles: [backup])")
            rc = 1
            continue
        if args.backup_cmd == "status":
            r = _backup_tool(cfg, "status")
            try:
                st = json.loads(r.stdout)
            except ValueError:
                print(f"{cfg.mail_host:28} UNKNOWN  {r.stderr.strip()[-200:]}")
                rc = 1
                continue
            size = f"{st['original_size'] / 2**20:,.1f} MiB" if st.get("original_size") else "-"
            age = f"{st['age_hours']} h ago" if st.get("age_hours") is not None else "never"
            flag = "LATE" if st["late"] else "ok"
            print(f"{cfg.mail_host:28} {flag:4}  last good {st['last_ok']} ({age}), {size} of data, "
                  f"{st.get('archives')} archives on {cfg.backup_host}"
                  + (f"; last error {st['last_error']}: {st['error'][:120]}" if st.get("last_error") else ""))
            rc |= 1 if st["late"] else 0
        elif args.backup_cmd == "run":
            rc |= _backup_tool(cfg, "run", stream=True).returncode
        elif args.backup_cmd == "list":
            rc |= _backup_tool(cfg, "list", stream=True).returncode
        elif args.backup_cmd == "restore-host":
            at = f" --at {shlex.quote(args.at)}" if args.at else ""
            code = _backup_tool(cfg, f"restore-host{at}", stream=True).returncode
            rc |= code
            if code == 0:
                _refetch_dkim(cfg)
    return rc


def _refetch_dkim(cfg) -> None:
    """After restore-host the host signs with its restored DKIM key again: keep the controller's copy
    of the record (what `govmail dns` prints and the lab resolver serves) the same as the host's."""
    from .services.rspamd import dkim_paths, dkim_record_on_controller

    r = subprocess.run([*_host_ssh(cfg.mail_host), f"cat {dkim_paths(cfg)[1]}"], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.startswith("v=DKIM1"):
        return
    path = dkim_record_on_controller(cfg)
    if path.exists() and path.read_text() == r.stdout:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(r.stdout)
    print(f"govmail: DKIM record of {cfg.domain} is the restored key's again (`govmail dns {cfg.key}`)")
    if os.environ.get("GOVMAIL_TARGET", "lab") == "lab":
        from . import lab

        lab.refresh_dns()


def cmd_dns(args) -> int:
    from .dns import zone_text

    cfg = _province(args.province)
    if cfg is None:
        return 2
    host = next(h for h in cfg.model.hosts if h.name == cfg.mail_host)
    address = host.address
    if address is None and os.environ.get("GOVMAIL_TARGET", "lab") == "lab":
        from . import lab

        address = (lab.load_state()["hosts"].get(cfg.mail_host) or {}).get("ip")
    print(zone_text(cfg, address), end="")
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
    p.add_argument("provinces", nargs="*")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("deploy", help="deploy provinces (pyinfra), in parallel")
    p.add_argument("provinces", nargs="+")
    p.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    p.set_defaults(fn=cmd_deploy)

    p = sub.add_parser("up", help="boot the lab for provinces and deploy them")
    p.add_argument("provinces", nargs="+")
    p.add_argument("--fresh", action="store_true", help="new containers from the image (drops their state)")
    p.set_defaults(fn=cmd_up)

    p = sub.add_parser("lab", help="the local lab of containers")
    lsub = p.add_subparsers(dest="lab_cmd", required=True)
    q = lsub.add_parser("up")
    q.add_argument("provinces", nargs="+")
    q.add_argument("--fresh", action="store_true")
    q = lsub.add_parser("down")
    q.add_argument("provinces", nargs="*")
    q.add_argument("--image", action="store_true", help="also delete the cached Debian image")
    lsub.add_parser("status")
    q = lsub.add_parser("rebuild", help="destroy a lab host and boot a bare one in its place")
    q.add_argument("host")
    q = lsub.add_parser("ssh")
    q.add_argument("host")
    q.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_lab)

    p = sub.add_parser("hash-password", help="print the {BLF-CRYPT} hash of a prompted password")
    p.set_defaults(fn=cmd_hash_password)

    p = sub.add_parser("set-password", help="set a mailbox's password on its host (prompted)")
    p.add_argument("address")
    p.add_argument("--from-env", action="store_true", help="read it from GOVMAIL_PASSWORD (for scripts)")
    p.set_defaults(fn=cmd_set_password)

    p = sub.add_parser("hand-over", help="hand a unit's mailbox to its new head: password reset, mail kept")
    p.add_argument("address")
    p.add_argument("--to", required=True, help="full name of the new head (recorded in the audit log)")
    p.add_argument("--from-env", action="store_true", help="read the password from GOVMAIL_PASSWORD")
    p.set_defaults(fn=cmd_hand_over)

    p = sub.add_parser("passwd", help="change your own mail password (the host's password service)")
    p.add_argument("address")
    p.add_argument("--server", help="the password page, e.g. https://mail.laichau.gov.vn:8443/ (default: "
                   "from the province's data)")
    p.add_argument("--cafile", help="CA certificate(s) to trust (a self-signed host's certificate)")
    p.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    p.add_argument("--from-env", action="store_true",
                   help="read GOVMAIL_PASSWORD (current) and GOVMAIL_NEW_PASSWORD (for scripts)")
    p.set_defaults(fn=cmd_passwd)

    p = sub.add_parser("address", help="the address a person gets by the province's naming rule")
    p.add_argument("province")
    p.add_argument("name", help="full Vietnamese name, e.g. 'Nguyễn Văn Hậu'")
    p.add_argument("--agency", help="agency or district id")
    p.add_argument("--department", help="department id (district departments are part of the address)")
    p.set_defaults(fn=cmd_address)

    p = sub.add_parser("import", help="CSV of (full name, agency, role[, department]) -> directory entries")
    p.add_argument("province")
    p.add_argument("csv")
    p.set_defaults(fn=cmd_import)

    p = sub.add_parser("restore", help="lift an inactive mailbox's suspension (LC Art. 8.3), re-create a deleted one")
    p.add_argument("address")
    p.set_defaults(fn=cmd_restore)

    p = sub.add_parser("backup", help="backups on the province's backup host: run, status, list, restore")
    bsub = p.add_subparsers(dest="backup_cmd", required=True)
    q = bsub.add_parser("run", help="back a province's mail host up now")
    q.add_argument("provinces", nargs="+")
    q = bsub.add_parser("status", help="age and size of the last good backup (all provinces by default)")
    q.add_argument("provinces", nargs="*")
    q = bsub.add_parser("list", help="the archives of a province's mail host")
    q.add_argument("provinces", nargs="+")
    q = bsub.add_parser("restore-mailbox", help="one mailbox (or folder) as it was, merged into the live one")
    q.add_argument("address")
    q.add_argument("--at", help="ISO time, e.g. 2026-11-20T12:00 (default: the last archive)")
    q.add_argument("--folder", help="only this folder, e.g. INBOX or Sent")
    q = bsub.add_parser("restore-host", help="after a rebuild: store, TLS, logs and all mail from the archive")
    q.add_argument("provinces", nargs=1)
    q.add_argument("--at", help="ISO time (default: the last archive)")
    p.set_defaults(fn=cmd_backup)

    p = sub.add_parser("dns", help="the DNS records a province publishes (zone-file format)")
    p.add_argument("province")
    p.set_defaults(fn=cmd_dns)

    p = sub.add_parser("schema", help="print the data-file reference")
    p.set_defaults(fn=cmd_schema)

    p = sub.add_parser("test", help="run all tests (the lab tests boot and deploy the lab)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_test)

    args = ap.parse_args(argv)
    if args.cmd in ("deploy", "up"):
        os.chdir(ROOT)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
