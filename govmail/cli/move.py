"""`govmail move-mailbox`: mailboxes from one store of their province to another, while they are used.

Per mailbox (its state in the account store: govmail/host/mailbox_moves.py, so a stopped move resumes):

1. `moving = TO`: TO's Dovecot knows the mailbox; `doveadm backup` makes TO's copy the mailbox as it
   is (passes while the user reads and receives mail as usual; each pass copies what came since);
2. the hold (`--hold` seconds, 10 by default): new logins wait (the proxy's `delay_until`) and then
   go to TO; deliveries are refused 451 by the mail host's LMTP proxy and wait in the MX queues;
   open sessions are cut;
3. the last `doveadm backup` pass and the home's other files (Sieve scripts), within the hold;
4. the switch, one transaction: `store = TO`, where waiting logins will go;
5. the check: every message of the old copy (by GUID) is on TO; one a delivery under way when the
   hold began left there is saved on TO; then logins and deliveries are released, the queues flushed,
   and the old copy put aside on the old host (/var/vmail/.moved/, never deleted by govmail).

The copy runs where both ends are reachable without Dovecot's proxy turning back on itself: on the
mail host when it is one end (`-R` when it receives), else on the store the mail leaves.
"""

from __future__ import annotations

import json
import shlex
import time

from ..data.text import host_address
from ..host import contract
from ..targets import current
from .args import err, mail_address, province, province_key

PASSES = 3  # copies before the hold at most: the last of them copies only what came meanwhile
GRACE = 1  # seconds for a delivery under way (after the kick, after the switch) to finish where it went


class MoveFailed(Exception):
    pass


def _run(host: str, command: str, what: str, input: bytes | None = None) -> str:
    r = current().run(host, command, input=input, text=input is None, timeout=3600)
    if r.returncode != 0:
        out = r.stderr if isinstance(r.stderr, str) else r.stderr.decode("utf-8", "replace")
        raise MoveFailed(f"{what} on {host}: {out.strip()[-400:] or f'exit {r.returncode}'}")
    return r.stdout


def _account(cfg, address: str, step: str = "") -> dict:
    from ..data.facts import operator

    out = _run(cfg.mail_host, f"GOVMAIL_ACTOR={shlex.quote(operator())} {contract.PATHS['lib']}/accounts move "
               f"{shlex.quote(address)} {step}", "the account store")
    return json.loads(out)


def _home(address: str) -> str:
    user, _, domain = address.partition("@")
    return f"{contract.PATHS['vmail']}/{domain}/{user}"


def _copy(cfg, address: str, src: str, dst: str) -> None:
    """One `doveadm backup` pass: `dst`'s copy made the same as `src`'s, never the other way (nothing
    but this move writes `dst` until the switch)."""
    at = current().private_addresses(cfg)
    # Sent from `src`, or received on the mail host (-R): its doveadm server would proxy it back.
    receive = dst == cfg.mail_host
    host, peer = (dst, src) if receive else (src, dst)
    cmd = (f"doveadm -o doveadm_port=0 backup{' -R' if receive else ''} -u {shlex.quote(address)} "
           f"tcp:{host_address(at[peer])}:{contract.PORTS['doveadm']}")
    _run(host, cmd, f"copying {address} from {src} to {dst}")


def _messages(host: str, address: str) -> dict[str, tuple[str, str]]:
    """{message GUID: (folder, Message-ID)} of the mailbox's copy on `host` (GUIDs survive `doveadm
    backup`; a message saved anew by `doveadm save` gets a GUID of its own, so a message already brought
    over is known by its Message-ID)."""
    out = _run(host, f"doveadm -o doveadm_port=0 -f tab fetch -u {shlex.quote(address)} 'guid mailbox hdr.message-id' "
                     "all", f"listing {address}'s messages")
    rows = [line.split("\t") for line in out.splitlines()[1:] if line.strip()]
    return {r[0]: (r[1], r[2].strip()) for r in rows if len(r) >= 3}


def missing_on(have: dict, got: dict) -> dict[str, str]:
    """{GUID: folder} of the messages of `have` that `got` lacks, by GUID and by Message-ID."""
    ids = {m for _, m in got.values() if m}
    return {g: f for g, (f, m) in have.items() if g not in got and not (m and m in ids)}


