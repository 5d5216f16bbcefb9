"""The alert rules of a watched province, each protecting one clause of its data file.

An `Alert` names the policy section whose article it cites (`clause`); `rules(cfg)` renders them for
Prometheus (/etc/prometheus/govmail-alerts.yml on the monitor host) with that article in the alert's
labels, so every mail, webhook post and `govmail status` line says which clause is at stake and on
which host. `markdown()` is the runbook (docs/alerts.md): what fired, why it matters, what to do.

Adding a rule: one `Alert` below (its PromQL over the metrics the exporters give, the `for` window,
the clause, the runbook), then `govmail alerts --markdown > docs/alerts.md`, and a break in
tests/lab/breaks.py that makes it fire (tests/lab/test_monitoring.py applies them all). `promtool
check rules` checks the file on the host before it replaces the live one.

Labels every scraped series carries: `host` (the province host's name) and `role`; probes carry
`service` (smtp, submission, submissions, imaps, pop3s, webmail, mx).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

# The long-running daemons whose stop is an incident (node-exporter's systemd collector reports them;
# govmail's oneshot jobs are watched through their `failed` state instead).
DAEMONS = ("postfix", "dovecot", "rspamd", "redis-server", "clamav-daemon", "nginx", "php8.4-fpm", "fail2ban",
           "rsyslog", "govmail-passwd", "govmail-inspect", "govmail-sieve-guard", "prometheus",
           "prometheus-alertmanager", "prometheus-blackbox-exporter", "prometheus-node-exporter",
           "prometheus-nginx-exporter", "ssh")
# The units node-exporter reports: the daemons and govmail's own jobs (backup, daily job, reports...).
UNIT_INCLUDE = "(" + "|".join(d.replace(".", "[.]") for d in DAEMONS) + "|govmail-.+)[.]service"
DAY = 86400
# The file systems whose filling stops mail. tmpfs counts: Debian 13 mounts /tmp as tmpfs, and a full
# /tmp breaks uploads and PHP sessions as surely as a full disk stops deliveries. (Debian's
# node-exporter already leaves out the mounts under /dev, /proc, /run, /sys, /mnt and /media.)
FILESYSTEMS = 'fstype!~"ramfs|squashfs|nsfs|overlay|iso9660"'


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
    Alert("Heartbeat", "operation", "vector(1)", "0m", "the monitor of the province is alive",
          "Sent every `policy.monitoring.heartbeat_hours`. Its absence is the alert: the monitor host, its "
          "Prometheus or Alertmanager, or the way to you is down.", severity="heartbeat"),
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
                       # the heartbeat comes from no scraped series: it is the monitor's own
                       **({"host": cfg.monitor_host} if a.name == "Heartbeat" and cfg.monitor_host else {})},
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
