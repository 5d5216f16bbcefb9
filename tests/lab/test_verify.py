"""`govmail verify`: the compliance checks against a province's hosts, read-only, with reports an
inspector can read. Run here as an operator would against real machines (GOVMAIL_TARGET=hosts,
reached only through an SSH configuration), with settings broken by hand, and against a host that
is not there."""

from __future__ import annotations

import os
import re
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from govmail import lab
from govmail.compliance.clauses import clauses

from .browser import Browser
from .conftest import PROVINCES

PROVINCE = PROVINCES[0]


def verify(out, env=None):
    r = subprocess.run(["govmail", "verify", PROVINCE, "--out", str(out)], capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, timeout=600)
    return r


def junit(out, host):
    """The JUnit report: the suite, and its test cases by clause (check name and argument)."""
    suite = ET.parse(out / f"{host}.junit.xml").getroot()
    key = {c: next(p.get("value") for p in c.iter("property") if p.get("name") == "check") for c in suite.iter("testcase")}
    return suite, {k: c for c, k in key.items()}


def ssh_config(tmp_path, hosts: dict[str, str]) -> str:
    """An operator's SSH configuration: the province's host names, each to an address."""
    p = tmp_path / "ssh_config"
    p.write_text("".join(
        f"Host {name}\n  HostName {ip}\n  User root\n  IdentityFile {lab.ssh_key()}\n  StrictHostKeyChecking no\n"
        f"  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n" for name, ip in hosts.items()))
    return str(p)