def _bring_over(address: str, src: str, dst: str, missing: dict[str, str]) -> None:
    """Messages of `src`'s copy that `dst`'s lacks (delivered there after the last pass), saved on `dst`."""
    q = shlex.quote(address)
    for guid, folder in missing.items():
        text = _run(src, f"doveadm -o doveadm_port=0 -f pager fetch -u {q} text mailbox {shlex.quote(folder)} "
                         f"guid {shlex.quote(guid)}", f"reading a message of {address}")
        body = text.removeprefix("text:\n").removesuffix("\n\f\n").removesuffix("\f\n")
        _run(dst, f"doveadm -o doveadm_port=0 save -u {q} -m {shlex.quote(folder)}", f"saving a message of {address}",
             input=body.encode())


def _folders(host: str, address: str) -> dict[str, tuple[int, int]]:
    """{folder: (messages, bytes)} of the mailbox's copy on `host` (its own Dovecot, not the proxy)."""
    out = _run(host, f"doveadm -o doveadm_port=0 -f tab mailbox status -u {shlex.quote(address)} "
               "'messages vsize' '*'", f"counting {address}'s messages")
    rows = [line.split("\t") for line in out.splitlines()[1:] if line.strip()]
    return {r[0]: (int(r[1]), int(r[2])) for r in rows if len(r) == 3}


def _home_files(address: str, src: str, dst: str) -> None:
    """The home's files beside the Maildir (Sieve scripts, the active script's link, stamps)."""
    home = shlex.quote(_home(address))
    r = current().run(src, f"test ! -d {home} || tar -C {home} --exclude=./Maildir -cf - .", text=False)
    if r.returncode != 0:
        raise MoveFailed(f"reading {address}'s home on {src}: {r.stderr.decode('utf-8', 'replace').strip()[-300:]}")
    if not r.stdout:
        return
    _run(dst, f"install -d -o vmail -g vmail -m 0700 {home} && tar -C {home} --same-owner -xpf -",
         "writing the home's files", input=r.stdout)


def _put_aside(address: str, host: str) -> str:
    """The old copy, out of Dovecot's way on `host`: /var/vmail/.moved/<domain>/<user>.<time>."""
    user, _, domain = address.partition("@")
    aside = f"{contract.PATHS['vmail']}/.moved/{domain}/{user}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    home = shlex.quote(_home(address))
    _run(host, f"test ! -d {home} || {{ install -d -m 0700 {shlex.quote(aside.rpartition('/')[0])} && "
               f"mv {home} {shlex.quote(aside)}; }}", "putting the old copy aside")
    return aside


def _total(folders: dict) -> int:
    return sum(m for m, _ in folders.values())


def _finish(cfg, address: str, src: str, dst: str) -> tuple[str, int]:
    """After the switch (deliveries still held): a message `src`'s copy got after the last pass (a
    delivery already under way when the hold began) is saved on `dst`; then logins and deliveries are
    released, the queues flushed, and `src`'s copy put aside. (aside path, messages brought over)"""
    time.sleep(GRACE)
    # A message saved on `dst` gets a GUID of its own there: the check after it (and a run again after a
    # stop half-way) knows it by its Message-ID; a save that fails stops the move (nothing removed).
    have = _messages(src, address)
    missing = missing_on(have, _messages(dst, address))
    _bring_over(address, src, dst, missing)
    if missing and missing_on({g: have[g] for g in missing}, _messages(dst, address)):
        raise MoveFailed(f"{address}: {len(missing)} messages of {src} could not be saved on {dst}; run the move "
                         "again (it resumes), nothing was removed")
    _account(cfg, address, "--release")
    for host in dict.fromkeys([cfg.mail_host, *cfg.mx_hosts]):
        _run(host, "postqueue -f", "sending the mail the hold kept queued")
    return _put_aside(address, src), len(missing)


