"""The host's report figures from its own logs (govmail/host/report.py), without a host: every
refusal reason counted once, by the reply the host gave; mail in and out; bans; periods. The lab
test (tests/lab/test_reports.py) checks the same against real traffic."""

import datetime
import gzip

import pytest

from govmail.host import report, report_render

T = "2026-11-15T10:00:{:02d}.000000+00:00 mail "
LINES = [
    "postfix/smtpd[1]: 113CD190100: client=mx.outside.test[10.77.0.1]",
    "postfix/submission/smtpd[2]: CDD4919018C: client=mx.outside.test[10.77.0.1], sasl_method=PLAIN, "
    "sasl_username=haunv.stnmt@daknong.gov.vn",
    "postfix/lmtp[3]: 113CD190100: to=<haulm.stnmt@daknong.gov.vn>, relay=mail.daknong.gov.vn[private/dovecot-lmtp], "
    "delay=0.24, dsn=2.0.0, status=sent (250 2.0.0 Saved)",
    "postfix/smtp[4]: AAAA1234567: to=<x@binhthuan.gov.vn>, relay=mail.binhthuan.gov.vn[10.77.0.12]:25, dsn=2.0.0, "
    "status=sent (250 2.0.0 Ok)",
    "postfix/smtpd[1]: B0B0B0B0B0: client=mx.outside.test[10.77.0.1]",  # started, then refused: not received
    "postfix/cleanup[5]: B0B0B0B0B0: milter-reject: END-OF-MESSAGE from mx.outside.test[10.77.0.1]: 5.7.1 Spam message "
    "rejected; from=<a@outside.test> to=<b@daknong.gov.vn> proto=ESMTP helo=<client.lab.test>",
    "postfix/cleanup[5]: B0B0B0B0B1: milter-reject: END-OF-MESSAGE from mx.outside.test[10.77.0.1]: 5.7.1 Virus found: "
    "Eicar-Signature (govmail default (...)); the message was not accepted; from=<a@outside.test>",
    "postfix/cleanup[5]: B0B0B0B0B2: milter-reject: END-OF-MESSAGE from mx.outside.test[10.77.0.1]: 5.7.1 Attachment "
    "refused (DN Art. 8.3): huong-dan.exe is a program; from=<a@outside.test>",
    "postfix/cleanup[5]: B0B0B0B0B3: milter-reject: END-OF-MESSAGE from mx.outside.test[10.77.0.1]: 5.7.1 Automatic "
    "forwarding into the state mail system from x@gmail.com is refused (LC Art. 12.5); from=<a@outside.test>",
    "postfix/smtpd[1]: NOQUEUE: reject: RCPT from mx.outside.test[10.77.0.1]: 552 5.2.2 <haulm.stnmt@daknong.gov.vn>: "
    "Recipient address rejected: Mailbox is full: the recipient's mailbox quota is used up; from=<a@outside.test>",
    "postfix/smtpd[1]: NOQUEUE: reject: MAIL from mx.outside.test[10.77.0.1]: 552 5.3.4 Message size exceeds fixed "
    "limit; proto=ESMTP helo=<client.lab.test>",
    "postfix/sieve-out/smtpd[6]: NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 554 5.7.1 <x@gmail.com>: Recipient "
    "address rejected: Automatic forwarding outside the state mail system is forbidden (LC Art. 12.5)",
    "postfix/smtpd[1]: NOQUEUE: reject: RCPT from mx.outside.test[10.77.0.1]: 550 5.1.1 <nobody@daknong.gov.vn>: "
    "Recipient address rejected: User unknown in virtual mailbox table; from=<a@outside.test>",
    "dovecot: imap-login: Login aborted: Logged out (auth failed, 2 attempts in 4 secs) (auth_failed): "
    "user=<sonvx.ubnd@daknong.gov.vn>, method=PLAIN, rip=10.77.0.1",
    "postfix/submission/smtpd[2]: warning: mx.outside.test[10.77.0.1]: SASL PLAIN authentication failed: "
    "UGFzc3dvcmQ6",
    "postfix/smtpd[1]: NOQUEUE: reject: RCPT from mx.outside.test[10.77.0.1]: 554 5.7.1 <x@relay-test.invalid>: Relay "
    "access denied; from=<> to=<x@relay-test.invalid> proto=ESMTP helo=<verify.govmail.invalid>",
]


