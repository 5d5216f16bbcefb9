"""A watched province (issue 28): the backup host's Prometheus scrapes every host, and real breaks
reach the operators (a webhook on the lab bridge; a neighbouring province's mailbox through its MX)
with the clause and the host named, then their resolution; `govmail status` fails while they fire."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from govmail import lab
from govmail.data import load_province
from govmail.monitoring import alerts
from govmail.monitoring.alerts import ALERTS

from .alerting import WebhookSink, deploy, govmail, run, shorten_windows, watched_data
from .breaks import BREAKS, Scene, host_of
from .conftest import PROVINCES, Beside

PROVINCE = PROVINCES[0]


def neighbour() -> str | None:
    """A second province in the lab, outside any merger (the merger tests move MX records), whose MX
    carries the alert mail when the first one's mail host is down."""
    merged = {q.key for p in PROVINCES for q in load_province(p).model.predecessors}
    return next((p for p in PROVINCES if p != PROVINCE and p not in merged
                 and not load_province(p).model.predecessors), None)


NEIGHBOUR = neighbour()


def wait_status(province: str, code: int, timeout: float = 240, healthy: bool = False) -> str:
    """`govmail status` once it exits `code` (and, `healthy`, shows every probe answered and none
    failing: a fresh deploy's probes come in over half a minute, and a probe's single failure is
    shown at once while its alert waits for its window)."""
    end, out = time.time() + timeout, ""
    while time.time() < end:
        r = govmail("status", province, timeout=120)
        out = r.stdout + r.stderr
        if r.returncode == code and not (healthy and ("FAILING" in out or not all(
                f"{svc} ok" in out for svc in ("smtp", "submission", "submissions", "imaps", "pop3s", "webmail", "mx")))):
            return out
        time.sleep(5)
    raise AssertionError(f"`govmail status {province}` did not exit {code} in {timeout:.0f} s:\n{out}")


def test_a_deployed_province_is_watched_and_nothing_fires(lab_hosts):
    h = lab_hosts[PROVINCE]
    out = wait_status(PROVINCE, 0, healthy=True)
    for name in (h.cfg.mail_host, h.cfg.monitor_host):
        assert f"{name} (" in out and "): UP" in out.split(name, 1)[1].splitlines()[0], out
    services = next(line for line in out.splitlines() if line.strip().startswith("services:"))
    assert services.count(" ok") == 7 and "FAILING" not in services and "mx ok" in services, out
    assert "nothing fires" in out and "last good backup" in out and "certificate:" in out, out
    # how full the mailboxes are (read every 15 minutes; the first reading at the deploy)
    m = re.search(r"mailboxes: (\d+) with a quota, (\d+) over 95 %, (\d+) full", out)
    assert m and int(m.group(1)) > 0, out


def test_only_the_monitor_reaches_the_metric_ports(lab_hosts):
    h = lab_hosts[PROVINCE]
    for port in (9100, 9900, 9113):
        with pytest.raises(OSError):  # from the lab bridge: dropped
            socket.create_connection((h.ip, port), timeout=3).close()
        r = run(h.cfg.monitor_host, f"timeout 5 python3 -c \"import urllib.request as u; "
                f"print(len(u.urlopen('http://{h.ip}:{port}/metrics').read()))\"")
        assert int(r.stdout) > 100, r.stdout
    # Alertmanager and the prober listen on the monitor's loopback only; Prometheus on its private
    # address, which the mail host reaches (its monthly report reads availability there) and the
    # lab bridge does not.
    listening = run(h.cfg.monitor_host, "ss -Hltn 'sport = :9093 or sport = :9115'").stdout
    assert listening and all(line.split()[3].startswith("127.0.0.1:") for line in listening.splitlines()), listening
    monitor_ip = lab.load_state()["hosts"][h.cfg.monitor_host]["ip"]
    with pytest.raises(OSError):
        socket.create_connection((monitor_ip, 9090), timeout=3).close()
    r = h.run(f"timeout 5 python3 -c \"import urllib.request as u; "
              f"print(u.urlopen('http://{monitor_ip}:9090/api/v1/query?query=up').status)\"")
    assert r.stdout.strip() == "200", r.stdout