def move_one(cfg, address: str, to: str, hold: int, say) -> dict:
    t0 = time.monotonic()
    st = _account(cfg, address)
    if st["moved_from"]:  # switched by an earlier run that stopped before its catch-up: finish that
        aside, _ = _finish(cfg, address, st["moved_from"], st["store"])
        say(f"{address}: the move from {st['moved_from']} to {st['store']} finished; old copy in {aside}")
        st = _account(cfg, address)
    src = st["store"]
    if st["moving"] is None:
        if src == to:
            say(f"{address}: already on {to}")
            return {"address": address, "moved": False}
        st = _account(cfg, address, f"--begin {shlex.quote(to)}")
    before: dict = {}
    for n in range(1, PASSES + 1):
        start = time.monotonic()
        _copy(cfg, address, src, to)
        now = _folders(src, address)
        say(f"{address}: pass {n}: {_total(now)} messages, {sum(b for _, b in now.values()) / 2**20:.1f} MiB "
            f"in {len(now)} folders, {time.monotonic() - start:.1f} s")
        if now == before or time.monotonic() - start < 2:
            break  # nothing came meanwhile, or a pass short enough to be the last: hold now
        before = now
    # The hold: new logins wait, open sessions are cut, nothing but deliveries changes the mail now.
    _account(cfg, address, f"--hold {hold}")
    hold_start = time.monotonic()
    try:
        _last_copy(cfg, address, src, to, hold_start + hold - 1)
    except MoveFailed:
        # The new store forgets the mailbox: a login that waited for this hold is refused there once
        # and comes back to the old one (never left working on a copy the next attempt overwrites).
        _account(cfg, address, "--abort")
        raise
    # From here its logins (once the hold is over) and deliveries go to `to`.
    _account(cfg, address, f"--switch {shlex.quote(to)}")
    switched = time.monotonic() - hold_start
    aside, late = _finish(cfg, address, src, to)
    held = time.monotonic() - hold_start
    total = _folders(to, address)
    say(f"{address}: on {to}: {_total(total)} messages" + (f" ({late} delivered during the last pass)" if late else "")
        + f"; switched {switched:.1f} s into the hold, deliveries held {held:.1f} s, {time.monotonic() - t0:.1f} s "
        f"in all; the old copy is on {src} in {aside}")
    return {"address": address, "moved": True, "from": src, "to": to, "switched_s": round(switched, 1),
            "held_s": round(held, 1), "messages": _total(total), "late": late, "old_copy": aside}


def _last_copy(cfg, address: str, src: str, to: str, deadline: float) -> None:
    """During the hold: sessions cut, the last pass and the home's files, done before `deadline`."""
    _run(cfg.mail_host, f"doveadm proxy kick {shlex.quote(address)} >/dev/null 2>&1; "
                        f"doveadm kick {shlex.quote(address)} >/dev/null 2>&1; true", "ending its sessions")
    if src != cfg.mail_host:
        _run(src, f"doveadm kick {shlex.quote(address)} >/dev/null 2>&1; true", "ending its sessions")
    time.sleep(GRACE)
    _copy(cfg, address, src, to)  # what is delivered meanwhile is added by the catch-up (_finish)
    _home_files(address, src, to)
    if time.monotonic() > deadline:
        raise MoveFailed(f"{address}: the last copy outlasted the hold; it stays on {src} "
                         "(run the move again, with a longer --hold)")


def _selection(args, cfg):
    """The province's accounts the command names, or an error text."""
    if args.agency:
        picked = [a for a in cfg.accounts if cfg.agency_of(a) == args.agency]
        if not picked:
            known = sorted({cfg.agency_of(a) for a in cfg.accounts if cfg.agency_of(a)})
            return f"{cfg.key} has no mailbox of an agency {args.agency!r}; its agencies: {', '.join(known)}"
        return picked
    by = {a.address: a for a in cfg.accounts}
    missing = [a for a in args.addresses if a not in by]
    if missing:
        return f"not in the directory of {cfg.key}: {', '.join(missing)}"
    return [by[a] for a in args.addresses]


