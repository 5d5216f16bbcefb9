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

from govmail import lab
from govmail.data import load_province

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
    return SimpleNamespace(h=h, store=store, standby=standby, far=far, pw=h.set_password(far), gateways=(h, mx2))


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


def test_a_lost_store_is_served_from_its_standby_and_its_last_mail_comes_back_with_it(scene):
    s = scene
    copied = send_25(s.h, s.far, "Da chep sang du phong")
    assert delivered(s.h, s.far, copied) == 1
    copy_now(s)
    tail = send_25(s.h, s.far, "Sau lan chep cuoi")  # on the store only: the recovery point
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
        arrive_once(s, [copied, *during])
        assert delivered(s.h, s.far, tail, timeout=1) == 0  # on the lost store's disk
        after = send_25(s.h, s.far, "Sau khi doi")
        assert delivered(s.h, s.far, after) == 1
        print(f"\n{r.stdout}failover: the command {took:.1f} s, the user reading again {back:.1f} s after the loss")
    finally:
        lab.unplug(s.store, plugged=True)
    for _ in range(30):
        if on(s.store, "systemctl is-active dovecot", check=False).returncode == 0:
            break
        time.sleep(2)
    r = govmail("failover", s.store, "--recover")
    assert r.returncode == 0 and "1 messages brought back" in r.stdout, r.stdout + r.stderr
    arrive_once(s, [copied, tail, *during, after])
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
