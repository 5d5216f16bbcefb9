"""Metrics from every host of a watched province, for its monitor (govmail/services/monitor.py).

- prometheus-node-exporter on the host's private address (`hosts[].private_address`; the lab gives
  its own), port contract.PORTS["node_exporter"]: the machine (disk, inodes, clock, load), the state of
  the daemons and of govmail's jobs (systemd collector, units: govmail/monitoring/alerts.py UNIT_INCLUDE),
  and govmail's own facts (textfile collector): templates/exporters/prometheus-node-exporter.j2 ->
  /etc/default/prometheus-node-exporter;
- prometheus-nginx-exporter on the mail host (same address, port contract.PORTS["nginx_exporter"]),
  reading nginx's stub_status on the loopback (templates/nginx/conf.d/govmail.conf.j2):
  templates/exporters/prometheus-nginx-exporter.j2 -> /etc/default/prometheus-nginx-exporter;
- govmail-metrics.timer: every 30 s the host tool `metrics` (govmail/host/metrics.py) writes those
  facts (backup age, certificate expiry, queues, pending deploy actions, accounts by status, bans...);
  on the mail host govmail-quota-facts.timer, 15 minutes after each reading ends, how full the
  mailboxes are (`metrics --quota`: too slow for every 30 s with tens of thousands of mailboxes);
- templates/exporters/metrics.nft.j2 -> /etc/govmail/exporters/metrics.nft: only the monitor (and the
  host itself) reach the metric ports, the exporters' and Dovecot's (templates/dovecot/dovecot.conf.j2,
  `service stats`), and only the mail host the monitor's Prometheus; its own nft table, checked by
  `nft -c` before it replaces the live one, loaded by
  govmail-metrics-firewall.service.

On a host without the mail role, the `metrics` tool and the host contract are installed here (the
mail host gets them with every host tool: govmail/services/host_tools.py).
"""

from __future__ import annotations

from ..data.roles import has
from ..data.text import Trusted
from ..data.text import host_address as address
from ..host import contract
from ..host.contract import PACKAGE
from ..monitoring.alerts import UNIT_INCLUDE
from ..render import render
from ..service import File, Service, Unit, Validator
from .host_tools import HOST, command

NFT_DIR = "/etc/govmail/exporters"
NFT = f"{NFT_DIR}/metrics.nft"
TEXTFILE_DIR = contract.PATHS["metrics"].rsplit("/", 1)[0]
# node-exporter 1.9's collectors, on by default, for what a govmail host does not have.
UNUSED = ("zfs", "infiniband", "fibrechannel", "tapestats", "ipvs", "nfs", "nfsd", "rapl", "bcache")


def read_ports(cfg, roles) -> list[int]:
    """The monitor's ports the mail host reads too: Prometheus (the monthly report's availability), and
    Alertmanager when the mail host's nginx publishes its pages (`policy.monitoring.web_ui`)."""
    if "monitor" not in roles:
        return []
    return [contract.PORTS["prometheus"], *([contract.PORTS["alertmanager"]] if cfg.policy.monitoring.web_ui else [])]


def metric_ports(cfg, roles) -> list[int]:
    mail = [*([contract.PORTS["dovecot_stats"]] if has(roles, "store") else []),
            *([contract.PORTS["nginx_exporter"]] if has(roles, "web") else [])]
    return [contract.PORTS["node_exporter"], *mail, *read_ports(cfg, roles)]


def _nft_set(ports: list[int]) -> Trusted:
    """One port as nft writes it, or a set of several."""
    return Trusted(str(ports[0]) if len(ports) == 1 else "{ " + ", ".join(map(str, ports)) + " }")


def service(ctx) -> Service:
    cfg = ctx.cfg
    monitor = cfg.monitor_host
    if monitor is None:
        return None
    me = address(ctx.addresses.get(ctx.host_name, ctx.host_name))
    watcher = address(ctx.addresses.get(monitor, monitor))
    # on the monitor: the mail hosts read Prometheus too (their monthly report's availability)
    readers = sorted({address(ctx.addresses.get(n, n)) for n in [*cfg.hosts_with("store"), *cfg.hosts_with("web")]})
    extra = dict(monitor=Trusted(monitor), listen=me, units=Trusted(UNIT_INCLUDE), textfile_dir=Trusted(TEXTFILE_DIR),
                 off=Trusted(" ".join(f"--no-collector.{c}" for c in UNUSED)),
                 nft=Trusted(NFT), metric_ports=Trusted(", ".join(map(str, metric_ports(cfg, ctx.roles)))),
                 allowed=Trusted(", ".join(sorted({watcher, me}))),
                 readers=Trusted(", ".join(readers)) if "monitor" in ctx.roles else "",
                 read_ports=_nft_set(read_ports(cfg, ctx.roles)))
    files = [
        File("/etc/default/prometheus-node-exporter", render("exporters/prometheus-node-exporter.j2", cfg, **extra),
             action="restart"),
        File(NFT, render("exporters/metrics.nft.j2", cfg, **extra), action="firewall"),
        *[File(f"/etc/systemd/system/{n}", render(f"systemd/{n}.j2", cfg, **extra), action=None)
          for n in ("govmail-metrics.service", "govmail-metrics.timer", "govmail-metrics-firewall.service")],
    ]
    packages = ["prometheus-node-exporter", "nftables"]
    units = [Unit("govmail-metrics-firewall", ready="nft list table inet govmail_metrics >/dev/null 2>&1",
                  start="systemctl restart govmail-metrics-firewall"),  # loaded again when removed by hand
             Unit("prometheus-node-exporter", ready=f"timeout 2 bash -c '</dev/tcp/{me}/{contract.PORTS['node_exporter']}'"),
             Unit("govmail-metrics.timer")]
    if has(ctx.roles, "web"):  # nginx's own figures (stub_status on the loopback: govmail/services/web.py)
        packages.append("prometheus-nginx-exporter")
        files.append(File("/etc/default/prometheus-nginx-exporter",
                          render("exporters/prometheus-nginx-exporter.j2", cfg, **extra), action="restart"))
        # how full the mailboxes are: every 15 minutes, apart from the 30-second facts
        files += [File(f"/etc/systemd/system/{n}", render(f"systemd/{n}.j2", cfg, **extra), action=None)
                  for n in ("govmail-quota-facts.service", "govmail-quota-facts.timer")]
        units += [Unit("prometheus-nginx-exporter"), Unit("govmail-quota-facts.timer")]
    else:
        lib = contract.PATHS["lib"]
        files += [File(f"{lib}/{PACKAGE}/{name}", (HOST / name).read_bytes(), action=None)
                  for name in ("__init__.py", "contract.py", "metrics.py")]
        files.append(File(f"{lib}/metrics", command("metrics", "metrics"), mode=0o755, action=None))
    return Service(
        name="exporters",
        packages=tuple(packages),
        files=files,
        validator=Validator(NFT_DIR, "nft -c -f {dir}/metrics.nft"),
        units=units,
        actions={"firewall": "systemctl restart govmail-metrics-firewall",
                 "restart": "systemctl restart " + " ".join(u.name for u in units if "exporter" in u.name)},
    )
