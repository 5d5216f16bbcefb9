"""The compliance package without a lab: every clause has its check and its article, the reports
escape what a host said for the format they land in, and a host that cannot be reached fails every
clause with the reason (real ssh against a closed port), quickly."""

import datetime
import time
import xml.etree.ElementTree as ET

import pytest

from govmail.compliance import report
from govmail.compliance.checks import CHECKS
from govmail.compliance.clauses import Clause, clauses
from govmail.compliance.verify import HostRun, Result, verify
from govmail.data import available_provinces, load_province


@pytest.mark.parametrize("province", available_provinces())
def test_every_clause_of_a_province_has_a_check_and_cites_an_article(province):
    cfg = load_province(province)
    cs = clauses(cfg)
    assert cs and len({c.key for c in cs}) == len(cs), "two clauses with one key"
    for c in cs:
        assert c.check in CHECKS, c
        assert c.article and (c.own or c.article.startswith("govmail default (")), c


HOSTILE = 'found <script>alert(1)</script> | `x` & "q" \x1b ]]>'


def hostile_run() -> HostRun:
    t = datetime.datetime(2026, 12, 2, 10, 0, tzinfo=datetime.timezone.utc)
    run = HostRun("daknong", "Đắk Nông <b>", ["DN: Quyết định 12/2012/QĐ-UBND (2012-08-17)"], "mail.daknong.gov.vn",
                  "hosts", t, identity={"hostname": "<img src=x>"}, finished=t)
    run.results = [Result(Clause("mail_log", "", "DN Art. 11.2.e", "mail log <kept>"), False, HOSTILE, 0.1),
                   Result(Clause("utf8", "", "govmail default (x)", "UTF-8"), True, "ok & fine", 0.1)]
    return run


def test_the_html_report_escapes_what_the_host_said():
    html = report.to_html(hostile_run())
    assert "<script>" not in html and "&lt;script&gt;" in html and "<img src=x>" not in html
    assert "KHÔNG ĐẠT / FAIL: 1 of 2" in html
    own, defaults = html.index(report.OWN.split(" / ")[0]), html.index(report.DEFAULTS.split(" / ")[0])
    assert own < html.index("DN Art. 11.2.e") < defaults < html.index("govmail default (x)")


def test_the_markdown_summary_keeps_a_hostile_value_inside_its_table_cell():
    md = report.to_markdown(hostile_run())
    row = next(line for line in md.splitlines() if line.startswith("| DN Art. 11.2.e"))
    assert row.count(" | ") == 4 and "\\|" in row and "<script>" not in row
    assert "0/1 of the province's own clauses pass; 1/1 govmail defaults" in md


def test_the_junit_report_parses_and_carries_article_check_and_evidence():
    suite = ET.fromstring(report.to_junit(hostile_run()))
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    failing, passing = list(suite.iter("testcase"))
    props = {p.get("name"): p.get("value") for p in failing.iter("property")}
    assert props == {"check": "mail_log", "article": "DN Art. 11.2.e", "own": "yes"}
    msg = failing.find("failure").get("message")
    assert "<script>" in msg and "\\x1b" in msg  # XML-escaped on the way, intact on parsing; ESC shown
    assert passing.find("system-out").text == "ok & fine"


class ClosedPort:
    """A target whose hosts are an SSH port nobody listens on: ssh itself answers, at once."""
    name = "closed"

    def ssh(self, host_name):
        return ["ssh", "-p", "9", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "root@127.0.0.1"]

    def resolver(self):
        return "127.0.0.1"

    def host_address(self, cfg):
        return "127.0.0.1"

    def private_addresses(self, cfg):
        return {h.name: "127.0.0.1" for h in cfg.model.hosts}


def test_a_host_that_cannot_be_reached_fails_every_clause_with_the_reason_quickly():
    cfg = load_province("daknong")
    t = time.monotonic()
    run = verify(cfg, ClosedPort())
    assert time.monotonic() - t < 30
    assert len(run.failed) == len(run.results) == len(clauses(cfg))
    assert "Connection refused" in run.unreachable and "CommandResult" not in run.unreachable  # ssh's words
    assert all(r.evidence.startswith("mail.daknong.gov.vn not reached: ") for r in run.results)


def test_active_probes_join_the_clauses_only_when_asked_and_deliver_only_to_the_named_mailbox():
    lc, dn = load_province("laichau"), load_province("daknong")
    probes = {"probe_tls_versions", "probe_no_cleartext_auth", "probe_relay_refused"}
    assert not ({c.check for c in clauses(lc)} & (probes | {"probe_delivery"}))
    assert {c.check for c in clauses(dn, active=True)} - {c.check for c in clauses(dn)} == probes
    extra = [c for c in clauses(lc, active=True) if c.check == "probe_delivery"]
    assert [(c.arg, c.own) for c in extra] == [("kiemtra@laichau.gov.vn", True)]


