"""Compliance checks (testinfra) of each province's host against its regulation.

Each check is named after what it verifies and carries the article it verifies, both taken from
the province's data file, so a fifth province gets its checks without code. The run ends with a
per-province list of clauses and PASS/FAIL (see conftest.pytest_terminal_summary).
"""

from __future__ import annotations

import ast

import pytest

from govmail.data import load_province
from govmail.render import PATHS
from govmail.services.accounts import password_url

from .conftest import PROVINCES

CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def clauses(cfg):
    """(check function name, clause text) for a province, built from its data."""
    p = cfg.policy
    q = p.quota
    out = [
        ("mail_domain", f"{cfg.model.domain_article} mail domain is {cfg.domain}, served by {cfg.mail_host}"),
        ("directory_deliverable", f"{cfg.model.domain_article} every directory address ({len(cfg.accounts)} mailboxes) is a mailbox on the host"),
    ]
    if q.max_mb:
        out.append(("quota_max", f"{q.article} mailbox quota ≤ {q.max_mb} MB"))
    if q.min_mb:
        out.append(("quota_min", f"{q.article} mailbox quota ≥ {q.min_mb} MB"))
    out.append(("quota_per_mailbox", f"{q.article} each mailbox has its quota from the data (default {q.default_mb} MB)"))
    if p.attachment.max_mb:
        out.append(("size_limit", f"{p.attachment.article} attachments up to {p.attachment.max_mb} MB: message size limit {cfg.message_size_limit:,} bytes"))
    else:
        out.append(("size_limit", f"{p.attachment.article} message size limit {p.attachment.message_size_mb} MB"))
    out += [
        ("utf8", f"{p.unicode.article} UTF-8 mail carried intact (SMTPUTF8 on)"),
        ("client_ports", f"{p.clients.article} IMAP 993, POP3 995, submission 587/465 listening with TLS"),
        ("web_access", f"{p.web_access.article} web mail at https://{cfg.mail_host}/ (Roundcube, in Vietnamese), "
                       "http:// redirected to it; client setup (autoconfig, autodiscover) served"),
        ("published_directory", f"{p.published_directory.article} the directory of {len([a for a in cfg.accounts if a.status == 'active'])} "
                                f"addresses published at https://{cfg.mail_host}/directory/, current with the data"),
        ("services_running", f"{p.operation.article} Postfix and Dovecot enabled and running"),
        ("no_cleartext_auth", f"{p.secrecy.article} no authentication without TLS; TLS 1.2 or newer"),
        ("account_store_private", f"{p.secrecy.article} password hashes readable by root, Dovecot auth and Postfix only"),
        ("mail_log", f"{p.logs.article} mail log written to /var/log/mail.log"),
        ("mail_log_retention", f"{p.logs.article} mail logs rotated monthly, compressed, kept "
                               f"{p.logs.retention_months} months"),
    ]
    sp = p.spam
    out.append(("spam_filter", f"{sp.article}: every message scored by rspamd; refused at {sp.reject_score:g}, "
                f"marked at {sp.add_header_score:g}"))
    c = p.content
    text = f"{c.article}: attachments refused: " + " ".join("." + e for e in c.blocked_extensions)
    if c.allowed_extensions is not None:
        text += "; only " + " ".join("." + e for e in c.allowed_extensions) + " accepted"
    if c.inspect_archives:
        text += "; also inside .zip/.rar/.7z/.gz"
    out.append(("attachment_rules", text + f"; password-protected archives: {c.encrypted_archives}"))
    if c.inspect_archives:
        out.append(("archive_inspection", f"{c.article}: archives opened {c.archive_depth} deep, programs found by "
                    f"content (a program renamed .pdf in a zip in a zip is refused); deeper: {c.too_deep}, "
                    f"Office macros: {c.office_macros}"))
    out.append(("sender_bound", f"{p.sender.article}: an authenticated user sends only as their own address or "
                "one delegated to them, in the envelope and in the header From:"))
    av = p.antivirus
    out.append(("antivirus", f"{av.article}: every message scanned by ClamAV, infected ones refused"
                if av.enabled else f"{av.article}: virus scanning is OFF in the data (policy.antivirus.enabled)"))
    ob = p.outbound
    out.append(("outbound_limit", f"{ob.article}: one authenticated user sends at most {ob.burst} messages at once, "
                f"{ob.messages_per_hour} an hour"))
    out.append(("dkim_signing", f"{sp.article}: mail from {cfg.domain} DKIM-signed (selector "
                f"{cfg.model.dkim.selector}), the record published; SPF, DKIM, DMARC checked on received mail"))
    fw = p.forwarding
    if fw.refuse_outbound:
        out.append(("forwarding_out", f"{fw.article}: automatic forwards (Sieve redirect, lists) only to "
                    + ", ".join(fw.state_domains)))
    if fw.refuse_inbound:
        out.append(("forwarding_in", f"{fw.article}: mail forwarded automatically from outside the state domains refused"))
    bf = p.bruteforce
    out.append(("bruteforce", f"{bf.article}: {bf.maxretry} failed logins in {bf.findtime_minutes} min (SMTP AUTH, "
                f"IMAP, POP3, password service, web mail) ban the client for {bf.bantime_minutes} min"))
    if cfg.backup_host:
        b = p.backup
        out.append(("backups", f"{b.article} mailboxes and account store backed up ({b.schedule}) to "
                    f"{cfg.backup_host}, encrypted, append-only; kept {b.keep_daily} daily, {b.keep_weekly} weekly, "
                    f"{b.keep_monthly} monthly"))
    pw = p.password
    if pw.user_max_age_days or pw.admin_max_age_days:
        out.append(("password_rotation", f"{pw.article} passwords expire after {pw.user_max_age_days} days "
                    f"(administrators {pw.admin_max_age_days}); daily warning job enabled"))
    if pw.change_at_first_login:
        out.append(("first_login_change", f"{pw.article} issued and reset passwords must be changed by the user "
                    f"before first use: the web mail at {password_url(cfg)} leads them to the change form"))
    ina = p.inactivity
    if ina.action != "none":
        text = f"{ina.article} mailboxes without login for {ina.after_months} months are {ina.action}d"
        if ina.delete_after_notice_months:
            text += f", deleted {ina.delete_after_notice_months} months later"
        out.append(("inactivity_rule", text + " (daily job enabled)"))
    if p.cancellation.keep_months:
        out.append(("cancelled_retention", f"{p.cancellation.article}: cancelled mailboxes' mail kept "
                    f"{p.cancellation.keep_months} months, then purged"))
    for ml in cfg.model.directory.lists:
        if ml.article:
            out.append(("list_members:" + ml.address, f"{ml.article} {ml.address} reaches its {len(cfg.aliases[ml.address])} members"))
    for mb in cfg.model.directory.mailboxes:
        if mb.article:
            out.append(("mailbox_exists:" + mb.address, f"{mb.article} mailbox {mb.address} exists"))
    return out


