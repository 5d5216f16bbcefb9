"""A watched province (issue 28): the backup host's Prometheus scrapes every host, and real breaks
reach the operators (a webhook on the lab bridge; a neighbouring province's mailbox through its MX)
with the clause and the host named, then their resolution; `govmail status` fails while they fire."""

from __future__ import annotations

import socket
import time

import pytest

from govmail.data import load_province
from govmail.monitoring.alerts import ALERTS

from .alerting import BREAKS, WebhookSink, deploy, govmail, host_of, run, watched_data
from .conftest import PROVINCES

PROVINCE = PROVINCES[0]


def neighbour() -> str | None:
    """A second province in the lab, outside any merger (the merger tests move MX records), whose MX
    carries the alert mail when the first one's mail host is down."""
    merged = {q.key for p in PROVINCES for q in load_province(p).model.predecessors}
    return next((p for p in PROVINCES if p != PROVINCE and p not in merged
                 and not load_province(p).model.predecessors), None)


NEIGHBOUR = neighbour()


def wait_status(province: str, code: int, timeout: float = 240) -> str:
    end, out = time.time() + timeout, ""
    while time.time() < end:
        r = govmail("status", province, timeout=120)
        out = r.stdout + r.stderr
        if r.returncode == code:
            return out
        time.sleep(5)
    raise AssertionError(f"`govmail status {province}` did not exit {code} in {timeout:.0f} s:\n{out}")


def test_a_deployed_province_is_watched_and_nothing_fires(lab_hosts):
    h = lab_hosts[PROVINCE]
    out = wait_status(PROVINCE, 0)
    for name in (h.cfg.mail_host, h.cfg.monitor_host):
        assert f"{name} (" in out and "): UP" in out.split(name, 1)[1].splitlines()[0], out
    services = next(line for line in out.splitlines() if line.strip().startswith("services:"))
    assert services.count(" ok") == 7 and "FAILING" not in services and "mx ok" in services, out
    assert "nothing fires" in out and "last good backup" in out and "certificate:" in out, out


def test_only_the_monitor_reaches_the_metric_ports(lab_hosts):
    h = lab_hosts[PROVINCE]
    for port in (9100, 9900, 9113):
        with pytest.raises(OSError):  # from the lab bridge: dropped
            socket.create_connection((h.ip, port), timeout=3).close()
        r = run(h.cfg.monitor_host, f"timeout 5 python3 -c \"import urllib.request as u; "
                f"print(len(u.urlopen('http://{h.ip}:{port}/metrics').read()))\"")
        assert int(r.stdout) > 100, r.stdout
    # Prometheus, Alertmanager and the prober listen on the monitor's loopback only.
    listening = run(h.cfg.monitor_host, "ss -Hltn 'sport = :9090 or sport = :9093 or sport = :9115'").stdout
    assert listening and all(line.split()[3].startswith("127.0.0.1:") for line in listening.splitlines()), listening


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
    assert hit[1]["labels"]["article"] == cfg.cite("monitoring")


def test_each_break_reaches_the_operators_with_its_clause_and_host_then_its_resolution(watched):
    cfg, sink, data = watched
    wait_status(PROVINCE, 0)
    start = time.time()
    applied, fired = [], {}
    try:
        for b in BREAKS:
            b.apply(cfg)
            applied.append(b)
        missing = []
        for b in BREAKS:
            for name, which, labels in b.alerts:
                hit = sink.wait(name, host_of(cfg, which), since=start, labels=labels)
                if not hit:
                    missing.append(f"{b.name}: {name}")
                    continue
                fired[(b.name, name)] = hit[0]
                alert = hit[1]
                clause = next(a.clause for a in ALERTS if a.name == name)
                assert alert["labels"]["article"] == cfg.cite(clause), alert
                assert alert["annotations"]["summary"], alert
        assert not missing, f"not alerted within 7 minutes: {missing}"
        out = wait_status(PROVINCE, 1, timeout=60)
        for b in BREAKS:
            for name, _, _ in b.alerts:
                assert b.spike or f"FIRING {name}:" in out, out
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
        repaired = time.time()
        for b in reversed(applied):
            b.repair(cfg, data)
    # A repaired break's alert resolves after the repair; a spike's once its window has passed.
    unresolved = [f"{b.name}: {name}" for b in BREAKS for name, which, labels in b.alerts
                  if not sink.wait(name, host_of(cfg, which), status="resolved", labels=labels, timeout=480,
                                   since=fired.get((b.name, name), start) if b.spike else repaired)]
    assert not unresolved, f"no resolved notice within 8 minutes: {unresolved}"
    wait_status(PROVINCE, 0)


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
