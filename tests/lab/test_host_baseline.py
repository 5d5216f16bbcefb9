"""The host baseline (govmail/services/system.py) on real lab hosts: every timer the host needs has a
next run from the first deploy on (Debian's logrotate too, which really rotates the mail log), SSH
takes keys only, and verify reads what systemd and sshd say now: a stopped timer or an sshd drop-in
that lets root in with a password fails its clause with the value found (issue 27)."""

from __future__ import annotations

import os
import subprocess
import time

import paramiko
import pytest

from govmail.host.contract import IDLE_TIMERS_COMMAND, QUARANTINE

from .conftest import PROVINCES
from .test_verify import PROVINCE, junit, verify


@pytest.mark.parametrize("province", PROVINCES)
def test_every_enabled_timer_of_every_host_has_a_next_run_after_the_deploy(province, lab_hosts):
    h = lab_hosts[province]
    for run in (h.run, h.backup_run):
        assert run(IDLE_TIMERS_COMMAND).stdout.split() == []
    for timer in ("logrotate.timer", "phpsessionclean.timer", "govmail-backup.timer"):
        assert h.run(f"systemctl show -P NextElapseUSecRealtime {timer}").stdout.strip() not in ("", "0"), timer
    assert h.backup_run("systemctl show -P NextElapseUSecRealtime govmail-prune.timer").stdout.strip() not in ("", "0")


def test_debians_logrotate_service_rotates_the_mail_log_when_a_month_has_passed(lab_hosts):
    h = lab_hosts[PROVINCES[0]]
    before = set(h.run("ls /var/log/ | grep '^mail.log-' || true").stdout.split())
    # logrotate last saw mail.log 40 days ago: the monthly rotation is due, as on the first of a month.
    old = time.strftime("%Y-%-m-%-d-%H:%M:%S", time.gmtime(time.time() - 40 * 86400))
    h.run("grep -q '\"/var/log/mail.log\"' /var/lib/logrotate/status || systemctl start logrotate.service; "
          f"sed -i 's|^\"/var/log/mail.log\" .*|\"/var/log/mail.log\" {old}|' /var/lib/logrotate/status")
    h.run("logger -p mail.info govmail-before-the-monthly-rotation && sleep 1 && systemctl start logrotate.service")
    after = set(h.run("ls /var/log/ | grep '^mail.log-' || true").stdout.split())
    assert after - before, "logrotate.service did not rotate mail.log"
    [new] = sorted(n for n in after - before if not n.endswith(".gz"))  # the older one is compressed now
    assert "govmail-before-the-monthly-rotation" in h.run(f"cat /var/log/{new}").stdout
    h.run("logger -p mail.info govmail-after-the-monthly-rotation")
    for _ in range(20):
        if "govmail-after-the-monthly-rotation" in h.run("cat /var/log/mail.log").stdout:
            break
        time.sleep(0.5)
    assert "govmail-after-the-monthly-rotation" in h.run("cat /var/log/mail.log").stdout  # rsyslog reopened it


def test_ssh_offers_keys_only_even_to_root(lab_hosts):
    h = lab_hosts[PROVINCES[0]]
    for ip in (h.ip, h.backup_ip):
        t = paramiko.Transport((ip, 22))
        try:
            t.connect()
            with pytest.raises(paramiko.BadAuthenticationType) as e:
                t.auth_password("root", "mat-khau-doan")
            assert e.value.allowed_types == ["publickey"], e.value.allowed_types
        finally:
            t.close()


def test_a_stopped_timer_and_a_drop_in_letting_root_in_by_password_fail_verify_naming_what_was_found(
        lab_hosts, tmp_path):
    h = lab_hosts[PROVINCE]
    drop_in = "/etc/ssh/sshd_config.d/00-a-local.conf"  # sorts before govmail's 00-govmail.conf: it wins
    try:
        h.run("systemctl stop logrotate.timer")
        h.run(f"printf 'PermitRootLogin yes\\nPasswordAuthentication yes\\n' > {drop_in} && systemctl reload ssh")
        r = verify(tmp_path)
        assert r.returncode == 1, r.stdout[-3000:]
        _, cases = junit(tmp_path, h.name)
        failed = {k: c.find("failure").get("message") for k, c in cases.items() if c.find("failure") is not None}
        assert set(failed) == {"timers_scheduled", "ssh_keys_only", "no_foreign_config"}, failed
        assert "no next run: logrotate.timer" in failed["timers_scheduled"]
        assert "passwordauthentication yes" in failed["ssh_keys_only"] and "permitrootlogin yes" in failed["ssh_keys_only"]
        assert drop_in in failed["no_foreign_config"]
        # The next deploy starts the timer again and moves the drop-in to the quarantine (kept, not deleted).
        d = subprocess.run(["govmail", "deploy", PROVINCE], capture_output=True, text=True)
        assert d.returncode == 0, d.stdout + d.stderr
        assert h.run("systemctl is-active logrotate.timer").stdout.strip() == "active"
        kept = h.run(f"find {QUARANTINE} -path '*{drop_in}'").stdout.split()
        assert kept and "PermitRootLogin yes" in h.run(f"cat {kept[-1]}").stdout
        assert h.run(f"test -e {drop_in}", check=False).returncode == 1
        assert "permitrootlogin without-password" in h.run("sshd -T").stdout
        assert verify(tmp_path / "after").returncode == 0
    finally:
        h.run(f"rm -f {drop_in} && systemctl reload ssh && systemctl start logrotate.timer")
    assert "permitrootlogin without-password" in h.run("sshd -T").stdout