def test_verify_reaches_a_province_by_ssh_alone_and_writes_reports_an_inspector_can_read(lab_hosts, tmp_path, request):
    h = lab_hosts[PROVINCE]
    state = lab.load_state()["hosts"]
    names = [x.name for x in h.cfg.model.hosts]
    # Not the lab target: the hosts of the data file, reached through a plain SSH configuration, the
    # published records read from a resolver, as against the province's real machines.
    env = {"GOVMAIL_TARGET": "hosts", "GOVMAIL_SSH_CONFIG": ssh_config(tmp_path, {n: state[n]["ip"] for n in names}),
           "GOVMAIL_RESOLVER": lab.GATEWAY}
    r = verify(tmp_path / "reports", env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    n = len(clauses(h.cfg))
    suite, _ = junit(tmp_path / "reports", h.name)
    assert suite.get("tests") == str(n) and suite.get("failures") == "0"
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["target"] == "hosts" and props["hostname"] == h.name and re.fullmatch(r"[0-9a-f]{32}", props["machine_id"])
    md = (tmp_path / "reports" / f"{h.name}.md").read_text()
    assert "| **FAIL** |" not in md and f"{h.cfg.model.domain_article} | mail domain is {h.cfg.domain}" in md
    own = sum(c.own for c in clauses(h.cfg))
    assert f"{own}/{own} of the province's own clauses pass; {n - own}/{n - own} govmail defaults" in md

    # The HTML, as an inspector opens it.
    b = Browser(request.node.name, [])
    try:
        b.driver.get((tmp_path / "reports" / f"{h.name}.html").as_uri())
        text = b.driver.find_element("tag name", "body").text
        assert f"ĐẠT / PASS: {n} of {n}" in text and h.cfg.model.name in text and h.name in text
        assert len(b.driver.find_elements("css selector", "tr.pass")) == n
        b.shot("verify-report")
    finally:
        b.close()


def test_a_setting_broken_by_hand_makes_verify_fail_naming_its_clause_with_the_value_found(lab_hosts, tmp_path, request):
    h = lab_hosts[PROVINCE]
    victim = next(a for a in h.cfg.accounts if a.kind == "person" and a.status == "active")
    h.run("cp -a /etc/logrotate.d/govmail-mail /root/govmail-mail.verify && cp -a /etc/postfix/main.cf /root/main.cf.verify")
    try:
        # Three hand edits an operator could make: log rotation shortened, TLS 1.0 allowed again,
        # one mailbox's quota changed in the store.
        h.run(r"sed -i 's/^\(\s*\)rotate [0-9]*/\1rotate 1/' /etc/logrotate.d/govmail-mail")
        h.run("postconf -e 'smtpd_tls_protocols = >=TLSv1'")
        h.store(f"UPDATE accounts SET quota_mb = quota_mb - 7 WHERE address = '{victim.address}'", write=True)
        r = verify(tmp_path)
        assert r.returncode == 1, r.stdout[-3000:]
        suite, cases = junit(tmp_path, h.name)
        failed = {k: c.find("failure").get("message") for k, c in cases.items() if c.find("failure") is not None}
        expected = {"mail_log_retention", "no_cleartext_auth", "quota_per_mailbox", "files_as_deployed",
                    "accounts_as_data"}
        if h.cfg.policy.quota.min_mb and victim.quota_mb - 7 < h.cfg.policy.quota.min_mb:
            expected.add("quota_min")  # under the decision's floor as well
        assert set(failed) == expected, failed
        assert "rotate 1" in failed["mail_log_retention"]
        assert "smtpd_tls_protocols = >=TLSv1, expected >=TLSv1.2" in failed["no_cleartext_auth"]
        assert f"{victim.address}: quota_mb {victim.quota_mb - 7}, the data says {victim.quota_mb}" in \
            failed["accounts_as_data"]
        assert f"'{victim.address}': ({victim.quota_mb - 7}, {victim.quota_mb})" in failed["quota_per_mailbox"]
        # The two edited files, named as edited since the deploy (the store is not a file govmail writes).
        assert "changed since the deploy: " in failed["files_as_deployed"]
        assert "/etc/logrotate.d/govmail-mail" in failed["files_as_deployed"] and "/etc/postfix/main.cf" in failed["files_as_deployed"]
        # Each names its clause and article in the reports.
        html = (tmp_path / f"{h.name}.html").read_text()
        assert html.count('<tr class="fail"') == len(expected) and h.cfg.policy.logs.article in html
        assert f"FAIL  {h.cfg.policy.logs.article} mail logs rotated monthly" in r.stdout
        recap = r.stdout.split(f"{h.name}: {len(expected)} failed:\n", 1)[1]  # told again, together, at the end
        assert recap.count("  FAIL  ") == len(expected) and "PASS" not in recap, recap
        b = Browser(request.node.name, [])
        try:
            b.driver.get((tmp_path / f"{h.name}.html").as_uri())
            assert f"KHÔNG ĐẠT / FAIL: {len(expected)} of" in b.driver.find_element("tag name", "body").text
            b.driver.execute_script("document.querySelector('tr.fail').scrollIntoView()")
            b.shot("verify-report-with-failures")
        finally:
            b.close()
    finally:
        h.run("cp -a /root/govmail-mail.verify /etc/logrotate.d/govmail-mail && cp -a /root/main.cf.verify /etc/postfix/main.cf"
              " && rm /root/govmail-mail.verify /root/main.cf.verify")
        h.store(f"UPDATE accounts SET quota_mb = {victim.quota_mb} WHERE address = '{victim.address}'", write=True)
    assert h.run("postconf -h smtpd_tls_protocols").stdout.strip() == ">=TLSv1.2"


def test_verify_of_a_host_that_is_not_there_fails_every_clause_with_the_reason_and_does_not_hang(lab_hosts, tmp_path):
    h = lab_hosts[PROVINCE]
    names = [x.name for x in h.cfg.model.hosts]
    env = {"GOVMAIL_TARGET": "hosts", "GOVMAIL_SSH_CONFIG": ssh_config(tmp_path, dict.fromkeys(names, "10.77.0.250")),
           "GOVMAIL_RESOLVER": lab.GATEWAY}
    t = time.monotonic()
    r = verify(tmp_path / "reports", env)
    assert time.monotonic() - t < 60
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"govmail: {h.name} not reached: " in r.stderr
    suite, cases = junit(tmp_path / "reports", h.name)
    assert suite.get("failures") == suite.get("tests") == str(len(clauses(h.cfg)))
    assert all("not reached" in c.find("failure").get("message") for c in cases.values())


@pytest.mark.skipif("laichau" not in PROVINCES, reason="Lai Châu's data names the probe mailbox (verify.probe_mailbox)")
def test_active_verify_probes_the_ports_from_the_network_delivers_its_probe_and_removes_it(lab_hosts, tmp_path):
    h = lab_hosts["laichau"]
    probe = h.cfg.model.verify.probe_mailbox

    def messages() -> int:
        rows = h.run(f"doveadm -f tab mailbox status -u {probe} messages '*'").stdout.splitlines()[1:]
        return sum(int(row.split("\t")[-1]) for row in rows)

    def active(out):
        return subprocess.run(["govmail", "verify", "laichau", "--active", "--out", str(out)], capture_output=True,
                              text=True, timeout=600)

    before = messages()
    r = active(tmp_path / "ok")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    suite, cases = junit(tmp_path / "ok", h.name)
    assert suite.get("tests") == str(len(clauses(h.cfg, active=True))) == str(len(clauses(h.cfg)) + 4)
    tls = cases["probe_tls_versions"].find("system-out").text
    assert re.search(r"4190: TLSv1\.[23] \S+, 1\.0/1\.1 refused", tls), tls  # ManageSieve, through govmail's guard
    evidence = cases[f"probe_delivery:{probe}"].find("system-out").text
    assert f"delivered to {probe} (INBOX)" in evidence and evidence.endswith("then removed"), evidence
    assert messages() == before  # delivered, found, and removed: nothing left behind
    qid = re.search(r"queued as ([0-9A-F]+)", evidence).group(1)
    assert re.search(rf"{qid}: to=<{re.escape(probe)}>.*status=sent", h.run(f"grep -h {qid} /var/log/mail.log").stdout)
    assert "Relay access denied" in cases["probe_relay_refused"].find("system-out").text

    # TLS 1.0 and 1.1 allowed again on Postfix by hand: seen from the network, on every Postfix port.
    h.run("cp -a /etc/postfix/main.cf /root/main.cf.active && postconf -e 'smtpd_tls_protocols = >=TLSv1' "
          "'smtpd_tls_mandatory_protocols = >=TLSv1' 'tls_medium_cipherlist = ALL:@SECLEVEL=0' && postfix reload")
    try:
        r = active(tmp_path / "broken")
        assert r.returncode == 1, r.stdout[-3000:]
        _, cases = junit(tmp_path / "broken", h.name)
        failed = {k: c.find("failure").get("message") for k, c in cases.items() if c.find("failure") is not None}
        # (and main.cf is no longer what the deploy wrote)
        assert set(failed) == {"no_cleartext_auth", "probe_tls_versions", "files_as_deployed"}, failed
        for port in (25, 587, 465):
            assert f"{port}: TLS 1.0 accepted (TLSv1 " in failed["probe_tls_versions"], failed["probe_tls_versions"]
        assert "993: TLS" not in failed["probe_tls_versions"].split(" | ")[0]  # Dovecot still refuses them
        assert f"FAIL  {h.cfg.policy.secrecy.article} seen from the network: every TLS port refuses TLS 1.0" in r.stdout
    finally:
        h.run("cp -a /root/main.cf.active /etc/postfix/main.cf && rm /root/main.cf.active && postfix reload")
    assert messages() == before
