"""The operations and usage reports, gathered on the mail host (standard library only).

    report monthly [--period 2026-11] [--mail] [--out DIR]   operations (TN Art. 16.4, DN Art. 11.1.g)
    report annual [--period 2026] [--mail] [--out DIR]       usage per agency (BN Art. 17)
    report gather --since TS --until TS                      the figures, as JSON

Figures come from what the host already keeps: the mail log (/var/log/mail.log and its rotations,
restored ones included, with the lines of the province's MX hosts apart, which rsyslog sends here), fail2ban's log, systemd's journal (service starts and failures), the
backup status, the account store and Dovecot's quotas. Each refusal is counted once, by the reason
the host gave (the texts of templates/rspamd/ and templates/postfix/). govmail/host/report_render.py
writes them as CSV and HTML with charts and mails them; the `govmail-report-*` timers run it.
"""

from __future__ import annotations

import argparse
import calendar
import datetime
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import time

from . import contract, report_availability, report_render, store
from .report_render import MISUSE_REASONS, REASONS

MAIL_LOGS = "/var/log/mail.log*"
BAN_LOGS = "/var/log/fail2ban.log*"
SETTINGS = contract.PATHS["report_settings"]  # written by the deploy (govmail/services/reports.py)
SERVICES = ("postfix.service", "postfix@-.service", "dovecot.service", "rspamd.service", "clamav-daemon.service", "nginx.service",
            f"php{contract.PHP}-fpm.service", "fail2ban.service", "govmail-passwd.service")
STARTED, STOPPED, FAILED = ("39f53479d3a045ac8e11786248231fbf", "9d1aaa27d60140bd96365438aad20286",
                            "be02cf6855d2428ba40df7e9d022f03d")

# Refusal reasons (REASONS, in the order reports show them): the patterns match the replies
# govmail's own configuration gives (rspamd's rules and actions, Postfix's maps, Dovecot's quota policy).
MILTER = [("virus", r"Virus found"), ("program", r"Attachment refused"), ("forwarding", r"Automatic forwarding"),
          ("sender", r"Sender refused"), ("sending_limit", r"Sending limit reached"), ("spam", r"[Ss]pam|Gtube|GTUBE")]
NOQUEUE = [("quota", r"5\.2\.2|Mailbox is full"), ("size", r"5\.3\.4|size exceeds|too large"),
           ("forwarding", r"Automatic forwarding"), ("unknown_recipient", r"User unknown|Recipient address rejected: "
                                                                         r"undeliverable|unknown user"),
           ("sender", r"not owned by user|Sender address rejected"), ("relay", r"Relay access denied")]

STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:\d\d))\s")
SUBMITTED = re.compile(r" postfix/submissions?/smtpd\[\d+\]: ([0-9A-F]+): client=.*\bsasl_username=(\S+)")
RECEIVED = re.compile(r" postfix/smtpd\[\d+\]: ([0-9A-F]+): client=(?!.*sasl_username=)")
# Mail the province's own users send: submission (logged in) and Sieve forwards (sieve-out, its
# envelope sender the mailbox that forwards: sieve_redirect_envelope_from = recipient).
OWN_SMTPD = re.compile(r" postfix/(submissions?|sieve-out)/smtpd\[\d+\]: ")
FORWARDED = re.compile(r" postfix/sieve-out/smtpd\[\d+\]: ([0-9A-F]+): client=")
SASL_USER = re.compile(r"\bsasl_username=([^\s,;]+)")
ENVELOPE_FROM = re.compile(r"; from=<([^>\s]+)>")
QUEUE_ID = re.compile(r"\]: ([0-9A-F]{6,}): ")
DELIVERED = re.compile(r" postfix/(lmtp|smtp)\[\d+\]: [0-9A-F]+: to=<([^>]*)>.*\bstatus=(sent|bounced|deferred)")
LOGIN_FAILED = re.compile(r" dovecot: (?:imap|pop3|submission|managesieve)-login: .*\(auth failed, (\d+) attempts?")
SASL_FAILED = re.compile(r" postfix/\S+\[\d+\]: warning: .*: SASL \S+ authentication failed")
BAN = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) fail2ban\.actions\s*\[\d+\]: NOTICE\s+\[([^\]]+)\] Ban ")


