"""`metrics`: govmail's own facts about a host, for Prometheus, through node-exporter's textfile collector.

Run every 30 s by govmail-metrics.timer on every govmail host (govmail/services/exporters.py); writes
contract.PATHS["metrics"] atomically (node-exporter never reads half a file). Each fact is written
only where its source exists on the host, so one tool serves the mail, backup and monitor hosts:

    govmail_metrics_timestamp_seconds                 when this ran (its absence or age: the tool stopped)
    govmail_backup_last_success_timestamp_seconds     last good backup (before the first: when backups were set up)
    govmail_backup_last_run_failed                    1 while the newest run failed
    govmail_logrotate_last_run_timestamp_seconds      logrotate's last run (before the first: its install)
    govmail_tls_certificate_expiry_timestamp_seconds  the deployed certificate's notAfter
    govmail_clamav_signatures_timestamp_seconds       the newest ClamAV signature database
    govmail_pending_actions                           pending deploy markers (a deploy stopped half-way)
    govmail_accounts{status}                          the account store's mailboxes by status
    govmail_postfix_queue_messages{queue}             Postfix's queues by state (`postqueue -j`)
    govmail_postfix_queue_oldest_age_seconds{queue}
    govmail_fail2ban_banned{jail}, govmail_fail2ban_bans_total{jail}
    govmail_rspamd_scanned_total, govmail_rspamd_actions_total{action}
                                                     (rspamd's controller /stat, on the loopback)
    govmail_rspamd_symbol_hits_total{symbol}          DKIM_SIGNED and GOVMAIL_DKIM_UNSIGNED (its /counters)
    govmail_phpfpm_active_processes, govmail_phpfpm_max_children_reached_total, govmail_phpfpm_listen_queue
                                                     (the web mail's pool, through nginx on the loopback)

With --quota (govmail-quota-facts.timer, every 15 minutes on the mail host) it writes
contract.PATHS["metrics_quota"] instead:

    govmail_quota_facts_timestamp_seconds             when the mailboxes' quota use was read
    govmail_mailboxes_quota{state}                    mailboxes with a quota: all, over 80 %, over 95 %, full

Judged and not used: Debian's prometheus-postfix-exporter (0.3.0, an unmaintained fork that reads
showq's old format); `postqueue -j` is Postfix's own, stable JSON.

Standard library only.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
import urllib.request

from . import contract

OUT = contract.PATHS["metrics"]
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")


class Facts:
    def __init__(self):
        self.lines: list[str] = []
        self.declared: set[str] = set()

    def add(self, name: str, kind: str, text: str, value: float, labels: dict | None = None) -> None:
        if name not in self.declared:
            self.lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            self.declared.add(name)
        lab = ""
        if labels:
            lab = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())) + "}"
        self.lines.append(f"{name}{lab} {float(value):.17g}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _run(cmd: list[str], timeout: float = 20) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def backup(f: Facts) -> None:
    conf = _mtime(contract.PATHS["backup_conf"])
    if conf is None:
        return
    try:
        with open(contract.PATHS["backup_status"], encoding="utf-8") as fh:
            st = json.load(fh)
    except (OSError, ValueError):
        st = {}
    f.add("govmail_backup_last_success_timestamp_seconds", "gauge",
          "Last good backup (before the first one: when backups were set up).", st.get("last_ok") or conf)
    failed = bool(st.get("last_error") and st["last_error"] >= (st.get("last_ok") or 0))
    f.add("govmail_backup_last_run_failed", "gauge", "1 while the newest backup run failed.", int(failed))


def logrotate(f: Facts) -> None:
    t = _mtime("/var/lib/logrotate/status") or _mtime("/var/lib/dpkg/info/logrotate.list")
    if t is not None:
        f.add("govmail_logrotate_last_run_timestamp_seconds", "gauge",
              "logrotate's last run (before the first one: when it was installed).", t)


def certificate(f: Facts) -> None:
    path = contract.PATHS["tls_cert"]
    if not os.path.exists(path):
        return
    out = _run(["openssl", "x509", "-noout", "-enddate", "-in", path])
    if out and "=" in out:
        try:
            t = time.mktime(time.strptime(out.split("=", 1)[1].strip(), "%b %d %H:%M:%S %Y %Z")) - time.timezone
        except ValueError:
            return
        f.add("govmail_tls_certificate_expiry_timestamp_seconds", "gauge", "The deployed certificate's notAfter.", t)


def clamav(f: Facts) -> None:
    times = [t for t in (_mtime(p) for p in glob.glob("/var/lib/clamav/*.c[lv]d")) if t]
    if times:
        f.add("govmail_clamav_signatures_timestamp_seconds", "gauge", "The newest ClamAV signature database.",
              max(times))


def pending(f: Facts) -> None:
    d = contract.PATHS["pending"]
    n = len(os.listdir(d)) if os.path.isdir(d) else 0
    f.add("govmail_pending_actions", "gauge", "Actions a deploy marked and has not carried out yet.", n)


# A host with one of these has an account store (and its code); the backup and monitor hosts have
# neither (govmail/services/exporters.py sends them metrics.py and contract.py alone).
STORE_FILES = (contract.PATHS["store"], contract.PATHS["store_dsn"])


def accounts(f: Facts) -> None:
    if not any(os.path.exists(p) for p in STORE_FILES):
        return
    from . import store

    try:
        con = store.read_only()
        rows = con.execute("SELECT status, count(*) FROM accounts GROUP BY status").fetchall()
        con.close()
    except Exception:  # noqa: BLE001 - a store that does not answer now: no figure, the rest still written
        return
    counts = dict.fromkeys(("active", "cancelled", "suspended", "removed", "deleted"), 0)
    counts.update({str(s): n for s, n in rows})
    for status, n in sorted(counts.items()):
        f.add("govmail_accounts", "gauge", "Mailboxes of the account store by status.", n, {"status": status})


def postfix_queue(f: Facts, now: float) -> None:
    if not os.path.exists("/usr/sbin/postqueue"):
        return
    out = _run(["postqueue", "-j"])
    if out is None:
        return
    count = dict.fromkeys(QUEUES, 0)
    oldest = dict.fromkeys(QUEUES, now)
    for line in out.splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        q = m.get("queue_name")
        if q in count:
            count[q] += 1
            oldest[q] = min(oldest[q], float(m.get("arrival_time") or now))
    for q in QUEUES:
        f.add("govmail_postfix_queue_messages", "gauge", "Messages in Postfix's queue.", count[q], {"queue": q})
        f.add("govmail_postfix_queue_oldest_age_seconds", "gauge", "Age of the oldest message in the queue "
              "(0 when empty).", max(0.0, now - oldest[q]), {"queue": q})


def fail2ban(f: Facts) -> None:
    if not os.path.exists("/usr/bin/fail2ban-client"):
        return
    out = _run(["fail2ban-client", "status"], timeout=10)
    if not out:
        return
    jails = [j.strip() for line in out.splitlines() if "Jail list:" in line
             for j in line.split(":", 1)[1].split(",") if j.strip()]
    for jail in jails:
        st = _run(["fail2ban-client", "status", jail], timeout=10) or ""
        for line in st.splitlines():
            key, _, val = line.strip("|`- \t").partition(":")
            if key.strip() == "Currently banned":
                f.add("govmail_fail2ban_banned", "gauge", "Addresses banned now.", int(val), {"jail": jail})
            elif key.strip() == "Total banned":
                f.add("govmail_fail2ban_bans_total", "counter", "Bans since fail2ban started.", int(val),
                      {"jail": jail})


RSPAMD = "http://127.0.0.1:11334"
# The symbols whose hits the monitor reads: signed submissions, and those signing left unsigned
# (govmail's postfilter in rspamd's lua.local.d/govmail.lua).
SYMBOLS = ("DKIM_SIGNED", "GOVMAIL_DKIM_UNSIGNED")


def _rspamd_get(path: str):
    try:
        with urllib.request.urlopen(RSPAMD + path, timeout=5) as r:
            return json.load(r)
    except (OSError, ValueError):
        return None


def rspamd(f: Facts) -> None:
    st = _rspamd_get("/stat")
    if not isinstance(st, dict):
        return
    f.add("govmail_rspamd_scanned_total", "counter", "Messages rspamd scanned.", st.get("scanned", 0))
    for action, n in sorted((st.get("actions") or {}).items()):
        f.add("govmail_rspamd_actions_total", "counter", "rspamd's verdicts by action.", n, {"action": action})
    counters = _rspamd_get("/counters")
    if not isinstance(counters, list):
        return
    hits = {c.get("symbol"): c.get("hits") for c in counters if isinstance(c, dict)}
    for symbol in SYMBOLS:  # 0 until the first hit, so that the first one counts as an increase
        if isinstance(hits.get(symbol, 0), (int, float)):
            f.add("govmail_rspamd_symbol_hits_total", "counter", "Messages rspamd gave the symbol.",
                  hits.get(symbol, 0), {"symbol": symbol})


def phpfpm(f: Facts) -> None:
    """The web mail's php-fpm pool (no packaged exporter reads it), through nginx on the loopback."""
    url = f"http://127.0.0.1:{contract.PORTS['web_status']}/fpm-status?json"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            st = json.load(r)
    except (OSError, ValueError):
        return
    f.add("govmail_phpfpm_active_processes", "gauge", "Web mail workers busy now.", st.get("active processes", 0))
    f.add("govmail_phpfpm_max_children_reached_total", "counter", "Times every web mail worker was busy.",
          st.get("max children reached", 0))
    f.add("govmail_phpfpm_listen_queue", "gauge", "Web mail requests waiting for a worker.", st.get("listen queue", 0))


