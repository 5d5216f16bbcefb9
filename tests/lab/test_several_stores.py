"""Stores apart (issue 29): a host with role `store` alone holds the mailboxes of the agencies its
`agencies` name, behind the mail host's Dovecot proxy. Their officials keep one address
(mail.<domain>): IMAP, POP3, submission, ManageSieve and the web mail go through the mail host; the
MX hosts deliver to the mail host's LMTP, which hands each message to the store that holds the
mailbox. A store going down stops only its own mailboxes: the others never notice, and mail for
its own waits in the MX queues until it is back.

Runs for the lab's provinces with a store apart (Lâm Đồng: store2.lamdong.gov.vn holds Sở Xây dựng,
an agency set up after the merger)."""

from __future__ import annotations

import poplib
import shlex
import subprocess
import time
from types import SimpleNamespace

import pytest

from govmail import lab
from govmail.data import load_province
from govmail.services.accounts import accounts

from .conftest import PROVINCES, LabHost, on
from .mailing import INSECURE, delivered, imap_login, send_25, submission

STORES = [p for p in PROVINCES if load_province(p).stores_apart]
# Rank 1 (tests/lab/conftest.py): beside test_monitoring's breaks of another province, after the tests
# of every province.
pytestmark = [pytest.mark.skipif(not STORES, reason="no province with a store apart in this lab run"),
              pytest.mark.after_the_others(1)]
TOUCHES = STORES[:1]  # no work runs beside these tests on it (tests/lab/conftest.py)


def ip_of(name: str) -> str:
    return lab.load_state()["hosts"][name]["ip"]


@pytest.fixture(scope="module")
def province(lab_hosts) -> LabHost:
    return lab_hosts[TOUCHES[0]]


def mailboxes(h: LabHost, apart: bool) -> list[str]:
    """Active mailboxes on a store apart (or on the mail host), from the data: people first."""
    where = {a["address"]: a["store"] for a in accounts(h.cfg)}
    return [a.address for a in sorted(h.cfg.accounts, key=lambda a: a.kind != "person")
            if a.status == "active" and a.role == "user" and (where[a.address] != h.cfg.mail_host) == apart]


