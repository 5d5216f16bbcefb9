"""`govmail reboot PROVINCE`: every host of a province rebooted in turn (a kernel update), one at a
time, each only while every other host is healthy, and the next only once it is healthy again, as
the province's monitor sees it (govmail/monitoring/health.py). So two hosts of a role are never down
together: while an MX reboots the other takes the mail, while a db host reboots the other serves the
account store (the primary is handed to the standby first, `patronictl switchover`, so no write
waits for a failover), while a store apart reboots only its own mailboxes wait.

Order: the backup and monitor hosts, the db standby, the db primary, the MX hosts apart, the stores
apart, the mail host last (its reboot is the one users notice: its logins and web mail stop for
the reboot, its mail waits in the other MX's queue). Once a host is healthy again, every MX host
flushes its queue: what waited for it goes then, not at the next queue run (5 minutes). At the end
the account store's primary is handed back to the db host that held it before (on a province whose
mail host is a db host, its writes stay local), so a reboot leaves the roles as it found them.
"""

from __future__ import annotations

import json
import time

from ..host import contract
from ..monitoring import health
from ..targets import TargetError, current
from .args import err, province, province_key


def _rank(cfg, host: str, primary: str | None) -> tuple:
    roles = set(cfg.roles(host))
    if host == cfg.mail_host:
        return (5,)
    if roles & {"store", "web"}:
        return (4,)
    if "mx" in roles:
        return (3,)
    if "db" in roles:
        return (2 if host == primary else 1,)
    return (0,)


def order(cfg, primary: str | None) -> list[str]:
    """The province's hosts in the order they are rebooted (data order within a rank)."""
    names = [h.name for h in cfg.model.hosts]
    return sorted(names, key=lambda n: (_rank(cfg, n, primary), names.index(n)))


def ask(cfg) -> dict:
    """The monitor's answer (health.QUERIES), or {"errors": [why]}."""
    try:
        r = current().run(cfg.monitor_host, health.command(), timeout=90)
        if r.returncode == 0:
            return json.loads(r.stdout)
        return {"errors": [(r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]]}
    except (ValueError, OSError) as e:
        return {"errors": [str(e)]}
    except Exception as e:  # subprocess.TimeoutExpired
        return {"errors": [f"no answer ({type(e).__name__})"]}


def _patroni(cfg, host: str) -> bool:
    """A member of the account store's Patroni cluster (two db hosts), whose PostgreSQL is checked."""
    return bool(cfg.store_cluster) and host in cfg.db_hosts


def _sick(cfg, doc: dict, hosts: list[str]) -> dict[str, list[str]]:
    return {h: p for h in hosts if (p := health.problems(doc, h, db=_patroni(cfg, h)))}


def _switchover(cfg, host: str, say, to: str | None = None) -> None:
    """A db primary about to reboot hands the primary role to the standby first (Patroni); at the
    end, the primary goes back `to` the host that held it."""
    other = to or next(h for h in cfg.db_hosts if h != host)
    cmd = f"patronictl -c {contract.PATRONI['config']} switchover --leader {host} --candidate {other} --force"
    r = current().run(host, cmd, timeout=120)
    if r.returncode != 0:
        raise TargetError(f"{host}: the switchover to {other} failed: {(r.stderr or r.stdout).strip()[-300:]}")
    say(f"  {host}: the account store's primary handed to {other}")
    # Postfix sets a db host whose connection broke aside for 60 s (dict_pgsql, not configurable): the
    # old primary, restarting as the standby, is set aside, and so was the other one if it had been
    # down within the minute (the mail host just rebooted): every lookup failed, mail was refused
    # with 451 (found in the lab). A reload starts its lookup processes afresh, on the new primary.
    for mx in cfg.mx_hosts:
        current().run(mx, "postfix reload", timeout=60)


