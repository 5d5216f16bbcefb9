"""Backups to the backup host, restores, and the mail logs' retention, on real lab hosts."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from .conftest import PROVINCES
from .test_lifecycle import wait_for_mail

TOOL = "/usr/local/lib/govmail/backup"


def govmail(*args, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run(["govmail", *args], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def save(h, address, subject, body="nội dung"):
    h.run(f"printf 'Subject: {subject}\\nMessage-ID: <{abs(hash(subject))}@lab.test>\\n\\n{body}\\n' "
          f"| doveadm save -u {address}")


def count(h, address, subject) -> int:
    out = h.run(f"doveadm search -u {address} mailbox INBOX header Subject '{subject}'", check=False).stdout
    return len(out.splitlines())  # one line per message: "<mailbox guid> <uid>"


@pytest.mark.parametrize("province", PROVINCES)
def test_a_backup_reaches_the_backup_host_encrypted_and_the_status_shows_its_age_and_size(province, lab_hosts):
    h = lab_hosts[province]
    a = next(x for x in h.cfg.accounts if x.kind == "person").address
    save(h, a, "Bí mật sao lưu 42")
    govmail("backup", "run", province)
    out = govmail("backup", "status", province).stdout
    assert h.cfg.mail_host in out and " ok " in out and "h ago" in out and "MiB of data" in out, out
    # Encrypted at rest: no message text is readable in the repository on the backup host.
    repo = f"/srv/govmail-backup/{h.cfg.mail_host}"
    assert h.backup_run(f"grep -r -l 'Bí mật sao lưu 42' {repo}", check=False).returncode == 1
    assert h.backup_run(f"du -sb {repo}/data").stdout.split()[0] != "0"


def test_the_mail_hosts_key_cannot_open_a_shell_on_the_backup_host(lab_hosts):
    h = lab_hosts[PROVINCES[0]]
    r = h.run(f"ssh -i /etc/govmail/backup/id_ed25519 -o BatchMode=yes -o StrictHostKeyChecking=accept-new "
              f"-o UserKnownHostsFile=/etc/govmail/backup/known_hosts govmail-backup@{h.cfg.backup_host} "
              f"'touch /tmp/owned; echo shell'", check=False)
    assert "shell" not in r.stdout
    assert h.backup_run("test -e /tmp/owned", check=False).returncode == 1


def test_one_mailbox_comes_back_as_it_was_without_duplicates_and_without_touching_the_others(lab_hosts):
    h = lab_hosts[PROVINCES[0]]
    people = [x.address for x in h.cfg.accounts if x.kind == "person" and x.status == "active"]
    victim, neighbour = people[10], people[11]
    run = int(time.time())  # subjects of this run only
    one, two, three, other = (f"Công văn {run}-1", f"Công văn {run}-2", f"Công văn {run}-3", f"Thư hàng xóm {run}")
    save(h, victim, one)
    save(h, victim, two)
    save(h, neighbour, other)
    govmail("backup", "run", h.province)
    before_restore = time.strftime("%Y-%m-%dT%H:%M:%S")
    # The user deletes a message by mistake; new mail arrives; the neighbour empties a message too.
    h.run(f"doveadm expunge -u {victim} mailbox INBOX header Subject '{one}'")
    save(h, victim, three)
    h.run(f"doveadm expunge -u {neighbour} mailbox INBOX header Subject '{other}'")
    r = govmail("backup", "restore-mailbox", victim, "--at", before_restore, "--folder", "INBOX")
    assert "merged with its current mail" in r.stdout
    assert count(h, victim, one) == 1  # back
    assert count(h, victim, two) == 1  # not duplicated
    assert count(h, victim, three) == 1  # newer mail kept
    assert count(h, neighbour, other) == 0  # another mailbox untouched
    # Restoring again changes nothing: the restored message kept its GUID.
    govmail("backup", "restore-mailbox", victim, "--at", before_restore)
    assert count(h, victim, one) == 1 and count(h, victim, two) == 1
    assert f"restored-mail\t{victim}" in h.run("/usr/local/lib/govmail/accounts audit --limit 5").stdout


def test_a_mailbox_made_anew_since_its_last_copy_is_still_backed_up(lab_hosts):
    """A mailbox deleted and re-created, or filled by a migration or a restore, has a new INBOX: its
    mirror from the last backup no longer matches and dsync cannot bring it round ("INBOX can't be
    deleted"). Every nightly backup failed for such a mailbox until it was copied afresh."""
    h = lab_hosts[PROVINCES[0]]
    province = h.province
    a = [x for x in h.cfg.accounts if x.kind == "person"][-2].address
    local, domain = a.split("@")
    save(h, a, "Trước khi làm lại")
    govmail("backup", "run", province)
    h.run(f"doveadm kick {a} >/dev/null; rm -rf /var/vmail/{domain}/{local}/Maildir")  # made anew, as a re-creation is
    save(h, a, "Hộp thư làm lại")
    r = govmail("backup", "run", province)
    assert json.loads(r.stdout.splitlines()[-1])["ok"], r.stdout + r.stderr
    mirror = f"/var/backups/govmail/mail/{domain}/{local}/Maildir"
    found = h.run(f"doveadm -o mail_path={mirror} search -u {a} mailbox INBOX header Subject 'Hộp thư làm lại'",
                  check=False).stdout
    assert found.strip(), "the mailbox's new mail is not in its backup copy"


def test_a_failed_backup_and_a_late_backup_are_mailed_to_the_administrators(lab_hosts):
    h = lab_hosts[PROVINCES[0]]
    admin = h.cfg.postmaster
    h.run("mv /etc/govmail/backup/passphrase /etc/govmail/backup/passphrase.away")
    try:
        r = govmail("backup", "run", h.province, check=False)
        assert r.returncode != 0
    finally:
        h.run("mv /etc/govmail/backup/passphrase.away /etc/govmail/backup/passphrase")
    assert wait_for_mail(h, admin, "header Subject 'BACKUP FAILED'"), "no failure mail"
    st = json.loads(h.run(f"{TOOL} status", check=False).stdout)
    assert st["last_error"] and st["error"]
    # 30 hours later without a good backup: late, mailed once.
    later = int(time.time()) + 30 * 3600
    assert h.run(f"{TOOL} check --now {later}", check=False).returncode == 1
    assert wait_for_mail(h, admin, "header Subject 'backup LATE'"), "no late mail"
    status = govmail("backup", "status", h.province, check=False)
    assert status.returncode == 1 and " FAILED " in status.stdout and "last error" in status.stdout, status.stdout
    # The next good run ends it.
    govmail("backup", "run", h.province)
    status = govmail("backup", "status", h.province, check=False)
    assert status.returncode == 0 and " ok " in status.stdout, status.stdout


def test_backup_status_without_a_province_lists_every_host_that_backs_up_in_the_lab(lab_hosts):
    r = govmail("backup", "status", check=False)
    lines = r.stdout.splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(
        n for h in lab_hosts.values() for n in [h.cfg.mail_host, *h.cfg.stores_apart]), r.stdout  # a store apart too
    # Every province backed up in time by the first test of this file: exit 0 only then.
    assert r.returncode == (0 if all(" ok " in line for line in lines) else 1), r.stdout


def test_rotating_the_mail_log_loses_no_line_and_keeps_the_old_file_compressed_later(lab_hosts):
    h = lab_hosts[PROVINCES[0]]
    h.run("logger -p mail.info govmail-before-rotation && sleep 1 && logrotate -f /etc/logrotate.d/govmail-mail")
    h.run("logger -p mail.info govmail-after-rotation")
    for _ in range(20):
        if "govmail-after-rotation" in h.run("cat /var/log/mail.log").stdout:
            break
        time.sleep(0.5)
    assert "govmail-after-rotation" in h.run("cat /var/log/mail.log").stdout  # rsyslog reopened the file
    assert "govmail-before-rotation" in h.run("cat /var/log/mail.log-*[0-9]", check=False).stdout
