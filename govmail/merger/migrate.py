"""`govmail migrate PROVINCE --from PREDECESSOR`: a merged province's mailboxes copied from the old hosts.

The mailboxes copied are those the data maps: every `former:` address in the predecessor's domain
whose new address is a mailbox (a list's old address is only an alias). One old mailbox for a new
one is copied into it; several old mailboxes for one new one (two departments merged) each go into
a folder of their own in it, `Thư cũ/<local part>@<predecessor>`. Each is copied exactly once; one
that cannot be copied is named with the reason and what to do, and the run exits 1. The old host's
mailboxes that hold mail but that the data does not map are listed (they would be lost with the old
host); `--final` refuses to end the migration while there are any, unless `--leave-unmapped`.
The work runs on the merged host (govmail/host/migrate.py); this side prepares the access and shows
the progress:

- from a govmail host (the predecessor's `mail_host`): the merged host's migration key (made once
  there) is allowed on the old host for one forced command only, and the old host's SSH host key is
  pinned on the merged host (taken over the controller's own trusted connection, never on first
  sight); then mail with flags, dates and folders (dsync), Sieve scripts, password hashes and last
  logins come across;
- from any IMAP server (`--imap HOST`): messages, folders, flags and dates through Dovecot's imapc,
  with a master login (`--master-user`, password in GOVMAIL_IMAP_PASSWORD) or each user's own
  password (`--passwords FILE.csv`: old address, password).

Every run is incremental: run it again and only what changed is copied; a run cut off half-way is
resumed by the next. `--dry-run` lists the mailboxes and their sizes and changes nothing;
`--final` is the catch-up after the DNS switch, and then takes the merged host's key off the old
host (`--keep-access` leaves it).
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
import time

from ..data import DataError, load_province

TOOL = "/usr/local/lib/govmail/migrate"
MARK = "govmail-migrate:"


def _say(msg: str) -> None:
    print(f"govmail: {msg}", file=sys.stderr, flush=True)


def pairs_for(cfg, pred) -> list[dict]:
    """Each old address of the predecessor's domain with its new address; `list` when the new one is a
    list (the old address is an alias of it), `several` when more old mailboxes (of any predecessor)
    go into the same new mailbox."""
    into: dict[str, int] = {}
    for new in cfg.former.values():
        if new not in cfg.aliases:
            into[new] = into.get(new, 0) + 1
    return [{"old": old, "new": new, "predecessor": pred.key, "list": new in cfg.aliases,
             "several": into.get(new, 0) > 1}
            for old, new in sorted(cfg.former.items()) if old.endswith("@" + pred.domain)]


def grant(cfg, target, old_host: str) -> None:
    """The merged host's key on the old host, for the forced command only; the old host key pinned."""
    key = target.run(cfg.mail_host, f"{TOOL} key")
    if key.returncode != 0 or not key.stdout.startswith("ssh-"):
        raise RuntimeError(f"{cfg.mail_host}: no migration key ({key.stderr.strip()[:200]}); deploy it first")
    mark = MARK + cfg.key
    entry = f'command="{TOOL} source",restrict {key.stdout.strip().split()[0]} {key.stdout.strip().split()[1]} {mark}'
    script = ("set -e; install -d -m 700 /root/.ssh; touch /root/.ssh/authorized_keys; "
              f"grep -v {shlex.quote(mark)}$ /root/.ssh/authorized_keys > /root/.ssh/ak.new || true; "
              f"echo {shlex.quote(entry)} >> /root/.ssh/ak.new; chmod 600 /root/.ssh/ak.new; "
              "mv /root/.ssh/ak.new /root/.ssh/authorized_keys; "
              f"test -x {TOOL} || {{ echo 'no {TOOL}: deploy this govmail version to the old host first' >&2; exit 3; }}; "
              "cat /etc/ssh/ssh_host_ed25519_key.pub")
    r = target.run(old_host, script)
    if r.returncode != 0:
        raise RuntimeError(f"{old_host}: {r.stderr.strip()[:300] or 'could not allow the migration key'}")
    known = f"{old_host} {' '.join(r.stdout.split()[:2])}"
    w = target.run(cfg.mail_host, f"install -d -m 700 /etc/govmail/migrate && echo {shlex.quote(known)} > "
             "/etc/govmail/migrate/known_hosts && chmod 600 /etc/govmail/migrate/known_hosts")
    if w.returncode != 0:
        raise RuntimeError(f"{cfg.mail_host}: could not pin {old_host}'s host key: {w.stderr.strip()[:200]}")


