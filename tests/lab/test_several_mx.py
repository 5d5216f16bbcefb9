"""Several MX (issue 29): a host with role `mx` alone beside the mail host receives the province's
mail as the mail host's own Postfix does, and hands it to the store over the private network.

Runs for the lab's provinces with an MX host apart (Lâm Đồng: mx2.lamdong.gov.vn); its mail log
reaches the store host's reports, and `govmail verify` checks it as it checks the mail host."""

from __future__ import annotations

import smtplib
import socket
import subprocess
import time
import uuid
from email.message import EmailMessage

import pytest

from govmail import lab, targets
from govmail.data import load_province
from govmail.host.contract import PORTS

from .conftest import PROVINCES, LabHost, on

PORT = PORTS["mail_log"]

APART = [p for p in PROVINCES if len(load_province(p).mx_hosts) > 1]
# Rank 1 (tests/lab/conftest.py): beside test_monitoring's breaks of another province, after the tests
# of every province.
pytestmark = [pytest.mark.skipif(not APART, reason="no province with an MX host apart in this lab run"),
              pytest.mark.after_the_others(1)]
TOUCHES = APART[:1]  # no work runs beside these tests on it (tests/lab/conftest.py)


@pytest.fixture(scope="module")
def province(lab_hosts) -> LabHost:
    return lab_hosts[TOUCHES[0]]


def letter(to: str, subject: str) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = f"someone@{lab.OUTSIDE_DOMAIN}", to, subject
    m["Message-ID"] = f"<{uuid.uuid4().hex}@{lab.OUTSIDE_DOMAIN}>"  # as every real sending server gives
    m.set_content("Kính gửi đồng chí: thư qua MX thứ hai.\n")
    return m


def delivered(h: LabHost, user: str, subject: str, seconds: float = 60) -> int:
    """How many messages with `subject` are in the user's INBOX once one has arrived (or after `seconds`)."""
    deadline, found = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        found = len(h.run(f"doveadm search -u {user} mailbox INBOX header Subject {subject}").stdout.split("\n")) - 1
        if found:
            return found
        time.sleep(1)
    return found


def answers(ip: str) -> bool:
    """Whether port 25 greets."""
    try:
        with smtplib.SMTP(ip, 25, timeout=3) as s:
            return s.noop()[0] == 250
    except (OSError, smtplib.SMTPException):
        return False


def person(h: LabHost) -> str:
    return next(a.address for a in h.cfg.accounts if a.kind == "person" and a.status == "active")


def report_figures(h: LabHost, since: float) -> dict:
    """The mail figures the store host's monthly report counts from `since` to now."""
    import json

    r = h.run(f"/usr/local/lib/govmail/report gather --kind monthly --since {since:.0f} --until {time.time() + 60:.0f}")
    return json.loads(r.stdout)


def test_mail_sent_to_the_second_mx_reaches_the_mailbox_and_the_reports_count_it(province):
    """Mail through the MX apart is delivered, an unknown recipient refused there, and both are in
    the store host's reports: mx2's mail log reaches the store's (rsyslog over the private network)."""
    h = province
    mx2 = h.cfg.mx_hosts[1]
    ip = lab.load_state()["hosts"][mx2]["ip"]
    user, subject = person(h), f"mx2-{uuid.uuid4().hex[:12]}"
    since = time.time() - 1
    before = report_figures(h, since)
    with smtplib.SMTP(ip, 25, local_hostname=f"mx.{lab.OUTSIDE_DOMAIN}", timeout=30) as s:
        assert s.ehlo()[1].decode().startswith(mx2)  # it names itself
        assert s.mail(f"someone@{lab.OUTSIDE_DOMAIN}")[0] == 250
        code, answer = s.rcpt(f"no-such-person@{h.cfg.domain}")
        assert code == 550, answer  # read from the account store, as on the mail host
        s.rset()
        s.send_message(letter(user, subject))
    assert delivered(h, user, subject) == 1
    short = mx2.split(".")[0]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the lines reach the store host's mail.log within a moment
        after = report_figures(h, since)
        if after["mail"]["received"] > before["mail"]["received"] and \
                after["refusals"]["unknown_recipient"] > before["refusals"]["unknown_recipient"]:
            break
        time.sleep(1)
    assert after["mail"]["received"] == before["mail"]["received"] + 1, after["mail"]
    assert after["refusals"]["unknown_recipient"] == before["refusals"]["unknown_recipient"] + 1, after["refusals"]
    assert h.run(f"grep -c ' {short} postfix/smtpd' /var/log/mail.log").stdout.strip() != "0"
    # Nothing but mail lines, and only from the MX apart: a line sent to the port from elsewhere is dropped.
    mark = f"govmail-not-from-an-mx-{uuid.uuid4().hex[:8]}"
    h.run(f"logger -n 127.0.0.1 -P {PORT} -T -p mail.info {mark}; "
          f"logger -n 127.0.0.1 -P {PORT} -T -p mail.info {mark}")
    on(mx2, f"logger -p user.info {mark}-user")
    time.sleep(3)
    assert h.run(f"grep -c {mark} /var/log/mail.log /var/log/syslog 2>/dev/null | grep -v ':0$' || true").stdout == ""


