"""What the monitoring lab test and bench/alert_latency.py share: a webhook receiver on the lab
bridge, a province deployed with its alerts routed to it (and to a neighbouring province's mailbox
through that province's MX), and the breaks that make each rule fire, each with its repair."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional

import yaml

from govmail import lab
from govmail.data import ROOT, load_province


class WebhookSink:
    """Alertmanager's webhook posts, received on the lab bridge: (time received, alert) per alert."""

    def __init__(self):
        sink = self
        self.received: list[tuple[float, dict]] = []
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                now = time.time()
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = {"alerts": []}
                with sink.lock:
                    sink.received += [(now, a) for a in doc.get("alerts", [])]
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer((lab.GATEWAY, 0), Handler)
        self.url = f"http://{lab.GATEWAY}:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def find(self, name: str, host: Optional[str], status: str = "firing", since: float = 0,
             labels: Optional[dict] = None) -> Optional[tuple]:
        with self.lock:
            for t, a in self.received:
                if (t >= since and a["labels"].get("alertname") == name and a.get("status") == status
                        and (host is None or a["labels"].get("host") == host)
                        and all(a["labels"].get(k) == v for k, v in (labels or {}).items())):
                    return t, a
        return None

    def wait(self, name: str, host: Optional[str], status: str = "firing", since: float = 0,
             timeout: float = 420, labels: Optional[dict] = None) -> Optional[tuple]:
        end = time.time() + timeout
        while time.time() < end:
            hit = self.find(name, host, status, since, labels)
            if hit:
                return hit
            time.sleep(1)
        return None


