"""Remote administration: what `govmail` does on a province's hosts over SSH, through the host tools.

Accounts (govmail/host/accounts.py on the mail host): an administrator's password reset, the
hand-over of a unit's mailbox, lifting a suspension; the user's own password change goes to the
host's password service over HTTPS. Backups (govmail/host/backup.py): run, status, list, restore a
mailbox, restore a whole host after a rebuild. How a host is reached is the target's answer
(govmail/targets.py).
"""

from __future__ import annotations

import getpass
import os
import subprocess

from ..data import available_provinces, load_province
from ..host import contract
from ..targets import TargetError, current
from .args import host_name, iso_time, mail_address, province_key


def err(msg: str) -> None:
    import sys

    print(f"govmail: {msg}", file=sys.stderr)


def _province(key: str):
    from ..data import DataError

    try:
        return load_province(key)
    except DataError as e:
        err(str(e))
        return None


def _mailbox_host(address: str):
    """(province config, account, its mail host), or None after saying why not."""
    domain = address.rpartition("@")[2]
    cfg = next((c for c in map(load_province, available_provinces()) if c.domain == domain), None)
    acc = next((a for a in cfg.accounts if a.address == address), None) if cfg else None
    try:
        if cfg is None:
            raise LookupError(f"no province has the domain {domain!r}")
        if acc is None:
            raise LookupError(f"{address} is not in the directory of {cfg.key}")
        current()  # the target is known (TargetError otherwise)
        return cfg, acc, cfg.mail_host
    except (LookupError, TargetError) as e:
        err(str(e))
        return None


def _account_tool(host: str, args: str, input: str | None = None) -> subprocess.CompletedProcess:
    from ..data.facts import operator

    return current().run(host, f"GOVMAIL_ACTOR={operator()} {contract.PATHS['lib']}/accounts {args}", input=input)


def _new_password(args, cfg, acc, prompt: str) -> str | None:
    """A password for an administrator's reset (prompted, or GOVMAIL_PASSWORD with --from-env),
    checked against the province's policy; None after saying what is wrong."""
    from ..data import passwords

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
    from ..data.facts import password_url

    if not cfg.policy.password.change_at_first_login:
        return ""
    return (f"; the user must change it before first use ({cfg.policy.password.article}) at "
            f"{password_url(cfg)} (web mail) or with `govmail passwd`")


def cmd_set_password(args) -> int:
    from ..data import passwords

    address = args.address.lower()
    found = _mailbox_host(address)
    if found is None:
        return 2
    cfg, acc, host = found
    pw = _new_password(args, cfg, acc, f"New password for {address}: ")
    if pw is None:
        return 1
    r = _account_tool(host, f"set-password {address}", input=passwords.hash_password(pw))
    if r.returncode != 0:
        err(r.stderr.strip() or "could not store the password")
        return 1
    print(f"password of {address} set on {cfg.mail_host}{_first_login_note(cfg)}")
    return 0


def cmd_hand_over(args) -> int:
    import shlex

    from ..data import passwords

    address = args.address.lower()
    found = _mailbox_host(address)
    if found is None:
        return 2
    cfg, acc, host = found
    if acc.kind == "person":
        err(f"{address} is a personal mailbox; hand-over is for a unit's mailbox ({cfg.domain} agencies, "
            "departments, districts, communes). To reset a person's password: govmail set-password")
        return 2
    pw = _new_password(args, cfg, acc, f"Password for {args.to}, new holder of {address}: ")
    if pw is None:
        return 1
    r = _account_tool(host, f"hand-over {address} --to {shlex.quote(args.to)}", input=passwords.hash_password(pw))
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

    from ..data import passwords
    from ..data.facts import password_service_url

    address = args.address.strip().lower()
    domain = address.rpartition("@")[2]
    cfg = next((c for c in map(load_province, available_provinces()) if c.domain == domain), None)
    url = args.server or (password_service_url(cfg) if cfg else None)
    if not url:
        err(f"no province data for {domain!r} here: give the password service with --server https://HOST:PORT/")
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
    cfg, _, host = found
    r = _account_tool(host, f"restore {address}")
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


def _backup_tool(cfg, args: str, stream: bool = False, host: str | None = None) -> subprocess.CompletedProcess:
    from ..data.facts import operator

    cmd = f"GOVMAIL_ACTOR={operator()} {contract.PATHS['lib']}/backup {args}"
    return current().run(host or cfg.mail_host, cmd, capture=not stream, timeout=None)


