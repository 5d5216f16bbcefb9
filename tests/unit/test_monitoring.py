"""The monitor's configuration as the data makes it: alert rules citing their clauses, alerts routed
where the data says, exporters reachable by the monitor only, and the host's facts and status screen
as an operator reads them. (The rules firing for real: tests/lab/test_monitoring.py.)"""

from __future__ import annotations

import copy

import pytest
import yaml

from govmail.data import ROOT, available_provinces, load_province
from govmail.data.schema import AlertRelay
from govmail.host import metrics
from govmail.monitoring import alerts, status
from govmail.service import Context
from govmail.services import exporters, monitor

ADDR = {"mail.bacninh.gov.vn": "10.77.0.2", "backup.bacninh.gov.vn": "10.77.0.3"}


def ctx_for(cfg, host, addresses=ADDR, verifiable_tls=False):
    return Context(cfg=cfg, host_name=host, roles=tuple(cfg.roles(host)), probes={}, addresses=addresses,
                   verifiable_tls=verifiable_tls)


def files(service) -> dict:
    return {f.dest: f.content.decode() for f in service.files}


@pytest.mark.parametrize("province", available_provinces())
def test_every_alert_carries_the_article_of_the_clause_it_protects(province):
    cfg = load_province(province)
    rules = alerts.rules(cfg)["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {"HostDown", "MailServiceDown", "BackupFailed", "CertificateExpiring",
                                           "Heartbeat"}
    for r in rules:
        clause = r["labels"]["clause"]
        assert r["labels"]["article"] == cfg.cite(clause) == r["annotations"]["article"], r["alert"]
        assert r["annotations"]["runbook"] == f"docs/alerts.md#{r['alert'].lower()}"
    late = next(r for r in rules if r["alert"] == "BackupLate")
    assert str(cfg.policy.backup.max_age_hours * 3600) in late["expr"]


def test_the_runbook_is_current_and_names_every_alert():
    text = (ROOT / "docs" / "alerts.md").read_text()
    assert text == alerts.markdown(), "regenerate: govmail alerts --markdown > docs/alerts.md"
    for a in alerts.ALERTS:
        assert f"## {a.name}\n" in text


def test_clamav_staleness_is_watched_only_where_freshclam_runs():
    cfg = load_province("bacninh")
    assert "ClamAVSignaturesStale" in {a.name for a in alerts.active(cfg, signature_mirror=True)}
    assert "ClamAVSignaturesStale" not in {a.name for a in alerts.active(cfg, signature_mirror=False)}


def test_the_backup_host_watches_the_province_unless_a_monitor_is_named():
    cfg = load_province("bacninh")
    assert cfg.monitor_host == "backup.bacninh.gov.vn"
    assert cfg.roles("backup.bacninh.gov.vn") == ["backup", "monitor"]
    assert cfg.roles("mail.bacninh.gov.vn") == ["mail"]


def test_prometheus_scrapes_every_host_on_its_private_address_and_probes_the_mail_services():
    cfg = load_province("bacninh")
    doc = yaml.safe_load(files(monitor.service(ctx_for(cfg, "backup.bacninh.gov.vn")))["/etc/prometheus/prometheus.yml"])
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert [t["targets"] for t in jobs["node"]["static_configs"]] == [["10.77.0.2:9100"], ["10.77.0.3:9100"]]
    assert jobs["dovecot"]["static_configs"][0]["targets"] == ["10.77.0.2:9900"]
    probes = {t["labels"]["service"]: t["targets"][0] for t in jobs["probe"]["static_configs"]}
    assert probes == {"smtp": "mail.bacninh.gov.vn:25", "submission": "mail.bacninh.gov.vn:587",
                      "submissions": "mail.bacninh.gov.vn:465", "imaps": "mail.bacninh.gov.vn:993",
                      "pop3s": "mail.bacninh.gov.vn:995", "webmail": "https://mail.bacninh.gov.vn/"}
    assert doc["rule_files"] == ["govmail-alerts.yml"]  # relative: the check on a copy reads the copy's rules


