"""Pieces of the host's backup tool that need no host (the lab tests run the rest for real)."""

import os
import shutil

import pytest

from govmail.host import backup
from govmail.host.restore import uid_ranges


def test_uids_are_sent_to_doveadm_as_compact_imap_sets_in_bounded_chunks():
    assert uid_ranges([7, 1, 2, 3, 9, 10]) == ["1:3,7,9:10"]
    assert uid_ranges([5]) == ["5"] and uid_ranges([]) == []
    sets = uid_ranges(list(range(1, 3001, 2)))  # 1500 single UIDs
    assert len(sets) == 3 and all(s.count(",") == 499 for s in sets)


NOOP = lambda addresses: None  # noqa: E731


@pytest.fixture
def staging(tmp_path, monkeypatch):
    """The backup tool's mail homes, staging mirror and copy record, in a temporary directory."""
    monkeypatch.setattr(backup, "HOMES", str(tmp_path / "vmail"))
    monkeypatch.setattr(backup, "MAIL_STAGE", str(tmp_path / "stage"))
    monkeypatch.setattr(backup, "SYNCED", str(tmp_path / "synced.json"))


def _maildir(root, address, folders=("",)):
    local, dom = address.split("@")
    md = root / "vmail" / dom / local / "Maildir"
    for f in folders:
        for sub in ("cur", "new", "tmp"):
            (md / f / sub).mkdir(parents=True, exist_ok=True)
    return md


def _bump(path, ns):
    os.utime(path, ns=(ns, ns))


def test_backup_copies_only_mailboxes_that_changed_and_each_one_weekly(tmp_path, staging):
    quiet, busy = "a@x.gov.vn", "b@x.gov.vn"
    md_quiet = _maildir(tmp_path, quiet, ("", ".Sent", ".Sent.2026"))
    md_busy = _maildir(tmp_path, busy)
    copied = []

    def dsync(address):  # stands in for doveadm backup: makes the mirror
        copied.append(address)
        os.makedirs(os.path.join(backup.staged(address), "Maildir"), exist_ok=True)

    t = 1_700_000_000
    assert backup.stage_mail([quiet, busy, "nomail@x.gov.vn"], now=t, dsync=dsync, settle=NOOP) == (2, 0)
    assert sorted(copied) == [quiet, busy]

    copied.clear()
    _bump(md_busy / "new", 1_800_000_000 * 10**9)  # a delivery
    _bump(md_quiet / ".Sent.2026" / "cur", 1_800_000_000 * 10**9)  # a flag changed in a nested folder
    assert backup.stage_mail([quiet, busy], now=t + 60, dsync=dsync, settle=NOOP) == (2, 0)

    copied.clear()
    assert backup.stage_mail([quiet, busy], now=t + 120, dsync=dsync, settle=NOOP) == (0, 2)  # nothing changed
    (md_quiet / "dovecot.index.log").write_bytes(b"x")  # a reader's traces: index, lock file
    (md_quiet / "dovecot-uidlist.lock").write_bytes(b"")
    assert backup.stage_mail([quiet, busy], now=t + 150, dsync=dsync, settle=NOOP) == (0, 2)
    (md_busy / ".Archive" / "cur").mkdir(parents=True)  # a folder created
    assert backup.stage_mail([quiet, busy], now=t + 180, dsync=dsync, settle=NOOP) == (1, 1) and copied == [busy]
    copied.clear()
    (md_busy / "dovecot-uidlist").write_bytes(b"3 V1 N2")  # UIDs given out
    assert backup.stage_mail([quiet, busy], now=t + 190, dsync=dsync, settle=NOOP) == (1, 1) and copied == [busy]

    copied.clear()
    assert backup.stage_mail([quiet, busy], now=t + 8 * 86400, dsync=dsync, settle=NOOP) == (2, 0)  # the weekly copy

    # A mirror lost from the staging area is made again; a mailbox gone from the store leaves it.
    shutil.rmtree(backup.staged(quiet))
    copied.clear()
    assert backup.stage_mail([quiet, busy], now=t + 8 * 86400 + 60, dsync=dsync, settle=NOOP) == (1, 1) and copied == [quiet]
    assert backup.stage_mail([busy], now=t + 8 * 86400 + 120, dsync=dsync, settle=NOOP) == (0, 1)
    assert not os.path.exists(backup.staged(quiet))