CASES = [
    pytest.param(p, name, text, id=f"{p}: {text}")
    for p in PROVINCES
    for name, text in clauses(load_province(p))
]


@pytest.mark.parametrize("province,check_name,clause", CASES)
def test_clause(province, check_name, clause, lab_hosts, record_property):
    import testinfra

    from govmail import lab

    record_property("province", province)
    record_property("clause", clause)
    h = lab_hosts[province]
    ti = testinfra.get_host(
        f"ssh://root@{h.ip}", ssh_identity_file=str(lab.ssh_key()),
        ssh_extra_args="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
    )
    name, _, arg = check_name.partition(":")
    ti.lab_host = h
    CHECKS[name](ti, h.cfg, arg)


def postconf(ti, key):
    return ti.check_output(f"postconf -h {key}").strip()


def quota_limits_mib(ti) -> dict[str, int]:
    """Effective STORAGE limit of every mailbox, as Dovecot enforces it (MiB)."""
    out = ti.check_output("doveadm -f tab quota get -A")
    limits = {}
    for line in out.splitlines()[1:]:
        user, _root, typ, _value, limit, *_ = line.split("\t")
        if typ == "STORAGE":
            limits[user] = int(limit) // 1024 if limit not in ("-", "") else None
    return limits


@check
def mail_domain(ti, cfg, _):
    assert postconf(ti, "virtual_mailbox_domains") == cfg.domain
    assert postconf(ti, "myhostname") == cfg.mail_host
    assert ti.check_output("hostname -f").strip() == cfg.mail_host