def cmd_reboot(args) -> int:
    cfg = province(args.province)
    if cfg is None:
        return 2
    if cfg.monitor_host is None:
        err(f"{args.province} has no monitor (a `monitor` or `backup` host): a reboot in turn waits on its health")
        return 2
    names = [h.name for h in cfg.model.hosts]
    unknown = [h for h in args.hosts if h not in names]
    if unknown:
        err(f"not hosts of {args.province}: {', '.join(unknown)}; its hosts: {', '.join(names)}")
        return 2
    doc = ask(cfg)
    if doc.get("errors"):
        err(f"the monitor {cfg.monitor_host} cannot be asked: {doc['errors'][0]}")
        return 1
    first_primary = health.primary(doc)
    plan = [h for h in order(cfg, first_primary) if not args.hosts or h in args.hosts]
    say = print
    if args.dry_run:
        for i, h in enumerate(plan, 1):
            p = health.problems(doc, h, db=_patroni(cfg, h))
            say(f"[{i}/{len(plan)}] {h} ({', '.join(cfg.roles(h))}): " + ("healthy" if not p else "; ".join(p)))
        if first_primary in plan and _patroni(cfg, first_primary):
            say(f"then the account store's primary back on {first_primary}")
        say("dry run: nothing rebooted")
        return 0
    for i, host in enumerate(plan, 1):
        others = [h for h in names if h != host]
        sick = _sick(cfg, ask(cfg), others)
        if sick:
            why = "; ".join(f"{h}: {', '.join(p)}" for h, p in sick.items())
            err(f"not rebooting {host}: not every other host is healthy ({why}); rebooting it now could take a "
                f"role's last host down. Done: {i - 1} of {len(plan)}")
            return 1
        if _patroni(cfg, host) and health.primary(ask(cfg)) == host:
            _switchover(cfg, host, say)
        since = float(current().run(host, "date +%s", timeout=30).stdout.strip() or 0)
        say(f"[{i}/{len(plan)}] {host} ({', '.join(cfg.roles(host))}): rebooting")
        t0 = time.monotonic()
        current().reboot(host)
        back = time.monotonic() - t0
        end = time.monotonic() + args.timeout
        while (left := health.problems(ask(cfg), host, db=_patroni(cfg, host), since=since)):
            if time.monotonic() > end:
                err(f"{host} is not healthy {args.timeout} s after its reboot: {'; '.join(left)}. Done: {i - 1} of "
                    f"{len(plan)}; the others wait (run again once it is)")
                return 1
            time.sleep(5)
        # The mail the other MX kept for it while it was down goes now, not at their next queue run.
        for mx in cfg.mx_hosts:
            current().run(mx, "postqueue -f", timeout=60)
        say(f"  {host}: answered SSH after {back:.0f} s, healthy after {time.monotonic() - t0:.0f} s")
    if first_primary in plan and _patroni(cfg, first_primary) and not _primary_back(cfg, first_primary, args, say):
        return 1
    say(f"{args.province}: {len(plan)} hosts rebooted in turn")
    return 0


def _primary_back(cfg, host: str, args, say) -> bool:
    """The primary handed back to `host`, which held it before the reboots, once both db hosts are
    healthy; waits until the monitor sees it there with its standby streaming."""
    now = health.primary(ask(cfg))
    if now == host:
        return True
    if now is not None:
        _switchover(cfg, now, say, to=host)
    end = time.monotonic() + args.timeout
    while health.primary(doc := ask(cfg)) != host or _sick(cfg, doc, cfg.db_hosts):
        if time.monotonic() > end:
            err(f"the account store's primary is not back on {host} {args.timeout} s after the reboots (every host "
                f"was rebooted; `patronictl switchover` can hand it back)")
            return False
        time.sleep(5)
    return True


def register(sub) -> None:
    p = sub.add_parser("reboot", help="reboot a province's hosts one at a time, each once the others are healthy")
    p.add_argument("province", type=province_key)
    p.add_argument("--host", dest="hosts", action="append", default=[], metavar="HOST",
                   help="only this host (repeat for several); the order stays the province's")
    p.add_argument("--timeout", type=int, default=600, metavar="SECONDS",
                   help="how long a host may take to be healthy again (default 600)")
    p.add_argument("--dry-run", action="store_true", help="the order and each host's health now; reboot nothing")
    p.set_defaults(fn=cmd_reboot)
