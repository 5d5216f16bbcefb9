"""The compliance checks of operations: backups, password rotation and first-login change,
inactivity, cancellation, the operations and usage reports and the misuse listed in the monthly one (see
checks.py for the others)."""

from __future__ import annotations

import datetime
import json

from ..data.facts import password_url
from ..host import contract
from .base import check, running, ssh_failure, store_meta, web_get


def report_figures(h, kind: str) -> dict:
    """The figures of the host's `kind` report, made on the host once per run (the operations and
    misuse checks read the same monthly report)."""
    if kind not in h.reports:
        h.reports[kind] = json.loads(h.ti.check_output(f"{contract.PATHS['lib']}/report {kind} --json"))
    return h.reports[kind]


def report_made(h, cfg, kind: str) -> str:
    from ..data.facts import report_recipients as recipients

    running(h.ti, f"govmail-report-{kind}.timer")
    settings = json.loads(h.ti.file(contract.PATHS["report_settings"]).content_string)
    assert settings["recipients"] == recipients(cfg), f"mailed to {settings['recipients']}"
    f = report_figures(h, kind)
    missing = {"spam", "virus", "program", "size", "quota", "forwarding", "authentication"} - set(f["refusals"])
    assert not missing, f"refusal reasons missing: {missing}"
    if kind == "monthly":
        assert "postfix" in f["services"] and "dovecot" in f["services"], f"services: {sorted(f['services'])}"
        return (f"govmail-report-monthly.timer on, to {', '.join(settings['recipients'])}; {f['period']}: "
                f"{f['mail']['received']} received, {f['mail']['sent']} sent, postfix up "
                f"{100 * f['services']['postfix']['availability']:.3f}%")
    assert f["agencies"], "no agency in the usage report"
    return (f"govmail-report-annual.timer on, to {', '.join(settings['recipients'])}; {f['period']}: "
            f"{len(f['agencies'])} agencies, {sum(a['mailboxes'] for a in f['agencies'])} mailboxes")


@check
def operations_report(h, cfg, _):
    return report_made(h, cfg, "monthly")


@check
def usage_report(h, cfg, _):
    return report_made(h, cfg, "annual")


@check
def misuse_report(h, cfg, _):
    settings = json.loads(h.ti.file(contract.PATHS["report_settings"]).content_string)
    assert settings["articles"].get("misuse") == cfg.policy.misuse_report.article, f"cited: {settings['articles']}"
    f = report_figures(h, "monthly")
    assert isinstance(f.get("misuse"), list), "the monthly report has no misuse section"
    assert all(c["measure"] and c["refusals"] for c in f["misuse"]), f"a case without a measure: {f['misuse']}"
    shown = "; ".join(f"{c['account']}: {c['total']}" for c in f["misuse"][:5]) or "none"
    return f"{f['period']}: {len(f['misuse'])} mailboxes used against the rules ({shown}), cited {f['misuse_article']}"


@check
def backups(h, cfg, _):
    running(h.ti, "govmail-backup.timer", "govmail-backup-check.timer")
    assert oct(h.ti.file("/etc/govmail/backup/passphrase").mode) == "0o600", "passphrase readable by others"
    assert h.backup is not None, f"{cfg.backup_host} not reached"
    try:
        return backup_host_holds(h.backup, cfg, h.name or cfg.mail_host)
    except RuntimeError as e:  # SSH to the backup host failed: this clause fails, the mail host's go on
        raise AssertionError(f"{cfg.backup_host}: {ssh_failure(e) or e}") from None


def backup_host_holds(bh, cfg, host: str) -> str:
    """What the backup host holds of `host`'s backups (the mail host's, or a store apart's: a
    repository each)."""
    keys = bh.check_output("cat /srv/govmail-backup/.ssh/authorized_keys").splitlines()
    assert keys and all(k.startswith('command="borg serve --append-only --restrict-to-repository ')
                        and ",restrict " in k for k in keys), "a key may do more than append to its repository"
    borg = (f"runuser -u govmail-backup -- env BORG_PASSCOMMAND='cat /etc/govmail/backup/{cfg.mail_host}.passphrase' "
            f"BORG_BASE_DIR=/srv/govmail-backup/.borg borg")
    repo = f"/srv/govmail-backup/{host}"
    mode = json.loads(bh.check_output(f"{borg} info --json {repo}"))["encryption"]["mode"]
    assert mode.startswith("repokey"), f"repository encryption {mode}"
    # The last good backup as the repository holds it (not as the mail host's journal says).
    last = json.loads(bh.check_output(f"{borg} list --json --last 1 {repo}")).get("archives") or []
    assert last, f"no backup in {repo} on {cfg.backup_host} yet"
    now, offset = bh.check_output("date +%s%n%z").split()
    when = datetime.datetime.fromisoformat(last[-1]["time"]).replace(
        tzinfo=datetime.datetime.strptime(offset, "%z").tzinfo)
    age_h = (int(now) - when.timestamp()) / 3600
    b_ = cfg.policy.backup
    assert age_h <= b_.max_age_hours, (f"the last backup in {repo} is {age_h:.1f} h old ({last[-1]['name']}), "
                                       f"older than policy.backup.max_age_hours {b_.max_age_hours}")
    unit = bh.check_output("systemctl cat govmail-prune.service")
    b = cfg.policy.backup
    assert f"--keep-daily {b.keep_daily} --keep-weekly {b.keep_weekly} --keep-monthly {b.keep_monthly}" in unit, \
        "prune keeps other counts"
    assert bh.check_output("systemctl is-enabled govmail-prune.timer").strip() == "enabled", "prune timer disabled"
    return (f"timers on; borg {mode} on {cfg.backup_host}, append-only key; last backup {last[-1]['name']}, "
            f"{age_h:.1f} h old; prune {b.keep_daily}/{b.keep_weekly}/{b.keep_monthly}")