@check
def directory_deliverable(ti, cfg, _):
    maps = postconf(ti, "virtual_mailbox_maps")
    missing = [a.address for a in cfg.accounts if ti.run(f"postmap -q {a.address} {maps}").rc != 0]
    assert not missing, f"not accepted by Postfix: {missing}"
    users = ti.check_output(f"doveadm user -u '*@{cfg.domain}'").split()
    assert {a.address for a in cfg.accounts} <= set(users)


@check
def quota_max(ti, cfg, _):
    limits = quota_limits_mib(ti)
    over = {u: ln for u, ln in limits.items() if ln is None or ln > cfg.policy.quota.max_mb}
    assert limits and not over, f"over {cfg.policy.quota.max_mb} MiB: {over}"


@check
def quota_min(ti, cfg, _):
    limits = quota_limits_mib(ti)
    under = {u: ln for u, ln in limits.items() if ln is not None and ln < cfg.policy.quota.min_mb}
    assert limits and not under, f"under {cfg.policy.quota.min_mb} MiB: {under}"


@check
def quota_per_mailbox(ti, cfg, _):
    limits = quota_limits_mib(ti)
    wrong = {a.address: (limits.get(a.address), a.quota_mb) for a in cfg.accounts if limits.get(a.address) != a.quota_mb}
    assert not wrong, f"(host, data) differ: {wrong}"


@check
def size_limit(ti, cfg, _):
    assert int(postconf(ti, "message_size_limit")) == cfg.message_size_limit


@check
def utf8(ti, cfg, _):
    assert postconf(ti, "smtputf8_enable") == "yes"
    assert ti.check_output("doveconf -h mail_utf8_extensions").strip() == "yes"


@check
def client_ports(ti, cfg, _):
    for port in (993, 995, 587, 465, 25):
        assert ti.socket(f"tcp://0.0.0.0:{port}").is_listening, f"port {port} not listening"


WEB_GET = """
import http.client, ssl, sys
host, path, tls = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
c = (http.client.HTTPSConnection("127.0.0.1", 443, context=ssl._create_unverified_context(), timeout=20) if tls
     else http.client.HTTPConnection("127.0.0.1", 80, timeout=20))
c.request("GET", path, headers={"Host": host})
r = c.getresponse()
body = r.read()
sys.stdout.buffer.write(f"{r.status} {r.getheader('Location') or '-'} {len(body)}\\n".encode() + body)
"""


def web_get(ti, host, path, tls=True):
    """(status, Location, body) of a request to the host's own web server, by name."""
    import shlex

    out = ti.run(f"python3 -c {shlex.quote(WEB_GET)} {shlex.quote(host)} {shlex.quote(path)} {int(tls)}")
    assert out.rc == 0, out.stderr
    head, _, body = out.stdout.partition("\n")
    status, location, _ = head.split(" ", 2)
    return int(status), location, body


@check
def web_access(ti, cfg, _):
    for svc in ("nginx", "php8.4-fpm"):
        s = ti.service(svc)
        assert s.is_running and s.is_enabled, f"{svc} not running/enabled"
    for port in (80, 443):
        assert ti.socket(f"tcp://0.0.0.0:{port}").is_listening, f"port {port} not listening"
    status, location, _ = web_get(ti, cfg.mail_host, "/", tls=False)
    assert status == 301 and location == f"https://{cfg.mail_host}/", (status, location)
    status, _, body = web_get(ti, cfg.mail_host, "/")
    assert status == 200 and 'lang="vi"' in body and "rcmloginuser" in body, body[:300]
    status, _, body = web_get(ti, cfg.mail_host, "/mail/config-v1.1.xml")
    assert status == 200 and f"<hostname>{cfg.mail_host}</hostname>" in body