def test_a_file_the_data_lists_as_the_hosts_own_is_kept_by_the_deploy(lab_hosts, tmp_path):
    """hosts[].local_files: the province's own jail.d file stays where it is, and verify accepts it."""
    import shutil

    import yaml

    from govmail.data import ROOT

    h = lab_hosts[PROVINCE]
    own = "/etc/fail2ban/jail.d/office.local"
    data = tmp_path / "data"
    shutil.copytree(ROOT / "group_data", data)
    doc = yaml.safe_load((data / f"{PROVINCE}.yml").read_text())
    next(x for x in doc["hosts"] if x["name"] == h.name)["local_files"] = [own]
    (data / f"{PROVINCE}.yml").write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    env = {**os.environ, "GOVMAIL_DATA_DIR": str(data)}
    try:
        h.run(f"printf '[govmail-dovecot]\\nfindtime = 20m\\n' > {own}")
        d = subprocess.run(["govmail", "deploy", PROVINCE], capture_output=True, text=True, env=env)
        assert d.returncode == 0, d.stdout + d.stderr
        assert "findtime = 20m" in h.run(f"cat {own}").stdout  # kept in place
        d = subprocess.run(["govmail", "deploy", PROVINCE], capture_output=True, text=True)  # the data without it
        assert d.returncode == 0, d.stdout + d.stderr
        assert h.run(f"test -e {own}", check=False).returncode == 1
    finally:
        h.run(f"rm -f {own}")


def test_security_updates_come_from_the_security_suite_only_on_every_host(lab_hosts):
    h = lab_hosts[PROVINCES[0]]
    for run in (h.run, h.backup_run):
        assert "-security" in run("apt-cache policy").stdout
        dry = run("unattended-upgrade --dry-run -v 2>&1 | grep -m1 'Allowed origins are'").stdout
        assert dry.strip() == "Allowed origins are: origin=Debian,codename=trixie-security,label=Debian-Security", dry


def test_a_reboot_an_update_asked_for_fails_verify_naming_its_packages(lab_hosts, tmp_path):
    h = lab_hosts[PROVINCE]
    try:
        h.backup_run("echo '*** System restart required ***' > /run/reboot-required && "
                     "printf 'linux-image-amd64\\nlibc6\\n' > /run/reboot-required.pkgs")
        r = verify(tmp_path)
        assert r.returncode == 1, r.stdout[-3000:]
        _, cases = junit(tmp_path, h.name)
        failed = {k: c.find("failure").get("message") for k, c in cases.items() if c.find("failure") is not None}
        assert set(failed) == {"security_updates"}, failed
        # The host that fails first, named, with the packages; then the hosts where the clause holds.
        said = failed["security_updates"]
        assert said.startswith(f"{h.cfg.backup_host}: a reboot is needed since "), said
        assert f"for libc6, linux-image-amd64; {h.name}: security suite on" in said, said
    finally:
        h.backup_run("rm -f /run/reboot-required /run/reboot-required.pkgs")


def test_dovecots_unread_conf_d_holds_only_a_note_saying_where_the_configuration_lives(lab_hosts):
    h = lab_hosts[PROVINCES[0]]
    assert h.run("ls /etc/dovecot/conf.d").stdout.split() == ["README"]
    note = h.run("cat /etc/dovecot/conf.d/README").stdout
    assert "Nothing in this directory is read" in note and "/etc/dovecot/dovecot.conf" in note
    assert h.run(f"find {QUARANTINE} -path '*/etc/dovecot/conf.d/10-auth.conf'").stdout.strip()  # kept, not deleted
    assert "conf.d" not in h.run("doveconf -n").stdout