def cmd_backup(args) -> int:
    try:
        return _backup(args)
    except (LookupError, TargetError) as e:  # a host not in the lab
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
        cfg, acc = found[0], found[1]
        extra = (f" --at {shlex.quote(args.at)}" if args.at else "") + (
            f" --folder {shlex.quote(args.folder)}" if args.folder else "")
        # On the host that holds the mailbox and backs it up (a store apart's mailbox: that store).
        r = _backup_tool(cfg, f"restore-mailbox {address}{extra}", host=cfg.store_of(acc))
        if r.returncode != 0:
            err(r.stderr.strip() or "restore failed")
            return 1
        done = json.loads(r.stdout)
        print(f"{address}: {done['folder']} restored from {done['archive']}, merged with its current mail")
        return 0
    provinces = args.provinces or ([] if args.backup_cmd != "status" else current().provinces())
    if not provinces and args.backup_cmd == "status":
        err(f"no province has its hosts in this target ({current().name}); name one: govmail backup status PROVINCE")
        return 1
    rc = 0
    for p in provinces:
        cfg = _province(p)
        if cfg is None:
            return 2
        if not cfg.backup_host:
            print(f"{p}: no backup host in the data ({cfg.file.name}: hosts[].roles: [backup])")
            rc = 1
            continue
        # The mail host, then each store apart: a repository each (govmail/services/backup.py).
        hosts = [cfg.mail_host, *cfg.stores_apart]
        if args.backup_cmd == "status":
            for host in hosts:
                r = _backup_tool(cfg, "status", host=host)
                try:
                    st = json.loads(r.stdout)
                except ValueError:
                    print(f"{host:28} UNKNOWN  {r.stderr.strip()[-200:]}")
                    rc = 1
                    continue
                print(backup_status_line(cfg, st, host))
                rc |= 1 if r.returncode or st.get("late") or st.get("failed") else 0
        elif args.backup_cmd == "run":
            for host in hosts:
                rc |= _backup_tool(cfg, "run", stream=True, host=host).returncode
        elif args.backup_cmd == "list":
            rc |= _backup_tool(cfg, "list", stream=True).returncode
        elif args.backup_cmd == "restore-host":
            at = f" --at {shlex.quote(args.at)}" if args.at else ""
            host = args.host or cfg.mail_host
            if host not in hosts:
                err(f"--host {host}: not a host of {p} that backs up; those are {', '.join(hosts)}")
                return 2
            code = _backup_tool(cfg, f"restore-host{at}", stream=True, host=host).returncode
            rc |= code
            if code == 0 and host == cfg.mail_host:
                _refetch_dkim(cfg)
    return rc


def backup_status_line(cfg, st: dict, host: str | None = None) -> str:
    """One line per host that backs up (the mail host, each store apart): NONE (never backed up), FAILED (the last run failed), LATE (the last
    good one is older than policy.backup.max_age_hours) or ok, then the facts."""
    size = f"{st['original_size'] / 2**20:,.1f} MiB" if st.get("original_size") else "-"
    age = f"{st['age_hours']} h ago" if st.get("age_hours") is not None else "never"
    flag = ("NONE" if not st.get("last_ok") else "FAILED" if st.get("failed") else "LATE" if st.get("late")
            else "ok")
    repo = (f"{st['archives']} archives on {cfg.backup_host}" if st.get("archives") is not None
            else f"repository on {cfg.backup_host} not readable: {(st.get('repo_error') or '?')[:160]}")
    last = st["last_ok"] if st.get("last_ok") else "none yet"
    return (f"{host or cfg.mail_host:28} {flag:6}  last good {last} ({age}), {size} of data, {repo}"
            + (f"; last error {st['last_error']}: {(st.get('error') or '')[:160]}" if st.get("last_error") else ""))


def _refetch_dkim(cfg) -> None:
    """After restore-host the host signs with its restored DKIM key again: keep the controller's copy
    of the record (what `govmail dns` prints, and the lab resolver serves) the same as the host's."""
    from ..data.facts import dkim_paths

    r = current().run(cfg.mail_host, f"cat {dkim_paths(cfg)[1]}")
    if r.returncode != 0 or not r.stdout.startswith("v=DKIM1"):
        return
    if current().published.set_dkim_record(cfg, r.stdout):
        print(f"govmail: DKIM record of {cfg.domain} is the restored key's again (`govmail dns {cfg.key}`)")


def register(sub) -> None:
    p = sub.add_parser("set-password", help="set a mailbox's password on its host (prompted)")
    p.add_argument("address", type=mail_address)
    p.add_argument("--from-env", action="store_true", help="read it from GOVMAIL_PASSWORD (for scripts)")
    p.set_defaults(fn=cmd_set_password)

    p = sub.add_parser("hand-over", help="hand a unit's mailbox to its new head: password reset, mail kept")
    p.add_argument("address", type=mail_address)
    p.add_argument("--to", required=True, help="full name of the new head (recorded in the audit log)")
    p.add_argument("--from-env", action="store_true", help="read the password from GOVMAIL_PASSWORD")
    p.set_defaults(fn=cmd_hand_over)

    p = sub.add_parser("passwd", help="change your own mail password (the host's password service)")
    p.add_argument("address", type=mail_address)
    p.add_argument("--server", help="the password service, e.g. https://mail.laichau.gov.vn:8443/ (default: "
                   "from the province's data)")
    p.add_argument("--cafile", help="CA certificate(s) to trust (a self-signed host's certificate)")
    p.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    p.add_argument("--from-env", action="store_true",
                   help="read GOVMAIL_PASSWORD (current) and GOVMAIL_NEW_PASSWORD (for scripts)")
    p.set_defaults(fn=cmd_passwd)

    p = sub.add_parser("restore", help="lift an inactive mailbox's suspension (LC Art. 8.3), re-create a deleted one")
    p.add_argument("address", type=mail_address)
    p.set_defaults(fn=cmd_restore)

    p = sub.add_parser("backup", help="backups on the province's backup host: run, status, list, restore")
    bsub = p.add_subparsers(dest="backup_cmd", required=True)
    q = bsub.add_parser("run", help="back a province's mail host up now")
    q.add_argument("provinces", nargs="+", type=province_key)
    q = bsub.add_parser("status", help="the last good backup of each mail host (every province of the target by "
                        "default); exit 1 when one is missing, failed or late")
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
    q.add_argument("--host", type=host_name, help="a store apart rebuilt (default: the mail host): its mailboxes, "
                   "Sieve filters, last logins and TLS key from its own repository")
    p.set_defaults(fn=cmd_backup)
