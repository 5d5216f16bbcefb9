"""`govmail status PROVINCE`: one screen per host from the province's Prometheus and Alertmanager.

The monitor host serves Alertmanager on its loopback, Prometheus on its private address (as its
/etc/default/prometheus says); the controller sends QUERY (standard library Python) through SSH,
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
}

# Python lines, run on the monitor host, that set PROM to where its Prometheus listens.
FIND_PROMETHEUS = f"""
import re
try:
    PROM = "http://" + re.search(r"--web[.]listen-address=([^\\s']+)", open("/etc/default/prometheus").read()).group(1)
except (OSError, AttributeError):
    PROM = "http://127.0.0.1:{contract.PORTS['prometheus']}"
"""

QUERY = FIND_PROMETHEUS + f"""
import json, sys, urllib.parse, urllib.request
AM = "http://127.0.0.1:{contract.PORTS['alertmanager']}"
def get(url):
    with urllib.request.urlopen(url, timeout=20) as r:
        return json.load(r)
out = {{"values": {{}}, "errors": []}}
for key, q in json.loads(sys.argv[1]).items():
    try:
        out["values"][key] = get(PROM + "/api/v1/query?" + urllib.parse.urlencode({{"query": q}}))["data"]["result"]
    except Exception as e:
        out["errors"].append("prometheus: %s" % e)
        break
try:
    out["alerts"] = get(AM + "/api/v2/alerts?active=true&silenced=false&inhibited=false")
except Exception as e:
    out["errors"].append("alertmanager: %s" % e)
print(json.dumps(out))
"""


def command() -> str:
    import shlex

    return f"timeout 60 python3 -c {shlex.quote(QUERY)} {shlex.quote(json.dumps(VALUES))}"


def _by_host(results: list) -> dict:
    out: dict = {}
    for r in results:
        out.setdefault(r["metric"].get("host", "?"), []).append((r["metric"], float(r["value"][1])))
    return out


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
