"""`govmail migrate PROVINCE --from PREDECESSOR`: a merged province's mailboxes copied from the old hosts.

The mailboxes copied are those the data maps: every `former:` address in the predecessor's domain
whose new address is a mailbox (a list's old address is only an alias). The work runs on the merged
host (govmail/host/migrate.py); this side prepares the access and shows the progress:

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

from .data import DataError, load_province

TOOL = "/usr/local/lib/govmail/migrate"
MARK = "govmail-migrate:"


def _say(msg: str) -> None:
    print(f"govmail: {msg}", file=sys.stderr, flush=True)


def _run(ssh: list[str], command: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ssh, command], input=input, capture_output=True, text=True, timeout=600)


def pairs_for(cfg, pred) -> list[list[str]]:
    return [[old, new] for old, new in sorted(cfg.former.items()) if old.endswith("@" + pred.domain)]


def grant(cfg, new_ssh: list[str], old_ssh: list[str], old_host: str) -> None:
    """The merged host's key on the old host, for the forced command only; the old host key pinned."""
    key = _run(new_ssh, f"{TOOL} key")
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
    r = _run(old_ssh, script)
    if r.returncode != 0:
        raise RuntimeError(f"{old_host}: {r.stderr.strip()[:300] or 'could not allow the migration key'}")
    known = f"{old_host} {' '.join(r.stdout.split()[:2])}"
    w = _run(new_ssh, f"install -d -m 700 /etc/govmail/migrate && echo {shlex.quote(known)} > "
             "/etc/govmail/migrate/known_hosts && chmod 600 /etc/govmail/migrate/known_hosts")
    if w.returncode != 0:
        raise RuntimeError(f"{cfg.mail_host}: could not pin {old_host}'s host key: {w.stderr.strip()[:200]}")


def revoke(cfg, old_ssh: list[str], old_host: str) -> None:
    mark = MARK + cfg.key
    _run(old_ssh, f"grep -v {shlex.quote(mark)}$ /root/.ssh/authorized_keys > /root/.ssh/ak.new; "
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


def show(rec: dict, totals: dict) -> None:
    if "old" not in rec:
        _say(rec.get("error", str(rec)))
    elif rec.get("skipped"):
        _say(f"  {rec['old']} -> {rec['new']}: skipped ({rec['skipped']})")
    elif rec.get("dry_run"):
        totals["messages"] += rec.get("messages") or 0
        totals["bytes"] += rec.get("bytes") or 0
        size = ("size known once copied (an IMAP source)" if rec.get("messages") is None
                else f"{rec['messages']} messages\t{(rec.get('bytes') or 0) / 1e6:.1f} MB")
        print(f"{rec['old']} -> {rec['new']}\t{size}")
    elif rec.get("ok"):
        totals["messages"] += rec["messages"]
        totals["bytes"] += rec["bytes"]
        more = "".join(f", {k} copied" for k in ("sieve", "password") if rec.get(k))
        print(f"{rec['old']} -> {rec['new']}\t{rec['messages']} messages\t{rec['bytes'] / 1e6:.1f} MB\t"
              f"{rec['seconds']} s{more}", flush=True)
    else:
        totals["failed"] += 1
        print(f"{rec['old']} -> {rec['new']}\tFAILED: {rec.get('error')}", flush=True)


def cmd(args) -> int:
    from .targets import TargetError

    try:
        return _cmd(args)
    except (TargetError, RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        _say(f"migration stopped: {e}; nothing is lost: run it again to go on")
        return 1


def _cmd(args) -> int:
    from .targets import current

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
    plan: dict = {"pairs": pairs_for(cfg, pred), "dry_run": args.dry_run}
    if args.imap:
        host, _, port = args.imap.partition(":")
        plan["source"] = {"kind": "imap", "host": host, "port": int(port or 993), "insecure": args.insecure,
                          "master_user": args.master_user, "master_password": os.environ.get("GOVMAIL_IMAP_PASSWORD")}
        if args.passwords:
            try:
                plan["passwords"] = {k: v for k, v in read_passwords(args.passwords).items()
                                     if k in dict(plan["pairs"])}
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
        old_ssh = target.ssh(old_host)
        grant(cfg, new_ssh, old_ssh, old_host)
        plan["source"] = {"kind": "govmail", "host": old_host}
    what = "listing" if args.dry_run else "final catch-up of" if args.final else "copying"
    _say(f"{what} {len(plan['pairs'])} addresses of {pred.domain} from {old_host} to {cfg.mail_host}")
    t0, totals = time.monotonic(), {"messages": 0, "bytes": 0, "failed": 0}
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
    _say(f"{totals['messages']} messages, {totals['bytes'] / 1e6:.1f} MB in {secs:.0f} s"
         + (f" ({totals['messages'] / secs:.0f} messages/s, {totals['bytes'] / 1e6 / secs:.1f} MB/s)"
            if secs > 0 and not args.dry_run else "")
         + (f"; {totals['failed']} mailboxes failed: run again" if totals["failed"] else ""))
    if args.final and rc == 0 and not args.imap and not args.keep_access:
        revoke(cfg, old_ssh, old_host)
    return 1 if rc or totals["failed"] else 0