def test_the_domains_mx_is_probed_through_the_monitor_hosts_own_resolver():
    cfg = load_province("bacninh")
    for answer, expected in (("10.77.0.1\n", "10.77.0.1:53"), ("", None), ("evil; rm -rf /", None)):
        ctx = ctx_for(cfg, "backup.bacninh.gov.vn")
        ctx.probes["monitor_resolver"] = answer
        out = files(monitor.service(ctx))
        doc = yaml.safe_load(out["/etc/prometheus/prometheus.yml"])
        probe = next(j for j in doc["scrape_configs"] if j["job_name"] == "probe")
        mx = [t["targets"][0] for t in probe["static_configs"] if t["labels"]["service"] == "mx"]
        assert mx == ([expected] if expected else [])
        modules = yaml.safe_load(out["/etc/prometheus/blackbox.yml"])["modules"]
        assert ("mx" in modules) == bool(expected)
        if expected:
            dns = modules["mx"]["dns"]
            assert dns["query_name"] == "bacninh.gov.vn" and dns["query_type"] == "MX"
            assert dns["validate_answer_rrs"]["fail_if_none_matches_regexp"] == [
                r"\sMX\s+[0-9]+\s+mail\.bacninh\.gov\.vn\.$"]


def test_alerts_go_to_the_administrators_through_the_mail_host_when_the_data_names_no_relay():
    cfg = load_province("bacninh")
    s = monitor.service(ctx_for(cfg, "backup.bacninh.gov.vn"))
    am = yaml.safe_load(files(s)["/etc/prometheus/alertmanager.yml"])
    assert am["global"]["smtp_smarthost"] == "mail.bacninh.gov.vn:25"
    assert am["receivers"][0]["email_configs"][0]["to"] == ", ".join(cfg.alert_to)
    assert cfg.alert_to == [a.address for a in cfg.accounts if a.role == "admin" and a.kind == "person"]
    assert "webhook_configs" not in am["receivers"][0]
    assert any("stop when it does" in w for w in s.warnings)


def test_alerts_go_through_the_relay_and_the_webhook_the_data_names():
    cfg = copy.deepcopy(load_province("bacninh"))
    mon = cfg.model.policy.monitoring
    object.__setattr__(mon, "relay", AlertRelay(host="mail.thainguyen.gov.vn", port=2525))
    object.__setattr__(mon, "webhook", "http://10.0.0.9:8080/hook")
    object.__setattr__(mon, "alert_to", ["truc@thainguyen.gov.vn"])
    object.__setattr__(mon, "heartbeat_hours", 6)
    s = monitor.service(ctx_for(cfg, "backup.bacninh.gov.vn", verifiable_tls=True))
    am = yaml.safe_load(files(s)["/etc/prometheus/alertmanager.yml"])
    assert am["global"]["smtp_smarthost"] == "mail.thainguyen.gov.vn:2525"
    op, hb = am["receivers"]
    assert op["email_configs"][0]["to"] == "truc@thainguyen.gov.vn"
    assert "tls_config" not in op["email_configs"][0]  # real certificates are verified
    assert op["webhook_configs"] == [{"url": "http://10.0.0.9:8080/hook", "send_resolved": True}]
    assert hb["webhook_configs"][0]["send_resolved"] is False
    assert am["route"]["routes"][0]["repeat_interval"] == "6h"
    assert not s.warnings


def test_the_metric_ports_answer_the_monitor_and_the_host_itself_only():
    cfg = load_province("bacninh")
    mail = files(exporters.service(ctx_for(cfg, "mail.bacninh.gov.vn")))
    nft = mail["/etc/govmail/exporters/metrics.nft"]
    assert "tcp dport { 9100, 9900, 9113 } ip saddr { 10.77.0.2, 10.77.0.3 } accept" in nft
    assert "tcp dport { 9100, 9900, 9113 } counter drop" in nft
    assert "--web.listen-address=10.77.0.2:9100" in mail["/etc/default/prometheus-node-exporter"]
    # the mail host gets the metrics tool with every host tool; another host gets it here
    assert not any(d.endswith("/metrics") for d in mail)
    backup = files(exporters.service(ctx_for(cfg, "backup.bacninh.gov.vn")))
    assert "/usr/local/lib/govmail/metrics" in backup
    nft = backup["/etc/govmail/exporters/metrics.nft"]
    assert "tcp dport { 9100, 9090 } ip saddr { 10.77.0.3 } accept" in nft
    # the monitor's Prometheus: read by the mail host too (its monthly report), by nobody else
    assert "tcp dport 9090 ip saddr { 10.77.0.2 } accept" in nft and "tcp dport { 9100, 9090 } counter drop" in nft
    assert "--web.listen-address=10.77.0.3:9090" in files(monitor.service(ctx_for(cfg, "backup.bacninh.gov.vn")))[
        "/etc/default/prometheus"]


