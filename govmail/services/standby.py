"""The standby copies of a store's mailboxes (`hosts[].standby`), kept current every minute.

On the host that runs the copies of a pair (the mail host when it is one end, else the store):
/etc/govmail/standby.json (the pairs: store, standby, which end this host is, the other end's doveadm
server) and govmail-standby.timer, which runs the host tool `standby sync` (govmail/host/standby.py)
every minute, and govmail-standby-deliveries.service (`standby follow`), which copies a mailbox as soon
as this host's Dovecot has accepted a delivery to it (it writes each recipient to contract.PATHS
["standby_deliveries"]: `deliveries` below, dovecot.conf's event exporter). The standby's Dovecot
knows the store's mailboxes (its userdb:
govmail/services/dovecot.py `_own`), so that `govmail failover` (govmail/cli/failover.py) only has to
point them there.
"""

from __future__ import annotations

from ..data.text import Trusted
from ..data.text import host_address as address
from ..host import contract
from ..render import render
from ..service import File, Service, Unit, directory, json_bytes

CONF = "/etc/govmail/standby.json"
UNITS = ("govmail-standby.service", "govmail-standby.timer", "govmail-standby-deliveries.service")


def pairs(ctx) -> list[dict]:
    cfg, at = ctx.cfg, (lambda n: ctx.addresses.get(n, n))
    out = []
    for store, standby in cfg.standbys.items():
        if cfg.standby_copier(store) != ctx.host_name:
            continue
        here = "store" if ctx.host_name == store else "standby"
        out.append({"store": store, "standby": standby, "here": here,
                    "peer": at(standby if here == "store" else store), "port": contract.PORTS["doveadm"]})
    return out


def deliveries(ctx) -> Trusted | None:
    """When this host copies a store to its standby: the event filter of the deliveries its Dovecot
    writes to contract.PATHS["standby_deliveries"] (its LMTP sees each delivery to the store: the
    store's own, or as the mail host, the proxy's). On the mail host only those it proxies to the
    stores it keeps the copy of (`dest_host`: their address in the proxy's passdb), not every delivery
    of the province."""
    mine = pairs(ctx)
    if not mine:
        return None
    accepted = "event=smtp_server_transaction_rcpt_finished AND protocol=lmtp AND status_code=250"
    if any(p["here"] == "store" for p in mine):
        return Trusted(accepted)
    return Trusted(accepted + " AND (" + " OR ".join(f'dest_host="{address(p["peer"])}"' for p in mine) + ")")


def service(ctx) -> Service | None:
    mine = pairs(ctx)
    if not mine:
        return None
    cfg = ctx.cfg
    events = contract.PATHS["standby_deliveries"]
    return Service(
        name="standby",
        # Dovecot's stats process (user dovecot) writes there.
        ensures=[directory(events.rsplit("/", 1)[0], 0o750, "dovecot", "root")],
        files=[File(CONF, json_bytes({"pairs": mine}), mode=0o644, action=None),
               *[File(f"/etc/systemd/system/{n}", render(f"standby/{n}.j2", cfg), action=None) for n in UNITS]],
        units=[Unit("govmail-standby.timer"), Unit("govmail-standby-deliveries.service")],
    )