def revoke(cfg, target, old_host: str) -> None:
    mark = MARK + cfg.key
    target.run(old_host, f"grep -v {shlex.quote(mark)}$ /root/.ssh/authorized_keys > /root/.ssh/ak.new; "
         "chmod 600 /root/.ssh/ak.new; mv /root/.ssh/ak.new /root/.ssh/authorized_keys")
    _say(f"{old_host}: the migration key of {cfg.mail_host} is removed (no more access)")


def read_passwords(path: str) -> dict[str, str]:
    """old address,password per line (a header line `address,password` is allowed)."""
    out = {}
    with open(path, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if not row or (n == 1 and row[0].strip().lower() == "address"):
                continue
            if len(row) != 2 or "@" not in row[0]:
                raise ValueError(f"{path}:{n}: expected `old address,password`")
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in "".join(row)):
                raise ValueError(f"{path}:{n}: a control character in the row; refused")
            out[row[0].strip().lower()] = row[1]
    return out


def _mb(n) -> str:
    return f"{(n or 0) / 1e6:.1f} MB"


def show(rec: dict, totals: dict) -> None:
    """One line per mailbox as the merged host reports it; totals counted."""
    if "unmapped" in rec:
        totals["unmapped"] = rec["unmapped"]
        return
    if "quota" in rec:
        _say(f"WARNING: {rec['quota']} would hold {_mb(rec['needed'])} with the old mail, over its quota of "
             f"{_mb(rec['limit'])}: raise its quota_mb in the data and deploy before copying")
        return
    if "old" not in rec:
        _say(rec.get("error", str(rec)))
        totals["failed"] += 1
        return
    where = f"{rec['new']}" + (f" (folder \"{rec['folder']}\")" if rec.get("folder") else "")
    if rec.get("alias"):
        totals["aliases"] += 1
    elif rec.get("skipped"):
        totals["skipped"] += 1
        print(f"{rec['old']} -> {rec['new']}\tNOT COPIED: {rec['skipped']}; {rec['todo']}", flush=True)
    elif rec.get("dry_run"):
        totals["messages"] += rec.get("messages") or 0
        totals["bytes"] += rec.get("bytes") or 0
        size = ("size known once copied (an IMAP source)" if rec.get("messages") is None
                else f"{rec['messages']} messages\t{_mb(rec.get('bytes'))}")
        print(f"{rec['old']} -> {where}\t{size}")
    elif rec.get("ok"):
        totals["messages"] += rec.get("copied") or 0
        totals["bytes"] += rec.get("old_bytes") or 0
        totals["copied"] += 1
        more = "".join(f", {k} copied" for k in ("sieve", "password") if rec.get(k))
        had = (f"{rec['old_messages']} messages ({_mb(rec.get('old_bytes'))}) in the old mailbox, "
               if rec.get("old_messages") is not None else "")
        print(f"{rec['old']} -> {where}\t{had}{rec['copied']} copied now; the new mailbox holds {rec['messages']} "
              f"({_mb(rec['bytes'])})\t{rec['seconds']} s{more}", flush=True)
    else:
        totals["failed"] += 1
        print(f"{rec['old']} -> {where}\tFAILED: {rec.get('error')}; run again once that is fixed", flush=True)


