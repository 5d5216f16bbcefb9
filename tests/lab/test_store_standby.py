"""A store's standby copy (issue 30: hosts[].standby; Lâm Đồng: store2's mailboxes copied to the mail
host every minute): a lost store's mailboxes are served from it with one command (`govmail failover`);
what the store took after the last copy comes back when it returns with its disk (`--recover`); a
store whose disk is gone is rebuilt and its mailboxes moved home from the standby. Mail through the
MX hosts meanwhile waits in their queues and arrives once; only the mail of after the last copy is at
risk (the recovery point), and it too comes back with the disk.

Rank 1 (tests/lab/conftest.py), after test_several_stores; it leaves every mailbox home."""

from __future__ import annotations

import subprocess
import time
from types import SimpleNamespace

import pytest
import yaml

from govmail import lab
from govmail.data import load_province
from govmail.monitoring import alerts

from .alerting import run, scraped
from .conftest import PROVINCES, LabHost, on
from .mailing import delivered, imap_login, send_25

STANDBY = [p for p in PROVINCES if load_province(p).standbys]
pytestmark = [pytest.mark.skipif(not STANDBY, reason="no province with a store's standby in this lab run"),
              pytest.mark.after_the_others(1)]
TOUCHES = STANDBY[:1]  # no work runs beside these tests on it (tests/lab/conftest.py)


@pytest.fixture(scope="module")
def scene(lab_hosts):
    h: LabHost = lab_hosts[TOUCHES[0]]
    store, standby = next(iter(h.cfg.standbys.items()))
    held = h.cfg.held_agencies()
    far = next(a.address for a in sorted(h.cfg.accounts, key=lambda a: a.kind != "person")
               if a.status == "active" and a.role == "user" and h.cfg.store_of(a, held) == store)
    mx2 = SimpleNamespace(ip=lab.load_state()["hosts"][next(n for n in h.cfg.mx_hosts if n != h.cfg.mail_host)]["ip"])
    return SimpleNamespace(h=h, store=store, standby=standby, copier=h.cfg.standby_copier(store), far=far, pw=h.set_password(far), gateways=(h, mx2))


