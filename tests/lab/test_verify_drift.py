"""What runs is what verify sees and what a deploy restores (issue 27): each way an operator or an
intruder broke a deployed province by hand, applied alone to a lab host. `govmail verify` fails
exactly the clauses it breaks, each with the value found, and the next deploy puts the host back
(verify passes again) — or, for a password hash, blocks the login until its owner changes it."""

from __future__ import annotations

import subprocess

import pytest

from govmail.host.contract import PATHS, QUARANTINE

from .conftest import PROVINCES
from .mailing import imap_login
from .test_verify import PROVINCE, junit, verify

STORE = PATHS["store"]


def store_sql(h, sql: str) -> list:
    """A statement on the host's store whatever its engine: rows of a SELECT; anything else written
    (and audited) as an operator's change by hand would be."""
    return h.store(sql, write=not sql.lstrip().upper().startswith("SELECT"))


def victim(h):
    return [a for a in h.cfg.accounts if a.kind == "person" and a.status == "active"][1]


# name -> (the break, {clause: words its failure must hold}, a command whose output shows the repair,
# what it must print after the deploy)
BREAKS = {
    "an open relay through mynetworks": (
        "postconf -e 'mynetworks = 0.0.0.0/0' && postfix reload",
        {"no_open_relay": "mynetworks = 0.0.0.0/0 lets 0.0.0.0/0 relay without logging in",
         "files_as_deployed": "/etc/postfix/main.cf"},
        "postconf -h mynetworks", "127.0.0.0/8"),
    "master.cf overrides: AUTH before STARTTLS on 587, 200 MB on 25": (
        "postconf -P 'submission/inet/smtpd_tls_auth_only=no' 'submission/inet/smtpd_tls_security_level=may' "
        "'smtp/inet/message_size_limit=209715200' && postfix reload",
        {"no_cleartext_auth": "submission/inet (port 587): offers AUTH before TLS",
         "size_limit": "smtp/inet: message_size_limit = 209,715,200",
         "files_as_deployed": "/etc/postfix/master.cf"},
        "postconf -P | grep -c 'message_size_limit\\|smtpd_tls_auth_only = no' || true", "0"),
    "DKIM signing off in rspamd's override.d": (
        "echo 'enabled = false;' > /etc/rspamd/override.d/dkim_signing.conf && systemctl reload rspamd && sleep 1",
        {"dkim_signing": "is not signed for", "no_foreign_config": "/etc/rspamd/override.d/dkim_signing.conf"},
        "ls /etc/rspamd/override.d/dkim_signing.conf 2>&1 || true", "No such file"),
    "the antivirus off in rspamd's override.d": (
        "echo 'enabled = false;' > /etc/rspamd/override.d/antivirus.conf && systemctl reload rspamd && sleep 1",
        {"antivirus": "the EICAR test file: action", "no_foreign_config": "/etc/rspamd/override.d/antivirus.conf"},
        "ls /etc/rspamd/override.d/antivirus.conf 2>&1 || true", "No such file"),
    "fail2ban's ignoreip widened by a jail.d file": (
        "printf '[DEFAULT]\\nignoreip = 127.0.0.1/8 0.0.0.0/0\\n' > '/etc/fail2ban/jail.d/zz office.local' && "
        "fail2ban-client reload >/dev/null",
        {"bruteforce": "never bans 0.0.0.0/0", "no_foreign_config": "/etc/fail2ban/jail.d/zz office.local"},
        "fail2ban-client get postfix-sasl ignoreip | grep -c 0.0.0.0 || true", "0"),
    "mail.* stop in rsyslog.d": (
        "echo 'mail.* stop' > /etc/rsyslog.d/00-quiet.conf && systemctl restart rsyslog",
        {"mail_log": "did not reach /var/log/mail.log", "no_foreign_config": "/etc/rsyslog.d/00-quiet.conf"},
        "logger -p mail.info govmail-drift-repaired && sleep 1 && grep -c govmail-drift-repaired /var/log/mail.log",
        "1"),
    "a self-signed certificate for another name on every TLS port": (
        "cd /etc/govmail/tls && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 "
        "-subj /CN=evil.example -keyout privkey.pem -out fullchain.pem 2>/dev/null && "
        "systemctl reload postfix dovecot nginx",
        {"tls_certificate": "does not name"},
        "openssl x509 -in /etc/govmail/tls/fullchain.pem -noout -subject", "CN=mail."),
    "rspamd stopped": (
        "systemctl stop rspamd",
        {"services_running": "11333 (rspamd): nothing listens", "spam_filter": "rspamd: running=False",
         "attachment_rules": "rspamd: running=False", "archive_inspection": "rspamc",
         "sender_bound": "rspamd: running=False", "antivirus": "rspamc", "dkim_signing": "rspamc"},
        "systemctl is-active rspamd", "active"),
    # systemd may go on saying postfix.service is active (it did in CI): the ports are what count.
    "Postfix's master stopped by hand": (
        "postfix stop",
        {"services_running": "25 (Postfix (SMTP)): nothing listens", "client_ports": "not listening"},
        "postfix status 2>&1", "is running"),
}


# Clauses a break may also fail, depending on the host: when systemd notices Postfix's master is gone,
# the operations report's list of running services says so too.
MAY_ALSO = {"Postfix's master stopped by hand": {"operations_report"}}


