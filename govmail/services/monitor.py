"""The province's monitor: Prometheus, Alertmanager and the black-box prober, on the monitor host
(the host with role `monitor`, else the backup host: never the mail host, whose failure it reports).

- /etc/prometheus/prometheus.yml: scrapes every host's node-exporter, the mail host's Dovecot and nginx
  (govmail/services/exporters.py) over their private addresses, with two db hosts each Patroni member's
  and each etcd member's own /metrics (govmail/services/db.py, etcd.py), the black-box probes of the mail
  services as clients meet them (SMTP and submission with STARTTLS, SMTPS, IMAPS, POP3S, the web mail
  over HTTPS; certificate expiry with them; the domain's MX as the monitor host's resolver gives it),
  and itself; keeps `policy.monitoring.retention_days`;
- /etc/prometheus/govmail-alerts.yml: the alert rules (govmail/monitoring/alerts.py), each with the
  article of the clause it protects;
- /etc/prometheus/alertmanager.yml: every alert and its resolution mailed to `alert_to` through
  `policy.monitoring.relay` (else the mail host) and posted to `policy.monitoring.webhook`; the
  heartbeat every `heartbeat_hours`;
- /etc/prometheus/blackbox.yml: the probe modules (templates/monitor/blackbox.yml.j2);
- /etc/default/prometheus, prometheus-alertmanager, prometheus-blackbox-exporter: Alertmanager and the
  prober listen on the loopback only; Prometheus on the monitor's private address, reached by the
  province's mail host (its monthly report reads availability there) and the monitor itself only
  (govmail/services/exporters.py's nft table). `govmail status` asks them through SSH; nothing is
  published.

All of /etc/prometheus is checked on a copy by promtool, amtool and the prober before it replaces the
live files; the daemons reload (not restart) on a configuration change. The YAML files are written
from Python structures (every value quoted by the YAML dumper), never pasted into a template.
"""

from __future__ import annotations

import ipaddress
import json
import re

import yaml

from ..data.roles import has
from ..data.text import Trusted
from ..host import contract
from ..monitoring import alerts
from ..render import render
from ..service import File, Service, Unit, Validator
from .exporters import address

CONF = "/etc/prometheus"
PROBES = (  # (service label, port, blackbox module)
    ("smtp", 25, "smtp_starttls"), ("submission", 587, "smtp_starttls"), ("submissions", 465, "smtps"),
    ("imaps", 993, "imaps"), ("pop3s", 995, "pop3s"),
)
PAGE_NAMES = ("prometheus", "alertmanager")  # the pages `policy.monitoring.web_ui` publishes
SCRAPE_S = 15
PROBE_S = 30


def probes(cfg) -> dict[str, str]:
    """The monitor host's own resolver: the MX probe asks it what the world would be told."""
    return {"monitor_resolver": "awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf 2>/dev/null"}


def resolver(ctx) -> str | None:
    """The first nameserver of the monitor host (an IPv4 address), or None."""
    value = (ctx.probes.get("monitor_resolver") or "").strip()
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        return None


class _Plain(yaml.SafeDumper):
    def ignore_aliases(self, data):  # each value written out where it is used, no &anchors
        return True


def _yaml(header: str, doc: dict) -> str:
    return f"# Managed by govmail ({header}); edits here are overwritten by the next deploy.\n" + yaml.dump(
        doc, Dumper=_Plain, sort_keys=False, allow_unicode=True, width=1000)


def _listen(cfg, addresses: dict):
    """The monitor's private address, where its Prometheus listens."""
    return address(addresses.get(cfg.monitor_host, cfg.monitor_host))


def pages(cfg, addresses: dict) -> dict[str, str] | None:
    """Where the web host's nginx reaches the pages it publishes (`policy.monitoring.web_ui`), by
    name ("prometheus", "alertmanager"), or None when they are not published."""
    if not (cfg.policy.monitoring.web_ui and cfg.monitor_host):
        return None
    return {name: f"http://{_listen(cfg, addresses)}:{contract.PORTS[name]}/" for name in PAGE_NAMES}


def page_url(cfg, name: str) -> str:
    """A published page's address, as the administrators' browsers (and the alerts' links) use it."""
    return f"https://{cfg.mail_host}/monitor/{name}/"


def _alertmanager_listen(cfg, addresses: dict):
    """Alertmanager: on the loopback, or on the private address when the web host publishes it."""
    return _listen(cfg, addresses) if pages(cfg, addresses) else Trusted("127.0.0.1")


