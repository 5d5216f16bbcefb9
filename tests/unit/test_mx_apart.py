"""An MX host apart from the store (issue 29, several MX): what its Postfix, its rsyslog and the
store's Dovecot are given (the lab runs the layout: tests/lab/test_several_mx.py)."""

import dataclasses

from govmail.data import load_province
from govmail.data.schema import Host

from .test_db import files, host_services, on_postgresql


def with_mx2():
    cfg = on_postgresql("bacninh")
    hosts = [*cfg.model.hosts, Host(name="mx2.bacninh.gov.vn", roles=["mx"])]
    return dataclasses.replace(cfg, model=cfg.model.model_copy(update={"hosts": hosts}))


def lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x and not x.startswith("#")]


def test_an_mx_host_apart_names_itself_and_hands_mail_to_the_stores_lmtp_over_the_private_network(tmp_path):
    cfg = with_mx2()  # mail 10.9.0.2, backup 10.9.0.3, mx2 10.9.0.4
    f = files(host_services(cfg, "mx2.bacninh.gov.vn", tmp_path))
    main = lines(f["/etc/postfix/main.cf"].content.decode())
    assert "myhostname = mx2.bacninh.gov.vn" in main
    assert "virtual_transport = lmtp:inet:10.9.0.2:24" in main
    # The store's quota answer when it can be asked; when it cannot, the mail is taken and queued.
    assert "    check_policy_service { inet:10.9.0.2:12340, default_action=DUNNO }" in main
    master = f["/etc/postfix/master.cf"].content.decode()
    assert "\nsmtp      inet" in master and "submission" not in master and "10027" not in master
    assert "pickup    unix" in master


def test_the_store_listens_for_its_mx_hosts_apart_and_a_one_host_province_only_on_its_sockets(tmp_path):
    f = files(host_services(with_mx2(), "mail.bacninh.gov.vn", tmp_path))
    conf = f["/etc/dovecot/dovecot.conf"].content.decode()
    assert "  inet_listener lmtp {\n    listen = 10.9.0.2\n    port = 24\n  }" in conf
    assert "  inet_listener quota-status {\n    listen = 10.9.0.2\n    port = 12340\n  }" in conf
    # The store's own Postfix keeps Dovecot's sockets.
    main = lines(f["/etc/postfix/main.cf"].content.decode())
    assert "virtual_transport = lmtp:unix:private/dovecot-lmtp" in main and "myhostname = mail.bacninh.gov.vn" in main
    one = files(host_services(on_postgresql("bacninh"), "mail.bacninh.gov.vn", tmp_path / "one"))
    assert "inet_listener lmtp" not in one["/etc/dovecot/dovecot.conf"].content.decode()


def test_the_store_admits_each_mx_hosts_parallel_deliveries_to_one_mailbox(tmp_path):
    """Each MX's Postfix delivers to the store with up to 20 LMTP sessions: with two MX, a burst to one
    mailbox is 40 at once. At 20 per user Dovecot turned half away (451 4.3.0 Too many concurrent
    deliveries) and they waited minutes in the retry queue (bench/cluster_rate.py's first run: 552 s
    for 400 messages through two MX, 7 s through one)."""
    from govmail.host.contract import POSTFIX_LMTP_CONCURRENCY

    two = files(host_services(with_mx2(), "mail.bacninh.gov.vn", tmp_path))["/etc/dovecot/dovecot.conf"]
    assert f"lmtp_user_concurrency_limit = {2 * POSTFIX_LMTP_CONCURRENCY}\n" in two.content.decode()
    one = files(host_services(on_postgresql("bacninh"), "mail.bacninh.gov.vn", tmp_path / "one"))
    assert f"lmtp_user_concurrency_limit = {POSTFIX_LMTP_CONCURRENCY}\n" in one["/etc/dovecot/dovecot.conf"].content.decode()


def test_an_mx_host_apart_makes_a_certificate_for_its_own_name_only(tmp_path):
    from govmail.services import tls

    from .test_db import host_services as svcs

    mx2 = svcs(with_mx2(), "mx2.bacninh.gov.vn", tmp_path)["tls"].ensures[0]
    assert "CN=mx2.bacninh.gov.vn'" in mx2.fix and "subjectAltName=DNS:mx2.bacninh.gov.vn -keyout" in mx2.fix
    assert "-checkhost mx2.bacninh.gov.vn" in mx2.check and "autoconfig" not in mx2.check
    mail = svcs(with_mx2(), "mail.bacninh.gov.vn", tmp_path)["tls"].ensures[0]
    assert "CN=mail.bacninh.gov.vn" in mail.fix and "DNS:autoconfig.bacninh.gov.vn" in mail.fix
    assert tls.RENEW_DAYS == 30