@pytest.fixture(scope="module")
def watched(lab_hosts, tmp_path_factory):
    """The province deployed with its alerts posted to a webhook here (and mailed to the neighbour's
    postmaster through the neighbour's MX); the original data deployed again afterwards."""
    sink = WebhookSink()
    data = watched_data(tmp_path_factory.mktemp("watched"), PROVINCE, sink.url, NEIGHBOUR)
    deploy(PROVINCE, data)
    try:
        yield lab_hosts[PROVINCE].cfg, sink, data
    finally:
        sink.close()
        deploy(PROVINCE)


def test_the_heartbeat_arrives_so_that_silence_is_noticed(watched):
    cfg, sink, _ = watched
    hit = sink.wait("Heartbeat", cfg.monitor_host, timeout=180)
    assert hit, f"no heartbeat in 3 minutes: {sink.received[-5:]}"
    # The heartbeat proves the province is watched around the clock: it cites the operation clause
    # (govmail/monitoring/alerts.py), which Lâm Đồng words apart from its monitoring one.
    assert hit[1]["labels"]["article"] == cfg.cite("operation")


def _page(cfg, path: str, login: tuple[str, str] | None = None, cafile: str | None = None, headers: dict | None = None,
          data: bytes | None = None):
    """(HTTP status, headers, body) of a page under https://mail.<domain>/monitor/, as a browser gets it."""
    ip = lab.load_state()["hosts"][cfg.mail_host]["ip"]
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False  # reached by address; the certificate is still the host's own
    req = urllib.request.Request(f"https://{ip}/monitor/{path}", headers={"Host": cfg.mail_host, **(headers or {})},
                                 data=data)
    if login:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_the_monitors_pages_open_to_an_administrator_and_nobody_else(watched, lab_hosts, request, tmp_path):
    """policy.monitoring.web_ui: Prometheus's and Alertmanager's pages behind the mail host's nginx,
    for an active administrator's login only; the monitor's ports stay closed to everyone else."""
    cfg = watched[0]
    h = lab_hosts[PROVINCE]
    admin = next(a.address for a in cfg.accounts if a.role == "admin" and a.status == "active")
    user = next(a.address for a in cfg.accounts if a.role == "user" and a.status == "active" and a.kind == "person")
    admin_pw, user_pw = h.set_password(admin), h.set_password(user)
    query = "prometheus/api/v1/query?query=up"
    status, headers, _ = _page(cfg, query, cafile=h.cafile)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm="), (status, dict(headers))
    assert _page(cfg, query, (admin, admin_pw + "x"), h.cafile)[0] == 401  # a wrong password: asked again
    assert _page(cfg, query, (user, user_pw), h.cafile)[0] == 403  # an official's own password: not theirs
    status, _, body = _page(cfg, query, (admin, admin_pw), h.cafile)
    assert status == 200 and {r["metric"]["host"] for r in json.loads(body)["data"]["result"]} >= {
        cfg.mail_host, cfg.monitor_host}, body[:300]
    status, _, body = _page(cfg, "alertmanager/api/v2/status", (admin, admin_pw), h.cafile)
    assert status == 200 and json.loads(body)["cluster"]["status"] == "disabled", body[:300]
    # Another site's page cannot make an administrator's browser act there (a silence posted by script).
    silence = json.dumps({"matchers": [{"name": "alertname", "value": "MailServiceDown", "isRegex": False}],
                          "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2036-01-01T00:00:00Z",
                          "createdBy": "attacker", "comment": "x"}).encode()
    status, _, _ = _page(cfg, "alertmanager/api/v2/silences", (admin, admin_pw), h.cafile, data=silence,
                         headers={"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site",
                                  "Sec-Fetch-Mode": "cors"})
    assert status == 403, status
    # The links Prometheus makes lead back through the published path.
    status, _, body = _page(cfg, "prometheus/api/v1/status/flags", (admin, admin_pw), h.cafile)
    assert json.loads(body)["data"]["web.external-url"] == f"https://{cfg.mail_host}/monitor/prometheus/", body
    # `govmail verify` sees them ask for a login.
    r = govmail("verify", PROVINCE, "--out", str(tmp_path), env={**os.environ, "GOVMAIL_DATA_DIR": str(watched[2])})
    lines = r.stdout.splitlines()
    at = next((i for i, x in enumerate(lines) if "its pages published at /monitor/" in x), None)
    assert at is not None and lines[at].lstrip().startswith("PASS"), r.stdout[-3000:]
    assert "its pages published behind the administrators' login" in lines[at + 1], r.stdout[-3000:]
    # Alertmanager now listens on the monitor's private address: the lab bridge is still refused.
    monitor_ip = lab.load_state()["hosts"][cfg.monitor_host]["ip"]
    for port in (9090, 9093):
        with pytest.raises(OSError):
            socket.create_connection((monitor_ip, port), timeout=3).close()

    # Debian's Alertmanager has no web application: what is published is its API, for the operators'
    # amtool (from the monitor host here, as from an operator's machine): a silence set and lifted.
    cafile = Path(h.cafile).read_text()
    run(cfg.monitor_host, "cat > /root/mail-ca.pem", input=cafile)
    for name, pw in (("good", admin_pw), ("bad", admin_pw + "x")):
        run(cfg.monitor_host, f"cat > /root/amtool-{name}.yml", input=(
            f"basic_auth:\n  username: {json.dumps(admin)}\n  password: {json.dumps(pw)}\n"
            "tls_config:\n  ca_file: /root/mail-ca.pem\n  insecure_skip_verify: false\n"))
    amtool = f"amtool --alertmanager.url=https://{cfg.mail_host}/monitor/alertmanager/ --http.config.file=/root/amtool-"
    refused = run(cfg.monitor_host, f"{amtool}bad.yml silence query", check=False)
    # 401; or 403 once amtool's tries with that password (two a command) have been throttled
    assert refused.returncode != 0 and re.search(r"status 40[13]\b", refused.stderr), refused
    sid = run(cfg.monitor_host, f"{amtool}good.yml silence add alertname=MaintenanceWindow --duration=10m "
              "--author=admin --comment='bảo trì'").stdout.strip()
    try:
        assert sid in run(cfg.monitor_host, f"{amtool}good.yml silence query -q").stdout
    finally:
        run(cfg.monitor_host, f"{amtool}good.yml silence expire {sid}; rm -f /root/amtool-*.yml /root/mail-ca.pem")

    from .browser import Browser

    b = Browser(request.node.name, [x.cafile for x in lab_hosts.values()])
    try:
        d = b.driver
        d.execute_cdp_cmd("Network.enable", {})
        token = base64.b64encode(f"{admin}:{admin_pw}".encode()).decode()
        d.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
        # The published root leads to Prometheus's alerts: Debian's classic pages (its package leaves
        # out the React ones), their links under the published path.
        d.get(f"https://{cfg.mail_host}/monitor/")
        assert d.current_url == f"https://{cfg.mail_host}/monitor/prometheus/classic/alerts", d.current_url
        for _ in range(30):
            if "DkimSigningFailed" in d.page_source:
                break
            time.sleep(1)
        b.shot("prometheus alerts")
        assert "DkimSigningFailed" in d.page_source and "MailServiceDown" in d.page_source, d.page_source[:500]
        assert 'href="/monitor/prometheus/classic/graph' in d.page_source, d.page_source[:2000]
        d.get(f"https://{cfg.mail_host}/monitor/prometheus/classic/graph?g0.expr=up&g0.tab=1")
        for _ in range(30):
            if cfg.monitor_host in d.page_source:
                break
            time.sleep(1)
        b.shot("prometheus graph of up")
        assert cfg.mail_host in d.page_source and cfg.monitor_host in d.page_source, d.page_source[:500]
        assert not b.csp_violations()
    finally:
        b.close()


