"""`govmail failover STORE`: a lost store's mailboxes served from their standby copy (`hosts[].standby`).

The standby copy is seconds behind (govmail/host/standby.py copies a mailbox right after each
delivery to it, and every mailbox every minute): the mail the store took after its mailbox's last
copy is on the lost store's disk only. Mail still queued on the MX hosts is not lost: it was refused 451 by the
store's LMTP (or waited in the queue) and goes to the standby once it serves.

1. the store must not answer (a store that answers is moved, not failed over: `govmail move-mailbox`
   loses nothing; `--force` for one that answers but must go);
2. the copies stop, and the standby's copy of each mailbox is noted (its message GUIDs, kept on the
   standby in /var/lib/govmail/standby/failover-<store>.json);
3. one transaction in the account store: `store = STANDBY`, `failed_from = STORE` (govmail/host/
   mailbox_moves.py); logins and deliveries go to the standby from then on;
4. the MX queues are flushed.

`--recover`, once the store is back with its disk: for each mailbox, the messages on the store that
the standby's copy did not have when it took over (by GUID) are saved on the standby's copy, the
store's copy is put aside (/var/vmail/.moved/), and `failed_from` is cleared. A message the user
deleted after the failover is not brought back (its GUID was noted). `--forget`: the store's disk is
gone; nothing to bring back. Then `govmail move-mailbox --agency ...` takes the mailboxes home.
Automatic promotion is left out on purpose: a store that is only cut off (its network, not its disk)
still takes mail from nobody, but a failover decided by a timer on the far side of that cut would
hand its mailboxes to a copy that may lack its last messages while the store may come back; an operator who has
looked decides, in one command (README: the runbook for a lost store).
"""

from __future__ import annotations

import json
import shlex
import time

from ..host import contract
from ..targets import current
from .args import err, province
from .move import MoveFailed, _bring_over, _messages, _one_at_a_time, _put_aside, _run, missing_on

SNAPSHOTS = "/var/lib/govmail/standby"


def _province_of_host(name: str) -> str | None:
    from ..data import available_provinces, load_province

    return next((k for k in available_provinces() if name in {h.name for h in load_province(k).model.hosts}), None)


def _answers(host: str) -> bool:
    """Whether `host` answers and its Dovecot runs."""
    try:
        r = current().run(host, "systemctl is-active dovecot", timeout=8)
    except Exception:  # noqa: BLE001 - a timeout, an unreachable host: it does not answer
        return False
    return r.returncode == 0 and r.stdout.strip() == "active"


def _lookups(host: str, address: str, seconds: float = 90) -> None:
    """Wait until `host`'s Dovecot finds a mailbox in the account store: a store back on the network
    answers before its auth process has a database connection again (found in the lab)."""
    end = time.monotonic() + seconds
    while True:
        try:
            _run(host, f"doveadm -o doveadm_port=0 user -f home {shlex.quote(address)}", "looking up a mailbox")
            return
        except MoveFailed:
            if time.monotonic() > end:
                raise
            time.sleep(3)


def _accounts(cfg, args: str) -> object:
    return json.loads(_run(cfg.mail_host, f"{contract.PATHS['lib']}/accounts failover {args}", "the account store"))


def _snapshot(standby: str, boxes: list[str]) -> dict[str, list[str]]:
    """{mailbox: its message GUIDs} of the store's mailboxes (`boxes`) as the standby's copy has them now."""
    # Named (-F, a file: doveadm reads it with pread), not -A: the standby's Dovecot does not iterate
    # another store's copies as its own.
    out = _run(standby, "t=$(mktemp) && cat > $t && doveadm -o doveadm_port=0 -f tab fetch -F $t 'guid' all; "
                        "rc=$?; rm -f $t; exit $rc", "listing the standby copies",
               input="".join(f"{a}\n" for a in boxes).encode()).decode("utf-8", "replace")
    got: dict[str, list[str]] = {a: [] for a in boxes}
    for line in out.splitlines()[1:]:
        user, _, guid = line.partition("\t")
        if user in got and guid:
            got[user].append(guid)
    return got


def _flush(cfg) -> None:
    """Every MX sends the mail it queued for the lost store now, not at its next queue run."""
    for host in dict.fromkeys([cfg.mail_host, *cfg.mx_hosts]):
        _run(host, "postqueue -f", "sending the mail queued for the lost store")


def _noted(standby: str, store: str) -> dict[str, list[str]]:
    """The standby copies' messages noted at `store`'s failover (`_snapshot`), as kept on the standby."""
    return json.loads(_run(standby, f"cat {SNAPSHOTS}/failover-{store}.json 2>/dev/null || echo '{{}}'",
                           "reading the standby copies' messages"))


