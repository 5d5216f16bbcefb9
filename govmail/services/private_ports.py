"""Only the province's own hosts reach the ports its hosts serve one another.

- the account store's cluster (two db hosts, or a db host read by others): PostgreSQL where other
  hosts read it (contract.STORE_PG port), Patroni's REST API (contract.PATRONI["api_port"]: the
  other member asks it before a failover, the monitor scrapes it) and etcd's client and peer ports on
  db hosts and the witness: every host of the province;
- the store's LMTP and quota-status (contract.PORTS "lmtp", "quota_status") when MX hosts are apart
  from it (several MX: govmail/services/dovecot.py `mx_apart`), and rsyslog's port that takes their
  mail log (contract.PORTS "mail_log", govmail/services/base.py): those MX hosts only;
- with stores apart (behind the mail host's proxy): on each store, IMAP, POP3, LMTP, ManageSieve and
  doveadm for the mail host only; on the mail host, the mail log port and Postfix's listener for mail their
  Dovecot sends (contract.PORTS "sieve_out": Sieve, vacation, quota warnings), for them only.

These listen on the host's private address without TLS (etcd, LMTP) or with a password only
(PostgreSQL, Patroni's writes). One nft table of their own lets the hosts named in each rule (their
private addresses: `hosts[].private_address`, the lab's own) and the host itself in, and drops
everyone else on those ports:

    templates/private_ports/private.nft.j2 -> /etc/govmail/private_ports/private.nft

checked by `nft -c` on a copy before it replaces the live one, loaded (the table replaced whole, in
one transaction) by govmail-private-ports.service before etcd, Patroni and PostgreSQL start, and
again by the next deploy when it was removed by hand. Nothing on a host that serves none of them.
"""

from __future__ import annotations

from ..data.text import Trusted
from ..data.text import host_address as address
from ..host import contract
from ..render import render
from ..service import File, Service, Unit, Validator
from . import db

DIR = "/etc/govmail/private_ports"
NFT = f"{DIR}/private.nft"
UNIT = "govmail-private-ports"
TABLE = "govmail_private"


def rules(cfg, host: str, addresses: dict) -> list[tuple[list[int], list[str]]]:
    """(ports, the addresses that may reach them) for what `host` serves the province's other hosts."""
    p, cluster = contract.PATRONI, []
    if host in cfg.db_hosts and db.reader_hosts(cfg, {}, host):  # PostgreSQL on its private address too
        cluster.append(contract.STORE_PG["port"])
        if cfg.store_cluster:
            cluster.append(p["api_port"])
    if host in cfg.etcd_members:
        cluster += [p["etcd_client_port"], p["etcd_peer_port"]]

    def at(names) -> list[str]:
        return sorted({address(addresses.get(n, n)) for n in names})

    out = [(cluster, at(h.name for h in cfg.model.hosts))] if cluster else []
    mx_apart = [h for h in cfg.mx_hosts if h != host]
    if host == cfg.mail_host and mx_apart:
        out.append(([contract.PORTS["lmtp"], contract.PORTS["quota_status"], contract.PORTS["mail_log"]], at(mx_apart)))
    if host == cfg.mail_host and cfg.stores_apart:
        out.append(([contract.PORTS["sieve_out"], contract.PORTS["mail_log"]], at(cfg.stores_apart)))
    if host in cfg.stores_apart:
        out.append(([143, 110, contract.PORTS["lmtp"], contract.PORTS["managesieve"], contract.PORTS["doveadm"]],
                    at([cfg.mail_host])))
    return out


def service(ctx) -> Service | None:
    cfg = ctx.cfg
    mine = rules(cfg, ctx.host_name, ctx.addresses)
    if not mine:
        return None
    me = address(ctx.addresses.get(ctx.host_name, ctx.host_name))
    pg = f"{contract.STORE_PG['version']}-{contract.STORE_PG['cluster']}"
    extra = dict(nft=Trusted(NFT), table=Trusted(TABLE),
                 rules=[(Trusted(", ".join(map(str, ports))), Trusted(", ".join(sorted({*who, me}))))
                        for ports, who in mine],
                 ports=Trusted(", ".join(str(p) for p in dict.fromkeys(p for ports, _ in mine for p in ports))),
                 before=Trusted(f"etcd.service postgresql@{pg}.service {contract.PATRONI['unit']}.service "
                                "dovecot.service" + (" rsyslog.service" if any(contract.PORTS["mail_log"] in p
                                                                               for p, _ in mine) else "")))
    return Service(
        name="private_ports",
        packages=("nftables",),
        files=[File(NFT, render("private_ports/private.nft.j2", cfg, **extra), action="firewall"),
               File(f"/etc/systemd/system/{UNIT}.service", render(f"systemd/{UNIT}.service.j2", cfg, **extra),
                    action=None)],
        validator=Validator(DIR, "nft -c -f {dir}/private.nft"),
        # A table removed by hand (`nft flush ruleset`, another tool) leaves the oneshot unit "active":
        # the next deploy sees the table missing and loads it again.
        units=[Unit(UNIT, ready=f"nft list table inet {TABLE} >/dev/null 2>&1", start=f"systemctl restart {UNIT}")],
        actions={"firewall": f"systemctl restart {UNIT}"},
    )