def each_break_reaches_the_operators() -> None:
    """Every rule that a fault in the lab can produce (tests/lab/breaks.py), all at once, on the province
    deployed with its alerts posted to a webhook here (as `watched`, its own sink); the data deployed
    again afterwards. Windows over two minutes are cut to two for the test (alerting.shorten_windows):
    the expressions are the deployed ones. Then the monthly report's availability, which the monitor
    measured through the same breaks."""
    import tempfile

    sink = WebhookSink()
    try:
        with tempfile.TemporaryDirectory(prefix="govmail-breaks-") as tmp:
            data = watched_data(Path(tmp), PROVINCE, sink.url, NEIGHBOUR)
            deploy(PROVINCE, data)
            try:
                _breaks(load_province(PROVINCE), sink, data)
            finally:
                deploy(PROVINCE)
    finally:
        sink.close()


def _breaks(cfg, sink: WebhookSink, data: Path) -> None:
    wait_status(PROVINCE, 0)
    shorten_windows(cfg)
    scene = Scene(cfg, sink, data)
    start = time.time()
    applied, fired = [], {}
    try:
        for b in BREAKS:
            applied.append(b)  # repaired even when it failed half-way
            b.apply(scene)
        missing, deadline = [], start + 600  # the slowest: the facts stopped, 2 minutes old for 2 minutes
        for b in BREAKS:
            for name, which, labels in b.alerts:
                hit = sink.wait(name, host_of(cfg, which), since=start, labels=labels,
                                timeout=max(1.0, deadline - time.time()))
                if not hit:
                    missing.append(f"{b.name}: {name}")
                    continue
                fired[(b.name, name)] = hit[0]
                alert = hit[1]
                clause = next(a.clause for a in ALERTS if a.name == name)
                assert alert["labels"]["article"] == cfg.cite(clause), alert
                assert alert["annotations"]["summary"], alert
        assert not missing, f"not alerted within 10 minutes: {missing}"
        out = wait_status(PROVINCE, 1, timeout=60)
        for b in BREAKS:
            for name, _, _ in b.alerts:
                assert name in b.spikes or f"FIRING {name}:" in out, out
        if NEIGHBOUR:
            # Mailed through the neighbour's MX while this province's own Postfix is stopped.
            n = load_province(NEIGHBOUR)
            found = ""
            for _ in range(60):
                found = run(n.mail_host, f"doveadm search -u {n.postmaster} mailbox INBOX header Subject "
                            f"'FIRING MailServiceDown on {cfg.mail_host}'", check=False).stdout.strip()
                if found:
                    break
                time.sleep(2)
            assert found, f"no alert mail in {n.postmaster}'s mailbox on {n.mail_host}"
    finally:
        repaired, failed = time.time(), []
        for b in reversed(applied):  # every repair is tried, whatever one of them says
            try:
                b.repair(scene)
            except Exception as e:  # noqa: BLE001
                failed.append(f"{b.name}: {e}")
        assert not failed, f"repairs failed: {failed}"
    # A repaired break's alert resolves after the repair; a spike's once its window has passed.
    deadline = time.time() + 480
    unresolved = [f"{b.name}: {name}" for b in BREAKS for name, which, labels in b.alerts
                  if not sink.wait(name, host_of(cfg, which), status="resolved", labels=labels,
                                   timeout=max(1.0, deadline - time.time()),
                                   since=fired.get((b.name, name), start) if name in b.spikes else repaired)]
    assert not unresolved, f"no resolved notice within 8 minutes of the repairs: {unresolved}"
    wait_status(PROVINCE, 0)
    # The monthly report on the mail host reads the same from the monitor, over the private network:
    # Postfix stopped for minutes shows in its availability and in the SMTP probe's; rspamd's and the
    # MX record's stay whole.
    f = json.loads(run(cfg.mail_host, f"/usr/local/lib/govmail/report gather --since {start - 60:.0f} "
                                      f"--until {time.time():.0f}").stdout)
    assert f["availability_source"].startswith(f"the monitor {cfg.monitor_host} (Prometheus; "), f
    assert 0.2 < f["services"]["postfix"]["availability"] < 0.95, f["services"]
    assert f["services"]["rspamd"]["availability"] == 1.0, f["services"]
    assert f["probes"]["smtp"] < 0.95 and f["probes"]["mx"] == 1.0, f["probes"]


