"""The account store on two db hosts (Patroni, etcd): a primary and a synchronous standby, and losing
the primary's host costs a stall of writes, never an acknowledged change, a login or a message.

Lâm Đồng is the lab's province with two db hosts (group_data/lamdong.yml): its mail host is the
first, db2 the second, and its backup host keeps etcd's third member. The primary is moved to db2
first, so that losing it leaves the mail host (and its users) running.
"""

from __future__ import annotations

import imaplib
import json
import smtplib
import threading
import time

import pytest

from govmail import lab
from govmail.host import contract

from .conftest import PROVINCES, LabHost
from .mailing import delivered

CLUSTERED = [p for p in PROVINCES if p == "lamdong"]
# Rank 1 (tests/lab/conftest.py): beside test_monitoring's breaks of another province, after the tests
# of every province.
pytestmark = [pytest.mark.skipif(not CLUSTERED, reason="no province with two db hosts in this lab run"),
              pytest.mark.after_the_others(1)]
TOUCHES = CLUSTERED  # no work runs beside these tests on it (tests/lab/conftest.py)
PATRONICTL = f"patronictl -c {contract.PATRONI['config']}"
# The writer: the host tools' own connection string (every db host, the one that takes writes),
# one INSERT every 0.2 s for `seconds`, reconnecting after a failure; prints what was acknowledged.
WRITER = r"""
import json, sys, time, psycopg2
dsn = open("/etc/govmail/store.dsn").read().strip() + " connect_timeout=2"
end = time.time() + float(sys.argv[1]); n = 0; acked = []; failed = 0; conn = None
while time.time() < end:
    n += 1
    try:
        if conn is None or conn.closed:
            conn = psycopg2.connect(dsn); conn.autocommit = True
        conn.cursor().execute("INSERT INTO test_failover_probe (n) VALUES (%s)", (n,))
        acked.append([n, time.time()])
    except Exception:
        failed += 1; conn = None
    time.sleep(0.2)
print(json.dumps({"acked": acked, "failed": failed}))
"""


def members(h: LabHost) -> dict[str, tuple[str, str]]:
    """Patroni's members as the mail host (the first db host) sees them: name -> (role, state)."""
    return {m["Member"]: (m["Role"], m["State"]) for m in json.loads(lab_run(h.name, f"{PATRONICTL} list -f json"))}


