"""The alert rules of a watched province, each protecting one clause of its data file.

An `Alert` names the policy section whose article it cites (`clause`); `rules(cfg)` renders them for
Prometheus (/etc/prometheus/govmail-alerts.yml on the monitor host) with that article in the alert's
labels, so every mail, webhook post and `govmail status` line says which clause is at stake and on
which host. `markdown()` is the runbook (docs/alerts.md): what fired, why it matters, what to do.

Adding a rule: one `Alert` below (its PromQL over the metrics the exporters give, the `for` window,
the clause, the runbook), then `govmail alerts --markdown > docs/alerts.md`, and a break in
tests/lab/breaks.py that makes it fire (tests/lab/test_monitoring.py applies them all; the account
store's, on two db hosts, are broken by tests/lab/test_store_failover.py). `promtool
check rules` checks the file on the host before it replaces the live one.

Labels every scraped series carries: `host` (the province host's name) and `role`; probes carry
`service` (smtp, submission, submissions, imaps, pop3s, webmail, mx).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..host.contract import PATRONI

# The long-running daemons whose stop is an incident (node-exporter's systemd collector reports them;
# govmail's oneshot jobs are watched through their `failed` state instead).
DAEMONS = ("postfix", "dovecot", "rspamd", "redis-server", "clamav-daemon", "nginx", "php8.4-fpm", "fail2ban",
           "rsyslog", "govmail-passwd", "govmail-inspect", "govmail-sieve-guard", "prometheus",
           "prometheus-alertmanager", "prometheus-blackbox-exporter", "prometheus-node-exporter",
           "prometheus-nginx-exporter", "ssh", PATRONI["unit"], "etcd")
# The units node-exporter reports: the daemons and govmail's own jobs (backup, daily job, reports...).
UNIT_INCLUDE = "(" + "|".join(d.replace(".", "[.]") for d in DAEMONS) + "|govmail-.+)[.]service"
DAY = 86400
# The file systems whose filling stops mail. tmpfs counts: Debian 13 mounts /tmp as tmpfs, and a full
# /tmp breaks uploads and PHP sessions as surely as a full disk stops deliveries. (Debian's
# node-exporter already leaves out the mounts under /dev, /proc, /run, /sys, /mnt and /media.)
FILESYSTEMS = 'fstype!~"ramfs|squashfs|nsfs|overlay|iso9660"'
# The `host` label of an alert about the account store as a whole (two db hosts), not one of its hosts.
STORE = "account store"


def _clustered(cfg, mirror: bool) -> bool:
    return cfg.store_cluster


@dataclass(frozen=True)
class Alert:
    name: str
    clause: str  # the policy section whose article the alert cites
    expr: str  # PromQL; BACKUP_MAX_AGE is replaced by the province's seconds, FILESYSTEMS by the above
    for_: str
    summary: str  # Alertmanager's text; {{ $labels.host }}, {{ $value }}
    runbook: str
    severity: str = "critical"
    # Whether the province's hosts have it (ClamAV's signature age: only where freshclam runs).
    only: Optional[Callable[[object, bool], bool]] = None
    # Its `host` label when its expression has none (the monitor's heartbeat, the store as a whole).
    host: Optional[Callable[[object], str]] = None


ALERTS = (
    Alert("HostDown", "operation", 'up{job="node"} == 0', "2m",
          "{{ $labels.host }} does not answer the monitor (node-exporter unreachable)",
          "The host is off, cut off, or node-exporter stopped. Reach it (`govmail lab ssh` / ssh); if it is "
          "lost, rebuild it from the data and the last backup (`govmail backup restore-host`)."),
    Alert("MailServiceDown", "operation", 'probe_success{job="probe"} == 0', "1m",
          "{{ $labels.service }} of {{ $labels.host }} does not answer as it should",
          "The port refuses, hangs, or answers without STARTTLS/TLS. `systemctl status` of the daemon behind it "
          "(Postfix for smtp/submission, Dovecot for imaps/pop3s, nginx for webmail); a redeploy starts what "
          "should run. `mx`: the domain's MX record does not name the mail host."),
    Alert("DaemonDown", "operation", 'node_systemd_unit_state{state="active",type!="oneshot"} == 0', "1m",
          "{{ $labels.name }} is not running on {{ $labels.host }}",
          "`journalctl -u <unit>` says why it stopped; `systemctl start <unit>` or a redeploy starts it again."),
    Alert("JobFailed", "operation", 'node_systemd_unit_state{state="failed"} == 1', "1m",
          "{{ $labels.name }} failed on {{ $labels.host }}",
          "A govmail job (backup, daily job, report, pruning) or a daemon ended in failure: `journalctl -u <unit>`.",
          severity="warning"),
    Alert("BackupFailed", "backup", "govmail_backup_last_run_failed == 1", "0m",
          "the last backup of {{ $labels.host }} failed",
          "`govmail backup status P` shows the error; fix it (backup host reachable, disk space) and run "
          "`govmail backup run P`."),
    Alert("BackupLate", "backup", "time() - govmail_backup_last_success_timestamp_seconds > BACKUP_MAX_AGE", "0m",
          "the last good backup of {{ $labels.host }} is {{ $value | humanizeDuration }} old",
          "The daily backup did not succeed in time (`policy.backup.max_age_hours`): `govmail backup status P`, "
          "then `govmail backup run P`."),
    Alert("CertificateExpiring", "secrecy",
          f"(govmail_tls_certificate_expiry_timestamp_seconds - time() < 21 * {DAY}) "
          f"or (probe_ssl_earliest_cert_expiry - time() < 21 * {DAY})", "1m",
          "the certificate of {{ $labels.host }} expires in {{ $value | humanizeDuration }}",
          "Renew it (`tls.certificate` in the data, or the ACME client) and redeploy; a self-signed one is made "
          "again by the next deploy."),
    Alert("MailQueueGrowing", "operation",
          'sum by (host) (govmail_postfix_queue_messages{queue=~"incoming|active|deferred"}) > 200', "15m",
          "{{ $value }} messages wait in Postfix's queue on {{ $labels.host }}",
          "`postqueue -p` shows what waits and why (a remote host refusing, the content filter down)."),
    Alert("DeferredMailAgeing", "operation", 'govmail_postfix_queue_oldest_age_seconds{queue="deferred"} > 3600',
          "5m", "deferred mail on {{ $labels.host }} is {{ $value | humanizeDuration }} old",
          "`postqueue -p` names the reason of each deferral; `postqueue -f` retries once it is fixed."),
    Alert("MailHeld", "operation", 'govmail_postfix_queue_messages{queue="hold"} > 0', "2m",
          "{{ $value }} messages are on hold on {{ $labels.host }}",
          "Held mail is never delivered until released: `postqueue -j` lists it, `postsuper -H ALL` releases it."),
    Alert("DiskAlmostFull", "operation",
          '1 - node_filesystem_avail_bytes{FILESYSTEMS} / node_filesystem_size_bytes > 0.85', "10m",
          "{{ $labels.mountpoint }} on {{ $labels.host }} is {{ $value | humanizePercentage }} full",
          "Mail stops when the disk is full: find what grew (`du -xsh /var/*`), add space, or move mailboxes."),
    Alert("InodesAlmostUsed", "operation",
          '1 - node_filesystem_files_free{FILESYSTEMS} / node_filesystem_files > 0.85', "10m",
          "{{ $labels.mountpoint }} on {{ $labels.host }} has used {{ $value | humanizePercentage }} of its inodes",
          "Each message is a file (Maildir): add inodes (a new file system) before they run out."),
    Alert("LogRotationStale", "logs", f"time() - govmail_logrotate_last_run_timestamp_seconds > 8 * {DAY}", "0m",
          "logrotate has not run on {{ $labels.host }} for {{ $value | humanizeDuration }}",
          "The logs grow unbounded and their retention is not applied: `systemctl status logrotate.timer`.",
          severity="warning"),
    Alert("ClamAVSignaturesStale", "antivirus", f"time() - govmail_clamav_signatures_timestamp_seconds > 3 * {DAY}",
          "0m", "ClamAV's signatures on {{ $labels.host }} are {{ $value | humanizeDuration }} old",
          "freshclam cannot reach its mirror: `journalctl -u clamav-freshclam`.", severity="warning",
          only=lambda cfg, mirror: mirror and cfg.policy.antivirus.enabled),
    Alert("ClockOffset", "operation", "abs(node_timex_offset_seconds) > 0.5", "10m",
          "the clock of {{ $labels.host }} is {{ $value }} s off",
          "TLS, DKIM and the logs need the right time: `timedatectl`, and the NTP client's status.",
          severity="warning"),
    Alert("AuthFailureSpike", "bruteforce", "sum by (host) (increase(dovecot_auth_failures_total[5m])) > 50", "0m",
          "{{ $value }} failed logins in 5 minutes on {{ $labels.host }}",
          "Someone is guessing passwords: `fail2ban-client status`, and the clients named in mail.log.",
          severity="warning"),
    Alert("BanSpike", "bruteforce", "sum by (host) (increase(govmail_fail2ban_bans_total[5m])) > 20", "0m",
          "{{ $value }} clients banned in 5 minutes on {{ $labels.host }}",
          "An attack on the login ports, or an agency's gateway failing with an old password "
          "(`policy.bruteforce.ignore`).", severity="warning"),
    Alert("OutboundRateExceeded", "outbound", 'increase(govmail_rspamd_actions_total{action="soft reject"}[5m]) > 10',
          "0m", "{{ $value }} messages refused for sending too fast on {{ $labels.host }}",
          "A mailbox sends far above its allowed rate (`policy.outbound`): a stolen password? The monthly "
          "report's misuse list names it; `govmail set-password` stops it.", severity="warning"),
    Alert("DeliveryFailing", "operation", "increase(dovecot_mail_deliveries_failed_total[5m]) > 0", "0m",
          "{{ $value }} local deliveries failed in 5 minutes on {{ $labels.host }}",
          "Dovecot's LMTP could not store mail (quota, disk, permissions): mail.log names the mailbox.",
          severity="warning"),
    Alert("DkimSigningFailed", "spam",
          'increase(govmail_rspamd_symbol_hits_total{symbol="GOVMAIL_DKIM_UNSIGNED"}[5m]) > 0', "0m",
          "{{ $value }} submissions left the host unsigned by DKIM in 5 minutes on {{ $labels.host }}",
          "Recipients that check DMARC refuse or mark the province's mail. rspamd's log says why it could not sign "
          "(`journalctl -u rspamd | grep -i dkim`). A key in /etc/govmail/dkim that `_rspamd` cannot read: "
          "`chgrp _rspamd` and `chmod 640` it. A key missing on a rebuilt host: `govmail backup restore-host P`. "
          "`govmail verify P` then checks a signed submission."),
    Alert("WebmailSaturated", "web_access",
          "increase(govmail_phpfpm_max_children_reached_total[5m]) > 0 or govmail_phpfpm_listen_queue > 0", "5m",
          "the web mail on {{ $labels.host }} has every worker busy and requests waiting",
          "Officials wait for the web mail: raise the pool's `pm.max_children` (templates/php/) if memory allows, "
          "or look for a client hammering it in nginx's access log.", severity="warning"),
    Alert("DeployUnfinished", "operation", "govmail_pending_actions > 0", "30m",
          "a deploy left {{ $value }} actions undone on {{ $labels.host }}",
          "A deploy stopped half-way: run it again (`govmail deploy P`); it carries the pending actions out."),
    Alert("MetricsStale", "operation",
          '(time() - govmail_metrics_timestamp_seconds > 120) or (up{job="node"} == 1 unless on (host) '
          "govmail_metrics_timestamp_seconds)", "2m",
          "govmail's facts about {{ $labels.host }} are not current",
          "govmail-metrics.timer stopped: `systemctl status govmail-metrics.service`; a redeploy restarts it."),
    Alert("AlertsNotSent", "operation", "increase(alertmanager_notifications_failed_total[5m]) > 0", "0m",
          "Alertmanager could not send {{ $value }} notifications by {{ $labels.integration }}",
          "The relay or the webhook refuses: `journalctl -u prometheus-alertmanager` names the error."),
    # Two db hosts (Patroni and etcd: govmail/services/db.py, etcd.py); read from their own /metrics.
    Alert("StoreWithoutPrimary", "operation", '(sum(patroni_primary{job="patroni"}) or vector(0)) < 1', "1m",
          "the account store has no primary: password changes, new accounts and the daily job's writes fail",
          "No Patroni member holds the leader key: etcd has lost its quorum (see EtcdMemberDown), or both db hosts' "
          "PostgreSQL are down (DbMemberDown). Logins and deliveries go on while a standby answers reads. Bring back "
          "the members that are down; `patronictl -c /etc/patroni/17-main.yml list` on a db host shows the cluster.",
          only=_clustered, host=lambda cfg: STORE),
    Alert("StoreStandbyMissing", "operation", '(sum(patroni_postgres_streaming{job="patroni"}) or vector(0)) < 1',
          "1m", "no standby of the account store streams from its primary: losing the primary's host would stop it",
          "The standby's host or PostgreSQL is down (DbMemberDown), or it cannot reach the primary on port 5432 "
          "(`journalctl -u patroni@17-main` on the standby). Writes go on without a synchronous standby. Once "
          "it is back Patroni rejoins it (pg_rewind, else a fresh copy).",
          only=_clustered, host=lambda cfg: STORE),
    Alert("StoreStandbyBehind", "operation", "time() - govmail_standby_oldest_copy_seconds > 600", "0m",
          "the standby copy of {{ $labels.store }}'s mailboxes on {{ $labels.standby }} is over ten minutes old",
          "After each delivery and every minute `standby` copies the store's mailboxes to its standby "
          "(hosts[].standby); `journalctl -u govmail-standby -u govmail-standby-deliveries` on the host that copies (the alert's host) says why it did not: the store or the standby "
          "unreachable, or a store whose INBOX was made anew (never mirrored over the standby: `govmail failover`, "
          "or `standby forget ADDRESS` once the store's copy is the whole one). Until it copies again, a failover "
          "loses the mail of since then.",
          severity="warning", only=lambda cfg, _mirror: bool(cfg.standbys)),
    Alert("DbMemberDown", "operation",
          'up{job="patroni"} == 0 or patroni_postgres_running{job="patroni"} == 0', "1m",
          "the account store's PostgreSQL (Patroni) is not running on {{ $labels.host }}",
          "`systemctl status patroni@17-main` and `journalctl -u patroni@17-main` on the host; Patroni restarts "
          "PostgreSQL itself, systemd restarts Patroni. A lost host: rebuild it (README, Two db hosts).",
          only=_clustered),
    Alert("EtcdMemberDown", "operation", 'up{job="etcd"} == 0 or etcd_server_has_leader{job="etcd"} == 0', "1m",
          "etcd on {{ $labels.host }} does not answer or has no leader",
          "Patroni keeps the store's primary only while two of etcd's three members agree. `systemctl status etcd` "
          "on the host; `etcdctl endpoint health --cluster` on a member shows the others.",
          only=_clustered),
    Alert("Heartbeat", "operation", "vector(1)", "0m", "the monitor of the province is alive",
          "Sent every `policy.monitoring.heartbeat_hours`. Its absence is the alert: the monitor host, its "
          "Prometheus or Alertmanager, or the way to you is down.", severity="heartbeat",
          host=lambda cfg: cfg.monitor_host),
)


def _filesystems(text: str) -> str:
    return text.replace("{FILESYSTEMS}", "{" + FILESYSTEMS + "}")


def expr(a: Alert, cfg) -> str:
    """The rule's PromQL for this province."""
    return _filesystems(a.expr).replace("BACKUP_MAX_AGE", str(cfg.policy.backup.max_age_hours * 3600))


