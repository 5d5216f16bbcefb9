"""Real faults on a deployed, watched province, each with the alerts it must raise and its repair
(tests/lab/test_monitoring.py applies them all at once; bench/alert_latency.py one at a time).

Every rule of govmail/monitoring/alerts.py is made to fire here by a real fault on a real host, except
two the lab cannot produce: ClockOffset (the containers share the machine's kernel clock) and
ClamAVSignaturesStale (no freshclam mirror in the lab). Those are proved on their series by promtool,
on the monitor host, in test_monitoring.py. The account store's rules (two db hosts: StoreWithoutPrimary,
StoreStandbyMissing, DbMemberDown, EtcdMemberDown) fire on Lâm Đồng, whose db members are stopped by
tests/lab/test_store_failover.py.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Callable, Optional

from govmail import lab
from govmail.data.facts import dkim_paths

from .alerting import WebhookSink, deploy, run, scraped


@dataclass
class Scene:
    """What a break works on: the province, the webhook sink its alerts go to, and the data
    directory it is deployed from (a repair that deploys uses it)."""

    cfg: object
    sink: WebhookSink
    data: Optional[Path]


@dataclass(frozen=True)
class Break:
    """A real fault, the alerts it must raise (name, which host: "mail" or "monitor", the labels that
    tell it from another break's), and how it is repaired."""

    name: str
    alerts: tuple[tuple[str, str, dict], ...]
    apply: Callable[[Scene], None]
    repair: Callable[[Scene], None]
    # Alerts that end by themselves once their rule's window has passed (their resolution is awaited
    # from when they fired, not from the repair).
    spikes: tuple[str, ...] = ()


def _nothing(s: Scene) -> None:
    """A spike ends by itself."""


def _mail(s: Scene, command: str, check: bool = True):
    return run(s.cfg.mail_host, command, check=check)


# ---------------------------------------------------------------- the monitor's own way out

REFUSED_UNIT = "govmail-refused-by-sink.service"


def _refuse_notifications(s: Scene) -> None:
    """The webhook's receiver is down for 75 s (HTTP 500) when a job fails on the mail host: the
    notification is lost, which is itself alerted (then the failed job's alert comes through). (On
    the mail host: the monitor's own node-exporter is stopped by another break.)"""
    s.sink.refuse(REFUSED_UNIT, 75)
    _mail(s, f"systemctl reset-failed {REFUSED_UNIT} 2>/dev/null; "
          f"systemd-run --quiet -p Type=oneshot --unit={REFUSED_UNIT} /bin/false; true")


def _forget_failed_job(s: Scene) -> None:
    _mail(s, f"systemctl reset-failed {REFUSED_UNIT}")


# ---------------------------------------------------------------- the queue

def _hold_mail(s: Scene) -> None:
    """A message to a local mailbox kept on hold (Postfix delivers nothing on hold until released)."""
    _mail(s, "cp -a /etc/postfix/main.cf /root/main.cf.keep && postconf -e defer_transports=lmtp && "
          "postfix reload >/dev/null 2>&1 && "
          f"printf 'Subject: giu lai\\n\\nheld\\n' | sendmail -f {s.cfg.postmaster} {s.cfg.postmaster} && "
          "for i in $(seq 60); do postqueue -j | grep -q '\"queue_name\": \"deferred\"' && break; sleep 0.5; done; "
          "postsuper -h ALL deferred 2>/dev/null; cp -a /root/main.cf.keep /etc/postfix/main.cf && "
          "postfix reload >/dev/null 2>&1 && postqueue -j | grep -q '\"queue_name\": \"hold\"'")


def _release_mail(s: Scene) -> None:
    _mail(s, "postsuper -H ALL 2>/dev/null; postqueue -f")


def _people(s: Scene) -> list[str]:
    return [a.address for a in s.cfg.accounts if a.kind == "person" and a.status == "active"]


def _victim(s: Scene) -> str:
    """An official's mailbox the delivery breaks use (not the postmaster's: the queue break fills it)."""
    return _people(s)[0]


def _unwritable_mailbox(s: Scene) -> None:
    """An official's Maildir that cannot be written in: LMTP fails, Postfix keeps the mail."""
    user = _victim(s)
    _mail(s, f"doveadm mailbox status -u {user} messages INBOX >/dev/null && "
          f"box=$(doveadm user -f home {user})/Maildir && stat -c %a \"$box\" > /root/box-mode.keep && "
          "chmod 000 \"$box\" && "
          f"printf 'Subject: khong ghi duoc\\n\\nfails\\n' | sendmail -f {s.cfg.postmaster} {user}")
    scraped(s.cfg, "increase(dovecot_mail_deliveries_failed_total[5m]) > 0")


def _writable_mailbox(s: Scene) -> None:
    user = _victim(s)
    _mail(s, f"box=$(doveadm user -f home {user})/Maildir && chmod $(cat /root/box-mode.keep) \"$box\" && postqueue -f")


AGE_FIRST_DEFERRED = r"""
import glob, json, subprocess
# The first deferred message's arrival time (its queue file's T record), two hours earlier, in place.
for line in subprocess.run(["postqueue", "-j"], capture_output=True, text=True).stdout.splitlines():
    m = json.loads(line)
    if m["queue_name"] == "deferred":
        break
else:
    raise SystemExit("no deferred message")
path = glob.glob("/var/spool/postfix/deferred/**/" + m["queue_id"], recursive=True)[0]
data = bytearray(open(path, "rb").read())
i = 0
while i < len(data):
    kind = data[i]; i += 1
    size = shift = 0
    while True:
        b = data[i]; i += 1
        size |= (b & 0x7F) << shift; shift += 7
        if not b & 0x80:
            break
    if kind == ord("T"):
        sec = bytes(data[i:i + size]).split(b" ")[0]
        older = str(int(sec) - 7200).encode()
        assert len(older) == len(sec)
        data[i:i + len(sec)] = older
        break
    i += size
open(path, "r+b").write(data)
"""


def _mail_waits(s: Scene) -> None:
    """Local delivery deferred (as when Dovecot's LMTP refuses): 210 messages wait, the oldest for two
    hours (its arrival time moved back in its queue file)."""
    _mail(s, "cp -a /etc/postfix/main.cf /root/main.cf.waits && postconf -e defer_transports=lmtp && "
          "postfix reload >/dev/null 2>&1 && for i in $(seq 210); do "
          f"printf 'Subject: cho %s\\n\\nwaits\\n' $i | sendmail -f {s.cfg.postmaster} {s.cfg.postmaster}; done && "
          "for i in $(seq 120); do [ $(postqueue -j | grep -c '\"queue_name\": \"deferred\"') -ge 200 ] && break; "
          "sleep 0.5; done")
    run(s.cfg.mail_host, "python3 -", input=AGE_FIRST_DEFERRED)


def _deliver_waiting(s: Scene) -> None:
    _mail(s, "cp -a /root/main.cf.waits /etc/postfix/main.cf && postfix reload >/dev/null 2>&1; postqueue -f")


# ---------------------------------------------------------------- users' traffic

def _submission(s: Scene, me: str, flush: str = "") -> smtplib.SMTP:
    """An official's mail client logged in on the submission port (a password of their own set first);
    `flush` runs on the mail host before it connects."""
    from .conftest import LabHost

    h = LabHost(s.cfg.key, s.cfg, s.cfg.mail_host, lab.load_state()["hosts"][s.cfg.mail_host]["ip"])
    pw = h.set_password(me)
    if flush:
        h.run(flush)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    c = smtplib.SMTP(h.name, 587, timeout=30)
    c.starttls(context=ctx)
    c.login(me, pw)
    return c


def _letter(me: str, subject: str) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = me, me, subject
    m.set_content("Nội dung.\n")
    return m


def _send_past_the_limit(s: Scene) -> None:
    """An official's client sends past its burst: every further message is refused (rspamd's rate limit)."""
    me = _people(s)[-2]
    refused = 0
    with _submission(s, me, flush="redis-cli --scan --pattern 'RL*' | xargs -r redis-cli del >/dev/null") as c:
        for i in range(s.cfg.policy.outbound.burst + 15):
            try:
                c.send_message(_letter(me, f"Thư số {i}"))
            except smtplib.SMTPDataError:  # smtplib has reset the transaction: the client goes on
                refused += 1
    assert refused > 10, refused


def _unreadable_dkim_key(s: Scene) -> None:
    """The province's DKIM key unreadable for rspamd (touched, so rspamd loads it again rather than
    sign with the copy it holds), then an official submits a message: it leaves unsigned."""
    key = dkim_paths(s.cfg)[0]
    _mail(s, f"stat -c %a {key} > /root/dkim-mode.keep && chmod 600 {key} && touch {key}")
    me = _people(s)[1]
    with _submission(s, me) as c:
        c.send_message(_letter(me, "Thư không ký"))
    # rspamd adds its workers' hits to /counters about once a minute
    scraped(s.cfg, 'increase(govmail_rspamd_symbol_hits_total{symbol="GOVMAIL_DKIM_UNSIGNED"}[5m]) > 0', timeout=240)


def _readable_dkim_key(s: Scene) -> None:
    key = dkim_paths(s.cfg)[0]
    _mail(s, f"chmod $(cat /root/dkim-mode.keep) {key} && touch {key}")


def _hammer_webmail(s: Scene) -> None:
    """Sixty browsers at once on the web mail for 20 s: every php-fpm worker busy, requests wait."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    end = time.time() + 20

    def browse():
        while time.time() < end:
            try:
                urllib.request.urlopen(f"https://{s.cfg.mail_host}/", context=ctx, timeout=30).read()
            except OSError:
                pass

    threads = [threading.Thread(target=browse) for _ in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _guess_passwords(s: Scene) -> None:
    """60 failed logins within a minute (from the host itself: no ban gets in the way)."""
    _mail(s, f"seq 60 | xargs -P 20 -I@ doveadm auth test {s.cfg.postmaster} wrong-@ >/dev/null 2>&1; true")
    scraped(s.cfg, "sum by (host) (increase(dovecot_auth_failures_total[5m])) > 50")


def _ban_many(s: Scene) -> None:
    _mail(s, "for i in $(seq 1 21); do fail2ban-client set govmail-dovecot banip 198.51.100.$i >/dev/null; done")


def _unban(s: Scene) -> None:
    _mail(s, "for i in $(seq 1 21); do fail2ban-client set govmail-dovecot unbanip 198.51.100.$i "
          ">/dev/null 2>&1; done; true")


# ---------------------------------------------------------------- the host

FULL = "/srv/govmail-full"  # not under /mnt: Debian's node-exporter leaves out /mnt, /media, /run


def _fill_a_filesystem(s: Scene) -> None:
    """A small file system of the mail host (a 4 MiB tmpfs, as /tmp is on Debian 13) filled to 95 %
    of its space and of its inodes."""
    _mail(s, f"mkdir -p {FULL} && mount -t tmpfs -o size=4m,nr_inodes=64 govmail-full {FULL} && "
          f"head -c 3900k /dev/zero > {FULL}/fill && for i in $(seq 60); do : > {FULL}/f$i; done")


def _empty_the_filesystem(s: Scene) -> None:
    _mail(s, f"umount {FULL} && rmdir {FULL}")


def _leave_a_deploy_unfinished(s: Scene) -> None:
    """A deploy stopped before it reloaded nginx: its pending marker stays on the host."""
    _mail(s, "touch /var/lib/govmail/pending/web-reload")


def _deploy(s: Scene) -> None:
    deploy(s.cfg.key, s.data)


def _expiring_certificate(s: Scene) -> None:
    """A certificate for the host's names that expires in 10 days, in place of the deployed one."""
    _mail(s, "cd /etc/govmail/tls && cp -a fullchain.pem /root/fullchain.pem.keep && "
          "cp -a privkey.pem /root/privkey.pem.keep && "
          "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 10 "
          f"-subj /CN={s.cfg.mail_host} -addext subjectAltName=DNS:{s.cfg.mail_host} "
          "-keyout privkey.pem -out fullchain.pem 2>/dev/null && systemctl reload postfix dovecot nginx")


def _fail_backups(s: Scene) -> None:
    """The nightly backup unit fails (its passphrase gone for the run), as the timer would start it, and
    the last good backup is two days old."""
    _mail(s, "mv /etc/govmail/backup/passphrase /etc/govmail/backup/passphrase.away")
    try:
        assert _mail(s, "systemctl start govmail-backup.service", check=False).returncode != 0
    finally:
        _mail(s, "mv /etc/govmail/backup/passphrase.away /etc/govmail/backup/passphrase")
    _mail(s, "python3 -c \"import json, time; p = '/var/lib/govmail/backup-status.json'; st = json.load(open(p)); "
          "st['last_ok'] = int(time.time()) - 2 * 86400; json.dump(st, open(p, 'w'))\"")


def _good_backup(s: Scene) -> None:
    _mail(s, "systemctl start govmail-backup.service")


def _stale_logrotate(s: Scene) -> None:
    _mail(s, "touch -d '9 days ago' /var/lib/logrotate/status")


def _run_logrotate(s: Scene) -> None:
    _mail(s, "systemctl start logrotate.service")


def _stop_monitor_exporter(s: Scene) -> None:
    run(s.cfg.monitor_host, "systemctl stop prometheus-node-exporter")


def _start_monitor_exporter(s: Scene) -> None:
    run(s.cfg.monitor_host, "systemctl start prometheus-node-exporter")


HOLD = "/run/systemd/system/dovecot.service.d/zz-lab-break.conf"


def _kill_dovecot(s: Scene) -> None:
    """Dovecot killed outright and not coming back: systemd starts a crashed Dovecot again after 5 s
    (govmail's drop-in), so a runtime drop-in holds that off, as when every restart fails."""
    _mail(s, f"mkdir -p {HOLD.rsplit('/', 1)[0]} && printf '[Service]\\nRestart=no\\n' > {HOLD} && "
             "systemctl daemon-reload && systemctl kill --signal=KILL dovecot")


def _start_dovecot(s: Scene) -> None:
    _mail(s, f"rm -f {HOLD}; systemctl daemon-reload; systemctl reset-failed dovecot; systemctl start dovecot")


def _stop_postfix(s: Scene) -> None:
    _mail(s, "systemctl stop postfix")


def _start_postfix(s: Scene) -> None:
    _mail(s, "systemctl start postfix")


def _stop_facts(s: Scene) -> None:
    """govmail's facts written once more (with every break above in them), then their timer stopped."""
    _mail(s, "systemctl start govmail-metrics.service && systemctl stop govmail-metrics.timer")


def _start_facts(s: Scene) -> None:
    _mail(s, "systemctl start govmail-metrics.timer govmail-metrics.service")


# Applied in this order, repaired in the reverse one. The sink refuses before anything fires; mail is
# held, deliveries fail and users send while Postfix and Dovecot still run (the failed delivery before
# local delivery is deferred for the queue); the mailbox is writable again before the good backup
# (which reads every mailbox); Postfix and Dovecot are stopped last and started first; the facts stop
# last of all, with every break in them, and flow again first.
BREAKS = (
    Break("notifications refused", (("AlertsNotSent", "monitor", {"integration": "webhook"}),
                                    ("JobFailed", "mail", {"name": REFUSED_UNIT})),
          _refuse_notifications, _forget_failed_job, spikes=("AlertsNotSent",)),
    Break("mail held", (("MailHeld", "mail", {}),), _hold_mail, _release_mail),
    Break("backups failing", (("BackupFailed", "mail", {}), ("BackupLate", "mail", {}),
                              ("JobFailed", "mail", {"name": "govmail-backup.service"})),
          _fail_backups, _good_backup),
    Break("mailbox unwritable", (("DeliveryFailing", "mail", {}),), _unwritable_mailbox, _writable_mailbox,
          spikes=("DeliveryFailing",)),
    Break("sending past the limit", (("OutboundRateExceeded", "mail", {}),), _send_past_the_limit, _nothing,
          spikes=("OutboundRateExceeded",)),
    Break("mail waits", (("MailQueueGrowing", "mail", {}), ("DeferredMailAgeing", "mail", {})), _mail_waits,
          _deliver_waiting),
    Break("DKIM key unreadable", (("DkimSigningFailed", "mail", {}),), _unreadable_dkim_key, _readable_dkim_key,
          spikes=("DkimSigningFailed",)),
    Break("webmail hammered", (("WebmailSaturated", "mail", {}),), _hammer_webmail, _nothing,
          spikes=("WebmailSaturated",)),
    Break("passwords guessed", (("AuthFailureSpike", "mail", {}),), _guess_passwords, _nothing,
          spikes=("AuthFailureSpike",)),
    Break("many clients banned", (("BanSpike", "mail", {}),), _ban_many, _unban, spikes=("BanSpike",)),
    Break("file system full", (("DiskAlmostFull", "mail", {"mountpoint": FULL}),
                               ("InodesAlmostUsed", "mail", {"mountpoint": FULL})),
          _fill_a_filesystem, _empty_the_filesystem),
    Break("certificate expiring", (("CertificateExpiring", "mail", {}),), _expiring_certificate, _deploy),
    Break("deploy unfinished", (("DeployUnfinished", "mail", {}),), _leave_a_deploy_unfinished, _deploy),
    Break("log rotation stale", (("LogRotationStale", "mail", {}),), _stale_logrotate, _run_logrotate),
    Break("monitor's exporter down", (("HostDown", "monitor", {}),), _stop_monitor_exporter, _start_monitor_exporter),
    Break("dovecot killed", (("MailServiceDown", "mail", {"service": "imaps"}),
                             ("DaemonDown", "mail", {"name": "dovecot.service"})), _kill_dovecot, _start_dovecot),
    Break("postfix stopped", (("MailServiceDown", "mail", {"service": "smtp"}),
                              ("DaemonDown", "mail", {"name": "postfix.service"})), _stop_postfix, _start_postfix),
    Break("facts stopped", (("MetricsStale", "mail", {}),), _stop_facts, _start_facts),
)


def host_of(cfg, which: str) -> str:
    return cfg.mail_host if which == "mail" else cfg.monitor_host