def lab_run(hostname: str, command: str) -> str:
    import subprocess

    ip = lab.load_state()["hosts"][hostname]["ip"]
    r = subprocess.run(["ssh", *lab.ssh_options(), f"root@{ip}", command], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{hostname}: `{command}` failed: {r.stderr.strip()}"
    return r.stdout


def wait_for(h: LabHost, want: dict[str, tuple[str, str]], seconds: float = 180) -> dict:
    deadline, got = time.monotonic() + seconds, {}
    while time.monotonic() < deadline:
        try:
            got = members(h)
        except (AssertionError, ValueError):
            got = {}
        if got == want:
            return got
        time.sleep(2)
    raise AssertionError(f"Patroni's members {got}, not {want} after {seconds:.0f} s")


@pytest.fixture(scope="module")
def cluster(lab_hosts) -> LabHost:
    return lab_hosts[TOUCHES[0]]


def test_the_account_store_runs_as_a_primary_and_a_synchronous_standby(cluster):
    h = cluster
    db2 = h.cfg.db_hosts[1]
    got = members(h)
    assert sorted(got.values()) == [("Leader", "running"), ("Sync Standby", "streaming")], got
    assert set(got) == {h.name, db2}
    # Every reader is given both hosts; the standby answers reads (a lookup keeps working there).
    dsn = h.run(f"cat {contract.PATHS['store_dsn']}").stdout
    assert "target_session_attrs=read-write" in dsn and lab.load_state()["hosts"][db2]["ip"] in dsn
    assert lab_run(db2, f"{contract.PATHS['lib']}/accounts db-check").strip() == "the store's roles log in"


def test_losing_the_db_primary_stalls_writes_loses_no_acknowledged_change_no_login_and_no_mail(cluster):
    h = cluster
    db2 = h.cfg.db_hosts[1]
    if members(h)[h.name][0] == "Leader":  # the primary to lose: db2's, so the mail host stays up
        h.run(f"{PATRONICTL} switchover --leader {h.name} --candidate {db2} --force")
    wait_for(h, {db2: ("Leader", "running"), h.name: ("Sync Standby", "streaming")})
    h.store("DROP TABLE IF EXISTS test_failover_probe", write=True)  # what a failed run left
    h.store("CREATE TABLE test_failover_probe (n bigint PRIMARY KEY, at timestamptz DEFAULT now())", write=True)
    user = next(a.address for a in h.cfg.accounts if a.kind == "person" and a.status == "active" and a.role != "admin")
    password = h.set_password(user)
    logins: list[tuple[float, bool]] = []
    stop = threading.Event()

    def log_in():
        while not stop.is_set():
            t = time.time()
            try:
                with imaplib.IMAP4_SSL(h.ip, 993, timeout=20) as imap:
                    imap.login(user, password)
                ok = True
            except (OSError, imaplib.IMAP4.error):
                ok = False
            logins.append((t, ok))
            time.sleep(0.5)

    # Mail from outside through every MX (each reads the store for its recipients), one message a
    # second; a temporary refusal is tried again a second later, as a sending server would.
    sent: list[tuple[float, float, str]] = []  # (first try, accepted, Message-ID)
    mx = [lab.load_state()["hosts"][n]["ip"] for n in h.cfg.mx_hosts]

    def deliver():
        i = 0
        while not stop.is_set():
            i += 1
            msgid, first = f"<failover-{i}-{int(time.time())}@{lab.OUTSIDE_DOMAIN}>", time.time()
            while not stop.is_set():
                try:
                    with smtplib.SMTP(mx[i % len(mx)], 25, timeout=20) as smtp:
                        smtp.sendmail(f"someone@{lab.OUTSIDE_DOMAIN}", [user],
                                      f"From: someone@{lab.OUTSIDE_DOMAIN}\r\nTo: {user}\r\nSubject: failover {i}\r\n"
                                      f"Message-ID: {msgid}\r\n\r\nThu trong khi doi may chu.\r\n")
                    sent.append((first, time.time(), msgid))
                    break
                except (OSError, smtplib.SMTPException):
                    time.sleep(1)
            time.sleep(1)

    reader = threading.Thread(target=log_in)
    reader.start()
    sender = threading.Thread(target=deliver)
    sender.start()
    writer = threading.Thread(target=lambda: out.append(h.run("python3 - 75", input=WRITER).stdout))
    out: list[str] = []
    writer.start()
    time.sleep(10)
    lost_at = time.time()
    lab.unplug(db2)
    try:
        time.sleep(45)
    finally:
        lab.unplug(db2, plugged=True)
    writer.join()
    stop.set()
    reader.join()
    sender.join()
    result = json.loads(out[0])
    acked = result["acked"]
    after = [t for _, t in acked if t > lost_at]
    stall = (after[0] - lost_at) if after else float("inf")
    print(f"\nthe db primary's host lost: writes stalled {stall:.1f} s ({result['failed']} failed attempts), "
          f"{len(acked)} acknowledged; IMAP logins {sum(ok for _, ok in logins)}/{len(logins)} succeeded")
    kept = {r[0] for r in h.store("SELECT n FROM test_failover_probe")}
    assert [n for n, _ in acked if n not in kept] == [], "an acknowledged write is gone after the failover"
    assert stall < 60, f"writes stalled {stall:.0f} s (floor: under 60 s)"
    assert all(ok for _, ok in logins), [time.strftime("%T", time.localtime(t)) for t, ok in logins if not ok]
    # Every message taken by an MX is in the mailbox once; how long the longest one waited to be taken.
    waited = max(accepted - first for first, accepted, _ in sent)
    print(f"mail through {len(mx)} MX: {len(sent)} messages taken, the longest wait to be taken {waited:.1f} s")
    for _, _, msgid in sent:
        assert delivered(h, user, msgid, timeout=120) == 1, f"{msgid} lost or doubled across the failover"
    # A sending server tries again minutes later: a wait of a minute or two costs its mail nothing.
    assert waited < 120, f"mail waited {waited:.0f} s to be taken (floor: under 120 s)"
    # The mail host's own standby was promoted; the lost host comes back as the standby (pg_rewind).
    wait_for(h, {h.name: ("Leader", "running"), db2: ("Sync Standby", "streaming")}, seconds=240)
    status, answer = h.change_own_password(user, password, password + "x")
    assert status == 200 and answer["ok"], answer
    h.store("DROP TABLE test_failover_probe", write=True)


def test_a_lost_standby_and_a_lost_etcd_quorum_are_alerted_with_the_article_then_resolved(cluster):
    """The monitor (Lâm Đồng's backup host) reads every Patroni and etcd member: db2's Patroni and
    etcd stopped, then the backup host's etcd (two of etcd's three members gone: the primary steps
    down, nobody may write) raise each cluster alert on the right host with the operation article,
    `govmail status` shows them, and bringing the members back resolves them all."""
    from govmail.monitoring.alerts import STORE

    from .alerting import govmail, prometheus_alerts

    h = cluster
    cfg, db2, backup = h.cfg, h.cfg.db_hosts[1], h.cfg.monitor_host
    wait_for(h, {h.name: ("Leader", "running"), db2: ("Sync Standby", "streaming")})
    ours = {"StoreWithoutPrimary", "StoreStandbyMissing", "DbMemberDown", "EtcdMemberDown", "DaemonDown"}

    def raised() -> list:
        return [(a["labels"]["alertname"], a["labels"].get("host")) for a in prometheus_alerts(cfg)
                if a["labels"]["alertname"] in ours]

    # A quiet start: what the failover test above raised (db2 unplugged) has resolved.
    deadline = time.monotonic() + 180
    while raised() and time.monotonic() < deadline:
        time.sleep(5)
    assert not raised(), "the healthy cluster raises alerts"
    expected = {("StoreWithoutPrimary", STORE), ("StoreStandbyMissing", STORE), ("DbMemberDown", db2),
                ("EtcdMemberDown", db2), ("EtcdMemberDown", backup), ("EtcdMemberDown", h.name),  # no leader there
                ("DaemonDown", db2), ("DaemonDown", backup)}
    firing: list = []

    def seen() -> set:
        return {(a["labels"]["alertname"], a["labels"].get("host")) for a in firing}

    lab_run(db2, f"systemctl stop {contract.PATRONI['unit']} etcd")
    lab_run(backup, "systemctl stop etcd")
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not expected <= seen():
            firing = [a for a in prometheus_alerts(cfg) if a["state"] == "firing" and a["labels"]["alertname"] in ours]
            time.sleep(5)
        assert expected <= seen(), f"missing: {expected - seen()}; firing: {sorted(seen())}"
        for a in firing:
            assert a["labels"]["article"] == cfg.cite("operation"), a["labels"]
        down = {(a["labels"]["host"], a["labels"]["name"]) for a in firing if a["labels"]["alertname"] == "DaemonDown"}
        assert down >= {(db2, f"{contract.PATRONI['unit']}.service"), (db2, "etcd.service"), (backup, "etcd.service")}, down
        r = govmail("status", cfg.key, timeout=120)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "account store: Patroni NOT ANSWERING" in r.stdout and "etcd: NOT ANSWERING" in r.stdout, r.stdout
        assert "FIRING StoreWithoutPrimary: the account store has no primary" in r.stdout, r.stdout
    finally:
        lab_run(backup, "systemctl start etcd")
        lab_run(db2, f"systemctl start etcd {contract.PATRONI['unit']}")
    wait_for(h, {h.name: ("Leader", "running"), db2: ("Sync Standby", "streaming")}, seconds=240)
    deadline, left = time.monotonic() + 240, ["?"]
    while time.monotonic() < deadline and left:
        left = raised()
        time.sleep(5)
    assert not left, f"still raised 4 minutes after the members came back: {left}"
    r = govmail("status", cfg.key, timeout=120)
    assert r.returncode == 0 and "account store: synchronous standby, streaming" in r.stdout, r.stdout


def test_the_cluster_ports_answer_the_provinces_hosts_and_nobody_else(cluster):
    """PostgreSQL, Patroni's REST API and etcd listen on the db hosts' private addresses (etcd on the
    witness too): the province's hosts reach them; the lab's bridge, a machine outside the province,
    does not (its packets are dropped: the connection times out). A table removed by hand (an operator's
    `nft flush ruleset`) is loaded again by the next deploy."""
    import socket

    from .alerting import deploy

    h = cluster
    lab_run(h.cfg.db_hosts[1], "nft delete table inet govmail_private")
    deploy(h.cfg.key)
    state = lab.load_state()["hosts"]
    db2, backup = h.cfg.db_hosts[1], h.cfg.monitor_host
    P = contract.PATRONI
    served = {db2: (contract.STORE_PG["port"], P["api_port"], P["etcd_client_port"], P["etcd_peer_port"]),
              backup: (P["etcd_client_port"], P["etcd_peer_port"])}
    for host, ports in served.items():
        for port in ports:
            probe = (f"python3 -c \"import socket; socket.create_connection(('{state[host]['ip']}', {port}), timeout=5)\"")
            lab_run(h.name, probe)  # a province host gets in
            with pytest.raises(OSError):  # timeout (dropped), whatever the port answers inside
                socket.create_connection((state[host]["ip"], port), timeout=3).close()


# Last of the module (rank 1, before test_redeploy's second deploy of every province): it rebuilds db2.
def test_a_db_host_rebuilt_from_bare_rejoins_etcd_and_the_store_with_one_deploy(cluster):
    """db2 destroyed and booted bare in its place: the province's one command puts its etcd member back
    (its lost self removed, itself added: etcd-join) and Patroni clones the store onto it; it is the
    synchronous standby again, etcd has its three members, and the primary never moved."""
    import subprocess

    from .alerting import deploy

    h = cluster
    db2 = h.cfg.db_hosts[1]
    wait_for(h, {h.name: ("Leader", "running"), db2: ("Sync Standby", "streaming")})
    r = subprocess.run(["govmail", "lab", "rebuild", db2], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert subprocess.run(["ssh", *lab.ssh_options(), f"root@{lab.load_state()['hosts'][db2]['ip']}",
                           "test -e /etc/patroni"], capture_output=True).returncode != 0  # bare indeed
    start = time.monotonic()
    deploy(h.cfg.key)
    deployed = time.monotonic() - start
    wait_for(h, {h.name: ("Leader", "running"), db2: ("Sync Standby", "streaming")}, seconds=240)
    print(f"\ndb2 rebuilt from bare: the deploy took {deployed:.0f} s, the synchronous standby streamed "
          f"{time.monotonic() - start:.0f} s after it began")
    listed = json.loads(lab_run(h.name, "python3 -c \"import urllib.request as u; print(u.urlopen(u.Request("
                                        "'http://127.0.0.1:2379/v3/cluster/member/list', data=b'{}', "
                                        "method='POST')).read().decode())\""))["members"]
    assert sorted(m.get("name") for m in listed) == sorted(h.cfg.etcd_members), listed
    assert all(m.get("clientURLs") for m in listed), listed
    assert lab_run(db2, f"{contract.PATHS['lib']}/accounts db-check").strip() == "the store's roles log in"