def _published(cfg):
    cfg = copy.deepcopy(cfg)
    object.__setattr__(cfg.model.policy.monitoring, "web_ui", True)
    return cfg


def test_the_monitors_pages_are_published_behind_the_admin_login_only_when_the_data_asks():
    from govmail.services import web

    cfg = load_province("bacninh")
    assert "/monitor/" not in files(web.service(ctx_for(cfg, "mail.bacninh.gov.vn")))["/etc/nginx/conf.d/govmail.conf"]
    am = files(monitor.service(ctx_for(cfg, "backup.bacninh.gov.vn")))["/etc/default/prometheus-alertmanager"]
    assert "--web.listen-address=127.0.0.1:9093" in am and "external-url" not in am

    cfg = _published(cfg)
    conf = files(web.service(ctx_for(cfg, "mail.bacninh.gov.vn")))["/etc/nginx/conf.d/govmail.conf"]
    for name, port in (("prometheus", 9090), ("alertmanager", 9093)):
        block = conf.split(f"location /monitor/{name}/ {{", 1)[1].split("\n    }\n", 1)[0]
        assert "auth_request /.govmail-admin;" in block and f"proxy_pass http://10.77.0.3:{port}/;" in block
        assert "if ($govmail_foreign) {\n            return 403;" in block  # another site's request refused
    check = conf.split("location = /.govmail-admin {", 1)[1].split("}", 1)[0]
    assert "internal;" in check and "https://127.0.0.1:8443/api/admin" in check
    mon = files(monitor.service(ctx_for(cfg, "backup.bacninh.gov.vn")))
    assert ("--web.listen-address=10.77.0.3:9093 --cluster.listen-address= --web.external-url="
            "https://mail.bacninh.gov.vn/monitor/alertmanager/ --web.route-prefix=/'") in mon[
                "/etc/default/prometheus-alertmanager"]
    assert "--web.external-url=https://mail.bacninh.gov.vn/monitor/prometheus/ --web.route-prefix=/'" in mon[
        "/etc/default/prometheus"]
    prom = yaml.safe_load(mon["/etc/prometheus/prometheus.yml"])
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["10.77.0.3:9093"]
    # the mail host's nginx reaches Alertmanager too; nobody else does
    nft = files(exporters.service(ctx_for(cfg, "backup.bacninh.gov.vn")))["/etc/govmail/exporters/metrics.nft"]
    assert "tcp dport { 9090, 9093 } ip saddr { 10.77.0.2 } accept" in nft
    assert "tcp dport { 9100, 9090, 9093 } counter drop" in nft


@pytest.mark.parametrize("web_ui", [False, True])
def test_each_daemons_defaults_file_is_comments_and_one_args_line_whatever_the_data(web_ui):
    """systemd reads ARGS from /etc/default/<daemon>: a line joined to a comment loses every flag (and
    the daemon starts on its built-in defaults: every address, 15 days of metrics)."""
    import re

    cfg = _published(load_province("bacninh")) if web_ui else load_province("bacninh")
    defaults = {}
    for host in ("mail.bacninh.gov.vn", "backup.bacninh.gov.vn"):
        defaults.update(files(exporters.service(ctx_for(cfg, host))))
    defaults.update(files(monitor.service(ctx_for(cfg, "backup.bacninh.gov.vn"))))
    defaults = {k: v for k, v in defaults.items() if k.startswith("/etc/default/")}
    assert len(defaults) == 5, sorted(defaults)
    for dest, text in defaults.items():
        lines = [x for x in text.splitlines() if x.strip()]
        assert all(x.startswith("#") or re.fullmatch(r"ARGS='[^'\n]*'", x) for x in lines), (dest, text)
        assert sum(x.startswith("ARGS='--") for x in lines) == 1, (dest, text)