@check
def published_directory(ti, cfg, _):
    from govmail import portal

    status, _, body = web_get(ti, cfg.mail_host, "/directory/")
    assert status == 200 and body == portal.files(cfg)["index.html"].decode(), "the published page is not the data's"


@check
def services_running(ti, cfg, _):
    for svc in ("postfix", "dovecot"):
        s = ti.service(svc)
        assert s.is_running and s.is_enabled, f"{svc} not running/enabled"
    # postfix.service is a wrapper that stays active without its master: ask Postfix itself.
    assert ti.run("postfix status").rc == 0, "Postfix master process not running"


@check
def no_cleartext_auth(ti, cfg, _):
    assert postconf(ti, "smtpd_tls_auth_only") == "yes"
    assert postconf(ti, "smtpd_sasl_auth_enable") == "no", "AUTH must be offered on submission only"
    assert ti.check_output("doveconf -h auth_allow_cleartext").strip() == "no"
    assert ti.check_output("doveconf -h ssl").strip() == "required"
    assert ti.check_output("doveconf -h ssl_min_protocol").strip() == "TLSv1.2"
    assert postconf(ti, "smtpd_tls_protocols") == ">=TLSv1.2"


@check
def account_store_private(ti, cfg, _):
    f = ti.file(PATHS["store"])
    assert f.exists and f.user == "root" and f.group == "postfix" and f.mode == 0o640
    assert ti.file(PATHS["initial_passwords"]).mode == 0o600


@check
def mail_log(ti, cfg, _):
    assert ti.service("rsyslog").is_running
    log = ti.file("/var/log/mail.log")
    assert log.exists and log.contains("postfix/")


@check
def mail_log_retention(ti, cfg, _):
    conf = ti.file("/etc/logrotate.d/govmail-mail")
    assert conf.exists and conf.contains(r"^\s*monthly$") and conf.contains(r"^\s*compress$")
    rotate = int(next(ln.split()[1] for ln in conf.content_string.splitlines() if ln.strip().startswith("rotate ")))
    # `rotate N` keeps N old monthly files beside the current one: N months at least.
    assert rotate >= cfg.policy.logs.retention_months
    assert not ti.file("/etc/logrotate.d/rsyslog").contains(r"^/var/log/mail\.log$"), "Debian's weekly x4 still applies"
    assert ti.run("logrotate -d /etc/logrotate.d/govmail-mail").rc == 0


@check
def spam_filter(ti, cfg, _):
    assert ti.service("rspamd").is_running and ti.service("rspamd").is_enabled
    assert postconf(ti, "smtpd_milters") == "inet:127.0.0.1:11332"
    assert postconf(ti, "milter_default_action") == "tempfail"
    actions = ti.check_output("rspamadm configdump actions")
    sp = cfg.policy.spam
    assert f"reject = {sp.reject_score:g}" in actions.replace(".0;", ";").replace(";", ""), actions
    assert f"add_header = {sp.add_header_score:g}" in actions.replace(".0;", ";").replace(";", ""), actions


@check
def attachment_rules(ti, cfg, _):
    rules = ti.file("/etc/rspamd/lua.local.d/govmail.lua").content_string
    for e in cfg.policy.content.blocked_extensions:
        assert f'["{e}"] = true' in rules, f".{e} not in the blocked list"
    assert f'local ENCRYPTED = "{cfg.policy.content.encrypted_archives}"' in rules
    assert "GOVMAIL_ATTACHMENT" in rules and ti.service("rspamd").is_running


