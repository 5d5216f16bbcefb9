#!/usr/bin/env python3
"""From a real break to the alert in the operators' hands, and from the repair to the resolved notice.

    sudo python3 bench/alert_latency.py [PROVINCE]

    sudo python3 bench/alert_latency.py [PROVINCE] --breaks "postfix stopped,mail held"

One lab province (default bacninh; brought up and deployed if needed), deployed with its alerts
posted to a webhook receiver on the lab bridge (tests/lab/alerting.py). Each break of
tests/lab/breaks.py BREAKS (or those named) is applied alone: the time from the break to the alert's
arrival is printed beside its floor, the rule's `for` window plus the interval at which its series
is scraped (15 s; 30 s for the black-box probes) plus, for govmail's own facts, the metrics tool's
30 s refresh. Windows over two minutes are cut to two, as in the lab test (the floor counts the cut
window: what is measured is the way from the fault to the operator, not the wait a rule chooses).
Then the repair, and the time to the resolved notice (a spike's from when it fired). The original
data is deployed again at the end. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import lab_mail_host  # noqa: E402

from govmail.monitoring.alerts import ALERTS  # noqa: E402
from govmail.services.monitor import PROBE_S, SCRAPE_S  # noqa: E402
from tests.lab.alerting import WebhookSink, deploy, shorten_windows, watched_data  # noqa: E402
from tests.lab.breaks import BREAKS, Scene, host_of  # noqa: E402

FACTS_S = 30  # govmail-metrics.timer


def seconds(window: str) -> int:
    m = re.fullmatch(r"(\d+)([smh])", window)
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def floor(name: str, labels: dict, windows: dict) -> int:
    a = next(a for a in ALERTS if a.name == name)
    window = seconds(windows.get(name, a.for_))
    if "probe_" in a.expr and "service" in labels:
        return window + PROBE_S
    return window + SCRAPE_S + (FACTS_S if "govmail_" in a.expr else 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("province", nargs="?", default="bacninh")
    ap.add_argument("--breaks", help="comma-separated names of breaks to apply (default: all): "
                    + ", ".join(b.name for b in BREAKS))
    args = ap.parse_args()
    province = args.province
    chosen = [b for b in BREAKS if not args.breaks or b.name in args.breaks.split(",")]
    if args.breaks and len(chosen) != len(args.breaks.split(",")):
        ap.error(f"--breaks: known breaks are {', '.join(b.name for b in BREAKS)}")
    cfg, _, _ = lab_mail_host(province)
    sink = WebhookSink()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = watched_data(Path(tmp), province, sink.url, None)
        deploy(province, data)
        try:
            sink.wait("Heartbeat", cfg.monitor_host, timeout=180)
            scene = Scene(cfg, sink, data)
            for b in chosen:
                windows = shorten_windows(cfg)  # again: a repair that deploys writes the rules back
                t0 = time.time()
                try:
                    b.apply(scene)
                    got = {(n, w): sink.wait(n, host_of(cfg, w), since=t0, labels=lab) for n, w, lab in b.alerts}
                finally:  # repaired even when it failed half-way
                    t1 = time.time()
                    b.repair(scene)
                for (n, w, lab) in b.alerts:
                    hit = got[(n, w)]
                    since = hit[0] if hit and n in b.spikes else t1
                    res = sink.wait(n, host_of(cfg, w), status="resolved", since=since, timeout=480, labels=lab)
                    rows.append((b.name, n, hit[0] - t0 if hit else None, floor(n, lab, windows),
                                 res[0] - since if res else None))
                time.sleep(20)  # the next break starts from a quiet province
        finally:
            sink.close()
            deploy(province)
    print(f"alert latency, {province}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'break':22} {'alert':20} {'alerted':>8} {'floor':>6} {'resolved':>9}")
    def fmt(v):
        return f"{v:7.0f}s" if v is not None else "   never"

    for brk, name, lat, fl, res in rows:
        print(f"{brk:22} {name:20} {fmt(lat)} {fl:5d}s {fmt(res)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
