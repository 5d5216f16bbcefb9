"""`govmail status PROVINCE...` and `govmail alerts`.

`status`: one screen per host of the province (services as the black-box probes meet them, daemons
not running, queues, disk, last good backup, certificate days, firing alerts with their article),
read from the province's Prometheus and Alertmanager on its monitor host through SSH; exit 1 while
an alert fires, 2 when the monitor cannot be asked (govmail/monitoring/status.py).
`alerts`: the alert rules and their runbooks (docs/alerts.md is `govmail alerts --markdown`).
"""

from __future__ import annotations

import json
import subprocess
import sys

from ..data import load_province
from ..targets import current
from .args import err, province_key


def register(sub) -> None:
    p = sub.add_parser("status", help="one screen per host from the province's monitor (Prometheus, Alertmanager); "
                       "exit 1 while an alert fires")
    p.add_argument("provinces", nargs="+", type=province_key)
    p.set_defaults(fn=cmd_status)
    p = sub.add_parser("alerts", help="the alert rules, each with the clause it protects and its runbook")
    p.add_argument("--markdown", action="store_true", help="the runbook (docs/alerts.md is this output)")
    p.set_defaults(fn=cmd_alerts)


def cmd_status(args) -> int:
    from ..monitoring import status

    target, worst = current(), 0
    for key in args.provinces:
        cfg = load_province(key)
        if cfg.monitor_host is None:
            err(f"{key}: no host watches the province (no `monitor` or `backup` host in its data)")
            worst = max(worst, 2)
            continue
        print(f"govmail status: asking {cfg.monitor_host} (Prometheus, Alertmanager) ...", file=sys.stderr, flush=True)
        try:
            r = target.run(cfg.monitor_host, status.command(), timeout=90)
        except subprocess.TimeoutExpired:
            r = None
        try:
            doc = json.loads(r.stdout) if r is not None and r.returncode == 0 else None
        except ValueError:
            doc = None
        if doc is None:
            why = "no answer in 90 s" if r is None else (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
            print(f"== {cfg.model.name} ({key})\n  the monitor {cfg.monitor_host} cannot be asked: {why}")
            worst = max(worst, 2)
            continue
        text, code = status.report(cfg, doc)
        print(f"== {cfg.model.name} ({key})\n{text}")
        worst = max(worst, code)
    return worst


def cmd_alerts(args) -> int:
    from ..monitoring import alerts

    if args.markdown:
        sys.stdout.write(alerts.markdown())
        return 0
    for a in alerts.ALERTS:
        print(f"{a.name:24} policy.{a.clause:12} for {a.for_:4} {a.severity:9} {a.expr}")
    return 0
