"""The monthly report's availability as the province's monitor measured it (issue 28).

When the province is watched, the report (report.py, on the mail host) asks the monitor's Prometheus
(report settings' `monitor.prometheus`, reached over the private network: the monitor's nft table
lets the mail host in) for the period:

- per daemon, the share of the monitor's scrapes of the mail host in which the unit was active: a
  scrape that found the host down counts as down, which the host's own journal cannot know;
- per service as users meet it (the black-box probes: smtp, submission, submissions, imaps, pop3s,
  webmail, mx), the share of probes that succeeded;
- how much of the period the monitor watched (its scrapes against the period's length).

The daemons' starts and failures still come from the journal. Without a monitor, or when it does not
answer, the report says so and keeps the journal's figures. Standard library only.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request


def _label(value: str) -> str:
    """A PromQL string literal."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _query(url: str, promql: str, at: float, timeout: float) -> list:
    q = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=timeout) as r:
        doc = json.load(r)
    if doc.get("status") != "success":
        raise ValueError(doc.get("error") or "Prometheus refused the query")
    return doc["data"]["result"]


def measured(monitor: dict, since: float, end: float, daemons: list[str], timeout: float = 30) -> dict:
    """{"daemons": {name: share}, "probes": {service: share}, "watched": share of the period} from the
    monitor (`daemons`: unit names without .service), or {"error": why} when it cannot be asked."""
    url, host = monitor.get("prometheus"), monitor.get("mail_host")
    if not url or not host:
        return {"error": "no monitor named in the report settings"}
    if end <= since:
        return {"error": "the period has not begun"}
    span = int(end - since)
    rng, h = f"[{span}s]", _label(host)
    units = "|".join(u.replace(".", "[.]") for u in daemons) or "none"
    try:
        active = _query(url, (f'sum by (name) (sum_over_time(node_systemd_unit_state{{job="node",host={h},'
                               f'state="active",name=~"({units})[.]service"}}{rng})) / scalar(count_over_time('
                               f'up{{job="node",host={h}}}{rng}))'), end, timeout)
        probes = _query(url, f'avg by (service) (avg_over_time(probe_success{{job="probe",host={h}}}{rng}))',
                        end, timeout)
        scrapes = _query(url, f'count_over_time(up{{job="node",host={h}}}{rng})', end, timeout)
    except (OSError, ValueError, KeyError) as e:
        return {"error": f"the monitor {monitor.get('host')} did not answer: {e}"}
    step = float(monitor.get("scrape_seconds") or 15)
    watched = min(1.0, float(scrapes[0]["value"][1]) * step / span) if scrapes else 0.0
    return {
        "daemons": {r["metric"]["name"].removesuffix(".service"): min(1.0, float(r["value"][1])) for r in active},
        "probes": {r["metric"].get("service", "?"): float(r["value"][1]) for r in probes},
        "watched": round(watched, 4),
    }


def merge(journal: dict, monitor: dict | None, since: float, end: float) -> tuple[dict, dict, str]:
    """(daemons, probes, source): the journal's per-daemon figures with the monitor's availability and
    down time in place where it measured them; the probes; where the availability comes from."""
    if not monitor:
        return journal, {}, "journal of the mail host (no monitor)"
    m = measured(monitor, since, end, sorted(journal))
    if "error" in m:
        return journal, {}, f"journal of the mail host ({m['error']})"
    span = (end - since) * m["watched"]
    out = {}
    for name, figures in journal.items():
        share = m["daemons"].get(name)
        out[name] = dict(figures) if share is None else {
            **figures, "availability": round(share, 6), "down_seconds": int((1 - share) * span)}
    probes = {svc: round(share, 6) for svc, share in sorted(m["probes"].items())}
    return out, probes, f"the monitor {monitor.get('host')} (Prometheus; {100 * m['watched']:.1f} % of the period watched)"