def cmd(args) -> int:
    from ..targets import TargetError

    try:
        return _cmd(args)
    except (TargetError, RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        _say(f"migration stopped: {e}; nothing is lost: run it again to go on")
        return 1


def _cmd(args) -> int:
    from ..targets import current

    try:
        cfg = load_province(args.province)
    except DataError as e:
        _say(str(e))
        return 2
    pred = next((p for p in cfg.model.predecessors if p.key == args.source), None)
    if pred is None:
        known = ", ".join(p.key for p in cfg.model.predecessors) or "none"
        _say(f"{args.source!r} is not a predecessor of {cfg.key} (`predecessors` in its data file); known: {known}")
        return 2
    target = current()
    new_ssh = target.ssh(cfg.mail_host)
    mapped = pairs_for(cfg, pred)
    pairs = mapped
    if args.only:
        known = {p["old"] for p in mapped}
        unknown = [a for a in args.only if a not in known]
        if unknown:
            _say(f"--only {', '.join(unknown)}: not an old address of {pred.domain} that {cfg.key}'s data maps "
                 f"(`former:`); mapped: {', '.join(sorted(known)) or 'none'}")
            return 2
        pairs = [p for p in mapped if p["old"] in args.only]
    plan: dict = {"version": 2, "pairs": pairs, "all_mapped": mapped, "domain": pred.domain, "dry_run": args.dry_run}
    if args.imap:
        host, _, port = args.imap.partition(":")
        plan["source"] = {"kind": "imap", "host": host, "port": int(port or 993), "insecure": args.insecure,
                          "master_user": args.master_user, "master_password": os.environ.get("GOVMAIL_IMAP_PASSWORD")}
        if args.passwords:
            try:
                wanted = {p["old"] for p in plan["pairs"]}
                plan["passwords"] = {k: v for k, v in read_passwords(args.passwords).items() if k in wanted}
            except (OSError, ValueError, UnicodeDecodeError) as e:
                _say(str(e))
                return 2
        if not args.master_user and not args.passwords and not args.dry_run:
            _say("an IMAP source needs --master-user (password in GOVMAIL_IMAP_PASSWORD) or --passwords FILE.csv")
            return 2
        old_host = host
    else:
        if not pred.mail_host:
            _say(f"predecessors[{pred.key}] names no mail_host: give it, or copy from IMAP (--imap HOST)")
            return 2
        old_host = pred.mail_host
        grant(cfg, target, old_host)
        plan["source"] = {"kind": "govmail", "host": old_host}
    what = "listing" if args.dry_run else "final catch-up of" if args.final else "copying"
    _say(f"{what} {len(plan['pairs'])} addresses of {pred.domain} from {old_host} to {cfg.mail_host}")
    t0 = time.monotonic()
    totals = {"messages": 0, "bytes": 0, "failed": 0, "skipped": 0, "copied": 0, "aliases": 0, "unmapped": []}
    proc = subprocess.Popen([*new_ssh, f"{TOOL} run"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(plan))
    proc.stdin.close()
    for raw in proc.stdout:
        try:
            show(json.loads(raw), totals)
        except ValueError:
            print(raw, end="")
    rc = proc.wait()
    secs = time.monotonic() - t0
    summary = (f"{totals['copied']} mailboxes copied, {totals['messages']} messages copied now, of "
               f"{_mb(totals['bytes'])} in the old mailboxes, in {secs:.0f} s" if not args.dry_run
               else f"{totals['messages']} messages, {_mb(totals['bytes'])}")
    if totals["aliases"]:
        summary += f"; {totals['aliases']} old list addresses reach their new lists (nothing to copy)"
    _say(summary)
    if totals["skipped"] or totals["failed"]:
        _say(f"NOT DONE: {totals['skipped'] + totals['failed']} mailboxes were not copied (the lines NOT COPIED "
             "and FAILED above say why and what to do); do not switch the old host off")
    unmapped = totals["unmapped"]
    if unmapped:
        _say(f"{len(unmapped)} mailboxes of {old_host} hold mail but {cfg.key}'s data maps them nowhere "
             "(not copied; lost when the old host is switched off):")
        for address, n, size in unmapped[: None if args.dry_run else 20]:
            _say(f"  {address}\t{n} messages\t{_mb(size)}")
        if len(unmapped) > 20 and not args.dry_run:
            _say(f"  ... and {len(unmapped) - 20} more (--dry-run lists them all)")
    done = rc == 0 and not totals["skipped"] and not totals["failed"]
    if args.final and unmapped and not args.leave_unmapped:
        _say("--final: the migration is not complete while old mailboxes with mail are not mapped: map them "
             "(`former:`), or say --leave-unmapped to leave them on the old host")
        done = False
    if args.final and done and not args.imap and not args.keep_access:
        revoke(cfg, target, old_host)
    return 0 if done else 1
