"""`govmail migrate`: the mailboxes of two old provinces move to the merged Lâm Đồng host with nothing
lost or doubled, while mail keeps arriving at both: Đắk Nông's from its govmail host, following the
runbook's steps (first sync, DNS switch, final sync), Bình Thuận's through IMAP (issue 15)."""

from __future__ import annotations

import hashlib
import imaplib
import json
import os
import subprocess
import time
from email.message import EmailMessage

import pytest

from govmail.host.contract import LAST_LOGIN_STAMP, PATHS

from .conftest import PROVINCES
from .mailing import INSECURE, arrived, mx_records, offer

pytestmark = pytest.mark.skipif(not {"daknong", "binhthuan", "lamdong"} <= set(PROVINCES),
                                reason="needs the old provinces daknong and binhthuan and the merged lamdong in the lab")

PREFERRED = ("longpx.stnmt@daknong.gov.vn", "longpx.snnmt@lamdong.gov.vn")  # Phan Xuân Long
IMAP_OLD, IMAP_NEW = "haulv.stttt@binhthuan.gov.vn", "haulv.skhcn@lamdong.gov.vn"  # Lê Văn Hậu, of Bình Thuận
SIEVE = 'require ["fileinto"];\nif header :contains "subject" "[BC]" { fileinto "Báo cáo"; }\n'


def govmail(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["govmail", *args], capture_output=True, text=True, timeout=900)


def mx(domain: str) -> list[str]:
    """The MX targets the lab resolver gives for a domain."""
    return sorted(f"{host}." for _, host in mx_records(domain))


def message_id(subject: str) -> str:
    return f"<{hashlib.sha1(subject.encode()).hexdigest()}@outside.test>"


def send(h, to: str, subject: str, body: str = "Nội dung") -> None:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"], m["Message-ID"] = "vanthu@outside.test", to, subject, message_id(subject)
    m.set_content(body)
    assert offer(h, m) == (0, ""), subject


def messages(h, user: str) -> dict[str, list]:
    """Message-ID (or, for a message without one, its Subject) -> [(folder, flags, received date,
    sha256 of the body)] of every message of a mailbox. (The body is asked for last: Dovecot 2.4's JSON
    output panics on some mailboxes when header fields follow it.)"""
    out = h.run(f"doveadm -f json fetch -u {user} 'mailbox flags date.received hdr.message-id hdr.subject body' ALL").stdout
    got: dict[str, list] = {}
    for m in json.loads(out or "[]"):
        flags = " ".join(sorted(f for f in m["flags"].split() if f != "\\Recent"))
        key = m["hdr.message-id"].strip() or "(no Message-ID) " + m["hdr.subject"].strip()
        got.setdefault(key, []).append(
            (m["mailbox"], flags, m["date.received"], hashlib.sha256(m["body"].encode()).hexdigest()))
    return got


@pytest.fixture(scope="module")
def hosts(lab_hosts):
    return lab_hosts["daknong"], lab_hosts["lamdong"]


def person_to_migrate(d, ld) -> tuple[str, str]:
    """(old, new): a person of Đắk Nông mapped alone into a Lâm Đồng mailbox whose password was never
    set on the merged host. Only such a mailbox takes the user's own password from the old host (one
    set here is never overwritten), and other lab tests set passwords of people they pick, in whatever
    order the tests run."""
    set_here = {r[0] for r in ld.store("SELECT DISTINCT address FROM audit WHERE action "
                                       "IN ('password-changed', 'password-reset', 'hand-over')")}
    pairs = [(old, new) for old, new in ld.cfg.former.items() if old.endswith("@" + d.cfg.domain)]
    people = {a.address for a in ld.cfg.accounts if a.kind == "person"}  # not lists, not unit mailboxes
    alone = [(old, new) for old, new in pairs if [n for _, n in pairs].count(new) == 1
             and new in people and new not in set_here]
    assert alone, "every Đắk Nông person's new mailbox has a password set on the merged host"
    return PREFERRED if PREFERRED in alone else alone[0]