def maildir(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"/var/vmail/{domain}/{local}/Maildir"


@pytest.fixture(scope="module")
def users(province):
    """A person of a store apart and one of the mail host, each with a password of their own."""
    h = province
    far, near = mailboxes(h, apart=True)[0], mailboxes(h, apart=False)[0]
    return {"far": far, "near": near, "far_pw": h.set_password(far), "near_pw": h.set_password(near)}


def test_a_mailbox_of_a_store_apart_is_reached_at_the_mail_hosts_address_and_its_mail_is_kept_there(province, users):
    h, far, pw = province, users["far"], users["far_pw"]
    store = next(a["store"] for a in accounts(h.cfg) if a["address"] == far)
    assert store in h.cfg.stores_apart
    # IMAP and POP3 at the mail host's address, with the user's own password.
    assert imap_login(h, far, pw) == "OK"
    p = poplib.POP3_SSL(h.ip, 995, context=INSECURE, timeout=30)
    try:
        p.user(far)
        assert p.pass_(pw).startswith(b"+OK")
    finally:
        p.quit()
    # Mail through every MX host reaches it once.
    ids = [send_25(SimpleNamespace(ip=ip_of(name)), far, f"Qua {name}") for name in h.cfg.mx_hosts]
    for msgid in ids:
        assert delivered(h, far, msgid) == 1, f"{msgid} not delivered once (doveadm through the proxy)"
    # ... and is on the store's disk; on the mail host's only as the standby copy (hosts[].standby), which
    # the copies bring, never a delivery.
    assert on(store, f"grep -rlF {shlex.quote(ids[0])} {maildir(far)}/cur {maildir(far)}/new", check=False).stdout.strip()
    if h.cfg.standbys.get(store) == h.cfg.mail_host:
        h.run("systemctl start govmail-standby.service")
        assert h.run(f"grep -rlF {shlex.quote(ids[0])} {maildir(far)}/cur {maildir(far)}/new", check=False).stdout.strip()
    else:
        assert h.run(f"test -e {maildir(far)}", check=False).returncode != 0, "the mailbox was made on the mail host too"
    # The proxy passed the client's address on: the store logs the client, not the proxy.
    log = h.run(f"grep -F 'user=<{far}>' /var/log/mail.log | grep -F ' {store.split('.')[0]} dovecot: imap-login: "
                "Logged in' | tail -1").stdout
    assert "rip=10.77.0.1," in log, log


def test_a_user_of_a_store_apart_sends_and_filters_as_every_other(province, users):
    """Submission authenticates at the mail host; a Sieve redirect made through ManageSieve runs on the
    store and leaves through the mail host's Postfix (state domains only, as for everyone)."""
    from .managesieve import ManageSieve

    h, far, near = province, users["far"], users["near"]
    stamp = str(int(time.time()))
    with submission(h, far, users["far_pw"]) as s:
        s.sendmail(far, [near], f"From: {far}\r\nTo: {near}\r\nSubject: Tu kho thu hai {stamp}\r\n"
                   f"Message-ID: <{stamp}.sub@{h.cfg.domain}>\r\n\r\nNoi dung\r\n".encode())
    assert delivered(h, near, f"<{stamp}.sub@{h.cfg.domain}>") == 1
    with ManageSieve(h.name) as ms:
        ms.login(far, users["far_pw"])
        ms.put_active("chuyen-tiep", f'require ["copy"];\nredirect :copy "{near}";\n')
    try:
        msgid = send_25(h, far, f"Chuyen tiep {stamp}")
        assert delivered(h, far, msgid) == 1 and delivered(h, near, msgid) == 1, "the store's redirect did not leave"
    finally:
        with ManageSieve(h.name) as ms:
            ms.login(far, users["far_pw"])
            ms.put_active("chuyen-tiep", "keep;\n")


def test_a_user_whose_store_is_up_never_notices_the_other_store_going_down(province, users):
    h, far, near = province, users["far"], users["near"]
    store = h.cfg.stores_apart[0]
    mx2 = SimpleNamespace(ip=ip_of(next(n for n in h.cfg.mx_hosts if n != h.cfg.mail_host)))
    on(store, "systemctl stop dovecot")
    try:
        assert imap_login(h, near, users["near_pw"]) == "OK"
        for via in (h, mx2):
            assert delivered(h, near, send_25(via, near, "Kho kia dung")) == 1
        # The other store's mail is taken and waits in the queues; its users cannot log in meanwhile.
        waiting = [send_25(via, far, "Cho kho thu hai") for via in (h, mx2)]
        assert imap_login(h, far, users["far_pw"]) != "OK"
        time.sleep(3)
        queued = h.run("postqueue -j").stdout + on(next(n for n in h.cfg.mx_hosts if n != h.cfg.mail_host),
                                                    "postqueue -j").stdout
        assert queued.count(f'"address":"{far}"') >= 2 or queued.count(f'"address": "{far}"') >= 2, queued
    finally:
        on(store, "systemctl start dovecot")
    for name in h.cfg.mx_hosts:
        on(name, "postqueue -f")
    for msgid in waiting:
        assert delivered(h, far, msgid, timeout=120) == 1, f"{msgid} lost or doubled while its store was down"
    assert imap_login(h, far, users["far_pw"]) == "OK"


def test_a_store_apart_backs_up_its_own_mailboxes_into_its_own_repository_and_no_other(province, users):
    """Its own key lets it append to its own repository on the backup host, and nothing else; the
    archive holds the mailboxes it keeps (not the account store: the mail host's archives hold that)."""
    h, far = province, users["far"]
    store, backup = h.cfg.stores_apart[0], h.cfg.backup_host
    msgid = send_25(h, far, "Sao luu kho thu hai")
    assert delivered(h, far, msgid) == 1
    r = subprocess.run(["govmail", "backup", "run", h.province], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    status = subprocess.run(["govmail", "backup", "status", h.province], capture_output=True, text=True).stdout
    assert any(line.startswith(store) and " ok " in line for line in status.splitlines()), status
    borg = (f"runuser -u govmail-backup -- env BORG_PASSCOMMAND='cat /etc/govmail/backup/{h.cfg.mail_host}.passphrase' "
            "BORG_BASE_DIR=/srv/govmail-backup/.borg borg")
    repo = f"/srv/govmail-backup/{store}"
    last = on(backup, f"{borg} list --short --last 1 {repo}").stdout.strip()
    content = on(backup, f"{borg} list --short {repo}::{last}").stdout
    local, _, domain = far.partition("@")
    assert f"var/backups/govmail/mail/{domain}/{local}/Maildir" in content, content[:2000]
    assert "accounts.sqlite" not in content  # the mail host's archives hold the account store
    # Its key reaches its own repository only: the mail host's is refused.
    rsh = ("ssh -i /etc/govmail/backup/id_ed25519 -o BatchMode=yes -o StrictHostKeyChecking=accept-new "
           "-o UserKnownHostsFile=/etc/govmail/backup/known_hosts")
    other = on(store, f"BORG_PASSCOMMAND='cat /etc/govmail/backup/passphrase' BORG_RSH='{rsh}' "
               f"borg list ssh://govmail-backup@{backup}/srv/govmail-backup/{h.cfg.mail_host}", check=False)
    assert other.returncode != 0 and "not allowed" in other.stderr, other.stderr  # borg serve's restriction
    # A message lost by its user comes back from the store's own archives, once.
    h.run(f"doveadm expunge -u {far} mailbox INBOX header Message-ID {shlex.quote(msgid)}")
    assert delivered(h, far, msgid, timeout=1) == 0
    r = subprocess.run(["govmail", "backup", "restore-mailbox", far], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "restored from" in r.stdout, r.stdout + r.stderr
    assert delivered(h, far, msgid) == 1


def test_the_inactivity_rule_reaches_a_store_aparts_mailboxes_from_that_store_only(province, users):
    """Its last logins are on its disk: its own daily job applies the rule to them, the mail host's
    leaves them alone (a dry run at a date past the province's period)."""
    import json

    h, far = province, users["far"]
    store = h.cfg.stores_apart[0]
    if h.cfg.policy.inactivity.action == "none":
        pytest.skip(f"{h.province} has no inactivity rule")
    later = int(time.time() + (h.cfg.policy.inactivity.after_months + 1) * 31 * 86400)
    unit = on(store, "systemctl cat govmail-daily.service").stdout
    assert f"accounts daily --held-by {store} --domain {h.cfg.domain}" in unit, unit
    assert on(store, "systemctl is-enabled govmail-daily.timer").stdout.strip() == "enabled"
    mine = json.loads(on(store, f"/usr/local/lib/govmail/accounts daily --dry-run --now {later} --held-by {store} "
                                f"--domain {h.cfg.domain}").stdout)["actions"]
    theirs = json.loads(h.run(f"/usr/local/lib/govmail/accounts daily --dry-run --now {later}").stdout)["actions"]
    assert far in {a["address"] for a in mine}, mine
    assert far not in {a["address"] for a in theirs} and theirs, theirs


def _reader(h, user: str, pw: str, stop, seen: dict) -> None:
    """An IMAP client that keeps INBOX open (NOOP every half second) and logs in again whenever it is
    cut off, as a mail program does: how often it was cut off, its longest way back, any refusal."""
    import imaplib
    import ssl

    while not stop.is_set():
        try:
            m = imaplib.IMAP4_SSL(h.name, 993, ssl_context=ssl._create_unverified_context(), timeout=60)
            m.authenticate("PLAIN", lambda _: b"\0" + user.encode() + b"\0" + pw.encode())
            m.select("INBOX")
        except (imaplib.IMAP4.error, OSError) as e:
            seen["refused"].append(str(e))
            time.sleep(1)
            continue
        seen["logins"] += 1
        if seen["logins"] > 1:
            seen["longest_back"] = max(seen["longest_back"], time.monotonic() - seen["cut_at"])
        try:
            while not stop.is_set():
                m.noop()
                time.sleep(0.5)
            m.logout()
        except (imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError):
            seen["cut_at"] = time.monotonic()


def _move(h, mover: str, data=None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **({"GOVMAIL_DATA_DIR": str(data)} if data else {})}
    return subprocess.run(["govmail", "move-mailbox", mover], capture_output=True, text=True, timeout=900, env=env)


def test_a_mailbox_moves_to_the_store_apart_and_back_while_mail_arrives_and_its_user_reads(province, tmp_path):
    """The operator puts the mailbox's agency on the store apart in the data, moves it there, and back
    (the data as it was): under mail through both MX and an open IMAP session, every message arrives
    once, the client gets back in after being cut off, its Sieve filter goes with it, and the old copy
    is put aside on the host it left, never read again."""
    import shutil
    import threading

    from govmail.data import data_dir

    from .managesieve import ManageSieve

    h, started = province, int(time.time()) - 1
    store = h.cfg.stores_apart[0]
    mover = mailboxes(h, apart=False)[1]
    agency = h.cfg.agency_of(h.cfg.account(mover))
    pw = h.set_password(mover)
    with ManageSieve(h.name) as ms:
        ms.login(mover, pw)
        ms.put_active("phan-loai", 'require ["fileinto", "mailbox"];\n'
                      'if header :contains "subject" "Phan loai" { fileinto :create "Phan loai"; }\n')
    data = tmp_path / "data"
    shutil.copytree(data_dir(), data)
    yml = data / f"{h.province}.yml"
    held = ", ".join(h.cfg.held_agencies())
    assert f"agencies: [{held}]" in yml.read_text()
    yml.write_text(yml.read_text().replace(f"agencies: [{held}]", f"agencies: [{held}, {agency}]"))
    gateways = [h, SimpleNamespace(ip=ip_of(next(n for n in h.cfg.mx_hosts if n != h.cfg.mail_host)))]
    sent: list[str] = []

    def under_load(move):
        stop, seen = threading.Event(), {"logins": 0, "refused": [], "longest_back": 0.0, "cut_at": 0.0}
        reader = threading.Thread(target=_reader, args=(h, mover, pw, stop, seen), daemon=True)
        reader.start()

        def mail():
            while not stop.is_set():
                sent.append(send_25(gateways[len(sent) % 2], mover, f"Trong luc chuyen {len(sent)}"))
                time.sleep(0.3)

        sender = threading.Thread(target=mail, daemon=True)
        sender.start()
        time.sleep(3)
        r = move()
        time.sleep(3)
        stop.set()
        sender.join(60)
        reader.join(60)
        return r, seen

    # The new store down: the move stops, the mailbox where it was (its mail still arriving there) ...
    on(store, "systemctl stop dovecot")
    try:
        r = _move(h, mover, data)
        assert r.returncode == 1 and f"copying {mover} from {h.cfg.mail_host} to {store}" in r.stderr, r.stderr
        assert delivered(h, mover, send_25(h, mover, "Kho moi dung")) == 1
    finally:
        on(store, "systemctl start dovecot")
    # ... and resumes when run again, under mail and a reading client.
    r, seen = under_load(lambda: _move(h, mover, data))
    assert r.returncode == 0, r.stdout + r.stderr
    print(r.stdout, seen)
    assert f"{mover}: on {store}: " in r.stdout
    assert seen["logins"] >= 2 and seen["longest_back"] < 30, seen  # cut off by the hold, back within it
    assert on(store, f"test -d {maildir(mover)}", check=False).returncode == 0
    if h.cfg.standbys.get(store) != h.cfg.mail_host:  # else the standby copy comes back there, unrouted
        assert h.run(f"test -e {maildir(mover)}", check=False).returncode != 0, "still read on the mail host"
    local, _, domain = mover.partition("@")
    assert h.run(f"ls -d /var/vmail/.moved/{domain}/{local}.*").stdout.strip()  # put aside, not deleted
    # Its filter went with it: run on the store now.
    msgid = send_25(h, mover, "Phan loai sau khi chuyen")
    assert delivered(h, mover, msgid, mailbox="Phan loai") == 1
    # ... and back to the mail host, the data as it was.
    r, seen = under_load(lambda: _move(h, mover))
    assert r.returncode == 0, r.stdout + r.stderr
    print(r.stdout, seen)
    assert f"{mover}: on {h.cfg.mail_host}: " in r.stdout
    assert h.run(f"test -d {maildir(mover)}", check=False).returncode == 0
    assert on(store, f"test -e {maildir(mover)}", check=False).returncode != 0
    for name in h.cfg.mx_hosts:
        on(name, "postqueue -f")
    for one in [*sent, msgid]:
        assert delivered(h, mover, one, timeout=120) == 1, f"{one} lost or doubled by the moves"
    audit = h.run(f"/usr/local/lib/govmail/accounts sql \"SELECT action FROM audit WHERE address = '{mover}' "
                  f"AND action LIKE 'move-%' AND ts >= {started} ORDER BY ts\"").stdout
    assert audit.count("move-mailbox") == 2 and audit.count("move-release") == 2, audit