@pytest.fixture
def logs(tmp_path, monkeypatch):
    lines = [T.format(i) + line + "\n" for i, line in enumerate(LINES)]
    (tmp_path / "mail.log").write_text("".join(lines[:8]) + "2026-10-31T23:59:59.000000+00:00 mail " + LINES[0] + "\n")
    # The rest in a gzipped rotation, and one line again in a log restored beside it: counted once.
    with gzip.open(tmp_path / "mail.log.2.gz", "wt") as f:
        f.write("".join(lines[8:]))
    (tmp_path / "mail.log.restored-x").write_text(lines[0])
    monkeypatch.setattr(report, "MAIL_LOGS", str(tmp_path / "mail.log*"))
    return tmp_path


def test_every_refusal_reason_is_counted_once_from_the_reply_the_host_gave(logs):
    _, since, until = report.period("monthly", "2026-11", 0)
    f = report.mail_figures(since, until)
    assert f["refusals"] == {"spam": 1, "virus": 1, "program": 1, "size": 1, "quota": 1, "forwarding": 2,
                             "authentication": 3, "sender": 0, "sending_limit": 0, "unknown_recipient": 1, "relay": 1,
                             "other": 0}
    assert f["mail"] == {"received": 1, "sent": 1, "delivered_local": 1, "delivered_remote": 1, "bounced": 0, "deferred": 0}
    assert f["sent_by"] == {"haunv.stnmt@daknong.gov.vn": 1} and f["received_by"] == {"haulm.stnmt@daknong.gov.vn": 1}


U, V = "haunv.stnmt@daknong.gov.vn", "lantt.stnmt@daknong.gov.vn"
SUB = "postfix/submission/smtpd[7]: "
MISUSE = [  # the province's own users' mail refused: submission, its rate limit, a Sieve forward out
    SUB + f"C1DD7194178: client=mx.outside.test[10.77.0.1], sasl_method=PLAIN, sasl_username={U}",
    "postfix/cleanup[5]: C1DD7194178: milter-reject: END-OF-MESSAGE from mx.outside.test[10.77.0.1]: 5.7.1 Gtube "
    f"pattern; from=<{U}> to=<x@daknong.gov.vn> proto=ESMTP helo=<[127.0.0.1]>",
    SUB + f"C1DD7194179: client=mx.outside.test[10.77.0.1], sasl_method=PLAIN, sasl_username={U}",
    "postfix/cleanup[5]: C1DD7194179: milter-reject: END-OF-MESSAGE from mx.outside.test[10.77.0.1]: 5.7.1 Virus "
    f"found: Eicar-Signature; from=<{U}>",
    SUB + "NOQUEUE: reject: RCPT from mx.outside.test[10.77.0.1]: 553 5.7.1 <sonvx.ubnd@daknong.gov.vn>: Sender address "
    f"rejected: not owned by user {U}; from=<sonvx.ubnd@daknong.gov.vn> to=<x@daknong.gov.vn> proto=ESMTP "
    f"helo=<[127.0.0.1]> sasl_method=PLAIN sasl_username={U}",
    SUB + "NOQUEUE: milter-reject: RCPT from mx.outside.test[10.77.0.1]: 451 4.7.1 Sending limit reached: at most 100 "
    f"messages an hour per user; from=<{V}> to=<x@daknong.gov.vn> proto=ESMTP helo=<[127.0.0.1]> sasl_username={V}",
    "postfix/sieve-out/smtpd[8]: NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 554 5.7.1 <x@gmail.com>: Recipient "
    f"address rejected: Automatic forwarding outside the state mail system is forbidden; from=<{V}> to=<x@gmail.com>",
    # Not misuse: a full mailbox of a colleague, and spam from outside (the LINES above).
    SUB + f"NOQUEUE: reject: RCPT from mx.outside.test[10.77.0.1]: 552 5.2.2 <y@daknong.gov.vn>: Mailbox is full; "
    f"from=<{V}> sasl_username={V}",
]