def govmail(*args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(["govmail", *args], capture_output=True, text=True, timeout=timeout)


def copy_now(s) -> None:
    """One pass of the standby copies now (the timer's unit; it waits for a pass under way)."""
    s.h.run("systemctl start govmail-standby.service")


def arrive_once(s, msgids, timeout=180) -> None:
    """Each message once in the mailbox, the MX queues flushed while waiting (a delivery that was
    waiting on the lost store's connection is retried at once, not at the next queue run)."""
    end = time.monotonic() + timeout
    for m in msgids:
        while delivered(s.h, s.far, m, timeout=10) != 1 and time.monotonic() < end:
            for name in s.h.cfg.mx_hosts:
                on(name, "postqueue -f")
        assert delivered(s.h, s.far, m, timeout=1) == 1, f"{m} lost or doubled"


def home(s) -> None:
    """The mailbox moved home (where the data puts it) from the standby, and copied again."""
    r = govmail("move-mailbox", s.far)
    assert r.returncode == 0, r.stdout + r.stderr
    copy_now(s)


COPIERS = "govmail-standby.timer govmail-standby-deliveries.service"  # what makes the copies


def on_standby(s, msgid: str) -> bool:
    """The message is in the standby's copy of the mailbox (read there, not through the proxy)."""
    r = on(s.standby, f"doveadm -o doveadm_port=0 search -u {s.far} mailbox INBOX header Message-ID '{msgid}'",
           check=False)
    return r.returncode == 0 and bool(r.stdout.strip())


def test_a_delivery_is_on_the_standby_within_seconds(scene):
    """The recovery point after a delivery: the standby's copy is made as soon as the store's LMTP
    accepted the message (Dovecot's event, govmail-standby-deliveries.service), not at the next minute."""
    s = scene
    on(s.copier, "systemctl stop govmail-standby.timer")  # only the delivery can start a copy
    try:
        msgid = send_25(s.h, s.far, "Chep ngay sau khi nhan")
        t0 = time.monotonic()
        while not on_standby(s, msgid) and time.monotonic() - t0 < 30:
            time.sleep(0.2)
        took = time.monotonic() - t0
    finally:
        on(s.copier, "systemctl start govmail-standby.timer")
    assert on_standby(s, msgid), "not copied to the standby after its delivery"
    print(f"\nstandby: a message on the standby {took:.1f} s after it was sent")
    assert took < 20


def test_a_lost_store_is_served_from_its_standby_and_its_last_mail_comes_back_with_it(scene):
    s = scene
    copied = send_25(s.h, s.far, "Da chep sang du phong")
    deleted = send_25(s.h, s.far, "Nguoi dung se xoa")  # on both; the user deletes it after the failover
    assert delivered(s.h, s.far, copied) == 1 and delivered(s.h, s.far, deleted) == 1
    copy_now(s)
    # The copies stop (the link to the standby lost a moment before the store): this one is on the
    # store only, as a message delivered during the copy it would have had.
    on(s.copier, f"systemctl stop {COPIERS} govmail-standby.service")
    tail = send_25(s.h, s.far, "Sau lan chep cuoi")
    assert delivered(s.h, s.far, tail) == 1
    refused = govmail("failover", s.store)  # a store that answers is moved, not failed over
    assert refused.returncode == 1 and "move-mailbox" in refused.stderr, refused.stdout + refused.stderr
    lab.unplug(s.store)  # its network lost, its disk kept
    try:
        lost = time.monotonic()
        during = [send_25(via, s.far, "Trong luc mat kho") for via in s.gateways]
        r = govmail("failover", s.store)
        took = time.monotonic() - lost
        assert r.returncode == 0 and "served from the standby copy" in r.stdout, r.stdout + r.stderr
        assert imap_login(s.h, s.far, s.pw) == "OK"
        back = time.monotonic() - lost
        # Run again (twice by a hurried operator, or stopped after its switch): the queues flushed again,
        # the standby's messages noted at the failover kept.
        again = govmail("failover", s.store)
        assert again.returncode == 0 and "already served from" in again.stdout, again.stdout + again.stderr
        on(s.standby, f"doveadm -o doveadm_port=0 expunge -u {s.far} mailbox INBOX header Message-ID '{deleted}'")
        arrive_once(s, [copied, *during])
        assert delivered(s.h, s.far, tail, timeout=1) == 0  # on the lost store's disk
        after = send_25(s.h, s.far, "Sau khi doi")
        assert delivered(s.h, s.far, after) == 1
        print(f"\n{r.stdout}failover: the command {took:.1f} s, the user reading again {back:.1f} s after the loss")
    finally:
        lab.unplug(s.store, plugged=True)
        on(s.copier, f"systemctl start {COPIERS}")
    for _ in range(30):
        if on(s.store, "systemctl is-active dovecot", check=False).returncode == 0:
            break
        time.sleep(2)
    r = govmail("failover", s.store, "--recover")
    assert r.returncode == 0 and "1 messages brought back" in r.stdout, r.stdout + r.stderr
    arrive_once(s, [copied, tail, *during, after])
    assert delivered(s.h, s.far, deleted, timeout=1) == 0  # deleted by its user: not brought back
    home(s)
    arrive_once(s, [copied, tail, *during, after])
    assert imap_login(s.h, s.far, s.pw) == "OK"


def test_a_store_whose_disk_is_gone_is_rebuilt_and_its_mailboxes_go_home_from_the_standby(scene):
    """The runbook for a store apart lost with its disk: fail over, rebuild it bare, deploy, `--recover`
    (nothing to bring back from an empty disk; `--forget` when the host does not come back), move
    its mailboxes home. Nothing that was copied is lost; the mail of
    meanwhile waits in the MX queues and arrives once; the user's password is the account store's."""
    s = scene
    before = send_25(s.h, s.far, "Truoc khi mat kho")
    assert delivered(s.h, s.far, before) == 1
    copy_now(s)
    subprocess.run(["govmail", "lab", "rebuild", s.store], check=True, capture_output=True, timeout=600)
    during = [send_25(via, s.far, "Trong luc mat kho") for via in s.gateways]
    r = govmail("failover", s.store)
    assert r.returncode == 0, r.stdout + r.stderr
    arrive_once(s, [before, *during])
    r = govmail("deploy", s.h.province, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = govmail("failover", s.store, "--recover")  # its disk is gone: said, not guessed
    assert r.returncode == 0 and "0 messages brought back" in r.stdout, r.stdout + r.stderr
    home(s)
    arrive_once(s, [before, *during])
    assert imap_login(s.h, s.far, s.pw) == "OK"
    assert on(s.store, f"test -d /var/vmail/{s.far.partition('@')[2]}/{s.far.partition('@')[0]}/Maildir",
              check=False).returncode == 0


def test_a_standby_ten_minutes_behind_alerts_the_operators(scene):
    """The monitor reads each store's oldest copy (the copier's node exporter), and the province's own
    StoreStandbyBehind fires on a store whose copies stopped over ten minutes ago, not on one copied
    each minute: the monitor's promtool on those series (ten minutes of a stopped copy in the lab would
    cost ten minutes)."""
    s, cfg = scene, scene.h.cfg
    scraped(cfg, f'time() - govmail_standby_oldest_copy_seconds{{store="{s.store}"}} < 120')
    rules = alerts.rules(cfg)
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "StoreStandbyBehind")
    behind = {"host": s.copier, "store": s.store, "standby": s.standby}
    current = {**behind, "store": "current.example"}

    def series(labels, values):
        return {"series": "govmail_standby_oldest_copy_seconds{" + ",".join(f'{k}="{v}"' for k, v in labels.items())
                + "}", "values": values}

    fired = [{"exp_labels": {**rule["labels"], **behind},
              "exp_annotations": {**rule["annotations"],
                                  "summary": f"the standby copy of {s.store}'s mailboxes on {s.standby} is over ten "
                                             "minutes old"}}]
    tests = {"rule_files": ["rules.yml"], "evaluation_interval": "15s", "tests": [{
        "interval": "15s",
        # copied last at the test clock's start / a copy every minute
        "input_series": [series(behind, "0x80"), series(current, "0 0 0 0 60 60 60 60 120 120 120 120 180x68")],
        "alert_rule_test": [
            {"eval_time": "9m", "alertname": "StoreStandbyBehind", "exp_alerts": []},
            {"eval_time": "11m", "alertname": "StoreStandbyBehind", "exp_alerts": fired},
        ]}]}
    d = "/root/govmail-promtool-standby"
    run(cfg.monitor_host, f"rm -rf {d} && mkdir {d} && cat > {d}/rules.yml", input=yaml.safe_dump(rules))
    run(cfg.monitor_host, f"cat > {d}/test.yml", input=yaml.safe_dump(tests, sort_keys=False))
    r = run(cfg.monitor_host, f"cd {d} && promtool test rules test.yml; rc=$?; rm -rf {d}; exit $rc", check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_standby_copies_are_known_to_the_standby_but_not_counted_as_its_own(scene):
    """The mail host's `doveadm -A` (its quota figures, reports, compliance checks) goes through its own
    mailboxes only; store2's copies on it are looked up (the copies, the failover), not iterated."""
    s = scene
    r = on(s.standby, "doveadm -o doveadm_port=0 -f tab quota get -A")
    users = {line.split("\t")[0] for line in r.stdout.splitlines()[1:]}
    assert s.far not in users and users, r.stdout[:500]
    assert on(s.standby, f"doveadm -o doveadm_port=0 user {s.far}", check=False).returncode == 0
    r = on(s.store, "doveadm -o doveadm_port=0 -f tab quota get -A")
    assert s.far in {line.split("\t")[0] for line in r.stdout.splitlines()[1:]}