def run(host_name: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    ip = lab.load_state()["hosts"][host_name]["ip"]
    r = subprocess.run(["ssh", *lab.ssh_options(), f"root@{ip}", command], capture_output=True, text=True, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"{host_name}: `{command}` failed ({r.returncode}): {r.stderr.strip()}")
    return r


def govmail(*args, env=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(["govmail", *args], capture_output=True, text=True, env=env, timeout=timeout)


def watched_data(tmp: Path, province: str, webhook: str, neighbour: Optional[str]) -> Path:
    """A copy of the data directory whose province posts its alerts to `webhook` and, with a
    neighbour in the lab, mails them to the neighbour's postmaster through the neighbour's MX."""
    data = tmp / "data"
    if data.exists():
        shutil.rmtree(data)
    shutil.copytree(ROOT / "group_data", data)
    doc = yaml.safe_load((data / f"{province}.yml").read_text())
    mon = doc["policy"].setdefault("monitoring", {"article": load_province(province).cite("monitoring")})
    mon["webhook"] = webhook
    if neighbour:
        n = load_province(neighbour)
        mon["relay"] = {"host": n.mail_host, "port": 25}
        mon["alert_to"] = [n.postmaster]
    (data / f"{province}.yml").write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return data


def deploy(province: str, data: Optional[Path] = None) -> None:
    env = {**os.environ, **({"GOVMAIL_DATA_DIR": str(data)} if data else {})}
    r = govmail("deploy", province, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@dataclass(frozen=True)
class Break:
    """A real fault on a deployed province, the alerts it must raise (name, which host: "mail" or
    "monitor", the labels that tell it from another break's), and how it is repaired."""

    name: str
    alerts: tuple[tuple[str, str, dict], ...]
    apply: Callable[[object], None]
    repair: Callable[[object, Optional[Path]], None]  # (the province, the data directory it is deployed from)
    # A spike: nothing to repair, its alert resolves by itself once the rule's window has passed.
    spike: bool = False


def _stop_postfix(cfg):
    run(cfg.mail_host, "systemctl stop postfix")


def _start_postfix(cfg, data):
    run(cfg.mail_host, "systemctl start postfix")


def _fail_backup(cfg):
    """The nightly backup unit fails (its passphrase gone for the run), as the timer would start it."""
    run(cfg.mail_host, "mv /etc/govmail/backup/passphrase /etc/govmail/backup/passphrase.away")
    try:
        assert run(cfg.mail_host, "systemctl start govmail-backup.service", check=False).returncode != 0
    finally:
        run(cfg.mail_host, "mv /etc/govmail/backup/passphrase.away /etc/govmail/backup/passphrase")


def _good_backup(cfg, data):
    run(cfg.mail_host, "systemctl start govmail-backup.service")


def _expiring_certificate(cfg):
    """A certificate for the host's names that expires in 10 days, in place of the deployed one."""
    run(cfg.mail_host, "cd /etc/govmail/tls && cp -a fullchain.pem /root/fullchain.pem.keep && "
        "cp -a privkey.pem /root/privkey.pem.keep && "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 10 "
        f"-subj /CN={cfg.mail_host} -addext subjectAltName=DNS:{cfg.mail_host} "
        "-keyout privkey.pem -out fullchain.pem 2>/dev/null && systemctl reload postfix dovecot nginx")


def _renewed_certificate(cfg, data):
    deploy(cfg.key, data)  # a self-signed certificate with under 30 days left is made again (govmail/services/tls.py)


def _hold_mail(cfg):
    """A message to a local mailbox kept on hold (Postfix delivers nothing on hold until released)."""
    run(cfg.mail_host, "cp -a /etc/postfix/main.cf /root/main.cf.keep && postconf -e defer_transports=lmtp && "
        "postfix reload >/dev/null 2>&1 && "
        f"printf 'Subject: giu lai\\n\\nheld\\n' | sendmail -f {cfg.postmaster} {cfg.postmaster} && "
        "for i in $(seq 60); do postqueue -j | grep -q '\"queue_name\": \"deferred\"' && break; sleep 0.5; done; "
        "postsuper -h ALL deferred 2>/dev/null; cp -a /root/main.cf.keep /etc/postfix/main.cf && "
        "postfix reload >/dev/null 2>&1 && postqueue -j | grep -q '\"queue_name\": \"hold\"'")


def _release_mail(cfg, data):
    run(cfg.mail_host, "postsuper -H ALL 2>/dev/null; postqueue -f")


def _kill_dovecot(cfg):
    """Dovecot killed outright (its unit has no Restart=): it stays down until someone acts."""
    run(cfg.mail_host, "systemctl kill --signal=KILL dovecot")


def _start_dovecot(cfg, data):
    run(cfg.mail_host, "systemctl reset-failed dovecot; systemctl start dovecot")


def _stale_logrotate(cfg):
    run(cfg.mail_host, "touch -d '9 days ago' /var/lib/logrotate/status")


def _run_logrotate(cfg, data):
    run(cfg.mail_host, "systemctl start logrotate.service")


def _guess_passwords(cfg):
    """60 failed logins within a minute (from the host itself: no ban gets in the way)."""
    run(cfg.mail_host, f"seq 60 | xargs -P 20 -I@ doveadm auth test {cfg.postmaster} wrong-@ >/dev/null 2>&1; true")


def _ban_many(cfg):
    run(cfg.mail_host, "for i in $(seq 1 21); do fail2ban-client set govmail-dovecot banip 198.51.100.$i >/dev/null; done")


def _unban(cfg, data):
    run(cfg.mail_host, "for i in $(seq 1 21); do fail2ban-client set govmail-dovecot unbanip 198.51.100.$i "
        ">/dev/null 2>&1; done; true")


def _nothing(cfg, data):
    """A spike ends by itself: its alert resolves once its window has passed."""


def _stop_monitor_exporter(cfg):
    run(cfg.monitor_host, "systemctl stop prometheus-node-exporter")


def _start_monitor_exporter(cfg, data):
    run(cfg.monitor_host, "systemctl start prometheus-node-exporter")


# Applied in this order, repaired in the reverse one: mail is held and certificates replaced while
# Postfix and Dovecot still run; they are stopped last and started first.
BREAKS = (
    Break("mail held", (("MailHeld", "mail", {}),), _hold_mail, _release_mail),
    Break("certificate expiring", (("CertificateExpiring", "mail", {}),), _expiring_certificate,
          _renewed_certificate),
    Break("backup failed", (("BackupFailed", "mail", {}), ("JobFailed", "mail", {"name": "govmail-backup.service"})),
          _fail_backup, _good_backup),
    Break("log rotation stale", (("LogRotationStale", "mail", {}),), _stale_logrotate, _run_logrotate),
    Break("passwords guessed", (("AuthFailureSpike", "mail", {}),), _guess_passwords, _nothing, spike=True),
    Break("many clients banned", (("BanSpike", "mail", {}),), _ban_many, _unban, spike=True),
    Break("monitor's exporter down", (("HostDown", "monitor", {}),), _stop_monitor_exporter, _start_monitor_exporter),
    Break("dovecot killed", (("MailServiceDown", "mail", {"service": "imaps"}),
                             ("DaemonDown", "mail", {"name": "dovecot.service"})), _kill_dovecot, _start_dovecot),
    Break("postfix stopped", (("MailServiceDown", "mail", {"service": "smtp"}),
                              ("DaemonDown", "mail", {"name": "postfix.service"})), _stop_postfix, _start_postfix),
)


def host_of(cfg, which: str) -> str:
    return cfg.mail_host if which == "mail" else cfg.monitor_host