def test_the_second_mx_keeps_mail_while_the_store_is_away_and_delivers_it_once_when_it_returns(province):
    h = province
    mx2 = h.cfg.mx_hosts[1]
    ip = lab.load_state()["hosts"][mx2]["ip"]
    user, subject = person(h), f"queued-{uuid.uuid4().hex[:12]}"
    h.run("systemctl stop dovecot")
    try:
        with smtplib.SMTP(ip, 25, local_hostname=f"mx.{lab.OUTSIDE_DOMAIN}", timeout=30) as s:
            s.send_message(letter(user, subject))  # taken: the store's quota answer is not needed
        time.sleep(3)
        assert user in on(mx2, "postqueue -j").stdout, "the message does not wait in the second MX's queue"
    finally:
        h.run("systemctl start dovecot")
    on(mx2, "postqueue -f")
    assert delivered(h, user, subject, seconds=120) == 1
    time.sleep(3)
    assert delivered(h, user, subject, seconds=1) == 1  # once


def test_the_domain_names_both_mx_hosts_and_only_they_reach_the_stores_lmtp(province):
    h = province
    from .mailing import mx_records

    answer = mx_records(h.cfg.domain)
    assert sorted(answer) == sorted((10, m) for m in h.cfg.mx_hosts), answer
    state = lab.load_state()["hosts"]
    store = state[h.cfg.mail_host]["ip"]
    on(h.cfg.mx_hosts[1], f"timeout 5 bash -c '</dev/tcp/{store}/24'")  # the MX host apart gets in
    with pytest.raises(OSError):  # the lab bridge (outside the province) does not
        socket.create_connection((store, 24), timeout=3).close()


def test_one_mx_lost_under_steady_mail_from_outside_loses_no_message_and_doubles_none(province):
    """DN Art. 4.2 (continuous operation): mail keeps coming in from other servers while first the MX
    host apart crashes (every Postfix process killed, its queue left as it was) and systemd starts it
    again by itself, then
    the mail host's Postfix is stopped and started again. Every message a server handed over is in
    its mailbox exactly once at the end, and no sender ever found the province unreachable."""
    import threading

    from .mailing import relay

    h = province
    mx2 = h.cfg.mx_hosts[1]
    ip = lab.load_state()["hosts"][mx2]["ip"]
    users = [a.address for a in h.cfg.accounts if a.kind == "person" and a.status == "active"][:4]
    run = uuid.uuid4().hex[:8]
    taken: dict[str, str] = {}  # subject -> the MX that took it
    when: list[tuple[float, str]] = []  # (time taken, MX)
    unreachable: list[str] = []
    stop = threading.Event()

    def load():
        n = 0
        while not stop.is_set():
            subject, to = f"load-{run}-{n:04d}", users[n % len(users)]
            where = relay(h.cfg.domain, letter(to, subject))
            if where:
                taken[subject] = where
                when.append((time.monotonic(), where))
            else:
                unreachable.append(subject)
            n += 1
            time.sleep(0.1)

    sender = threading.Thread(target=load, daemon=True)
    sender.start()
    try:
        time.sleep(8)
        on(mx2, "systemctl kill --signal=SIGKILL postfix")  # a crash: nothing flushed on the way out
        mx2_down = time.monotonic()
        # Nobody starts it: systemd does (govmail's drop-in, 5 s after the crash).
        while not answers(ip) and time.monotonic() < mx2_down + 60:
            time.sleep(0.5)
        back = time.monotonic() - mx2_down
        assert back < 30, "the crashed Postfix of the second MX was not started again by itself"
        mx2_up = mx2_down + 4  # before systemd's restart: the window where mx2 took nothing
        time.sleep(8)
        h.run("systemctl stop postfix")
        mail_down = time.monotonic()
        time.sleep(8)
        mail_up = time.monotonic()
    finally:
        h.run("systemctl start postfix")
        on(mx2, "systemctl start postfix", check=False)
        time.sleep(8)
        stop.set()
        sender.join(timeout=120)
    assert not unreachable, f"{len(unreachable)} messages found no MX answering: {unreachable[:5]}"
    by_mx = {m: sum(1 for w in taken.values() if w == m) for m in h.cfg.mx_hosts}
    assert all(by_mx.values()), f"the load did not reach both MX: {by_mx}"
    # While one was down, the other took all (else nothing was really down).
    assert {w for t, w in when if mx2_down + 1 < t < mx2_up} == {h.cfg.mail_host}
    assert {w for t, w in when if mail_down + 1 < t < mail_up} == {mx2}
    h.run("postqueue -f")
    on(mx2, "postqueue -f")
    deadline, counts = time.monotonic() + 180, {}
    while time.monotonic() < deadline:
        counts = {}
        for u in users:
            out = h.run(f"doveadm -f tab fetch -u {u} hdr.subject mailbox INBOX header Subject load-{run}-",
                        check=False).stdout
            for line in out.splitlines()[1:]:
                subject = line.strip()
                counts[subject] = counts.get(subject, 0) + 1
        if set(taken) <= set(counts):
            break
        time.sleep(3)
    missing = sorted(set(taken) - set(counts))
    doubled = sorted(s for s, c in counts.items() if c > 1)
    print(f"\nsteady load through {len(h.cfg.mx_hosts)} MX, one lost at a time: {len(taken)} messages taken "
          f"({by_mx}), {len(missing)} missing, {len(doubled)} doubled; mx2's Postfix back {back:.1f} s after its crash")
    assert not missing, f"{len(missing)} of {len(taken)} messages taken never reached their mailbox: {missing[:5]}"
    assert not doubled, f"delivered more than once: {doubled[:5]}"