@check
def password_rotation(h, cfg, _):
    pw, meta = cfg.policy.password, store_meta(h.ti)
    got = (meta.get("user_max_age_days"), meta.get("admin_max_age_days"))
    assert got == (str(pw.user_max_age_days), str(pw.admin_max_age_days)), f"store: user, admin max age {got}"
    running(h.ti, "govmail-daily.timer")
    return f"store: user_max_age_days {got[0]}, admin_max_age_days {got[1]}; govmail-daily.timer on"


@check
def first_login_change(h, cfg, _):
    meta = store_meta(h.ti)
    got = (meta.get("change_at_first_login"), meta.get("password_url"))
    assert got == ("1", password_url(cfg)), f"store: change_at_first_login, password_url {got}"
    running(h.ti, "govmail-passwd")
    assert h.ti.socket(f"tcp://0.0.0.0:{cfg.model.password_change.port}").is_listening, "password service not listening"
    return f"store: change_at_first_login 1, {got[1]}; govmail-passwd on {cfg.model.password_change.port}"


@check
def inactivity_rule(h, cfg, _):
    ina, meta = cfg.policy.inactivity, store_meta(h.ti)
    want = (ina.action, str(ina.after_months), str(ina.delete_after_notice_months) if ina.delete_after_notice_months else None)
    got = tuple(meta.get(k) for k in ("inactivity_action", "inactivity_after_months", "inactivity_delete_after_months"))
    assert got == want, f"store: action, after months, delete after months {got}"
    running(h.ti, "govmail-daily.timer")
    return f"store: {got[0]} after {got[1]} months; govmail-daily.timer on"


@check
def cancelled_retention(h, cfg, _):
    got = store_meta(h.ti).get("cancelled_keep_months")
    assert got == str(cfg.policy.cancellation.keep_months), f"store: cancelled_keep_months {got}"
    return f"store: cancelled_keep_months {got}"


@check
def watched(h, cfg, _):
    """The monitor answers, scrapes every host of the province, has the alert rules loaded, keeps the
    days of metrics the data asks for, runs the files the deploy wrote (started and reloaded after
    them), and Alertmanager answers (govmail/services/monitor.py); with the pages published, they ask
    for a login. What fires is named, each with its own clause."""
    from ..monitoring import status

    assert cfg.monitor_host, "no host watches the province: give a host the `monitor` role, or the province a backup host"
    m = h.monitor
    assert m is not None, f"{cfg.monitor_host} not reached"
    running(m, "prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter", "prometheus-node-exporter")
    r = m.run(status.command())
    assert r.rc == 0, f"{cfg.monitor_host}: {(r.stderr or r.stdout).strip()[-300:]}"
    doc = json.loads(r.stdout)
    assert not doc["errors"], f"{cfg.monitor_host}: {'; '.join(doc['errors'])}"
    up = {x["metric"].get("host"): float(x["value"][1]) for x in doc["values"].get("up", [])}
    lost = [f"{n} ({'down' if n in up else 'not scraped'})" for n in (x.name for x in cfg.model.hosts) if up.get(n) != 1]
    assert not lost, f"not watched: {', '.join(lost)}"
    behind = status.stale(doc)
    assert not behind, "; ".join(behind)
    keeps, want_days = doc.get("flags", {}).get("storage.tsdb.retention.time"), cfg.policy.monitoring.retention_days
    assert keeps == f"{want_days}d", (f"Prometheus keeps {keeps or 'its default'} of metrics, the data asks for "
                                      f"{want_days} days (policy.monitoring.retention_days): its flags are not ours")
    loaded = int(float(doc["values"]["rules"][0]["value"][1])) if doc["values"].get("rules") else 0
    want = m.check_output("grep -c '^  - alert: ' /etc/prometheus/govmail-alerts.yml || true").strip()
    assert want.isdigit() and loaded == int(want) > 0, f"{loaded} alert rules loaded, the rule file has {want}"
    firing = sorted({f"{a['labels'].get('alertname')} on {a['labels'].get('host')}" for a in doc.get("alerts", [])
                     if a["labels"].get("alertname") != "Heartbeat"})
    pages = _published_pages(h, cfg) if cfg.policy.monitoring.web_ui else ""
    return (f"{len(up)} hosts scraped by {cfg.monitor_host}, {loaded} alert rules, {want_days} days kept, "
            f"Alertmanager answers{pages}; "
            + (f"firing: {', '.join(firing)}" if firing else "nothing fires"))