def quota_facts(now: float | None = None) -> Facts:
    """How full the mailboxes are (Dovecot's quota of each; mailboxes without a limit not counted)."""
    f = Facts()
    out = _run(contract.QUOTA_COMMAND.split(), timeout=540)
    if out is None:
        return f  # nothing: the last reading stays (main), its timestamp says how old it is
    f.add("govmail_quota_facts_timestamp_seconds", "gauge", "When the mailboxes' quota use was read.",
          time.time() if now is None else now)
    shares = [used / limit for used, limit in contract.quota_table(out).values() if limit]
    for state, floor in (("all", 0.0), ("over_80_percent", 0.8), ("over_95_percent", 0.95), ("full", 1.0)):
        f.add("govmail_mailboxes_quota", "gauge", "Mailboxes with a quota, by how full they are.",
              sum(1 for x in shares if x >= floor), {"state": state})
    return f


def collect(now: float | None = None) -> Facts:
    now = time.time() if now is None else now
    f = Facts()
    f.add("govmail_metrics_timestamp_seconds", "gauge", "When govmail's metrics tool last ran.", now)
    for part in (backup, logrotate, certificate, clamav, pending, accounts, fail2ban, rspamd, phpfpm):
        part(f)
    postfix_queue(f, now)
    return f


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="metrics", description="Write this host's facts for Prometheus.")
    ap.add_argument("--out", help=f"the file node-exporter reads (default {OUT}, with --quota "
                    f"{contract.PATHS['metrics_quota']}); - prints them")
    ap.add_argument("--quota", action="store_true", help="the mailboxes' quota use (slow: every 15 minutes)")
    args = ap.parse_args(argv)
    out = args.out or (contract.PATHS["metrics_quota"] if args.quota else OUT)
    facts = quota_facts() if args.quota else collect()
    if not facts.lines:  # Dovecot did not answer: the last reading stays, its timestamp tells its age
        print("metrics: the mailboxes' quota could not be read; the last reading stays", file=sys.stderr)
        return 0
    text = facts.text()
    if out == "-":
        sys.stdout.write(text)
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
