"""What the monitoring lab test and bench/alert_latency.py share: a webhook receiver on the lab
bridge, a province deployed with its alerts routed to it (and to a neighbouring province's mailbox
through that province's MX), Prometheus asked on the monitor host, and the rule file with its long
`for` windows shortened for a test. The breaks themselves are in breaks.py."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import yaml

from govmail import lab
from govmail.data import ROOT, load_province
from govmail.monitoring import status


class WebhookSink:
    """Alertmanager's webhook posts, received on the lab bridge: (time received, alert) per alert."""

    def __init__(self):
        sink = self
        self.received: list[tuple[float, dict]] = []
        self.lock = threading.Lock()
        # Refused posts (HTTP 500, as a chat bridge that is down): (the `name` label an alert of the post
        # carries, seconds from the first such post), and when each refusal ends.
        self.refusals: dict[str, float] = {}
        self.refusing_until: dict[str, float] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                now = time.time()
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = {"alerts": []}
                alerts = doc.get("alerts", [])
                with sink.lock:
                    names = {a.get("labels", {}).get("name") for a in alerts} & set(sink.refusals)
                    until = [sink.refusing_until.setdefault(n, now + sink.refusals[n]) for n in names]
                    refused = any(now < u for u in until)
                    if not refused:
                        sink.received += [(now, a) for a in alerts]
                self.send_response(500 if refused else 200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer((lab.GATEWAY, 0), Handler)
        self.url = f"http://{lab.GATEWAY}:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def refuse(self, name: str, seconds: float) -> None:
        """Answer 500 to posts with an alert about `name` for `seconds` from the first one."""
        with self.lock:
            self.refusals[name] = seconds

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def find(self, name: str, host: Optional[str], status: str = "firing", since: float = 0,
             labels: Optional[dict] = None) -> Optional[tuple]:
        with self.lock:
            for t, a in self.received:
                if (t >= since and a["labels"].get("alertname") == name and a.get("status") == status
                        and (host is None or a["labels"].get("host") == host)
                        and all(a["labels"].get(k) == v for k, v in (labels or {}).items())):
                    return t, a
        return None

    def wait(self, name: str, host: Optional[str], status: str = "firing", since: float = 0,
             timeout: float = 420, labels: Optional[dict] = None) -> Optional[tuple]:
        end = time.time() + timeout
        while time.time() < end:
            hit = self.find(name, host, status, since, labels)
            if hit:
                return hit
            time.sleep(1)
        return None


def run(host_name: str, command: str, check: bool = True, input: Optional[str] = None) -> subprocess.CompletedProcess:
    ip = lab.load_state()["hosts"][host_name]["ip"]
    r = subprocess.run(["ssh", *lab.ssh_options(), f"root@{ip}", command], capture_output=True, text=True,
                       timeout=600, input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"{host_name}: `{command}` failed ({r.returncode}): {r.stderr.strip()}")
    return r


def govmail(*args, env=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(["govmail", *args], capture_output=True, text=True, env=env, timeout=timeout)


def watched_data(tmp: Path, province: str, webhook: str, neighbour: Optional[str]) -> Path:
    """A copy of the data directory whose province posts its alerts to `webhook`, publishes its
    monitor's pages (`web_ui`) and, with a neighbour in the lab, mails its alerts to the neighbour's
    postmaster through the neighbour's MX."""
    data = tmp / "data"
    if data.exists():
        shutil.rmtree(data)
    shutil.copytree(ROOT / "group_data", data)
    doc = yaml.safe_load((data / f"{province}.yml").read_text())
    mon = doc["policy"].setdefault("monitoring", {"article": load_province(province).cite("monitoring")})
    mon["webhook"] = webhook
    mon["web_ui"] = True
    if neighbour:
        n = load_province(neighbour)
        mon["relay"] = {"host": n.mail_host, "port": 25}
        mon["alert_to"] = [n.postmaster]
    (data / f"{province}.yml").write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return data


def deploy(province: str, data: Optional[Path] = None) -> None:
    env = {**os.environ, **({"GOVMAIL_DATA_DIR": str(data)} if data else {})}
    r = govmail("deploy", province, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def scraped(cfg, promql: str, timeout: float = 120) -> None:
    """Wait until the monitor's Prometheus answers `promql` with a result (the break is seen)."""
    script = status.FIND_DAEMONS + (
        "import json, sys, urllib.parse as p, urllib.request as u\n"
        "r = json.load(u.urlopen(PROM + '/api/v1/query?' + p.urlencode({'query': sys.argv[1]})))\n"
        "print(len(r['data']['result']))\n")
    cmd = f"python3 -c {shlex.quote(script)} {shlex.quote(promql)}"
    end = time.time() + timeout
    while time.time() < end:
        r = run(cfg.monitor_host, cmd, check=False)
        if r.returncode == 0 and r.stdout.strip() not in ("", "0"):
            return
        time.sleep(3)
    raise AssertionError(f"Prometheus on {cfg.monitor_host} did not see `{promql}` in {timeout:.0f} s")


def prometheus_alerts(cfg) -> list[dict]:
    """The alerts the monitor's Prometheus holds now (pending or firing), each with its `labels` and
    `state`, as /api/v1/alerts gives them."""
    script = status.FIND_DAEMONS + (
        "import json, urllib.request as u\n"
        "print(json.dumps(json.load(u.urlopen(PROM + '/api/v1/alerts', timeout=20))['data']['alerts']))\n")
    return json.loads(run(cfg.monitor_host, f"python3 -c {shlex.quote(script)}").stdout)


RULES = "/etc/prometheus/govmail-alerts.yml"


def shorten_windows(cfg, longest: str = "2m") -> dict[str, str]:
    """The deployed rules with every `for` window longer than `longest` cut to it, so that a test sees
    a 30-minute rule fire within minutes: the rule's expression over the real metrics is what is
    proved; Prometheus's own `for` is not. The next deploy writes the rules back. Returns the
    windows now in force."""
    doc = yaml.safe_load(run(cfg.monitor_host, f"cat {RULES}").stdout)
    windows = {}
    for rule in doc["groups"][0]["rules"]:
        if _seconds(rule.get("for", "0m")) > _seconds(longest):
            rule["for"] = longest
        windows[rule["alert"]] = rule.get("for", "0m")
    text = "# govmail lab test: for windows shortened (tests/lab/alerting.py)\n" + yaml.safe_dump(doc, sort_keys=False)
    run(cfg.monitor_host, f"cat > {RULES}.new && promtool check rules {RULES}.new >/dev/null && mv {RULES}.new {RULES} && "
        "systemctl reload prometheus", input=text)
    return windows


def _seconds(window: str) -> int:
    value, unit = int(window[:-1]), window[-1]
    return value * {"s": 1, "m": 60, "h": 3600}[unit]
