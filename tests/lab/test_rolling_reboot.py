"""Rebooting every host of a several-host province in turn (`govmail reboot`, issue 30) while mail
arrives through both MX for a mailbox of the mail host and one of the store apart: each host goes
only while every other is healthy, comes back healthy (the monitor's view), and not a message is
lost or doubled. The mail host's reboot is the one users notice: mail waits in mx2's queue.

It runs after the other lab tests (marker `after_the_others`): it reboots the hosts they share. It
leaves the account store's primary where it found it (handed to the other db host for the reboot of
its own, then back), as a test after it expects; the re-deploy test after it finds nothing to change."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest

from govmail import lab
from govmail.data import load_province
from govmail.host import contract

from .conftest import PROVINCES, LabHost
from .mailing import send_25

SEVERAL = [p for p in PROVINCES if load_province(p).stores_apart and load_province(p).monitor_host]
pytestmark = [pytest.mark.skipif(not SEVERAL, reason="no province with a store apart in this lab run"),
              pytest.mark.after_the_others(1)]
TOUCHES = SEVERAL[:1]  # no work runs beside this test on it (tests/lab/conftest.py)


def db_leader(h: LabHost) -> str:
    members = json.loads(h.run(f"patronictl -c {contract.PATRONI['config']} list -f json").stdout)
    return next(m["Member"] for m in members if m["Role"] == "Leader")


def test_every_host_reboots_in_turn_under_mail_and_no_message_is_lost(lab_hosts):
    h: LabHost = lab_hosts[TOUCHES[0]]
    cfg = h.cfg
    hosts = lab.load_state()["hosts"]
    gateways = [SimpleNamespace(ip=hosts[n]["ip"]) for n in cfg.mx_hosts]
    held = cfg.held_agencies()
    people = [a.address for a in sorted(cfg.accounts, key=lambda a: a.kind != "person")
              if a.status == "active" and a.role == "user"]
    near = next(a for a in people if cfg.store_of(cfg.account(a), held) == cfg.mail_host)
    far = next(a for a in people if cfg.store_of(cfg.account(a), held) != cfg.mail_host)
    sent, refused, stop = [], [], threading.Event()

    def mail():
        """A message every half second to each, through whichever MX takes it (as a sender's MTA
        tries the next MX when one does not answer)."""
        i = 0
        while not stop.is_set():
            for to in (near, far):
                for via in (gateways[i % 2], gateways[(i + 1) % 2]):
                    try:
                        sent.append((to, send_25(via, to, f"Khoi dong lai {i}")))
                        break
                    except OSError as e:
                        refused.append(str(e))
            i += 1
            time.sleep(0.5)

    # The round starts from a whole province (earlier tests broke and repaired parts of it).
    for _ in range(36):
        ready = subprocess.run(["govmail", "reboot", h.province, "--dry-run"], capture_output=True, text=True,
                               timeout=120)
        if ready.returncode == 0 and ready.stdout.count(": healthy") == len(cfg.model.hosts):
            break
        time.sleep(5)
    else:
        pytest.fail(f"the province is not healthy before its reboot: {ready.stdout}{ready.stderr}")
    leader = db_leader(h) if len(cfg.db_hosts) > 1 else None
    sender = threading.Thread(target=mail, daemon=True)
    sender.start()
    try:
        r = subprocess.run(["govmail", "reboot", h.province], capture_output=True, text=True, timeout=2400)
    finally:
        stop.set()
        sender.join(120)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(cfg.model.hosts)} hosts rebooted in turn" in r.stdout
    for name in cfg.model.hosts:
        assert f"{name.name}: answered SSH after" in r.stdout
    if leader:  # the primary handed to the other db host for its own host's reboot, then back
        other = next(n for n in cfg.db_hosts if n != leader)
        assert f"primary handed to {other}" in r.stdout and f"primary handed to {leader}" in r.stdout, r.stdout
        assert db_leader(h) == leader
    # Once it says done, the province takes mail at once through every MX for both mailboxes (no
    # lookup left failing after the primary's return: Postfix had set both db hosts aside, found here).
    for via in gateways:
        for to in (near, far):
            sent.append((to, send_25(via, to, "Sau khi khoi dong lai")))
    # Every message taken while the hosts went down in turn arrives once (the Message-IDs of each
    # mailbox read in one doveadm run, until none is missing or five minutes have passed).
    assert len(sent) > 50, (len(sent), refused[:3])
    end, have = time.monotonic() + 300, {}
    while True:
        for to in (near, far):
            out = h.run(f"doveadm -f flow fetch -u {to} hdr.message-id mailbox '*' all").stdout
            have[to] = [line.split("=", 1)[1].strip().strip("<>") for line in out.splitlines() if "=" in line]
        missing = [(to, m) for to, m in sent if m.strip("<>") not in have[to]]
        if not missing or time.monotonic() > end:
            break
        time.sleep(5)
    assert not missing, f"{len(missing)} of {len(sent)} messages lost by the reboots: {missing[:3]}"
    doubled = [(to, m) for to, m in sent if have[to].count(m.strip("<>")) != 1]
    assert not doubled, f"doubled by the reboots: {doubled[:3]}"