def prometheus_url(cfg, addresses: dict) -> str | None:
    """Where the province's Prometheus answers, or None unwatched."""
    if cfg.monitor_host is None:
        return None
    return f"http://{_listen(cfg, addresses)}:{contract.PORTS['prometheus']}"


def _role(roles, part: str) -> str:
    """The `role` label of a scrape: `mail` on the one-host province's mail host, else the part."""
    return "mail" if has(roles, "mail") else part


def prometheus_config(cfg, addresses: dict, dns: str | None = None) -> dict:
    node, dovecot = contract.PORTS["node_exporter"], contract.PORTS["dovecot_stats"]
    hosts = [(h.name, address(addresses.get(h.name, h.name)), cfg.roles(h.name)) for h in cfg.model.hosts]
    probe_targets = [{"targets": [f"{cfg.mail_host}:{port}"],
                      "labels": {"host": cfg.mail_host, "service": svc, "__param_module": module}}
                     for svc, port, module in PROBES]
    # Each MX host apart from the mail host (several MX): its SMTP as senders meet it.
    probe_targets += [{"targets": [f"{h}:25"], "labels": {"host": h, "service": "smtp", "__param_module": "smtp_starttls"}}
                      for h in cfg.mx_hosts if h != cfg.mail_host]
    probe_targets.append({"targets": [f"https://{cfg.mail_host}/"],
                          "labels": {"host": cfg.mail_host, "service": "webmail", "__param_module": "https"}})
    if dns:  # the domain's MX, as the monitor host's resolver gives it
        probe_targets.append({"targets": [f"{dns}:53"],
                              "labels": {"host": cfg.mail_host, "service": "mx", "__param_module": "mx"}})
    loopback = {"host": cfg.monitor_host, "role": "monitor"}
    am = f"{_alertmanager_listen(cfg, addresses)}:{contract.PORTS['alertmanager']}"
    return {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s",
                   "external_labels": {"province": cfg.key}},
        "rule_files": ["govmail-alerts.yml"],  # beside this file (so the check on a copy reads the copy's)
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [am]}]}]},
        "scrape_configs": [
            {"job_name": "node", "static_configs": [
                {"targets": [f"{a}:{node}"], "labels": {"host": n, "role": "+".join(r)}} for n, a, r in hosts]},
            {"job_name": "dovecot", "static_configs": [
                {"targets": [f"{a}:{dovecot}"], "labels": {"host": n, "role": _role(r, "store")}} for n, a, r in hosts
                if has(r, "store")]},
            {"job_name": "nginx", "static_configs": [
                {"targets": [f"{a}:{contract.PORTS['nginx_exporter']}"], "labels": {"host": n, "role": _role(r, "web")}}
                for n, a, r in hosts if has(r, "web")]},
            *_cluster_jobs(cfg, addresses),
            {"job_name": "probe", "metrics_path": "/probe", "scrape_interval": f"{PROBE_S}s",
             "static_configs": probe_targets,
             "relabel_configs": [
                 {"source_labels": ["__address__"], "target_label": "__param_target"},
                 {"source_labels": ["__address__"], "target_label": "instance"},
                 {"target_label": "__address__", "replacement": f"127.0.0.1:{contract.PORTS['blackbox']}"}]},
            {"job_name": "prometheus", "static_configs": [
                {"targets": [f"{_listen(cfg, addresses)}:{contract.PORTS['prometheus']}"], "labels": loopback}]},
            {"job_name": "alertmanager", "static_configs": [{"targets": [am], "labels": loopback}]},
        ],
    }


def _cluster_jobs(cfg, addresses: dict) -> list[dict]:
    """Two db hosts (Patroni): each member's REST API /metrics (its role, whether PostgreSQL runs and
    streams) and each etcd member's /metrics (whether it has a leader), on their private addresses."""
    if not cfg.store_cluster:
        return []
    p = contract.PATRONI

    def job(name: str, hosts: list[str], port: int) -> dict:
        return {"job_name": name, "static_configs": [
            {"targets": [f"{address(addresses.get(n, n))}:{port}"], "labels": {"host": n, "role": "+".join(cfg.roles(n))}}
            for n in hosts]}

    return [job("patroni", cfg.db_hosts, p["api_port"]), job("etcd", cfg.etcd_members, p["etcd_client_port"])]


SUBJECT = ('[govmail {{ .CommonLabels.province }}] {{ .Status | toUpper }} {{ .CommonLabels.alertname }} on '
           '{{ .CommonLabels.host }} ({{ .CommonLabels.article }})')