def test_an_open_relay_on_the_mx_apart_fails_verify_naming_that_host_and_the_next_deploy_closes_it(province, tmp_path):
    """`govmail verify` checks what receives mail on every MX host, not only on the mail host: an MX
    apart opened as a relay by hand (the host the world reaches on port 25) fails the province's
    verify naming that host and the value found, while the mail host's part of the same clause
    passes; the next deploy closes it."""
    import xml.etree.ElementTree as ET

    h = province
    mx2 = h.cfg.mx_hosts[1]
    out = tmp_path / "reports"
    try:
        on(mx2, "postconf -e 'mynetworks = 0.0.0.0/0' && postfix reload")
        r = subprocess.run(["govmail", "verify", h.cfg.key, "--out", str(out)], capture_output=True, text=True, timeout=600)
        assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
        suite = ET.parse(out / f"{h.name}.junit.xml").getroot()
        failed = {next(p.get("value") for p in c.iter("property") if p.get("name") == "check"): c.find("failure").get("message")
                  for c in suite.iter("testcase") if c.find("failure") is not None}
        # (A lab run without test_backup.py before it has no backup yet: that clause is not this test's.)
        assert set(failed) - {"backups"} == {"no_open_relay", "files_as_deployed"}, failed
        assert "backups" not in failed or "no backup" in failed["backups"], failed["backups"]
        assert failed["no_open_relay"].startswith(f"{mx2}: smtp/inet (port 25): mynetworks = 0.0.0.0/0 lets 0.0.0.0/0 relay")
        assert f"{h.name}: mynetworks is the loopback only" in failed["no_open_relay"]
        assert failed["files_as_deployed"].startswith(f"{mx2}: changed since the deploy: /etc/postfix/main.cf")
        # The hosts checked are named at the top of the report.
        assert f"- province host {mx2}: mx" in (out / f"{h.name}.md").read_text()
    finally:
        d = subprocess.run(["govmail", "deploy", h.cfg.key], capture_output=True, text=True, timeout=900)
    assert d.returncode == 0, d.stdout[-3000:] + d.stderr[-2000:]
    assert on(mx2, "postconf -h mynetworks").stdout.split() == ["127.0.0.0/8"]


def restart_window(name: str, since: str) -> tuple[float, float]:
    """When Postfix stopped and when it was started again on host `name`, as its journal says."""
    out = on(name, f"journalctl -u postfix.service -o short-unix --no-pager --since @{since}").stdout.splitlines()
    stops = [float(x.split()[0]) for x in out if "Stopping postfix.service" in x]
    starts = [float(x.split()[0]) for x in out if "Started postfix.service" in x]
    assert stops and starts, f"{name}: no restart of Postfix in its journal: {out[-10:]}"
    return stops[0], starts[-1]


def test_a_deploy_restarts_postfix_on_one_mx_at_a_time(province):
    """Issue 29 (one command, rolling): a deploy that must restart Postfix on both MX hosts (here: a
    restart a stopped deploy left pending on each) restarts it on one, waits until it answers
    again, then on the other, so the domain always has an MX that answers."""
    h = province
    mx2 = h.cfg.mx_hosts[1]
    since = h.run("date +%s").stdout.strip()
    for name in (h.cfg.mail_host, mx2):
        on(name, "mkdir -p /var/lib/govmail/pending && touch /var/lib/govmail/pending/postfix-restart")
    d = subprocess.run(["govmail", "deploy", h.cfg.key], capture_output=True, text=True, timeout=900)
    assert d.returncode == 0, d.stdout[-3000:] + d.stderr[-2000:]
    log = (targets.lab().log_dir() / f"deploy-{h.cfg.key}.log").read_text()
    assert "restarts in turn with the other" in log and "waits its turn: another host with role mx" in log
    first, second = sorted([restart_window(h.cfg.mail_host, since), restart_window(mx2, since)])
    assert first[1] <= second[0], f"Postfix was down on both MX at once: {first} and {second}"
    for name in (h.cfg.mail_host, mx2):
        assert answers(lab.load_state()["hosts"][name]["ip"]), f"{name}: port 25 does not answer after the deploy"
        assert on(name, "ls /var/lib/govmail/pending/").stdout.strip() == ""