def test_dovecot_serves_its_metrics_on_the_private_address_only_when_the_province_is_watched():
    from govmail.services import dovecot

    cfg = load_province("bacninh")
    conf = files(dovecot.service(ctx_for(cfg, "mail.bacninh.gov.vn")))["/etc/dovecot/dovecot.conf"]
    assert "listen = 10.77.0.2\n    port = 9900" in conf and "metric auth_failures {" in conf


def test_the_facts_are_prometheus_text_with_labels_escaped():
    f = metrics.Facts()
    f.add("govmail_x", "gauge", "A fact.", 1, {"jail": 'a"b\\c\nd'})
    f.add("govmail_x", "gauge", "A fact.", 2.5, {"jail": "e"})
    assert f.text() == ('# HELP govmail_x A fact.\n# TYPE govmail_x gauge\ngovmail_x{jail="a\\"b\\\\c\\nd"} 1\n'
                        'govmail_x{jail="e"} 2.5\n')


def test_the_queue_facts_count_postfix_messages_by_queue_and_age(monkeypatch):
    lines = "\n".join(['{"queue_name": "deferred", "arrival_time": 1000}', '{"queue_name": "hold", "arrival_time": 1900}',
                       '{"queue_name": "deferred", "arrival_time": 1500}', "not json"])
    monkeypatch.setattr(metrics, "_run", lambda cmd, timeout=20: lines)
    monkeypatch.setattr(metrics.os.path, "exists", lambda p: True)
    f = metrics.Facts()
    metrics.postfix_queue(f, now=2000.0)
    text = f.text()
    assert 'govmail_postfix_queue_messages{queue="deferred"} 2\n' in text
    assert 'govmail_postfix_queue_oldest_age_seconds{queue="deferred"} 1000\n' in text
    assert 'govmail_postfix_queue_messages{queue="hold"} 1\n' in text
    assert 'govmail_postfix_queue_oldest_age_seconds{queue="active"} 0\n' in text


def test_the_quota_facts_count_mailboxes_by_how_full_they_are(monkeypatch):
    table = "\n".join(["Username\tQuota name\tType\tValue\tLimit\t%",
                        "a@x.gov.vn\tUser quota\tSTORAGE\t900\t1000\t90",
                        "a@x.gov.vn\tUser quota\tMESSAGE\t5\t-\t0",
                        "b@x.gov.vn\tUser quota\tSTORAGE\t990\t1000\t99",
                        "c@x.gov.vn\tUser quota\tSTORAGE\t1000\t1000\t100",
                        "d@x.gov.vn\tUser quota\tSTORAGE\t10\t1000\t1",
                        "e@x.gov.vn\tUser quota\tSTORAGE\t5000\t-\t0"])  # no limit: not counted
    monkeypatch.setattr(metrics, "_run", lambda cmd, timeout=20: table)
    text = metrics.quota_facts(now=7.0).text()
    for state, n in (("all", 4), ("over_80_percent", 3), ("over_95_percent", 2), ("full", 1)):
        assert f'govmail_mailboxes_quota{{state="{state}"}} {n}\n' in text, text
    assert "govmail_quota_facts_timestamp_seconds 7\n" in text
    # Dovecot not answering: no facts (the last reading stays), never zeros that look healthy
    monkeypatch.setattr(metrics, "_run", lambda cmd, timeout=20: None)
    assert metrics.quota_facts().text() == "\n"


def test_a_backup_never_made_counts_from_when_backups_were_set_up(monkeypatch, tmp_path):
    conf, st = tmp_path / "backup.json", tmp_path / "status.json"
    conf.write_text("{}")
    monkeypatch.setitem(metrics.contract.PATHS, "backup_conf", str(conf))
    monkeypatch.setitem(metrics.contract.PATHS, "backup_status", str(st))
    f = metrics.Facts()
    metrics.backup(f)
    assert f"govmail_backup_last_success_timestamp_seconds {conf.stat().st_mtime:.17g}" in f.text()
    st.write_text('{"last_ok": 100, "last_error": 200}')
    f = metrics.Facts()
    metrics.backup(f)
    assert "govmail_backup_last_success_timestamp_seconds 100\n" in f.text()
    assert "govmail_backup_last_run_failed 1\n" in f.text()