def cmd_move_mailbox(args) -> int:
    if bool(args.addresses) == bool(args.agency):
        err("name the mailboxes to move (ADDRESS ...) or an agency (--agency ID), not both")
        return 2
    key = args.province or (None if args.agency else _province_of(args.addresses))
    if key is None:
        err("--agency needs --province PROVINCE" if args.agency else
            "the addresses are not all of one province's domain")
        return 2
    cfg = province(key)
    if cfg is None:
        return 2
    stores = [cfg.mail_host, *cfg.stores_apart]
    if not cfg.stores_apart:
        err(f"{key} has one store ({cfg.mail_host}): there is nowhere to move a mailbox (a store apart is a host "
            f"with roles [store] in {cfg.file.name})")
        return 2
    picked = _selection(args, cfg)
    if isinstance(picked, str):
        err(picked)
        return 2
    if args.to and args.to not in stores:
        err(f"--to {args.to!r}: not a store of {key}; its stores: {', '.join(stores)}")
        return 2
    held = cfg.held_agencies()
    plan = []
    for acc in picked:
        want = cfg.store_of(acc, held)
        if args.to and args.to != want and not args.abort:
            err(f"{acc.address}: the data puts agency {cfg.agency_of(acc)!r} on {want}, not {args.to}; change "
                f"hosts[].agencies in {cfg.file.name} first and deploy, so new mailboxes and a rebuild agree, then move")
            return 2
        plan.append((acc.address, args.to or want))
    say = print
    if not args.dry_run:
        lock = _one_at_a_time(key)
        if lock is None:
            return 1
    failed = 0
    for i, (address, to) in enumerate(plan, 1):
        prefix = f"[{i}/{len(plan)}] "
        try:
            if args.abort:
                st = _account(cfg, address)
                if st["moving"]:
                    _account(cfg, address, "--abort")
                    say(f"{prefix}{address}: move to {st['moving']} stopped; it stays on {st['store']}")
                else:
                    say(f"{prefix}{address}: no move under way" + (
                        f" (its move from {st['moved_from']} is past its switch: run the move to finish it)"
                        if st["moved_from"] else f"; it is on {st['store']}"))
                continue
            if args.dry_run:
                st = _account(cfg, address)
                size = _folders(st["store"], address)
                doing = (f"already on {to}" if st["store"] == to and not st["moving"] else
                         f"{st['store']} -> {to}: {sum(m for m, _ in size.values())} messages, "
                         f"{sum(b for _, b in size.values()) / 2**20:.1f} MiB"
                         + (f" (a move to {st['moving']} is under way: it resumes)" if st["moving"] else ""))
                say(f"{prefix}{address}: {doing}")
                continue
            move_one(cfg, address, to, args.hold, lambda m, p=prefix: say(p + m))
        except MoveFailed as e:
            err(str(e))
            failed += 1
    if args.dry_run:
        say(f"dry run: nothing moved; during its last copy the logins of each mailbox would wait up to {args.hold} s, "
            "its deliveries in the MX queues")
    return 1 if failed else 0


def _one_at_a_time(key: str, what: str = "move-mailbox"):
    """One move or failover of a province at a time from this controller (two would copy one mailbox at
    once, or bring a lost store's mail over twice): a lock held until the command ends, or None after
    saying who holds it. `what`: the command taking it, said to the next one."""
    import fcntl
    import os

    path = current().log_dir() / f"mailboxes-{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        err(f"another {f.read().strip() or 'govmail move-mailbox or failover (pid unknown)'} of {key} runs; "
            "wait for it to end")
        return None
    f.truncate(0)
    f.write(f"`govmail {what}` (pid {os.getpid()}, since {time.strftime('%H:%M:%S')})\n")
    f.flush()
    return f


def _province_of(addresses) -> str | None:
    from ..data import available_provinces, load_province

    domains = {a.rpartition("@")[2] for a in addresses}
    if len(domains) != 1:
        return None
    return next((k for k in available_provinces() if load_province(k).domain in domains), None)


def hold_seconds(value: str) -> int:
    import argparse

    if not value.isdigit() or not 5 <= int(value) <= 120:
        raise argparse.ArgumentTypeError(f"{value[:20]!r}: a hold is 5 to 120 seconds")
    return int(value)


def register(sub) -> None:
    p = sub.add_parser("move-mailbox", help="mailboxes (or an agency's) to another store of their province, live")
    p.add_argument("addresses", nargs="*", type=mail_address, metavar="ADDRESS")
    p.add_argument("--agency", metavar="ID", help="every mailbox of this agency (or district) id")
    p.add_argument("--province", type=province_key, help="the province (needed with --agency)")
    p.add_argument("--to", metavar="STORE", help="the store to move to (default: where the data puts the agency, "
                   "hosts[].agencies; another is refused)")
    p.add_argument("--hold", type=hold_seconds, default=10, metavar="SECONDS",
                   help="how long new logins may wait during the last copy (default 10)")
    p.add_argument("--dry-run", action="store_true", help="say what would move where, and how much; move nothing")
    p.add_argument("--abort", action="store_true", help="stop a move under way: the mailbox stays where it is")
    p.set_defaults(fn=cmd_move_mailbox)
