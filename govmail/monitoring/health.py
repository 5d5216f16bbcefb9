"""Whether a province's host is healthy, as its monitor sees it: what `govmail reboot` waits for
before it takes the next host (govmail/cli/reboot.py).

A host is healthy when its node exporter answers (and, after a reboot, has started since), every
black-box probe of its services succeeds in a probe made since, no unit of it is down, and, on a db
host, its Patroni member runs PostgreSQL as the primary or a streaming standby. The same PromQL as
`govmail status` (status.py), through the same query program on the monitor host.
"""

from __future__ import annotations

import json
import shlex

from . import status

QUERIES = {
    "up": status.VALUES["up"],
    "started": 'process_start_time_seconds{job="node"}',  # the node exporter's: it starts with the host
    "probes": status.VALUES["probes"],
    "probed": 'timestamp(probe_success{job="probe"})',
    "down": status.VALUES["down"],
    "store": status.VALUES["store"],
}


def command() -> str:
    return f"timeout 60 python3 -c {shlex.quote(status.QUERY)} {shlex.quote(json.dumps(QUERIES))}"


def _of(doc: dict, key: str, host: str) -> list[tuple[dict, float]]:
    return [(r["metric"], float(r["value"][1])) for r in doc.get("values", {}).get(key, [])
            if r["metric"].get("host") == host]


def problems(doc: dict, host: str, db: bool = False, since: float | None = None) -> list[str]:
    """What keeps `host` from being healthy in the monitor's answer `doc` ([]: healthy). `since`: the
    host's clock when it was rebooted; samples from before do not count."""
    if doc.get("errors"):
        return [f"the monitor does not answer ({doc['errors'][0]})"]
    out = []
    up = _of(doc, "up", host)
    if not up or any(v != 1 for _, v in up):
        out.append("its node exporter does not answer")
    elif since is not None and not any(v >= since for _, v in _of(doc, "started", host)):
        out.append("no sample since its reboot yet")
    probes = _of(doc, "probes", host)
    failing = sorted({m.get("service", m.get("instance", "?")) for m, v in probes if v != 1})
    if failing:
        out.append("probes failing: " + ", ".join(failing))
    if since is not None and probes and not all(v >= since for _, v in _of(doc, "probed", host)):
        out.append("its services not probed since its reboot yet")
    down = sorted({m.get("name", "?") for m, _ in _of(doc, "down", host)})
    if down:
        out.append("units down: " + ", ".join(down))
    if db:
        member = {m["__name__"]: v for m, v in _of(doc, "store", host) if m.get("job") == "patroni"}
        if member.get("up") != 1 or member.get("patroni_postgres_running") != 1:
            out.append("its Patroni member or PostgreSQL does not run")
        elif member.get("patroni_primary") != 1 and member.get("patroni_postgres_streaming") != 1:
            out.append("its PostgreSQL standby does not stream from the primary")
    return out


def primary(doc: dict) -> str | None:
    """The db host whose Patroni member is the primary, as the monitor last saw it."""
    return next((r["metric"].get("host") for r in doc.get("values", {}).get("store", [])
                 if r["metric"].get("__name__") == "patroni_primary" and float(r["value"][1]) == 1), None)