def test_active_without_a_probe_mailbox_is_refused_before_any_host_is_touched(capsys, monkeypatch):
    from govmail.cli import main
    from govmail.cli import verify as verifycli

    def touched():
        raise AssertionError("a target was asked for")

    monkeypatch.setattr(verifycli, "current", touched)
    assert main(["verify", "laichau", "daknong", "--active"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "group_data/daknong.yml: verify.probe_mailbox is not set" in err, err
    assert "kiemtra@daknong.gov.vn" in err and "Traceback" not in err


def test_every_decision_lists_all_its_articles_each_technical_or_not_with_its_reason():
    from govmail.compliance import coverage

    ds = coverage.decisions()
    assert set(ds) == {"BN", "DN", "LC", "TN", "TN-QLVB"}
    for d in ds.values():
        assert [a.ref for a in d.articles] == [str(i) for i in range(1, len(d.articles) + 1)], d.key
        for a in d.articles:
            assert a.vi and a.en and (a.technical or a.not_technical), a.citation
            assert not (a.not_technical and a.checks), f"{a.citation} is not technical yet checked by {a.checks}"


@pytest.mark.parametrize("province", available_provinces())
def test_every_article_a_province_cites_is_in_the_coverage_and_technical(province):
    from govmail.compliance import coverage

    assert coverage.unresolved(province) == []


def test_a_citation_falls_under_its_article_and_a_list_cites_each():
    from govmail.compliance import coverage

    assert coverage.citations("DN Art. 2.1, 2.3") == [("DN", "2.1"), ("DN", "2.3")]
    assert coverage.citations("govmail default (LC Art. 12.5 applied; DN Art. 9.4, TN-QLVB Art. 3.2)") == [
        ("LC", "12.5"), ("DN", "9.4"), ("TN-QLVB", "3.2")]
    dn = coverage.decisions()["DN"]
    assert coverage.find(dn, "11.2.e").ref == "11" and coverage.find(dn, "99") is None
    assert "mail_log_retention" in coverage.find(dn, "11").checks


def test_the_coverage_reference_in_docs_is_current():
    from govmail.compliance import coverage
    from govmail.data import ROOT

    assert (ROOT / "docs" / "coverage.md").read_text(encoding="utf-8") == coverage.to_markdown(), \
        "run: govmail coverage --markdown > docs/coverage.md"


def test_a_report_lists_failures_first_and_names_a_cited_decision_without_an_articles_file():
    run = hostile_run()
    t = run.started
    run.results = [Result(Clause("utf8", "", "DN Art. 9.5", "UTF-8"), True, "ok", 0.1),
                   Result(Clause("mail_log", "", "DN Art. 11.2.e", "mail log kept"), False, "rotate 1", 0.1),
                   Result(Clause("mail_domain", "", "XY Art. 3", "the domain"), True, "ok", 0.1)]
    run.finished = t
    md = report.to_markdown(run)
    rows = [line for line in md.splitlines() if line.startswith("| DN Art.") or line.startswith("| XY Art.")]
    assert rows[0].startswith("| DN Art. 11.2.e") and "**FAIL**" in rows[0]  # the failure before the passes
    assert "XY: no articles file (govmail/compliance/articles/XY.yml)" in md
    html = report.to_html(run)
    assert html.index("DN Art. 11.2.e") < html.index("DN Art. 9.5")
    assert "XY: no articles file" in html and "## Coverage of DN" in md


def test_a_command_that_failed_on_the_host_is_told_as_its_command_exit_code_and_words():
    import testinfra

    from govmail.compliance.verify import readable

    host = testinfra.get_host("local://")
    try:
        host.check_output("echo 'borg: Repository does not exist' >&2; exit 75")
    except AssertionError as e:
        said = readable(" ".join(str(e).split()))
    assert said.startswith("`echo 'borg: Repository does not exist' >&2; exit 75` exited 75"), said
    assert "Repository does not exist" in said and "CommandResult" not in said


def test_relay_rules_are_read_as_postfix_applies_them():
    from govmail.compliance.checks_live import foreign_networks, relay_gap

    assert relay_gap("permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination") == ""
    assert relay_gap("permit_sasl_authenticated,reject") == ""
    assert "every client may relay" in relay_gap("permit_mynetworks, permit, reject_unauth_destination")
    assert "check_client_access" in relay_gap("check_client_access hash:/etc/postfix/ok, reject_unauth_destination")
    assert "no reject_unauth_destination" in relay_gap("permit_mynetworks, permit_sasl_authenticated")
    assert foreign_networks("127.0.0.0/8 [::1]/128") == []
    assert foreign_networks("127.0.0.0/8, 0.0.0.0/0") == ["0.0.0.0/0"]
    assert foreign_networks("10.0.0.0/8") == ["10.0.0.0/8"]
    assert foreign_networks("hash:/etc/postfix/network_table") == [
        "hash:/etc/postfix/network_table (a table or name, not a loopback network)"]


def test_the_fail2ban_ignore_list_is_read_from_the_client_and_from_the_file():
    from govmail.compliance.checks_live import ignored, networks

    live = "These IP addresses/networks are ignored:\n|- 127.0.0.0/8\n|- ::1\n`- 0.0.0.0/0\n"
    assert ignored(live) == {"127.0.0.0/8", "::1", "0.0.0.0/0"}
    assert ignored(" 127.0.0.1/8 ::1 10.77.0.1") == {"127.0.0.1/8", "::1", "10.77.0.1"}
    assert networks({"127.0.0.1/8", "::1"}) == networks({"127.0.0.0/8", "::1/128"})


def test_a_clause_of_several_hosts_names_each_host_and_fails_when_one_fails_or_is_not_reached(monkeypatch):
    """Lâm Đồng has an MX apart (mx2), a second db host, a store apart and a backup host: a clause of every host is
    checked on each and passes only when it passes on all; a host not reached fails it with the
    reason; a host lost during the run (ssh exit 255) fails the clauses after it too; the evidence
    lists the failures first, each with its host's name."""
    from types import SimpleNamespace

    from govmail.compliance.base import Probe
    from govmail.compliance.verify import Reached, check_clause
    from govmail.data.roles import expand

    cfg = load_province("lamdong")
    seen = []

    def host_name_is_not_db2(h, cfg, _):
        seen.append((h.name, h.roles))
        if h.name == "backup.lamdong.gov.vn" and len(seen) > 4:
            gone = SimpleNamespace(exit_status=255, command=b"true", stderr="Connection closed by remote host")
            raise RuntimeError(gone)
        if h.name == "db2.lamdong.gov.vn":
            raise AssertionError("the check fails here")
        return f"ok, roles {'+'.join(h.roles)}"

    monkeypatch.setitem(CHECKS, "host_name_is_not_db2", host_name_is_not_db2)
    names = ["mail.lamdong.gov.vn", "backup.lamdong.gov.vn", "db2.lamdong.gov.vn", "store2.lamdong.gov.vn"]
    reached = Reached(probes={n: Probe(None, name=n, roles=tuple(expand(cfg.roles(n)))) for n in names},
                      lost={"mx2.lamdong.gov.vn": "ssh: connect to host 10.77.0.13 port 22: Connection refused"})
    every = check_clause(reached, cfg, Clause("host_name_is_not_db2", "", "DN Art. 4.2", "x", on="every"))
    assert not every.passed
    assert every.evidence.startswith("db2.lamdong.gov.vn: the check fails here; mx2.lamdong.gov.vn not reached: ssh")
    assert "mail.lamdong.gov.vn: ok, roles mx+store+web+db+proxy" in every.evidence and "backup.lamdong.gov.vn: ok" in every.evidence
    assert [n for n, _ in seen] == names  # each reached host checked once, the mail host first

    mx = check_clause(reached, cfg, Clause("host_name_is_not_db2", "", "DN Art. 4.2", "x", on="mx"))
    assert cfg.mx_hosts == ["mail.lamdong.gov.vn", "mx2.lamdong.gov.vn"]
    assert not mx.passed and mx.evidence.startswith("mx2.lamdong.gov.vn not reached: ")
    # The backup host goes away now (the fifth call): it fails this clause and every one after it.
    again = check_clause(reached, cfg, Clause("host_name_is_not_db2", "", "DN Art. 4.2", "x", on="every"))
    assert "backup.lamdong.gov.vn not reached: lost during the run: ssh failed" in again.evidence
    assert "backup.lamdong.gov.vn" in reached.lost
    only = check_clause(reached, cfg, Clause("host_name_is_not_db2", "", "DN Art. 4.2", "x"))
    assert only.passed and only.evidence == "ok, roles mx+store+web+db+proxy"  # the mail host's clause: its evidence as it was


def test_the_clauses_of_what_receives_mail_concern_every_mx_host_and_say_so():
    lam, dn = load_province("lamdong"), load_province("daknong")
    on_mx = [c for c in clauses(lam) if c.on == "mx"]
    assert {"no_open_relay", "antivirus", "tls_certificate", "services_running"} <= {c.check for c in on_mx}
    assert all(c.hosts(lam) == lam.mx_hosts and c.text.endswith(", on every MX host") for c in on_mx)
    every = [c for c in clauses(lam) if c.on == "every"]
    assert every and all(len(c.hosts(lam)) == len(lam.model.hosts) and c.hosts(lam)[0] == lam.mail_host for c in every)
    # A province with one MX: the same clauses, its labels unchanged.
    assert not any(c.text.endswith("on every MX host") for c in clauses(dn))
    assert all(c.hosts(dn) == [dn.mail_host] for c in clauses(dn) if c.on == "mx")