def read_lines(pattern: str):
    """Every line of the files matching `pattern` (gzipped rotations too), each distinct line once:
    a log restored beside the current one after a rebuild adds its days, never counts a line twice."""
    seen = set()
    for path in sorted(glob.glob(pattern)):
        try:
            f = gzip.open(path, "rt", encoding="utf-8", errors="replace") if path.endswith(".gz") else \
                open(path, encoding="utf-8", errors="replace")
        except OSError:
            continue
        with f:
            for line in f:
                h = hash(line)
                if h not in seen:
                    seen.add(h)
                    yield line


def stamp(line: str):
    m = STAMP.match(line)
    if not m:
        return None
    try:
        return datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def classify(text: str, rules) -> str:
    return next((reason for reason, pat in rules if re.search(pat, text)), "other")


def mail_figures(since: float, until: float) -> dict:
    refusals = dict.fromkeys(REASONS, 0)
    mail = {"received": 0, "sent": 0, "delivered_local": 0, "delivered_remote": 0, "bounced": 0, "deferred": 0}
    sent_by, received_by = {}, {}
    days: dict[str, dict] = {}
    # A message counts as received (port 25) or sent (submission) once accepted: its queue ID is
    # noted when the client starts it, and dropped when the content filter refuses it at the end.
    # Queue IDs are a host's own: the lines of MX hosts apart (sent here by rsyslog,
    # govmail/services/base.py) carry their host's name, and an ID is read with it.
    origin: dict[tuple[str, str], tuple[str, str, str]] = {}
    forwarded: set[tuple[str, str]] = set()  # queue IDs of Sieve forwards
    misuse: dict[str, dict[str, int]] = {}  # BN Art. 13: own users' mail refused, per account and reason

    def misused(account: str | None, reason: str) -> None:
        if account and reason in MISUSE_REASONS:
            counts = misuse.setdefault(account.lower(), {})
            counts[reason] = counts.get(reason, 0) + 1

    for line in read_lines(MAIL_LOGS):
        t = stamp(line)
        if t is None or not since <= t < until:
            continue
        day = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d")
        d = days.setdefault(day, {"received": 0, "sent": 0, "refused": 0})
        host = line.split(" ", 2)[1]
        if m := SUBMITTED.search(line):
            origin[host, m.group(1)] = ("sent", day, m.group(2).lower())
        elif m := RECEIVED.search(line):
            origin[host, m.group(1)] = ("received", day, "")
        elif m := FORWARDED.search(line):
            forwarded.add((host, m.group(1)))
        elif m := DELIVERED.search(line):
            agent, rcpt, status = m.groups()
            if status == "sent":
                mail["delivered_local" if agent == "lmtp" else "delivered_remote"] += 1
                if agent == "lmtp":
                    received_by[rcpt.lower()] = received_by.get(rcpt.lower(), 0) + 1
            else:
                mail[status] += 1
        elif " milter-reject: " in line:
            reason = classify(line.split(" milter-reject: ", 1)[1], MILTER)
            refusals[reason] += 1
            d["refused"] += 1
            qid = m.group(1) if (m := QUEUE_ID.search(line)) else None
            if qid:
                how, _, user = origin.pop((host, qid), ("", "", ""))
                if how == "sent":
                    misused(user, reason)
                elif (host, qid) in forwarded:
                    misused(envelope_from(line), reason)
            elif OWN_SMTPD.search(line):  # refused at RCPT, before a queue ID (a rate limit)
                misused(own_account(line), reason)
        elif " NOQUEUE: reject: " in line or re.search(r" postfix/\S+\[\d+\]: [0-9A-F]+: reject: ", line):
            reason = classify(line, NOQUEUE)
            refusals[reason] += 1
            d["refused"] += 1
            if " NOQUEUE: " not in line and (m := QUEUE_ID.search(line)):
                origin.pop((host, m.group(1)), None)
            if OWN_SMTPD.search(line):
                misused(own_account(line), reason)
        elif m := LOGIN_FAILED.search(line):
            refusals["authentication"] += int(m.group(1))
        elif SASL_FAILED.search(line):
            refusals["authentication"] += 1
    for what, day, user in origin.values():
        mail[what] += 1
        days[day][what] += 1
        if user:
            sent_by[user] = sent_by.get(user, 0) + 1
    return {"mail": mail, "refusals": refusals, "sent_by": sent_by, "received_by": received_by,
            "days": dict(sorted(days.items())), "misuse": misuse}