@check
def archive_inspection(ti, cfg, _):
    import json

    c = cfg.policy.content
    svc = ti.service("govmail-inspect")
    assert svc.is_running and svc.is_enabled and ti.socket("tcp://127.0.0.1:11339").is_listening
    rules = json.loads(ti.file("/etc/govmail/inspector/inspect.json").content_string)
    assert rules["depth"] == c.archive_depth and rules["blocked"] == c.blocked_extensions
    # The inspector the host runs, on a program renamed .pdf inside a zip inside a zip, made on the host.
    make = ("python3 -c \"import io,zipfile;i=io.BytesIO();zipfile.ZipFile(i,'w').writestr('huong-dan.pdf',"
            "b'\\x7fELF'+bytes(60));o=io.BytesIO();zipfile.ZipFile(o,'w').writestr('tai-lieu.zip',i.getvalue());"
            "open('/tmp/govmail-check.zip','wb').write(o.getvalue())\"")
    ti.check_output(make)
    verdict = json.loads(ti.check_output("python3 /usr/local/lib/govmail/inspector file /tmp/govmail-check.zip"))
    ti.run("rm -f /tmp/govmail-check.zip")
    assert verdict["verdict"] == "refuse" and verdict["path"] == "govmail-check.zip/tai-lieu.zip/huong-dan.pdf", verdict


@check
def sender_bound(ti, cfg, _):
    master = ti.check_output("postconf -P")
    for service in ("submission/inet", "submissions/inet"):
        assert f"{service}/smtpd_sender_restrictions = reject_non_fqdn_sender,reject_sender_login_mismatch" in master
    rules = ti.file("/etc/rspamd/lua.local.d/govmail.lua").content_string
    assert 'name = "GOVMAIL_FROM"' in rules and ti.service("rspamd").is_running
    for address, logins in cfg.senders.items():
        assert f'["{address}"] = {{ ' + "".join(f'["{x}"] = true, ' for x in logins) + "}" in rules, address


@check
def antivirus(ti, cfg, _):
    assert cfg.policy.antivirus.enabled, "virus scanning is disabled in the province's data"
    assert ti.service("clamav-daemon").is_running and ti.service("clamav-daemon").is_enabled
    assert ti.file("/run/clamav/clamd.ctl").is_socket
    dump = ti.check_output("rspamadm configdump antivirus")
    assert "clamd.ctl" in dump and "reject" in dump, dump


@check
def outbound_limit(ti, cfg, _):
    assert ti.service("redis-server").is_running
    dump = ti.check_output("rspamadm configdump ratelimit")
    ob = cfg.policy.outbound
    assert f"{ob.messages_per_hour} / 1h" in dump and f"burst = {ob.burst}" in dump, dump


@check
def dkim_signing(ti, cfg, _):
    from govmail.services.rspamd import dkim_paths

    key, record = dkim_paths(cfg)
    k = ti.file(key)
    assert k.exists and k.mode == 0o640 and k.group == "_rspamd"
    from .test_dns import txt_records

    want = ti.file(record).content_string.strip()
    assert want.startswith("v=DKIM1; k=rsa; p=")
    published = txt_records(f"{cfg.model.dkim.selector}._domainkey.{cfg.domain}")
    assert published == [want], f"the resolver serves {published!r}, the host signs with {want!r}"
    assert cfg.domain in ti.check_output("rspamadm configdump dkim_signing")


@check
def forwarding_out(ti, cfg, _):
    assert "127.0.0.1:10027" in ti.check_output("postconf -M")
    assert ti.check_output("doveconf -h submission_host") == "127.0.0.1:10027"
    assert ti.check_output("postmap -q someone@outside.example pcre:/etc/postfix/govmail/state-domains.pcre").startswith("REJECT")
    assert ti.check_output("postmap -q someone@bacninh.gov.vn pcre:/etc/postfix/govmail/state-domains.pcre") == "OK"


@check
def forwarding_in(ti, cfg, _):
    assert "GOVMAIL_FORWARD_IN" in ti.file("/etc/rspamd/lua.local.d/govmail.lua").content_string


@check
def bruteforce(ti, cfg, _):
    assert ti.service("fail2ban").is_running and ti.service("fail2ban").is_enabled
    jails = ti.check_output("fail2ban-client status")
    for jail in ("postfix-sasl", "govmail-dovecot", "govmail-passwd", "govmail-webmail"):
        assert jail in jails, f"jail {jail} not running"
        got = [ti.check_output(f"fail2ban-client get {jail} {k}").strip() for k in ("maxretry", "bantime")]
        assert got == [str(cfg.policy.bruteforce.maxretry), str(cfg.policy.bruteforce.bantime_minutes * 60)], got


