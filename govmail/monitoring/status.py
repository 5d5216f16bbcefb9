"""`govmail status PROVINCE`: one screen per host from the province's Prometheus and Alertmanager.

The monitor host serves Prometheus on its private address and Alertmanager on its loopback (on the
private address too when the web host publishes its pages), as their /etc/default files say; the controller sends QUERY (standard library Python) through SSH,
which asks them and prints one JSON document; `report()` turns it into the
screen. Exit status: 0 when nothing fires (the heartbeat aside), 1 when an alert fires, 2 when the
monitor cannot be asked.
"""

from __future__ import annotations

import json

from ..host import contract
from .alerts import FILESYSTEMS

# Per host: the values the screen shows (PromQL, each result carrying a `host` label).
VALUES = {
    "up": 'up{job="node"}',
    "probes": 'probe_success{job="probe"}',
    "down": 'node_systemd_unit_state{state="active",type!="oneshot"} == 0 or node_systemd_unit_state{state="failed"} == 1',
    "queue": "sum by (host, queue) (govmail_postfix_queue_messages)",
    "disk": "max by (host) (1 - node_filesystem_avail_bytes{" + FILESYSTEMS + "} / node_filesystem_size_bytes)",
    "backup_hours": "(time() - govmail_backup_last_success_timestamp_seconds) / 3600",
    "backup_failed": "govmail_backup_last_run_failed",
    "cert_days": "min by (host) ((govmail_tls_certificate_expiry_timestamp_seconds - time()) / 86400)",
    "quota": "govmail_mailboxes_quota",
    "rules": "sum(prometheus_rule_group_rules)",  # the alert rules Prometheus has loaded (`govmail verify`)
    # Two db hosts: each Patroni member's role and streaming, each etcd member's answer and leader.
    # (One selector each: `up or x` would drop x, whose labels match up's but for the name.)
    "store": '{job="patroni",__name__=~"up|patroni_(primary|sync_standby|postgres_streaming|postgres_running)"}',
    "etcd": '{job="etcd",__name__=~"up|etcd_server_has_leader"}',
}

# Python lines, run on the monitor host, that set PROM and AM to where its Prometheus and Alertmanager
# listen (their /etc/default files say: the private address, or the loopback).
FIND_DAEMONS = f"""
import re
def listens(name, port):
    try:
        text = open("/etc/default/" + name).read()
        return "http://" + re.search(r"--web[.]listen-address=([^\\s']+)", text).group(1)
    except (OSError, AttributeError):
        return "http://127.0.0.1:%d" % port
PROM = listens("prometheus", {contract.PORTS['prometheus']})
AM = listens("prometheus-alertmanager", {contract.PORTS['alertmanager']})
"""

QUERY = FIND_DAEMONS + """
import json, sys, urllib.parse, urllib.request
def get(url):
    with urllib.request.urlopen(url, timeout=20) as r:
        return json.load(r)
out = {"values": {}, "errors": []}
for key, q in json.loads(sys.argv[1]).items():
    try:
        out["values"][key] = get(PROM + "/api/v1/query?" + urllib.parse.urlencode({"query": q}))["data"]["result"]
    except Exception as e:
        out["errors"].append("prometheus: %s" % e)
        break
try:  # the flags it runs with (`govmail verify`: the retention the data asks for)
    out["flags"] = get(PROM + "/api/v1/status/flags")["data"]
except Exception as e:
    out["errors"].append("prometheus: %s" % e)
# When each daemon started and last loaded its configuration, and when its files were written
# (`govmail verify`: a daemon running older files than the deploy wrote).
import os
out["runs"], out["written"] = {}, {}
for name, base in (("prometheus", PROM), ("alertmanager", AM)):
    try:
        text = urllib.request.urlopen(base + "/metrics", timeout=20).read().decode()
        out["runs"][name] = {k: float(v) for k, _, v in (line.partition(" ") for line in text.splitlines())
                             if k in ("process_start_time_seconds", name + "_config_last_reload_success_timestamp_seconds")}
    except Exception as e:
        out["errors"].append("%s: %s" % (name, e))
for path in sys.argv[2:]:
    try:
        out["written"][path] = os.stat(path).st_mtime
    except OSError:
        pass
try:
    out["alerts"] = get(AM + "/api/v2/alerts?active=true&silenced=false&inhibited=false")
except Exception as e:
    out["errors"].append("alertmanager: %s" % e)
print(json.dumps(out))
"""


# Each daemon's files: those it reads when it starts, and those a reload applies.
READS = {
    "prometheus": {"start": ("/etc/default/prometheus",),
                   "reload": ("/etc/prometheus/prometheus.yml", "/etc/prometheus/govmail-alerts.yml")},
    "alertmanager": {"start": ("/etc/default/prometheus-alertmanager",), "reload": ("/etc/prometheus/alertmanager.yml",)},
}


def command() -> str:
    import shlex

    paths = [p for reads in READS.values() for files in reads.values() for p in files]
    return f"timeout 60 python3 -c {shlex.quote(QUERY)} {shlex.quote(json.dumps(VALUES))} {' '.join(paths)}"