def test_a_govmail_host_migrates_incrementally_with_mail_flags_folders_sieve_passwords_and_last_login(hosts):
    d, ld = hosts
    OLD, NEW = person_to_migrate(d, ld)  # noqa: N806 (the pair this test is about)
    stamp = int(time.time())
    pw = d.set_password(OLD)  # the user's own password on the old host
    for i in range(3):
        send(d, OLD, f"Công văn {i} {stamp}")
        assert arrived(d, OLD, f"Công văn {i} {stamp}")
    d.run(f"{{ doveadm mailbox list -u {OLD} | grep -qx 'Báo cáo' || doveadm mailbox create -u {OLD} 'Báo cáo'; }} && "
          f"doveadm move -u {OLD} 'Báo cáo' mailbox INBOX "
          f"header Subject 'Công văn 2 {stamp}' && doveadm flags add -u {OLD} '\\Flagged' mailbox INBOX "
          f"header Subject 'Công văn 0 {stamp}'")
    d.run(f"doveadm sieve put -a -u {OLD} loc-thu", input=SIEVE)
    imap = imaplib.IMAP4_SSL(d.name, 993, ssl_context=INSECURE)
    imap.login(OLD, pw)  # stamps the old host's last login
    imap.logout()
    before = len(messages(ld, NEW))

    dry = govmail("migrate", "lamdong", "--from", "daknong", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{OLD} -> {NEW}" in dry.stdout and "messages" in dry.stdout, dry.stdout
    assert len(messages(ld, NEW)) == before  # a dry run changes nothing

    first = govmail("migrate", "lamdong", "--from", "daknong")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{OLD} -> {NEW}" in first.stdout and "password copied" in first.stdout

    # Mail keeps coming during the migration: to the old host (senders still use its MX) and to the
    # merged one (senders who already see the new MX, or write to the new address).
    send(d, OLD, f"Đến máy cũ {stamp}")
    send(ld, OLD, f"Đến máy mới {stamp}")
    assert arrived(d, OLD, f"Đến máy cũ {stamp}") and arrived(ld, NEW, f"Đến máy mới {stamp}")
    try:
        assert govmail("lab", "dns-switch", "lamdong").returncode == 0
        # The old domain's mail goes to the merged province's MX hosts (the mail host and any MX apart).
        assert mx("daknong.gov.vn") == sorted(f"{m}." for m in ld.cfg.mx_hosts)
        # An old mailbox with mail that the data maps nowhere would be lost with the old host: --final
        # names it and does not end the migration until the operator says so.
        unmapped = next(a.address for a in d.cfg.accounts if a.kind == "person" and a.address not in ld.cfg.former)
        send(d, unmapped, f"Không ai nhận {stamp}")
        assert arrived(d, unmapped, f"Không ai nhận {stamp}")
        final = govmail("migrate", "lamdong", "--from", "daknong", "--final")
        assert final.returncode == 1, final.stdout + final.stderr
        assert "--final: the migration is not complete while old mailboxes with mail are not mapped" in final.stderr
        listing = govmail("migrate", "lamdong", "--from", "daknong", "--dry-run").stderr  # lists every one
        assert f"  {unmapped}\t" in listing, listing
        assert "govmail-migrate:lamdong" in d.run("cat /root/.ssh/authorized_keys").stdout  # access kept
        final = govmail("migrate", "lamdong", "--from", "daknong", "--final", "--leave-unmapped")
        assert final.returncode == 0, final.stdout + final.stderr
    finally:
        govmail("lab", "dns-switch", "lamdong", "--back")
    assert mx("daknong.gov.vn") == ["mail.daknong.gov.vn."]

    old_side, new_side = messages(d, OLD), messages(ld, NEW)
    # Every message of the old mailbox is on the merged host: same folder, flags, date and body hash.
    for mid, copies in old_side.items():
        assert new_side.get(mid) == copies, f"{mid}: {copies} on the old host, {new_side.get(mid)} on the new"
    # Nothing doubled (a message the old host holds twice may be there twice), and what arrived at the
    # merged host stayed.
    doubled = {k: v for k, v in new_side.items() if len(v) > max(1, len(old_side.get(k, [])))}
    assert not doubled, doubled
    for subject in (f"Đến máy cũ {stamp}", f"Đến máy mới {stamp}"):
        assert len(new_side.get(message_id(subject), [])) == 1, subject
    # The Sieve script, the password (old and new address) and the last login came along.
    assert "loc-thu ACTIVE" in ld.run(f"doveadm sieve list -u {NEW}").stdout
    for login in (OLD, NEW):
        imap = imaplib.IMAP4_SSL(ld.name, 993, ssl_context=INSECURE)
        imap.login(login, pw)
        imap.logout()
    def stamp_of(h, address: str) -> str:
        local, domain = address.split("@")
        return h.run(f"stat -c %Y {PATHS['vmail']}/{domain}/{local}/{LAST_LOGIN_STAMP}").stdout.strip()

    old_stamp, new_stamp = stamp_of(d, OLD), stamp_of(ld, NEW)
    assert int(new_stamp) >= int(old_stamp)
    # --final took the merged host's key off the old host.
    assert "govmail-migrate:lamdong" not in d.run("cat /root/.ssh/authorized_keys").stdout


def test_any_imap_server_migrates_with_the_users_own_password(lab_hosts, tmp_path):
    bt, ld = lab_hosts["binhthuan"], lab_hosts["lamdong"]
    stamp = int(time.time())
    pw = bt.set_password(IMAP_OLD)
    for i in range(2):
        send(bt, IMAP_OLD, f"Qua IMAP {i} {stamp}")
        assert arrived(bt, IMAP_OLD, f"Qua IMAP {i} {stamp}")
    bt.run(f"doveadm flags add -u {IMAP_OLD} '\\Flagged' mailbox INBOX header Subject 'Qua IMAP 1 {stamp}'")
    creds = tmp_path / "passwords.csv"
    creds.write_text(f"address,password\n{IMAP_OLD},{pw}\n")
    dry = govmail("migrate", "lamdong", "--from", "binhthuan", "--imap", f"{bt.name}:993", "--dry-run")
    assert dry.returncode == 0 and f"{IMAP_OLD} -> {IMAP_NEW}" in dry.stdout, dry.stdout + dry.stderr
    # Without --only, every other mapped mailbox of Bình Thuận is named as not copied (no password
    # given for it) and the run fails: nothing is skipped in silence.
    r = govmail("migrate", "lamdong", "--from", "binhthuan", "--imap", f"{bt.name}:993", "--insecure",
                "--passwords", str(creds))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "NOT COPIED: no password for it; add the line `ubnd@binhthuan.gov.vn,PASSWORD` to --passwords" in r.stdout
    assert "NOT DONE:" in r.stderr and f"{IMAP_OLD} -> {IMAP_NEW}\t" in r.stdout
    r = govmail("migrate", "lamdong", "--from", "binhthuan", "--imap", f"{bt.name}:993", "--insecure",
                "--passwords", str(creds), "--only", IMAP_OLD)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{IMAP_OLD} -> {IMAP_NEW}" in r.stdout
    old_side, new_side = messages(bt, IMAP_OLD), messages(ld, IMAP_NEW)
    assert old_side
    for mid, copies in old_side.items():  # folder, flags, received date and body, through IMAP
        assert new_side.get(mid) == copies, f"{mid}: {copies} on the old host, {new_side.get(mid)} on the new"


def test_two_old_mailboxes_mapped_to_one_each_arrive_whole_in_their_own_folder_while_mail_keeps_coming(hosts):
    """Đắk Nông's Sở TN&MT and Sở NN&PTNT were merged into Lâm Đồng's Sở NN&MT: both old unit
    mailboxes map to snnmt@lamdong.gov.vn. Each is copied, into its own folder, every message once,
    while mail arrives at the old host and at the merged one between the runs."""
    d, ld = hosts
    olds, new = ["stnmt@daknong.gov.vn", "snnptnt@daknong.gov.vn"], "snnmt@lamdong.gov.vn"
    assert all(ld.cfg.former[o] == new for o in olds)
    folders = {o: f"Thư cũ/{o.partition('@')[0]}@daknong" for o in olds}
    stamp = int(time.time())
    sent: dict[str, list[str]] = {o: [] for o in olds}

    def mail_old(o, i, folder=None):
        subject = f"Mail {o} {i} {stamp}"
        send(d, o, subject)
        assert arrived(d, o, subject)
        if folder:
            d.run(f"{{ doveadm mailbox list -u {o} | grep -qx '{folder}' || doveadm mailbox create -u {o} '{folder}'; }}"
                  f" && doveadm move -u {o} '{folder}' mailbox INBOX header Subject '{subject}'")
        sent[o].append((message_id(subject), folder or "INBOX"))

    for i in range(3):
        mail_old(olds[0], i)
        mail_old(olds[1], i)
    mail_old(olds[0], "hồ sơ", folder="Hồ sơ")
    d.run(f"doveadm flags add -u {olds[1]} '\\Seen' mailbox INBOX all")
    only = ["--only", olds[0], "--only", olds[1]]
    first = govmail("migrate", "lamdong", "--from", "daknong", *only)
    assert first.returncode == 0, first.stdout + first.stderr
    for o in olds:
        assert f'{o} -> {new} (folder "{folders[o]}")' in first.stdout, first.stdout

    # Meanwhile: more mail at the old host, and at the merged host for the old address (it reaches the
    # new mailbox's INBOX there, not a folder of old mail).
    for i in range(3, 5):
        mail_old(olds[0], i)
        mail_old(olds[1], i)
    send(ld, olds[0], f"Đến máy mới {stamp}")
    assert arrived(ld, new, f"Đến máy mới {stamp}")
    second = govmail("migrate", "lamdong", "--from", "daknong", *only)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("2 copied now") == 2, second.stdout  # exactly the two new ones of each
    third = govmail("migrate", "lamdong", "--from", "daknong", *only)
    assert third.returncode == 0 and third.stdout.count("0 copied now") == 2, third.stdout

    got = messages(ld, new)
    for o in olds:
        for mid, folder in sent[o]:
            copies = got.get(mid, [])
            assert [c[0] for c in copies] == [f"{folders[o]}/{folder}"], f"{mid} ({o}): {copies}"
    assert got[message_id(f"Đến máy mới {stamp}")][0][0] == "INBOX"
    assert all(len(c) == 1 for c in got.values()), {k: v for k, v in got.items() if len(v) > 1}
    # Flags came along as they were at the copy.
    assert all("\\Seen" in got[mid][0][1] for mid, _ in sent[olds[1]][:3])
    # The summary counts what is there: the old mailbox's messages, the copies made.
    n0 = sum(len(c) for c in messages(d, olds[0]).values())
    assert f"{olds[0]} -> {new} (folder \"{folders[olds[0]]}\")\t{n0} messages" in third.stdout, third.stdout


def test_a_mapped_old_mailbox_that_cannot_be_copied_is_named_and_the_run_fails(hosts, tmp_path):
    """A `former:` address the old host does not have (a typo, a mailbox never made) is not skipped in
    silence: one line says why and what to do, and the run exits 1."""
    import shutil

    import yaml

    from govmail.data import data_dir

    d, ld = hosts
    data = tmp_path / "group_data"
    shutil.copytree(data_dir(), data)
    doc = yaml.safe_load((data / "lamdong.yml").read_text())
    person = next(p for p in doc["directory"]["people"] if p.get("former"))
    person["former"] = list(person["former"]) + ["khongtontai.stnmt@daknong.gov.vn"]
    (data / "lamdong.yml").write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    r = subprocess.run(["govmail", "migrate", "lamdong", "--from", "daknong", "--only",
                        "khongtontai.stnmt@daknong.gov.vn"], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, GOVMAIL_DATA_DIR=str(data)))
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("khongtontai.stnmt@daknong.gov.vn -> " in r.stdout and "NOT COPIED: the old host has no such mailbox; "
            "correct this `former:` address in the data" in r.stdout), r.stdout
    assert "NOT DONE: 1 mailboxes were not copied" in r.stderr and "Traceback" not in r.stderr
