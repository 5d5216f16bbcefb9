"""Only the province's own hosts reach the account store's cluster ports on a host that serves them.

A db host whose PostgreSQL other hosts read (contract.STORE_PG port), a Patroni member (its REST API,
contract.PATRONI["api_port"]: the other member asks it before a failover, the monitor scrapes it) and
an etcd member (client and peer ports) listen on the host's private address, without TLS (etcd) or
with a password only (PostgreSQL, Patroni's writes). Their own nft table lets the province's hosts
(their private addresses: `hosts[].private_address`, the lab's own) and the host itself in, and drops
everyone else on those ports:

    templates/store_firewall/store.nft.j2 -> /etc/govmail/store_firewall/store.nft

checked by `nft -c` on a copy before it replaces the live one, loaded (the table replaced whole, in
one transaction) by govmail-store-firewall.service before etcd, Patroni and PostgreSQL start. Nothing
on a host that serves none of those ports (one host on SQLite, or PostgreSQL read on the loopback only).
"""

from __future__ import annotations

from ..data.text import Trusted
from ..data.text import host_address as address
from ..host import contract
from ..render import render
from ..service import File, Service, Unit, Validator
from . import db

DIR = "/etc/govmail/store_firewall"
NFT = f"{DIR}/store.nft"
UNIT = "govmail-store-firewall"


def ports(cfg, host: str) -> list[int]:
    """The cluster ports `host` serves to the province's other hosts."""
    p, out = contract.PATRONI, []
    if host in cfg.db_hosts and db.reader_hosts(cfg, {}, host):  # PostgreSQL on its private address too
        out.append(contract.STORE_PG["port"])
        if cfg.store_cluster:
            out.append(p["api_port"])
    if host in cfg.etcd_members:
        out += [p["etcd_client_port"], p["etcd_peer_port"]]
    return out


def service(ctx) -> Service | None:
    cfg = ctx.cfg
    if cfg.store_engine != "postgresql":
        return None
    mine = ports(cfg, ctx.host_name)
    if not mine:
        return None
    hosts = sorted({address(ctx.addresses.get(h.name, h.name)) for h in cfg.model.hosts})
    pg = f"{contract.STORE_PG['version']}-{contract.STORE_PG['cluster']}"
    extra = dict(nft=Trusted(NFT), ports=Trusted(", ".join(map(str, mine))), allowed=Trusted(", ".join(hosts)),
                 before=Trusted(f"etcd.service postgresql@{pg}.service {contract.PATRONI['unit']}.service"))
    return Service(
        name="store_firewall",
        packages=("nftables",),
        files=[File(NFT, render("store_firewall/store.nft.j2", cfg, **extra), action="firewall"),
               File(f"/etc/systemd/system/{UNIT}.service", render(f"systemd/{UNIT}.service.j2", cfg, **extra),
                    action=None)],
        validator=Validator(DIR, "nft -c -f {dir}/store.nft"),
        # A table removed by hand (`nft flush ruleset`, another tool) leaves the oneshot unit "active":
        # the next deploy sees the table missing and loads it again.
        units=[Unit(UNIT, ready="nft list table inet govmail_store >/dev/null 2>&1", start=f"systemctl restart {UNIT}")],
        actions={"firewall": f"systemctl restart {UNIT}"},
    )