@check
def backups(ti, cfg, _):
    for t in ("govmail-backup.timer", "govmail-backup-check.timer"):
        assert ti.service(t).is_enabled and ti.service(t).is_running, t
    assert ti.file("/etc/govmail/backup/passphrase").mode == 0o600
    bh = ti.lab_host.backup_run
    keys = bh("cat /srv/govmail-backup/.ssh/authorized_keys").stdout
    assert keys.startswith('command="borg serve --append-only --restrict-to-repository ') and ",restrict " in keys
    assert "repokey" in bh(f"grep -c . /srv/govmail-backup/{cfg.mail_host}/config && "
                           f"runuser -u govmail-backup -- env BORG_PASSCOMMAND='cat /etc/govmail/backup/{cfg.mail_host}.passphrase' "
                           f"BORG_BASE_DIR=/srv/govmail-backup/.borg borg info --json /srv/govmail-backup/{cfg.mail_host}").stdout
    unit = bh("systemctl cat govmail-prune.service").stdout
    b = cfg.policy.backup
    assert f"--keep-daily {b.keep_daily} --keep-weekly {b.keep_weekly} --keep-monthly {b.keep_monthly}" in unit
    assert bh("systemctl is-enabled govmail-prune.timer").stdout.strip() == "enabled"


@check
def password_rotation(ti, cfg, _):
    pw = cfg.policy.password
    q = "python3 -c \"import sqlite3; print(dict(sqlite3.connect('file:{}?mode=ro', uri=True).execute('SELECT key, value FROM meta')))\""
    meta = ast.literal_eval(ti.check_output(q.format(PATHS["store"])))  # a dict printed by the host
    assert meta.get("user_max_age_days") == str(pw.user_max_age_days)
    assert meta.get("admin_max_age_days") == str(pw.admin_max_age_days)
    timer = ti.service("govmail-daily.timer")
    assert timer.is_enabled and timer.is_running


def store_meta(ti) -> dict:
    q = "python3 -c \"import sqlite3; print(dict(sqlite3.connect('file:{}?mode=ro', uri=True).execute('SELECT key, value FROM meta')))\""
    return ast.literal_eval(ti.check_output(q.format(PATHS["store"])))  # a dict printed by the host


@check
def first_login_change(ti, cfg, _):
    meta = store_meta(ti)
    assert meta.get("change_at_first_login") == "1" and meta.get("password_url") == password_url(cfg)
    svc = ti.service("govmail-passwd")
    assert svc.is_running and svc.is_enabled
    assert ti.socket(f"tcp://0.0.0.0:{cfg.model.password_change.port}").is_listening


@check
def inactivity_rule(ti, cfg, _):
    ina, meta = cfg.policy.inactivity, store_meta(ti)
    assert meta.get("inactivity_action") == ina.action and meta.get("inactivity_after_months") == str(ina.after_months)
    assert meta.get("inactivity_delete_after_months") == (str(ina.delete_after_notice_months)
                                                          if ina.delete_after_notice_months else None)
    timer = ti.service("govmail-daily.timer")
    assert timer.is_enabled and timer.is_running


@check
def cancelled_retention(ti, cfg, _):
    assert store_meta(ti).get("cancelled_keep_months") == str(cfg.policy.cancellation.keep_months)


@check
def list_members(ti, cfg, address):
    got = ti.check_output(f"postmap -q {address} {postconf(ti, 'virtual_alias_maps')}").strip().split(",")
    assert sorted(got) == sorted(cfg.aliases[address])


@check
def mailbox_exists(ti, cfg, address):
    assert ti.run(f"postmap -q {address} {postconf(ti, 'virtual_mailbox_maps')}").rc == 0
    assert ti.run(f"doveadm user {address}").rc == 0