def test_a_failed_copy_is_reported_and_tried_again_next_time(tmp_path, staging):
    _maildir(tmp_path, "a@x.gov.vn")
    with pytest.raises(RuntimeError, match="doveadm backup of a@x.gov.vn failed"):
        backup.stage_mail(["a@x.gov.vn"], now=1, dsync=lambda a: f"doveadm backup of {a} failed: disk full",
                          settle=NOOP)
    tried = []
    backup.stage_mail(["a@x.gov.vn"], now=2, dsync=lambda a: tried.append(a)
                      or os.makedirs(os.path.join(backup.staged(a), "Maildir")), settle=NOOP)
    assert tried == ["a@x.gov.vn"]


def test_new_mail_is_settled_before_the_copy_and_a_change_during_it_is_copied_next_time(tmp_path, staging):
    md = _maildir(tmp_path, "a@x.gov.vn")
    clock = iter(range(10**18, 2 * 10**18, 10**9))
    settled, copies = [], []

    def settle(addresses):  # Dovecot takes in new mail: new/ -> cur/
        settled.append(list(addresses))
        _bump(md / "cur", next(clock))

    def dsync(address):
        copies.append(address)
        os.makedirs(os.path.join(backup.staged(address), "Maildir"), exist_ok=True)

    _bump(md / "new", next(clock))  # a delivery
    assert backup.stage_mail(["a@x.gov.vn"], now=1, dsync=dsync, settle=settle) == (1, 0)
    assert settled == [["a@x.gov.vn"]] and copies == ["a@x.gov.vn"]
    # The signature kept is the settled one: the next backup has nothing to do, and settles nothing.
    assert backup.stage_mail(["a@x.gov.vn"], now=2, dsync=dsync, settle=settle) == (0, 1)
    assert len(settled) == 1

    def dsync_meanwhile(address):  # mail arrives during the copy
        dsync(address)
        _bump(md / "new", next(clock))

    _bump(md / "new", next(clock))
    assert backup.stage_mail(["a@x.gov.vn"], now=3, dsync=dsync_meanwhile, settle=settle) == (1, 0)
    assert backup.stage_mail(["a@x.gov.vn"], now=4, dsync=dsync, settle=settle) == (1, 0)  # copied again
    assert backup.stage_mail(["a@x.gov.vn"], now=5, dsync=dsync, settle=settle) == (0, 1)


def test_weekly_copies_of_quiet_mailboxes_spread_over_the_nights(tmp_path, staging):
    people = [f"u{i}@x.gov.vn" for i in range(700)]
    for a in people:
        _maildir(tmp_path, a)

    def dsync(address):
        os.makedirs(os.path.join(backup.staged(address), "Maildir"), exist_ok=True)

    t, day = 1_700_000_000, 86400
    assert backup.stage_mail(people, now=t, dsync=dsync, settle=NOOP) == (700, 0)
    per_night = [backup.stage_mail(people, now=t + n * day, dsync=dsync, settle=NOOP)[0] for n in range(1, 8)]
    assert sum(per_night) == 700  # each mailbox once in the week
    assert max(per_night) < 160, per_night  # about a seventh a night, not all on one
    assert backup.stage_mail(people, now=t + 7 * day + 3600, dsync=dsync, settle=NOOP) == (0, 700)


@pytest.mark.parametrize("code,good", [(0, True), (1, True), (100, True), (107, True), (2, False), (3, False),
                                       (99, False), (128, False)])
def test_a_borg_warning_keeps_the_archive_and_an_error_fails_the_backup(code, good, tmp_path, monkeypatch):
    """Borg's modern exit codes (BORG_EXIT_CODES=modern): 100-127 are warnings, such as the mail log
    changing while it was read (seen in the lab under mail load); an archive made with one is good."""
    script = tmp_path / "borg"
    script.write_text(f"#!/bin/sh\necho 'borg said something' >&2\nexit {code}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    conf = {"passphrase_file": "/dev/null", "ssh_key": "/dev/null", "known_hosts": "/dev/null"}
    if good:
        assert backup.borg(conf, "create", "repo::x").returncode == code
    else:
        with pytest.raises(RuntimeError, match=f"borg create failed \\({code}\\)"):
            backup.borg(conf, "create", "repo::x")
