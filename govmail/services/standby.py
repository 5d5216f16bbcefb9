"""The standby copies of a store's mailboxes (`hosts[].standby`), kept current every minute.

On the host that runs the copies of a pair (the mail host when it is one end, else the store):
/etc/govmail/standby.json (the pairs: store, standby, which end this host is, the other end's doveadm
server) and govmail-standby.timer, which runs the host tool `standby sync` (govmail/host/standby.py)
every minute. The standby's Dovecot knows the store's mailboxes (its userdb:
govmail/services/dovecot.py `_own`), so that `govmail failover` (govmail/cli/failover.py) only has to
point them there.
"""

from __future__ import annotations

from ..host import contract
from ..render import render
from ..service import File, Service, Unit, json_bytes

CONF = "/etc/govmail/standby.json"
UNITS = ("govmail-standby.service", "govmail-standby.timer")


def runner(cfg, store: str, standby: str) -> str:
    """The host that copies `store`'s mailboxes to `standby`: the mail host when it is one end (its
    doveadm server would proxy a mailbox sent to it back to the store), else the store."""
    return cfg.mail_host if cfg.mail_host in (store, standby) else store


def pairs(ctx) -> list[dict]:
    cfg, at = ctx.cfg, (lambda n: ctx.addresses.get(n, n))
    out = []
    for store, standby in cfg.standbys.items():
        if runner(cfg, store, standby) != ctx.host_name:
            continue
        here = "store" if ctx.host_name == store else "standby"
        out.append({"store": store, "standby": standby, "here": here,
                    "peer": at(standby if here == "store" else store), "port": contract.PORTS["doveadm"]})
    return out


def service(ctx) -> Service | None:
    mine = pairs(ctx)
    if not mine:
        return None
    cfg = ctx.cfg
    return Service(
        name="standby",
        files=[File(CONF, json_bytes({"pairs": mine}), mode=0o644, action=None),
               *[File(f"/etc/systemd/system/{n}", render(f"standby/{n}.j2", cfg), action=None) for n in UNITS]],
        units=[Unit("govmail-standby.timer")],
    )