def _published_pages(h, cfg) -> str:
    """The monitor's published pages ask for a login (policy.monitoring.web_ui)."""
    for page in ("prometheus", "alertmanager"):
        code = web_get(h.ti, cfg.mail_host, f"/monitor/{page}/")[0]
        assert code == 401, f"https://{cfg.mail_host}/monitor/{page}/ answers {code} without a login (want 401)"
    return "; its pages published behind the administrators' login"


# Patroni's state of the store's cluster as etcd keeps it, read on the witness (the monitor host runs
# etcd's third member): the leader's name, the synchronous standby's, and each member's role and state.
CLUSTER_STATE = r"""
import base64, json, sys, urllib.request
prefix = sys.argv[1]
def kv(key, end=None):
    body = {"key": base64.b64encode(key.encode()).decode()}
    if end:
        body["range_end"] = base64.b64encode(end.encode()).decode()
    req = urllib.request.Request(sys.argv[2], data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return {base64.b64decode(x["key"]).decode(): base64.b64decode(x.get("value", "")).decode()
                for x in json.load(r).get("kvs", [])}
members = {k.rsplit("/", 1)[1]: json.loads(v) for k, v in kv(prefix + "members/", prefix + "members0").items()}
leader = kv(prefix + "leader").get(prefix + "leader", "")
sync = json.loads(kv(prefix + "sync").get(prefix + "sync", "{}") or "{}")
print(json.dumps({"leader": leader, "sync": sync.get("sync_standby") or "",
                  "members": {n: [m.get("role", ""), m.get("state", ""), m.get("replication_state", "")]
                              for n, m in members.items()}}))
"""


@check
def store_standby_streaming(h, cfg, _):
    """The account store on two db hosts has a primary and a synchronous standby that streams from
    it (Patroni, as etcd on the witness records it): a lost db host costs a stall, not the store."""
    import shlex

    m = h.monitor
    assert m is not None, f"{cfg.monitor_host} (etcd's witness) not reached"
    prefix = f"{contract.PATRONI['namespace']}{contract.PATRONI['scope']}/"
    url = f"http://127.0.0.1:{contract.PATRONI['etcd_client_port']}/v3/kv/range"
    r = m.run(f"python3 -c {shlex.quote(CLUSTER_STATE)} {shlex.quote(prefix)} {shlex.quote(url)}")
    assert r.rc == 0, f"{cfg.monitor_host}: etcd does not answer: {(r.stderr or r.stdout).strip()[-300:]}"
    doc = json.loads(r.stdout)
    members = doc["members"]
    assert sorted(members) == sorted(cfg.db_hosts), f"Patroni's members {sorted(members)}, the data's db hosts {cfg.db_hosts}"
    assert doc["leader"] in members, f"no primary: leader key {doc['leader']!r}"
    standby = [n for n in members if n != doc["leader"]]
    assert doc["sync"] in standby, f"no synchronous standby (the primary commits alone): {members}"
    role, state, replication = members[doc["sync"]]
    assert (role, state, replication) == ("replica", "running", "streaming"), \
        f"{doc['sync']}: {role}, {state}, replication {replication or 'none'}"
    return f"primary {doc['leader']}; synchronous standby {doc['sync']}, streaming"


@check
def mailbox_standby_current(h, cfg, _):
    """Each store's mailboxes are copied to its standby (hosts[].standby) by the host that copies them:
    the copies after deliveries and the minute's pass are on, every mailbox has a copy, and the oldest
    is at most ten minutes old (StoreStandbyBehind's limit): a lost store costs seconds of mail."""
    running(h.ti, "govmail-standby.timer", "govmail-standby-deliveries.service")
    said = json.loads(h.ti.check_output(f"{contract.PATHS['lib']}/standby status"))
    out = []
    for store in (s for s in cfg.standbys if cfg.standby_copier(s) == h.name):
        st = said.get(store)
        assert st, f"{h.name} does not copy {store}'s mailboxes (/etc/govmail/standby.json)"
        assert not st["never"], f"{store}: never copied to {st['standby']}: {', '.join(st['never'][:5])}"
        assert st["oldest"] is None or st["oldest"] <= 600, \
            f"{store}: the oldest copy on {st['standby']} is {st['oldest']} s old (over ten minutes)"
        out.append(f"{store} -> {st['standby']}: {st['mailboxes']} mailboxes, the oldest copy "
                   f"{st['oldest'] if st['oldest'] is not None else 0} s old")
    return "; ".join(out)