def alertmanager_config(cfg, verifiable_tls: bool) -> dict:
    mon = cfg.policy.monitoring
    relay = f"{mon.relay.host}:{mon.relay.port}" if mon.relay else f"{cfg.mail_host}:25"
    email = {"to": ", ".join(cfg.alert_to), "send_resolved": True, "headers": {"Subject": SUBJECT}}
    if not verifiable_tls:
        email["tls_config"] = {"insecure_skip_verify": True}
    hooks = [{"url": mon.webhook, "send_resolved": True}] if mon.webhook else []

    def receiver(name: str, resolved: bool = True) -> dict:
        r = {"name": name, "email_configs": [{**email, "send_resolved": resolved}]}
        if hooks:
            r["webhook_configs"] = [{**h, "send_resolved": resolved} for h in hooks]
        return r

    return {
        "global": {"smtp_smarthost": relay, "smtp_from": f"govmail-monitor@{cfg.monitor_host}",
                   "smtp_hello": cfg.monitor_host, "smtp_require_tls": True},
        "route": {"receiver": "operators", "group_by": ["alertname", "host"], "group_wait": "10s",
                  "group_interval": "1m", "repeat_interval": "4h",
                  "routes": [{"matchers": ['alertname="Heartbeat"'], "receiver": "heartbeat", "group_wait": "0s",
                              "repeat_interval": f"{mon.heartbeat_hours}h"}]},
        "receivers": [receiver("operators"), receiver("heartbeat", resolved=False)],
    }


def service(ctx) -> Service:
    cfg = ctx.cfg
    rules = alerts.rules(cfg, ctx.signature_mirror)
    mon = cfg.policy.monitoring
    listen, am = _listen(cfg, ctx.addresses), _alertmanager_listen(cfg, ctx.addresses)
    published = pages(cfg, ctx.addresses)
    # Published: each daemon makes its links (and the alerts' links) under the web host's path, and
    # keeps serving at its root, which nginx proxies that path to.
    flags = {name: Trusted(f" --web.external-url={page_url(cfg, name)} --web.route-prefix=/") if published else Trusted("")
             for name in PAGE_NAMES}
    extra = dict(retention_days=mon.retention_days, verify_tls=ctx.verifiable_tls, hello=address(cfg.monitor_host),
                 listen=listen, am_listen=am, flags=flags,
                 mx=bool(resolver(ctx)), mx_name=Trusted(json.dumps(cfg.domain)),
                 mx_regexp=Trusted(json.dumps(rf"\sMX\s+[0-9]+\s+{re.escape(cfg.mail_host)}\.$")))
    warnings = [] if mon.relay or mon.webhook else [
        "policy.monitoring names no relay and no webhook: alerts are mailed through the province's own mail host "
        "and stop when it does (the heartbeat stops too, which is noticed)"]
    return Service(
        name="monitor",
        packages=("prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter"),
        files=[
            File(f"{CONF}/prometheus.yml", _yaml("govmail/services/monitor.py",
                                                 prometheus_config(cfg, ctx.addresses, resolver(ctx))),
                 action="reload"),
            File(f"{CONF}/govmail-alerts.yml", _yaml("govmail/monitoring/alerts.py", rules), action="reload"),
            File(f"{CONF}/alertmanager.yml", _yaml("govmail/services/monitor.py",
                                                   alertmanager_config(cfg, ctx.verifiable_tls)),
                 action="alertmanager"),
            File(f"{CONF}/blackbox.yml", render("monitor/blackbox.yml.j2", cfg, **extra), action="blackbox"),
            *[File(f"/etc/default/{name}", render(f"monitor/{name}.j2", cfg, **extra), action="restart")
              for name in ("prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter")],
        ],
        validator=Validator(CONF, "cd {dir} && promtool check config --lint=none prometheus.yml >/dev/null && "
                                  "amtool check-config alertmanager.yml >/dev/null && "
                                  "prometheus-blackbox-exporter --config.check --config.file=blackbox.yml >/dev/null"),
        units=[
            Unit("prometheus-blackbox-exporter"),
            Unit("prometheus-alertmanager", ready=f"timeout 2 bash -c '</dev/tcp/{am}/{contract.PORTS['alertmanager']}'"),
            Unit("prometheus", ready=f"timeout 2 bash -c '</dev/tcp/{listen}/{contract.PORTS['prometheus']}'"),
        ],
        actions={
            "reload": "systemctl reload prometheus",
            "alertmanager": "systemctl try-reload-or-restart prometheus-alertmanager",
            "blackbox": "systemctl try-reload-or-restart prometheus-blackbox-exporter",
            "restart": "systemctl restart prometheus-blackbox-exporter prometheus-alertmanager prometheus",
        },
        warnings=warnings,
    )