def active(cfg, signature_mirror: bool = True) -> list[Alert]:
    return [a for a in ALERTS if a.only is None or a.only(cfg, signature_mirror)]


def rules(cfg, signature_mirror: bool = True) -> dict:
    """The Prometheus rule file of the province."""
    out = []
    for a in active(cfg, signature_mirror):
        article = cfg.cite(a.clause)
        out.append({
            "alert": a.name,
            "expr": expr(a, cfg),
            "for": a.for_,
            "labels": {"severity": a.severity, "clause": a.clause, "article": article, "province": cfg.key,
                       # the heartbeat and the store's are about no one scraped series
                       **({"host": a.host(cfg)} if a.host and a.host(cfg) else {})},
            "annotations": {"summary": a.summary, "article": article,
                            "runbook": f"docs/alerts.md#{a.name.lower()}"},
        })
    return {"groups": [{"name": "govmail", "rules": out}]}


def markdown() -> str:
    lines = ["# Alerts and what to do", "",
             "Generated by `govmail alerts --markdown` from govmail/monitoring/alerts.py. Each alert carries the "
             "article of the clause it protects (from the province's data file) and the host it concerns.", "",
             "| Alert | Clause | Fires when | For | Severity |", "|---|---|---|---|---|"]
    bar = "\\|"  # a | inside a table cell
    lines += [f"| [{a.name}](#{a.name.lower()}) | `policy.{a.clause}` | `{_filesystems(a.expr).replace('|', bar)}` | {a.for_} | "
              f"{a.severity} |" for a in ALERTS]
    for a in ALERTS:
        lines += ["", f"## {a.name}", "", f"*{a.summary}* — protects `policy.{a.clause}`.", "", a.runbook]
    return "\n".join(lines) + "\n"