def fail_over(cfg, store: str, standby: str, force: bool, dry_run: bool, say) -> int:
    if _answers(store) and not force:
        err(f"{store} answers and its Dovecot runs: move its mailboxes instead (govmail move-mailbox --agency ID "
            f"--province {cfg.key} --to {standby}), which loses nothing; --force fails it over anyway")
        return 1
    boxes = _accounts(cfg, f"{shlex.quote(store)} --on")
    # Failed over already and not recovered (a run stopped after its switch, or run twice): its queues are
    # flushed again; the standby's messages noted then are kept (noted now, they would include what the
    # users deleted since, and `--recover` would bring those back).
    before = [b["address"] for b in _accounts(cfg, shlex.quote(store))]
    if before and not boxes:
        if not dry_run:
            _flush(cfg)
        say(f"{store}: its {len(before)} mailboxes are already served from {standby} (failed over, not yet "
            f"recovered){'' if dry_run else '; the MX queues flushed'}; once it is back: govmail failover {store} "
            "--recover")
        return 0
    copier = cfg.standby_copier(store)
    state = json.loads(_run(copier, f"{contract.PATHS['lib']}/standby state", "reading the copies' times") or "{}")
    times = {a: m["copied"] for a, m in state.get(store, {}).items()}
    now = time.time()
    never = [a for a in boxes if a not in times]
    oldest = min((times[a] for a in boxes if a in times), default=None)
    point = (f"the oldest copy {now - oldest:.0f} s old" if oldest else "no copy made yet") + (
        f"; never copied: {', '.join(never[:5])}{' ...' if len(never) > 5 else ''}" if never else "")
    if dry_run:
        say(f"{store} -> {standby}: {len(boxes)} mailboxes ({point}); dry run: nothing changed")
        return 0
    t0 = time.monotonic()
    # A pass under way waits on the lost store's connection: cut, not waited for (its copies are one way).
    units = "govmail-standby.service govmail-standby-deliveries.service"
    _run(copier, f"systemctl kill -s KILL {units} 2>/dev/null; systemctl stop {units}", "stopping the copies")
    snap = _snapshot(standby, boxes)
    if before:  # mailboxes made on the store since its last failover: noted beside the others
        snap = {**_noted(standby, store), **snap}
    _run(standby, f"install -d -m 0700 {SNAPSHOTS} && cat > {SNAPSHOTS}/failover-{store}.json.new && "
                  f"mv {SNAPSHOTS}/failover-{store}.json.new {SNAPSHOTS}/failover-{store}.json",
         "keeping the standby copies' messages", input=json.dumps(snap).encode())
    switched = _accounts(cfg, f"{shlex.quote(store)} --to {shlex.quote(standby)}")
    # The copies after deliveries go on for the other stores this host copies (these mailboxes are no
    # longer copied: failed over).
    _run(copier, "systemctl start govmail-standby-deliveries.service", "starting the copies again")
    _flush(cfg)
    say(f"{store} -> {standby}: {len(switched)} mailboxes served from the standby copy in {time.monotonic() - t0:.1f} s "
        f"({point}: the mail {store} took after its mailbox's last copy is on its disk only; once it is back: "
        f"govmail failover {store} --recover)")
    return 0


def recover(cfg, store: str, standby: str, forget: bool, say) -> int:
    boxes = _accounts(cfg, shlex.quote(store))
    if not boxes:
        say(f"{store}: no mailbox waits for the mail it took after its last copy")
        return 0
    if not forget and not _answers(store):
        err(f"{store} does not answer (or its Dovecot is down): bring it back with its disk, deploy it, then "
            f"--recover; if its disk is gone, --forget")
        return 1
    if not forget:
        _lookups(store, boxes[0]["address"])
    snap = {} if forget else _noted(standby, store)
    brought, failed = 0, 0
    for i, box in enumerate(boxes, 1):
        address, now_on = box["address"], box["store"]
        try:
            if not forget:
                known = set(snap.get(address, []))
                # Not on the standby when it took over, nor there since (a message saved anew gets a GUID of
                # its own: a run stopped half-way and run again finds it by its Message-ID).
                tail = missing_on({g: v for g, v in _messages(store, address).items() if g not in known},
                                  _messages(now_on, address))
                _bring_over(address, store, now_on, tail)
                aside = _put_aside(address, store)
                brought += len(tail)
                say(f"[{i}/{len(boxes)}] {address}: {len(tail)} messages brought back from {store}; its copy there "
                    f"put aside in {aside}")
            _accounts(cfg, f"{shlex.quote(store)} --recovered {shlex.quote(address)}")
        except MoveFailed as e:
            err(str(e))
            failed += 1
    say(f"{store}: {len(boxes) - failed} mailboxes whole again ({brought} messages brought back"
        f"{'; its disk given up' if forget else ''}); they stay on {standby} until moved home (govmail move-mailbox "
        f"--agency ID --province {cfg.key})")
    return 1 if failed else 0


def cmd_failover(args) -> int:
    key = args.province or _province_of_host(args.store)
    if key is None:
        err(f"{args.store!r} is not a host of any province's data")
        return 2
    cfg = province(key)
    if cfg is None:
        return 2
    standby = cfg.standbys.get(args.store)
    if standby is None:
        stores = [cfg.mail_host, *cfg.stores_apart]
        err(f"{args.store} has no standby in {cfg.file.name} (hosts[].standby)" + (
            f"; the stores with one: {', '.join(cfg.standbys)}" if cfg.standbys else
            "" if args.store in stores else f"; it is not a store of {key}"))
        return 2
    # One at a time, with the moves too: two recoveries would bring the same message over twice.
    lock = None if args.dry_run else _one_at_a_time(key, "failover")
    if lock is None and not args.dry_run:
        return 1
    try:
        if args.recover or args.forget:
            return recover(cfg, args.store, standby, args.forget, print)
        return fail_over(cfg, args.store, standby, args.force, args.dry_run, print)
    except MoveFailed as e:
        err(str(e))
        return 1


def register(sub) -> None:
    from .args import host_name, province_key

    p = sub.add_parser("failover", help="a lost store's mailboxes served from their standby copy (hosts[].standby)")
    p.add_argument("store", type=host_name, metavar="STORE")
    p.add_argument("--province", type=province_key, help="the province (found from STORE's name otherwise)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--recover", action="store_true",
                   help="STORE is back: bring over the mail it took after its last copy, put its copies aside")
    g.add_argument("--forget", action="store_true", help="STORE's disk is gone: the mailboxes are whole as they are")
    g.add_argument("--dry-run", action="store_true", help="the mailboxes and how old their last copies are; change nothing")
    p.add_argument("--force", action="store_true", help="fail over even though STORE answers (its newest mail stays there)")
    p.set_defaults(fn=cmd_failover)