def stale(doc: dict) -> list[str]:
    """The monitor's daemons running older files than those on disk (a deploy's restart or reload that
    did not happen), each with what would apply them."""
    out = []
    for name, reads in READS.items():
        runs = doc.get("runs", {}).get(name, {})
        started = runs.get("process_start_time_seconds")
        loaded = runs.get(f"{name}_config_last_reload_success_timestamp_seconds", started)
        for how, since in (("start", started), ("reload", loaded)):
            for path in reads[how]:
                written = doc.get("written", {}).get(path)
                if written is not None and since is not None and written > since + 1:
                    out.append(f"{name} {'started' if how == 'start' else 'loaded its configuration'} before "
                               f"{path} was written: `systemctl {'restart' if how == 'start' else 'reload'} "
                               f"{'prometheus-alertmanager' if name == 'alertmanager' else name}`")
    return out


def _by_host(results: list) -> dict:
    out: dict = {}
    for r in results:
        out.setdefault(r["metric"].get("host", "?"), []).append((r["metric"], float(r["value"][1])))
    return out


def _member(m: dict) -> str:
    """A Patroni member as its /metrics give it (up, patroni_primary, ...): one phrase."""
    if m.get("up") != 1:
        return "Patroni NOT ANSWERING"
    if m.get("patroni_postgres_running") != 1:
        return "PostgreSQL NOT RUNNING"
    if m.get("patroni_primary") == 1:
        return "primary"
    kind = "synchronous standby" if m.get("patroni_sync_standby") == 1 else "standby"
    return kind + (", streaming" if m.get("patroni_postgres_streaming") == 1 else ", NOT STREAMING")


def report(cfg, doc: dict) -> tuple[str, int]:
    """(the screen, exit status) from what QUERY printed."""
    lines = []
    if doc.get("errors"):
        return "\n".join(f"  monitor {cfg.monitor_host}: {e}" for e in doc["errors"]), 2
    v = {k: _by_host(doc["values"].get(k, [])) for k in VALUES}
    firing = [a for a in doc.get("alerts", []) if a["labels"].get("alertname") != "Heartbeat"]
    for h in cfg.model.hosts:
        name = h.name
        up = v["up"].get(name)
        state = "UP" if up and up[0][1] == 1 else "DOWN" if up else "NOT SCRAPED"
        lines.append(f"{name} ({', '.join(cfg.roles(name))}): {state}")
        probes = v["probes"].get(name, [])
        if probes:
            lines.append("  services: " + ", ".join(f"{m.get('service')} {'ok' if x == 1 else 'FAILING'}"
                                                   for m, x in sorted(probes, key=lambda p: p[0].get("service", ""))))
        down = sorted({m.get("name", "?") for m, _ in v["down"].get(name, [])})
        if down:
            lines.append("  units not running: " + ", ".join(down))
        q = {m.get("queue"): int(x) for m, x in v["queue"].get(name, [])}
        if q:
            lines.append("  queue: " + ", ".join(f"{k} {q[k]}" for k in ("active", "deferred", "hold") if k in q))
        for key, fmt in (("disk", "  disk: {:.0%} used"), ("backup_hours", "  last good backup: {:.1f} h ago"),
                         ("cert_days", "  certificate: {:.0f} days left")):
            if v[key].get(name):
                lines.append(fmt.format(max(x for _, x in v[key][name])))
        quota = {m.get("state"): int(x) for m, x in v["quota"].get(name, [])}
        if quota:
            lines.append(f"  mailboxes: {quota.get('all', 0)} with a quota, {quota.get('over_95_percent', 0)} over 95 %, "
                         f"{quota.get('full', 0)} full")
        store = {m.get("__name__"): x for m, x in v["store"].get(name, [])}
        if store:
            lines.append("  account store: " + _member(store))
        etcd = {m.get("__name__"): x for m, x in v["etcd"].get(name, [])}
        if etcd:
            lines.append("  etcd: " + ("NOT ANSWERING" if etcd.get("up") != 1 else
                                       "member, has a leader" if etcd.get("etcd_server_has_leader") == 1 else "NO LEADER"))
        if any(x == 1 for _, x in v["backup_failed"].get(name, [])):
            lines.append("  last backup run: FAILED")
        mine = [a for a in firing if a["labels"].get("host") == name]
        for a in mine:
            lines.append(f"  FIRING {a['labels'].get('alertname')}: {a['annotations'].get('summary', '')} "
                         f"({a['labels'].get('article', '')})")
    others = [a for a in firing if a["labels"].get("host") not in {h.name for h in cfg.model.hosts}]
    for a in others:
        lines.append(f"FIRING {a['labels'].get('alertname')}: {a['annotations'].get('summary', '')} "
                     f"({a['labels'].get('article', '')})")
    lines.append(f"{len(firing)} alert(s) firing" if firing else "nothing fires")
    return "\n".join(lines), 1 if firing else 0