def test_each_own_mailbox_used_against_the_rules_is_listed_with_its_refusals_and_a_measure(logs, monkeypatch):
    with open(logs / "mail.log", "a") as f:
        f.write("".join(T.format(30 + i) + line + "\n" for i, line in enumerate(MISUSE)))
    _, since, until = report.period("monthly", "2026-11", 0)
    fig = report.mail_figures(since, until)
    assert fig["misuse"] == {U: {"spam": 1, "virus": 1, "sender": 1}, V: {"sending_limit": 1, "forwarding": 1}}
    cases = report.misuse_cases({"units": {U: "Sở Tài nguyên <và> Môi trường"}}, fig)
    assert [(c["account"], c["agency"], c["total"]) for c in cases] == [(U, "Sở Tài nguyên <và> Môi trường", 3), (V, "-", 2)]
    assert cases[0]["measure"].startswith("quét virus") and "gỡ quy tắc chuyển tiếp" in cases[1]["measure"]
    f = {"kind": "monthly", "period": "2026-11", "host": "mail.x.gov.vn", "name": "X", "articles": "", "since": 0,
         "until": 1, "generated": 1, "mail": fig["mail"], "refusals": fig["refusals"], "days": fig["days"], "bans": {},
         "services": {}, "backups": {}, "storage": {"over_80_percent": []}, "misuse": cases,
         "misuse_article": "BN Art. 13 (operator duty 3)"}
    html = report_render.to_html(f)
    assert html.count("<tr><td>" + U) == 1 and "&lt;và&gt;" in html and "BN Art. 13 (operator duty 3)" in html
    assert ["misuse", V, "sending_limit 1, forwarding 1 → " + cases[1]["measure"]] in report_render.csv_rows(f)
    assert 'id="misuse">Không có / none.' in report_render.to_html({**f, "misuse": []})


def test_a_period_is_a_calendar_month_or_year_in_utc_and_a_bad_one_is_refused():
    label, since, until = report.period("monthly", None, datetime.datetime(2026, 1, 10, tzinfo=datetime.timezone.utc).timestamp())
    assert label == "2025-12" and until - since == 31 * 86400
    assert report.period("annual", "2024", 0)[2] - report.period("annual", "2024", 0)[1] == 366 * 86400
    for bad in ("2026-13", "2026-1", "x; rm -rf /"):
        with pytest.raises(ValueError):
            report.period("monthly", bad, 0)


def test_the_csv_quotes_a_value_a_spreadsheet_would_run_and_the_html_escapes_it():
    f = {"kind": "annual", "period": "2026", "host": "mail.x.gov.vn", "name": "<b>X</b>", "articles": "BN Art. 17",
         "since": 0, "until": 1, "generated": 1, "mail": {"received": 0, "sent": 0}, "refusals": dict.fromkeys(report.REASONS, 0),
         "bans": {}, "agencies": [{"agency": "=HYPERLINK(\"x\")", "mailboxes": 1, "active": 1, "inactive": 0, "sent": 2,
                                   "received": 3, "quota_used_mib": 1.5, "quota_mib": 500}]}
    csv = report_render.to_csv(f).decode("utf-8-sig")
    assert "'=HYPERLINK" in csv
    html = report_render.to_html(f)
    assert "<b>X</b>" not in html and "&lt;b&gt;X&lt;/b&gt;" in html