# Run beside the rank-1 tests, which touch other provinces only (tests/lab/conftest.py, `beside`):
# 13 minutes of waiting for alerts that no longer add to the run's time.
BREAKS_BESIDE = Beside(PROVINCE, each_break_reaches_the_operators)


@pytest.mark.beside(1, BREAKS_BESIDE)
def test_each_break_reaches_the_operators_with_its_clause_and_host_then_its_resolution(lab_hosts):
    """each_break_reaches_the_operators, run beside other tests: its result."""
    BREAKS_BESIDE.result(timeout=3600)


def test_status_says_plainly_when_the_monitor_cannot_be_asked(lab_hosts):
    h = lab_hosts[PROVINCE]
    run(h.cfg.monitor_host, "systemctl stop prometheus")
    try:
        r = govmail("status", PROVINCE, timeout=120)
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"monitor {h.cfg.monitor_host}" in r.stdout and "prometheus" in r.stdout.lower(), r.stdout
        assert "Traceback" not in r.stdout + r.stderr
    finally:
        run(h.cfg.monitor_host, "systemctl start prometheus")


def test_the_rules_the_lab_cannot_break_fire_on_their_series(lab_hosts):
    """ClockOffset (the lab's containers share the machine's kernel clock) and ClamAVSignaturesStale (no
    freshclam mirror in the lab) cannot be broken here: the province's own rules, with the ClamAV one a
    host with a mirror has, are evaluated by the monitor's promtool on series a broken host would give;
    a healthy host beside it raises nothing."""
    cfg = lab_hosts[PROVINCE].cfg
    rules = alerts.rules(cfg, signature_mirror=True)
    by_name = {r["alert"]: r for r in rules["groups"][0]["rules"]}
    sick, well = {"host": "sick.example", "role": "mail"}, {"host": "well.example", "role": "mail"}

    def series(name, labels, values):
        return {"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": values}

    def firing(name, summary):
        r = by_name[name]
        return [{"exp_labels": {**r["labels"], **sick}, "exp_annotations": {**r["annotations"], "summary": summary}}]

    tests = {"rule_files": ["rules.yml"], "evaluation_interval": "15s", "tests": [{
        "interval": "15s",
        "input_series": [
            series("node_timex_offset_seconds", sick, "0.9x80"),
            series("node_timex_offset_seconds", well, "0.01x80"),
            # three and a half days before the test's clock starts; the healthy one at its start
            series("govmail_clamav_signatures_timestamp_seconds", sick, "-300000x80"),
            series("govmail_clamav_signatures_timestamp_seconds", well, "0x80"),
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "ClockOffset", "exp_alerts": []},  # not yet for its 10 minutes
            {"eval_time": "11m", "alertname": "ClockOffset",
             "exp_alerts": firing("ClockOffset", "the clock of sick.example is 0.9 s off")},
            {"eval_time": "1m", "alertname": "ClamAVSignaturesStale",
             "exp_alerts": firing("ClamAVSignaturesStale",
                                  "ClamAV's signatures on sick.example are 3d 11h 21m 0s old")},
        ]}]}
    d = "/root/govmail-promtool"
    run(cfg.monitor_host, f"rm -rf {d} && mkdir {d} && cat > {d}/rules.yml", input=yaml.safe_dump(rules))
    run(cfg.monitor_host, f"cat > {d}/test.yml", input=yaml.safe_dump(tests, sort_keys=False))
    r = run(cfg.monitor_host, f"cd {d} && promtool test rules test.yml; rc=$?; rm -rf {d}; exit $rc", check=False)
    assert r.returncode == 0, r.stdout + r.stderr