@pytest.mark.parametrize("name", BREAKS)
def test_a_break_by_hand_fails_verify_naming_it_and_the_next_deploy_repairs_it(name, lab_hosts, tmp_path):
    h = lab_hosts[PROVINCE]
    brk, expected, show, repaired = BREAKS[name]
    try:
        h.run(brk)
        r = verify(tmp_path / "broken")
        assert r.returncode == 1, r.stdout[-3000:]
        _, cases = junit(tmp_path / "broken", h.name)
        failed = {k: c.find("failure").get("message") for k, c in cases.items() if c.find("failure") is not None}
        assert set(expected) <= set(failed) <= set(expected) | MAY_ALSO.get(name, set()), failed
        for clause, words in expected.items():
            assert words in failed[clause], (clause, failed[clause])
            assert "CommandResult" not in failed[clause]
    finally:
        d = subprocess.run(["govmail", "deploy", PROVINCE], capture_output=True, text=True, timeout=900)
    assert d.returncode == 0, d.stdout + d.stderr
    assert repaired in h.run(show).stdout
    after = verify(tmp_path / "after")
    assert after.returncode == 0, after.stdout[-3000:]


def test_a_foreign_file_moved_by_the_deploy_is_kept_in_the_quarantine_whatever_its_name(lab_hosts):
    h = lab_hosts[PROVINCE]
    kept = h.run(f"find {QUARANTINE} -path '*/etc/fail2ban/jail.d/zz office.local'").stdout.splitlines()
    assert kept and "0.0.0.0/0" in h.run(f"cat '{kept[-1]}'").stdout


def test_a_store_row_changed_by_hand_fails_verify_and_the_next_deploy_puts_it_back(lab_hosts, tmp_path):
    h = lab_hosts[PROVINCE]
    v = victim(h)
    try:
        store_sql(h, f"UPDATE accounts SET quota_mb = 0 WHERE address = '{v.address}'")
        store_sql(h, "DELETE FROM aliases WHERE address = (SELECT max(address) FROM aliases)")
        assert verify(tmp_path / "broken").returncode == 1
        _, cases = junit(tmp_path / "broken", h.name)
        failed = {k: c.find("failure").get("message") for k, c in cases.items() if c.find("failure") is not None}
        lists = {f"list_members:{ml.address}" for ml in h.cfg.model.directory.lists if ml.article}
        want = {"quota_per_mailbox", "accounts_as_data"} | ({"quota_max"} if h.cfg.policy.quota.max_mb else set())
        assert want <= set(failed) and set(failed) - want <= lists, failed  # and the list's clause, if it has one
        assert f"'{v.address}': ('unlimited', {v.quota_mb})" in failed["quota_per_mailbox"]
        assert f"{v.address}: quota_mb 0, the data says {v.quota_mb}" in failed["accounts_as_data"]
        assert "lists differ from the data" in failed["accounts_as_data"]
    finally:
        d = subprocess.run(["govmail", "deploy", PROVINCE], capture_output=True, text=True, timeout=900)
    assert d.returncode == 0, d.stdout + d.stderr
    assert store_sql(h, f"SELECT quota_mb FROM accounts WHERE address = '{v.address}'") == [[v.quota_mb]]
    assert verify(tmp_path / "after").returncode == 0


def test_a_weak_hash_written_into_the_store_is_flagged_and_its_owner_must_change_it(lab_hosts, tmp_path):
    h = lab_hosts[PROVINCE]
    v = victim(h)
    before = store_sql(h, f"SELECT password, must_change FROM accounts WHERE address = '{v.address}'")
    try:
        store_sql(h, f"UPDATE accounts SET password = '{{PLAIN}}hunter2-Hunter2' WHERE address = '{v.address}'")
        assert "weak form: change it at" in imap_login(h, v.address, "hunter2-Hunter2")
        assert verify(tmp_path / "broken").returncode == 1
        _, cases = junit(tmp_path / "broken", h.name)
        failed = {k: c.find("failure").get("message") for k, c in cases.items() if c.find("failure") is not None}
        assert set(failed) == {"password_hashes_strong"}, failed
        assert f"{v.address} ({{PLAIN}}; login blocked until changed)" in failed["password_hashes_strong"]
        # A deploy cannot choose a password for them: the login stays blocked.
        d = subprocess.run(["govmail", "deploy", PROVINCE], capture_output=True, text=True, timeout=900)
        assert d.returncode == 0, d.stdout + d.stderr
        assert "weak form" in imap_login(h, v.address, "hunter2-Hunter2")
        # Its owner changes it (the password service's own code, as the web mail's form calls it).
        h.run(f"{PATHS['lib']}/accounts change-password {v.address}", input="hunter2-Hunter2\nMật-khẩu-Mới-2026\n")
        assert imap_login(h, v.address, "Mật-khẩu-Mới-2026") == "OK"
        assert verify(tmp_path / "after").returncode == 0
    finally:
        [[pw, must]] = before
        store_sql(h, f"UPDATE accounts SET password = '{pw}', must_change = {must} WHERE address = '{v.address}'")


@pytest.mark.skipif(len(PROVINCES) < 2, reason="needs a second province")
def test_issued_passwords_are_hashed_at_the_full_cost_on_the_host(lab_hosts):
    h = lab_hosts[PROVINCES[1]]
    h.run(f"{PATHS['lib']}/accounts strengthen")
    costs = store_sql(h, "SELECT substr(password, 13, 6), count(*) FROM accounts WHERE password IS NOT NULL GROUP BY 1")
    assert "$04$" not in str(costs) and "$11$" in str(costs), costs