def test_a_ban_counts_to_the_millisecond_of_its_jail(tmp_path, monkeypatch):
    (tmp_path / "fail2ban.log").write_text(
        "2026-11-15 10:00:00,731 fail2ban.actions        [1]: NOTICE  [govmail-dovecot] Ban 192.0.2.77\n"
        "2026-11-15 10:00:05,100 fail2ban.actions        [1]: NOTICE  [govmail-dovecot] Unban 192.0.2.77\n"
        "2026-11-15 10:00:06,000 fail2ban.actions        [1]: NOTICE  [postfix-sasl] Ban 198.51.100.1\n")
    monkeypatch.setattr(report, "BAN_LOGS", str(tmp_path / "fail2ban.log*"))
    t = datetime.datetime(2026, 11, 15, 10, 0, tzinfo=datetime.timezone.utc).timestamp()
    assert report.bans(t + 0.5, t + 10) == {"govmail-dovecot": 1, "postfix-sasl": 1}
    assert report.bans(t + 0.8, t + 10) == {"postfix-sasl": 1}


def test_without_a_monitor_answering_the_report_keeps_the_journals_availability_and_says_why():
    from govmail.host import report_availability as ra

    journal = {"postfix": {"availability": 0.99, "down_seconds": 864, "starts": 2, "failures": 1}}
    assert ra.merge(journal, None, 0, 86400) == (journal, {}, "journal of the mail host (no monitor)")
    # a monitor named but not answering (nothing listens on port 1)
    gone = {"host": "backup.x.gov.vn", "prometheus": "http://127.0.0.1:1", "mail_host": "mail.x.gov.vn"}
    daemons, probes, source = ra.merge(journal, gone, 0, 86400)
    assert daemons == journal and probes == {}
    assert source.startswith("journal of the mail host (the monitor backup.x.gov.vn did not answer:"), source


def test_a_host_name_reaches_promql_only_as_a_quoted_string():
    from govmail.host.report_availability import _label

    assert _label('mail.x.gov.vn"} or vector(1) #') == '"mail.x.gov.vn\\"} or vector(1) #"'
    assert _label("a\\b\nc") == '"a\\\\b\\nc"'


def test_mail_an_mx_apart_received_is_counted_and_its_queue_ids_are_its_own(tmp_path, monkeypatch):
    """With an MX host apart, its mail lines reach the store's mail.log (rsyslog, govmail/services/
    base.py), carrying its host name: the mail it accepted counts as received, what it refused as a
    refusal, and the same queue ID on the two hosts is two messages (a refusal on one does not
    cancel the other's)."""
    t = "2026-11-15T10:00:{:02d}.000000+00:00 {} "
    lines = [
        (0, "mx2", "postfix/smtpd[9]: 4A1B2C3D4E: client=mx.outside.test[10.77.0.1]"),
        (1, "mx2", "postfix/lmtp[9]: 4A1B2C3D4E: to=<haulm.stnmt@daknong.gov.vn>, relay=10.77.0.10[10.77.0.10]:24, "
                   "dsn=2.0.0, status=sent (250 2.0.0 Saved)"),
        (2, "mail", "postfix/smtpd[1]: 4A1B2C3D4E: client=mx.outside.test[10.77.0.1]"),  # the same ID, here
        (3, "mail", "postfix/cleanup[5]: 4A1B2C3D4E: milter-reject: END-OF-MESSAGE from mx.outside.test[10.77.0.1]: "
                    "5.7.1 Spam message rejected; from=<a@outside.test>"),
        (4, "mx2", "postfix/smtpd[9]: NOQUEUE: reject: RCPT from mx.outside.test[10.77.0.1]: 550 5.1.1 "
                   "<nobody@daknong.gov.vn>: Recipient address rejected: User unknown in virtual mailbox table"),
    ]
    (tmp_path / "mail.log").write_text("".join(t.format(s, h) + x + "\n" for s, h, x in lines))
    monkeypatch.setattr(report, "MAIL_LOGS", str(tmp_path / "mail.log*"))
    _, since, until = report.period("monthly", "2026-11", 0)
    f = report.mail_figures(since, until)
    assert f["mail"]["received"] == 1 and f["mail"]["delivered_local"] == 1  # mx2's, not cancelled by mail's refusal
    assert f["refusals"]["spam"] == 1 and f["refusals"]["unknown_recipient"] == 1