def _sample(metric: dict, value: float) -> dict:
    return {"metric": metric, "value": [0, str(value)]}


def test_status_names_the_firing_alert_its_host_and_article_and_fails():
    cfg = load_province("bacninh")
    doc = {"values": {"up": [_sample({"host": "mail.bacninh.gov.vn"}, 1), _sample({"host": "backup.bacninh.gov.vn"}, 1)],
                      "probes": [_sample({"host": "mail.bacninh.gov.vn", "service": "smtp"}, 0)],
                      "down": [_sample({"host": "mail.bacninh.gov.vn", "name": "postfix.service"}, 0)],
                      "backup_hours": [_sample({"host": "mail.bacninh.gov.vn"}, 3.25)]},
           "alerts": [{"labels": {"alertname": "MailServiceDown", "host": "mail.bacninh.gov.vn",
                                  "article": cfg.cite("operation")},
                       "annotations": {"summary": "smtp of mail.bacninh.gov.vn does not answer as it should"}},
                      {"labels": {"alertname": "Heartbeat", "host": "backup.bacninh.gov.vn"}, "annotations": {}}],
           "errors": []}
    text, code = status.report(cfg, doc)
    assert code == 1
    assert "services: smtp FAILING" in text and "units not running: postfix.service" in text
    assert "last good backup: 3.2 h ago" in text
    assert f"FIRING MailServiceDown: smtp of mail.bacninh.gov.vn does not answer as it should ({cfg.cite('operation')})" in text
    assert text.endswith("1 alert(s) firing")
    quiet = dict(doc, alerts=doc["alerts"][1:])
    assert status.report(cfg, quiet)[1] == 0  # the heartbeat alone is not an incident
    assert status.report(cfg, {"errors": ["prometheus: refused"]})[1] == 2


def test_verify_names_a_monitor_daemon_running_older_files_than_the_deploy_wrote():
    t = 1_800_000_000.0
    doc = {"runs": {"prometheus": {"process_start_time_seconds": t,
                                   "prometheus_config_last_reload_success_timestamp_seconds": t + 100},
                    "alertmanager": {"process_start_time_seconds": t + 100}},
           "written": {"/etc/default/prometheus": t + 50, "/etc/prometheus/prometheus.yml": t + 60,
                       "/etc/prometheus/alertmanager.yml": t + 99, "/etc/default/prometheus-alertmanager": t}}
    # Prometheus reloaded after its rule files, but its flags were written after it started.
    assert status.stale(doc) == ["prometheus started before /etc/default/prometheus was written: "
                                 "`systemctl restart prometheus`"]
    doc["written"]["/etc/prometheus/alertmanager.yml"] = t + 200
    assert status.stale(doc)[1] == ("alertmanager loaded its configuration before /etc/prometheus/alertmanager.yml "
                                    "was written: `systemctl reload prometheus-alertmanager`")
    doc["runs"]["prometheus"]["process_start_time_seconds"] = t + 60
    doc["runs"]["alertmanager"]["alertmanager_config_last_reload_success_timestamp_seconds"] = t + 200
    assert status.stale(doc) == []


LAMDONG = {"mail.lamdong.gov.vn": "10.77.0.11", "backup.lamdong.gov.vn": "10.77.0.13", "db2.lamdong.gov.vn": "10.77.0.12"}
CLUSTER_ALERTS = {"StoreWithoutPrimary", "StoreStandbyMissing", "DbMemberDown", "EtcdMemberDown"}