def envelope_from(line: str) -> str | None:
    m = ENVELOPE_FROM.search(line)
    return m.group(1) if m else None


def own_account(line: str) -> str | None:
    """Who a refusal on submission or sieve-out belongs to: the logged-in user, else the envelope
    sender (a Sieve forward's is the mailbox that forwards)."""
    m = SASL_USER.search(line)
    return m.group(1) if m else envelope_from(line)


def misuse_cases(settings: dict, figures: dict) -> list[dict]:
    """BN Art. 13 (operator duty 3): the mailboxes used against the rules in the period (their own
    mail refused as spam, virus or program, over the sending limit, sent as another, forwarded
    out of the state domains), most refusals first, each with the measure proposed."""
    units = settings.get("units", {})
    out = []
    for account, counts in figures["misuse"].items():
        ordered = {r: counts[r] for r in MISUSE_REASONS if r in counts}
        out.append({"account": account, "agency": units.get(account, "-"), "refusals": ordered,
                    "total": sum(ordered.values()), "measure": report_render.measure(ordered)})
    return sorted(out, key=lambda c: (-c["total"], c["account"]))


def bans(since: float, until: float) -> dict:
    out: dict[str, int] = {}
    for line in read_lines(BAN_LOGS):
        m = BAN.match(line)
        if not m:
            continue
        # fail2ban writes local time; the hosts run in UTC (govmail/services/base.py sets no other zone)
        t = datetime.datetime.strptime(m.group(1) + "000", "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
        if since <= t < until:
            out[m.group(2)] = out.get(m.group(2), 0) + 1
    return out


def journal(since: float, until: float, units) -> list[dict]:
    cmd = ["journalctl", "-o", "json", "--no-pager", "-S", f"@{int(since)}", "-U", f"@{int(until)}"]
    cmd += [f"UNIT={u}" for u in units]
    r = subprocess.run(cmd, capture_output=True, text=True)
    out = []
    for line in r.stdout.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def availability(since: float, until: float, now: float) -> dict:
    """Per service: the share of the period it was up, its starts, failures and down time. Time
    before the service's first start in the period, on a host newer than the period, is not
    counted (it was not in service yet)."""
    end = min(until, now)
    events: dict[str, list] = {u: [] for u in SERVICES}
    for e in journal(since, end, SERVICES):
        u, mid = e.get("UNIT"), e.get("MESSAGE_ID")
        if u in events and mid in (STARTED, STOPPED, FAILED):
            events[u].append((int(e["__REALTIME_TIMESTAMP"]) / 1e6, mid))
    # One call for every unit's present state ("active", "inactive", ... one line each, in order).
    states = subprocess.run(["systemctl", "is-active", *SERVICES], capture_output=True, text=True).stdout.split()
    now_active = dict(zip(SERVICES, (states + [""] * len(SERVICES))[:len(SERVICES)], strict=True))
    out = {}
    for u, evs in events.items():
        evs.sort()
        if not evs and now_active[u] != "active":
            continue  # not on this host
        # State at the start of the period: the opposite of its first event (no event: as now).
        up = evs[0][1] != STARTED if evs else True
        start = since if (not evs or evs[0][1] != STARTED) else evs[0][0]
        t, down = start, 0.0
        starts = failures = 0
        for ts, mid in evs:
            if not up and mid == STARTED:
                down += ts - t
            if mid == STARTED:
                starts += 1
                up = True
            else:
                failures += mid == FAILED
                if up:
                    t = ts
                up = False
        if not up:
            down += end - t
        span = max(end - start, 1.0)
        out[u.replace(".service", "").replace("@-", "")] = {
            "availability": round(1 - down / span, 6), "down_seconds": int(down), "starts": starts,
            "failures": failures}
    return out


def backups(since: float, until: float) -> dict:
    runs = ok = failed = 0
    for e in journal(since, until, ("govmail-backup.service",)):
        mid = e.get("MESSAGE_ID")
        if mid == STARTED:
            ok += 1
        elif mid == FAILED:
            failed += 1
    runs = ok + failed
    try:
        with open(contract.PATHS["backup_status"], encoding="utf-8") as f:
            st = json.load(f)
    except (OSError, ValueError):
        st = {}
    return {"runs": runs, "ok": ok, "failed": failed, "last_ok": st.get("last_ok"), "last_error": st.get("last_error")}


def quotas() -> dict[str, tuple[int, int]]:
    """address -> (used KiB, limit KiB; 0: no limit) of every mailbox, from Dovecot."""
    r = subprocess.run(contract.QUOTA_COMMAND.split(), capture_output=True, text=True)
    return {a: (used, limit or 0) for a, (used, limit) in contract.quota_table(r.stdout).items()}


def storage(q: dict) -> dict:
    st = os.statvfs(contract.PATHS["vmail"])
    near = sorted(((a, round(100 * u / lim, 1)) for a, (u, lim) in q.items() if lim and u >= 0.8 * lim),
                  key=lambda x: -x[1])
    return {"disk_total_bytes": st.f_blocks * st.f_frsize, "disk_free_bytes": st.f_bavail * st.f_frsize,
            "mailboxes": len(q), "quota_used_mib": round(sum(u for u, _ in q.values()) / 1024, 1),
            "quota_limit_mib": round(sum(lim for _, lim in q.values()) / 1024, 1), "over_80_percent": near[:20]}


def last_logins() -> dict[str, float]:
    """address -> the time of its last login (the stamp Dovecot's post-login script touches)."""
    out, vmail = {}, contract.PATHS["vmail"]
    db = store.read_only()
    for (address,) in db.execute("SELECT address FROM accounts"):
        local, _, domain = address.partition("@")
        try:
            out[address] = os.stat(f"{vmail}/{domain}/{local}/{contract.LAST_LOGIN_STAMP}").st_mtime
        except OSError:
            pass
    return out


def per_agency(settings: dict, figures: dict, since: float, until: float, q: dict) -> list[dict]:
    """BN Art. 17: per agency, its mailboxes, those used in the period and not, mail sent and
    received, quota use. The agency of each address comes from the deploy (report.json)."""
    units = settings.get("units", {})
    logins = last_logins()
    db = store.read_only()
    rows: dict[str, dict] = {}
    for address, status in db.execute("SELECT address, status FROM accounts"):
        if status not in ("active", "suspended"):
            continue
        unit = units.get(address, "-")
        r = rows.setdefault(unit, {"agency": unit, "mailboxes": 0, "active": 0, "inactive": 0, "sent": 0,
                                   "received": 0, "quota_used_mib": 0.0, "quota_mib": 0.0})
        r["mailboxes"] += 1
        r["active" if since <= logins.get(address, 0) < until else "inactive"] += 1
        r["sent"] += figures["sent_by"].get(address, 0)
        r["received"] += figures["received_by"].get(address, 0)
        used, limit = q.get(address, (0, 0))
        r["quota_used_mib"] = round(r["quota_used_mib"] + used / 1024, 1)
        r["quota_mib"] = round(r["quota_mib"] + limit / 1024, 1)
    return sorted(rows.values(), key=lambda r: r["agency"])


def period(kind: str, label: str | None, now: float) -> tuple[str, float, float]:
    """(label, since, until) of a month (YYYY-MM) or a year (YYYY); default: the last complete one."""
    today = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    if kind == "monthly":
        if label is None:
            y, m = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
            label = f"{y:04d}-{m:02d}"
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", label):
            raise ValueError(f"--period {label!r}: a month such as 2026-11")
        y, m = int(label[:4]), int(label[5:])
        start = datetime.datetime(y, m, 1, tzinfo=datetime.timezone.utc)
        end = start + datetime.timedelta(days=calendar.monthrange(y, m)[1])
    else:
        label = label or str(today.year - 1)
        if not re.fullmatch(r"\d{4}", label):
            raise ValueError(f"--period {label!r}: a year such as 2026")
        start = datetime.datetime(int(label), 1, 1, tzinfo=datetime.timezone.utc)
        end = datetime.datetime(int(label) + 1, 1, 1, tzinfo=datetime.timezone.utc)
    return label, start.timestamp(), end.timestamp()


def load_settings() -> dict:
    """What the deploy wrote for the reports (its version checked); none yet: nothing known."""
    try:
        with open(SETTINGS, encoding="utf-8") as f:
            return contract.check_version(json.load(f), "report_settings")
    except (OSError, ValueError):
        return {}


def gather(kind: str, label: str, since: float, until: float, now: float | None = None) -> dict:
    now = now or time.time()
    settings = load_settings()
    mail = mail_figures(since, until)
    q = quotas()
    out = {
        "kind": kind, "period": label, "since": int(since), "until": int(until), "generated": int(now),
        "host": os.uname().nodename, "province": settings.get("province", ""), "name": settings.get("name", ""),
        "articles": settings.get("articles", {}).get(kind, ""),
        "mail": mail["mail"], "refusals": mail["refusals"], "days": mail["days"],
        "bans": bans(since, until), "storage": storage(q),
    }
    if kind == "monthly":
        out["services"], out["probes"], out["availability_source"] = report_availability.merge(
            availability(since, until, now), settings.get("monitor"), since, min(until, now))
        out["backups"] = backups(since, until)
        out["misuse"] = misuse_cases(settings, mail)
        out["misuse_article"] = settings.get("articles", {}).get("misuse", "")
    else:
        out["agencies"] = per_agency(settings, mail, since, until, q)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="report", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for kind in ("monthly", "annual"):
        p = sub.add_parser(kind)
        p.add_argument("--period", help="2026-11 (monthly) or 2026 (annual); default: the last complete one")
        p.add_argument("--mail", action="store_true", help="mail it to the province's administrators")
        p.add_argument("--out", default=contract.PATHS["reports"], help="where to write the CSV and HTML")
        p.add_argument("--json", action="store_true", help="print the figures as JSON (nothing written)")
    p = sub.add_parser("gather")
    p.add_argument("--since", type=float, required=True)
    p.add_argument("--until", type=float, required=True)
    p.add_argument("--kind", choices=("monthly", "annual"), default="monthly")
    args = ap.parse_args(argv)
    now = time.time()
    if args.cmd == "gather":
        print(json.dumps(gather(args.kind, "custom", args.since, args.until, now), ensure_ascii=False))
        return 0
    try:
        label, since, until = period(args.cmd, args.period, now)
    except ValueError as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    figures = gather(args.cmd, label, since, until, now)
    if args.json:
        print(json.dumps(figures, ensure_ascii=False, indent=1))
        return 0
    paths = report_render.write(figures, args.out)
    if args.mail:
        report_render.mail(figures, paths, load_settings())
    print(json.dumps({"files": paths, "mailed": bool(args.mail)}))
    return 0