def test_an_mx_host_apart_holds_the_stores_reader_password_only(tmp_path):
    """Postfix's maps read the store as its reader; the host tools there get no writer's DSN."""
    from govmail.host import contract

    f = files(host_services(with_mx2(), "mx2.bacninh.gov.vn", tmp_path))
    writer = (tmp_path / "store-password-writer").read_text().strip()
    assert contract.PATHS["store_dsn"] not in f
    assert not [d for d, fl in f.items() if writer.encode() in fl.content]
    assert "password = " in f[f"{contract.PATHS['postfix_maps']}/mailboxes.cf"].content.decode()


def test_the_monitor_probes_each_mx_hosts_smtp_as_senders_meet_it(tmp_path):
    import yaml

    f = files(host_services(with_mx2(), "backup.bacninh.gov.vn", tmp_path))
    jobs = {j["job_name"]: j for j in yaml.safe_load(f["/etc/prometheus/prometheus.yml"].content)["scrape_configs"]}
    smtp = [(t["labels"]["host"], t["targets"]) for t in jobs["probe"]["static_configs"] if t["labels"]["service"] == "smtp"]
    assert smtp == [("mail.bacninh.gov.vn", ["mail.bacninh.gov.vn:25"]), ("mx2.bacninh.gov.vn", ["mx2.bacninh.gov.vn:25"])]


def test_the_stores_lmtp_and_quota_status_answer_its_mx_hosts_apart_only(tmp_path):
    f = files(host_services(with_mx2(), "mail.bacninh.gov.vn", tmp_path))
    nft = f["/etc/govmail/private_ports/private.nft"].content.decode()
    # PostgreSQL on the mail host is read by mx2 too (every host of the province); LMTP and the mail
    # log's port by mx2 only.
    assert "tcp dport { 5432 } ip saddr { 10.9.0.2, 10.9.0.3, 10.9.0.4 } accept" in nft
    assert "tcp dport { 24, 12340, 5514 } ip saddr { 10.9.0.2, 10.9.0.4 } accept" in nft
    assert "tcp dport { 5432, 24, 12340, 5514 } counter drop" in nft


def test_the_mx_aparts_mail_log_goes_to_the_store_host_which_keeps_only_its_mail_lines(tmp_path):
    """The reports are made on the store's host: an MX apart sends its mail lines there (queued on
    disk while it is away), and the store's rsyslog keeps mail lines from that host only. A
    one-host province has neither file."""
    sent = files(host_services(with_mx2(), "mx2.bacninh.gov.vn", tmp_path))["/etc/rsyslog.d/govmail-to-store.conf"]
    conf = sent.content.decode()
    assert 'mail.* action(type="omfwd" target="10.9.0.2" port="5514" protocol="tcp"' in conf
    assert 'queue.saveOnShutdown="on"' in conf and 'action.resumeRetryCount="-1"' in conf
    kept = files(host_services(with_mx2(), "mail.bacninh.gov.vn", tmp_path))["/etc/rsyslog.d/govmail-mx-logs.conf"]
    assert ('if $inputname == "govmail-mx-apart" and not ($syslogfacility-text == "mail" and '
            '($fromhost-ip == "10.9.0.4")) then stop') in kept.content.decode()
    one = files(host_services(load_province("bacninh"), "mail.bacninh.gov.vn", tmp_path))
    assert not [p for p in one if p.startswith("/etc/rsyslog.d/")]


def test_an_mx_host_apart_makes_no_dkim_key_and_fetches_none(tmp_path):
    """Only the mail host signs (submission is there): a key made on the MX apart would be a second
    one, and its record, fetched to the controller, would replace the published one."""
    svcs = host_services(with_mx2(), "mx2.bacninh.gov.vn", tmp_path)
    rspamd = svcs["rspamd"]
    assert not rspamd.fetches and not [e for e in rspamd.ensures if "DKIM" in e.name]
    conf = files(svcs)["/etc/rspamd/local.d/dkim_signing.conf"].content.decode()
    assert "enabled = false;" in conf
    mail = host_services(with_mx2(), "mail.bacninh.gov.vn", tmp_path)["rspamd"]
    assert [e for e in mail.ensures if "DKIM" in e.name]