def test_two_db_hosts_are_watched_through_patroni_and_etcd_and_one_host_provinces_are_not():
    cfg = load_province("lamdong")
    doc = yaml.safe_load(files(monitor.service(ctx_for(cfg, "backup.lamdong.gov.vn", LAMDONG)))[
        "/etc/prometheus/prometheus.yml"])
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert {t["labels"]["host"]: t["targets"] for t in jobs["patroni"]["static_configs"]} == {
        "mail.lamdong.gov.vn": ["10.77.0.11:8008"], "db2.lamdong.gov.vn": ["10.77.0.12:8008"]}
    assert {t["labels"]["host"]: t["targets"] for t in jobs["etcd"]["static_configs"]} == {
        "mail.lamdong.gov.vn": ["10.77.0.11:2379"], "db2.lamdong.gov.vn": ["10.77.0.12:2379"],
        "backup.lamdong.gov.vn": ["10.77.0.13:2379"]}
    rules = {r["alert"]: r for r in alerts.rules(cfg)["groups"][0]["rules"]}
    assert CLUSTER_ALERTS <= set(rules)
    # The store as a whole is named as such; a member's alert carries the member's host from its series.
    assert rules["StoreWithoutPrimary"]["labels"]["host"] == rules["StoreStandbyMissing"]["labels"]["host"] == alerts.STORE
    assert "host" not in rules["DbMemberDown"]["labels"] and "host" not in rules["EtcdMemberDown"]["labels"]
    assert all(rules[a]["labels"]["article"] == cfg.cite("operation") for a in CLUSTER_ALERTS)
    # Patroni and etcd are daemons whose stop node-exporter reports (DaemonDown).
    assert "patroni@17-main" in alerts.UNIT_INCLUDE and "|etcd|" in alerts.UNIT_INCLUDE
    one = load_province("bacninh")
    assert not CLUSTER_ALERTS & {r["alert"] for r in alerts.rules(one)["groups"][0]["rules"]}
    jobs = {j["job_name"] for j in yaml.safe_load(files(monitor.service(ctx_for(one, "backup.bacninh.gov.vn")))[
        "/etc/prometheus/prometheus.yml"])["scrape_configs"]}
    assert not {"patroni", "etcd"} & jobs


def test_status_shows_each_db_hosts_part_in_the_store_and_etcd_and_the_store_wide_alert():
    cfg = load_province("lamdong")
    mail, db2, backup = "mail.lamdong.gov.vn", "db2.lamdong.gov.vn", "backup.lamdong.gov.vn"

    def m(name, host, value):
        return _sample({"__name__": name, "host": host, "job": "patroni"}, value)

    doc = {"values": {"up": [_sample({"host": h}, 1) for h in (mail, db2, backup)],
                      "store": [m("up", mail, 1), m("patroni_primary", mail, 1), m("patroni_postgres_running", mail, 1),
                                m("patroni_postgres_streaming", mail, 0), m("up", db2, 0)],
                      "etcd": [_sample({"__name__": "up", "host": mail}, 1),
                               _sample({"__name__": "etcd_server_has_leader", "host": mail}, 0),
                               _sample({"__name__": "up", "host": backup}, 0)]},
           "alerts": [{"labels": {"alertname": "StoreStandbyMissing", "host": alerts.STORE, "article": cfg.cite("operation")},
                       "annotations": {"summary": "no standby of the account store streams from its primary"}}],
           "errors": []}
    text, code = status.report(cfg, doc)
    assert code == 1
    lines = text.splitlines()
    at = {h: lines.index(next(x for x in lines if x.startswith(h + " "))) for h in (mail, db2, backup)}
    assert lines[at[mail] + 1:at[backup]].count("  account store: primary") == 1
    assert "  etcd: NO LEADER" in lines[at[mail]:at[backup]]
    assert "  etcd: NOT ANSWERING" in lines[at[backup]:at[db2]]
    assert "  account store: Patroni NOT ANSWERING" in lines[at[db2]:]
    assert f"FIRING StoreStandbyMissing: no standby of the account store streams from its primary ({cfg.cite('operation')})" in text
    standby = {"up": 1, "patroni_postgres_running": 1, "patroni_primary": 0, "patroni_sync_standby": 1}
    assert status._member({**standby, "patroni_postgres_streaming": 1}) == "synchronous standby, streaming"
    assert status._member({**standby, "patroni_postgres_streaming": 0}) == "synchronous standby, NOT STREAMING"
    assert status._member({"up": 1, "patroni_postgres_running": 0}) == "PostgreSQL NOT RUNNING"
