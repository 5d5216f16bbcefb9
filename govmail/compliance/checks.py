"""The compliance checks of the mail service itself: domain, mailboxes, quotas, sizes, clients, web
mail, TLS, logs, filtering, signing, forwarding, brute force, lists (one per clause kind,
govmail/compliance/clauses.py; the operations ones are in checks_ops.py). Checks only read: none
changes a host. `CHECKS` holds them all.
"""

from __future__ import annotations

import json
import shlex

from ..host import contract
from . import active, checks_host, checks_ops  # noqa: F401  (registers the active probes, the host's and the operations checks)
from .base import CHECKS, Probe, check, doveconf, postconf, quota_limits_mib, running, ssh_failure

__all__ = ["CHECKS", "Probe", "ssh_failure"]


@check
def mail_domain(h, cfg, _):
    got = (postconf(h.ti, "virtual_mailbox_domains"), postconf(h.ti, "myhostname"), h.ti.check_output("hostname -f").strip())
    assert got == (cfg.domain, cfg.mail_host, cfg.mail_host), f"domains, myhostname, hostname -f: {got}"
    return f"virtual_mailbox_domains = {got[0]}; myhostname = {got[1]}; hostname -f = {got[2]}"


@check
def directory_deliverable(h, cfg, _):
    maps = postconf(h.ti, "virtual_mailbox_maps")
    # One command for all addresses: each that Postfix does not accept is printed.
    script = "".join(f"postmap -q {shlex.quote(a.address)} {shlex.quote(maps)} >/dev/null || echo {shlex.quote(a.address)}\n"
                     for a in cfg.accounts)
    missing = h.ti.check_output(f"sh -c {shlex.quote(script)}").split()
    assert not missing, f"not accepted by Postfix: {missing}"
    users = set(h.ti.check_output(f"doveadm user -u '*@{cfg.domain}'").split())
    unknown = sorted({a.address for a in cfg.accounts} - users)
    assert not unknown, f"unknown to Dovecot: {unknown}"
    return f"{len(cfg.accounts)} addresses accepted by Postfix ({maps}) and known to Dovecot"


@check
def quota_max(h, cfg, _):
    limits = quota_limits_mib(h.ti)
    over = {u: ln for u, ln in limits.items() if ln is None or ln > cfg.policy.quota.max_mb}
    assert limits and not over, f"over {cfg.policy.quota.max_mb} MiB: {over}"
    return f"largest quota {max(limits.values())} MiB of {len(limits)} mailboxes"


@check
def quota_min(h, cfg, _):
    limits = quota_limits_mib(h.ti)
    under = {u: ln for u, ln in limits.items() if ln is not None and ln < cfg.policy.quota.min_mb}
    assert limits and not under, f"under {cfg.policy.quota.min_mb} MiB: {under}"
    return f"smallest quota {min(v for v in limits.values() if v is not None)} MiB of {len(limits)} mailboxes"


@check
def quota_per_mailbox(h, cfg, _):
    limits = quota_limits_mib(h.ti)
    wrong = {a.address: (limits.get(a.address), a.quota_mb) for a in cfg.accounts if limits.get(a.address) != a.quota_mb}
    assert not wrong, f"quota in MiB (on the host, in the data) differ: {wrong}"
    return f"{len(cfg.accounts)} mailboxes, Dovecot's limits as in the data"


@check
def size_limit(h, cfg, _):
    got = int(postconf(h.ti, "message_size_limit"))
    assert got == cfg.message_size_limit, f"message_size_limit = {got}"
    return f"message_size_limit = {got}"


@check
def utf8(h, cfg, _):
    got = (postconf(h.ti, "smtputf8_enable"), doveconf(h.ti, "mail_utf8_extensions"))
    assert got == ("yes", "yes"), f"smtputf8_enable, mail_utf8_extensions: {got}"
    return "smtputf8_enable = yes; mail_utf8_extensions = yes"


@check
def client_ports(h, cfg, _):
    closed = [p for p in (993, 995, 587, 465, 25) if not h.ti.socket(f"tcp://0.0.0.0:{p}").is_listening]
    assert not closed, f"not listening: {closed}"
    return "listening: 25, 465, 587, 993, 995"


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
    out = ti.run(f"python3 -c {shlex.quote(WEB_GET)} {shlex.quote(host)} {shlex.quote(path)} {int(tls)}")
    assert out.rc == 0, f"GET {path}: {out.stderr.strip()[-300:]}"
    head, _, body = out.stdout.partition("\n")
    status, location, _ = head.split(" ", 2)
    return int(status), location, body


@check
def web_access(h, cfg, _):
    running(h.ti, "nginx", f"php{contract.PHP}-fpm")
    closed = [p for p in (80, 443) if not h.ti.socket(f"tcp://0.0.0.0:{p}").is_listening]
    assert not closed, f"not listening: {closed}"
    status, location, _ = web_get(h.ti, cfg.mail_host, "/", tls=False)
    assert status == 301 and location == f"https://{cfg.mail_host}/", f"http:// answers {status} {location}"
    status, _, body = web_get(h.ti, cfg.mail_host, "/")
    assert status == 200 and 'lang="vi"' in body and "rcmloginuser" in body, f"https:// answers {status}: {body[:200]}"
    status, _, body = web_get(h.ti, cfg.mail_host, "/mail/config-v1.1.xml")
    assert status == 200 and f"<hostname>{cfg.mail_host}</hostname>" in body, f"autoconfig answers {status}: {body[:200]}"
    return f"http:// 301 to https://{cfg.mail_host}/; login page 200, lang=vi; autoconfig 200"


@check
def published_directory(h, cfg, _):
    from ..publish import portal

    status, _, body = web_get(h.ti, cfg.mail_host, "/directory/")
    want = portal.files(cfg)["index.html"].decode()
    assert status == 200 and body == want, f"/directory/ answers {status}, {len(body)} bytes, not the data's {len(want)}"
    return f"/directory/ 200, {len(body)} bytes, the page the data makes"


@check
def services_running(h, cfg, _):
    running(h.ti, "postfix", "dovecot")
    # postfix.service is a wrapper that stays active without its master: ask Postfix itself.
    r = h.ti.run("postfix status")
    assert r.rc == 0, f"postfix status: {(r.stderr or r.stdout).strip()}"
    return "postfix, dovecot active and enabled; " + (r.stderr or r.stdout).strip().split(": ", 1)[-1]


@check
def no_cleartext_auth(h, cfg, _):
    got = {
        "smtpd_tls_auth_only": postconf(h.ti, "smtpd_tls_auth_only"),
        "smtpd_sasl_auth_enable": postconf(h.ti, "smtpd_sasl_auth_enable"),
        "smtpd_tls_protocols": postconf(h.ti, "smtpd_tls_protocols"),
        "auth_allow_cleartext": doveconf(h.ti, "auth_allow_cleartext"),
        "ssl": doveconf(h.ti, "ssl"),
        "ssl_min_protocol": doveconf(h.ti, "ssl_min_protocol"),
    }
    want = {"smtpd_tls_auth_only": "yes", "smtpd_sasl_auth_enable": "no", "smtpd_tls_protocols": ">=TLSv1.2",
            "auth_allow_cleartext": "no", "ssl": "required", "ssl_min_protocol": "TLSv1.2"}
    wrong = {k: v for k, v in got.items() if v != want[k]}
    assert not wrong, f"found {wrong}, expected {({k: want[k] for k in wrong})}"
    return "; ".join(f"{k} = {v}" for k, v in got.items())


@check
def account_store_private(h, cfg, _):
    f, init = h.ti.file(contract.PATHS["store"]), h.ti.file(contract.PATHS["initial_passwords"])
    got = (f.exists and f.user, f.exists and f.group, f.exists and oct(f.mode), init.exists and oct(init.mode))
    assert got == ("root", "postfix", "0o640", "0o600"), f"store owner, group, mode; initial passwords mode: {got}"
    return f"{contract.PATHS['store']} root:postfix 0640; {contract.PATHS['initial_passwords']} 0600"


@check
def mail_log(h, cfg, _):
    running(h.ti, "rsyslog")
    log = h.ti.file("/var/log/mail.log")
    assert log.exists and log.contains("postfix/"), "/var/log/mail.log missing or without Postfix lines"
    return f"/var/log/mail.log, {log.size} bytes, Postfix lines present"


@check
def mail_log_retention(h, cfg, _):
    conf = h.ti.file("/etc/logrotate.d/govmail-mail")
    assert conf.exists, "/etc/logrotate.d/govmail-mail missing"
    lines = [ln.strip() for ln in conf.content_string.splitlines()]
    rotate = next((int(ln.split()[1]) for ln in lines if ln.startswith("rotate ") and ln.split()[1].isdigit()), 0)
    found = f"monthly: {'monthly' in lines}, compress: {'compress' in lines}, rotate {rotate}"
    # `rotate N` keeps N old monthly files beside the current one: N months at least.
    assert "monthly" in lines and "compress" in lines and rotate >= cfg.policy.logs.retention_months, found
    assert not h.ti.file("/etc/logrotate.d/rsyslog").contains(r"^/var/log/mail\.log$"), "Debian's weekly x4 still applies"
    r = h.ti.run("logrotate -d /etc/logrotate.d/govmail-mail")
    assert r.rc == 0, f"logrotate -d: {r.stderr.strip()[-300:]}"
    return found


@check
def spam_filter(h, cfg, _):
    running(h.ti, "rspamd")
    milters = (postconf(h.ti, "smtpd_milters"), postconf(h.ti, "milter_default_action"))
    assert milters == ("inet:127.0.0.1:11332", "tempfail"), f"smtpd_milters, milter_default_action: {milters}"
    actions = h.ti.check_output("rspamadm configdump actions").replace(".0;", ";").replace(";", "")
    sp = cfg.policy.spam
    for action, score in (("reject", sp.reject_score), ("add_header", sp.add_header_score)):
        assert f"{action} = {score:g}" in actions, f"rspamd actions: {' '.join(actions.split())}"
    return f"milter {milters[0]} ({milters[1]}); reject = {sp.reject_score:g}, add_header = {sp.add_header_score:g}"


@check
def attachment_rules(h, cfg, _):
    running(h.ti, "rspamd")
    rules = h.ti.file("/etc/rspamd/lua.local.d/govmail.lua").content_string
    missing = [e for e in cfg.policy.content.blocked_extensions if f'["{e}"] = true' not in rules]
    assert not missing, f"not in the blocked list: {missing}"
    assert f'local ENCRYPTED = "{cfg.policy.content.encrypted_archives}"' in rules and "GOVMAIL_ATTACHMENT" in rules
    return f"{len(cfg.policy.content.blocked_extensions)} extensions blocked by GOVMAIL_ATTACHMENT"


@check
def archive_inspection(h, cfg, _):
    c, ti = cfg.policy.content, h.ti
    running(ti, "govmail-inspect")
    port = contract.PORTS["inspector"]
    assert ti.socket(f"tcp://127.0.0.1:{port}").is_listening, f"inspector not listening on 127.0.0.1:{port}"
    rules = json.loads(ti.file(contract.PATHS["inspector_rules"]).content_string)
    assert (rules["depth"], rules["blocked"]) == (c.archive_depth, c.blocked_extensions), f"inspect.json: {rules}"
    # The inspector the host runs, on a program renamed .pdf inside a zip inside a zip, made on the host.
    make = ("python3 -c \"import io,zipfile;i=io.BytesIO();zipfile.ZipFile(i,'w').writestr('huong-dan.pdf',"
            "b'\\x7fELF'+bytes(60));o=io.BytesIO();zipfile.ZipFile(o,'w').writestr('tai-lieu.zip',i.getvalue());"
            "open('/tmp/govmail-check.zip','wb').write(o.getvalue())\"")
    ti.check_output(make)
    verdict = json.loads(ti.check_output("python3 /usr/local/lib/govmail/inspector file /tmp/govmail-check.zip"))
    ti.run("rm -f /tmp/govmail-check.zip")
    assert verdict["verdict"] == "refuse" and verdict["path"] == "govmail-check.zip/tai-lieu.zip/huong-dan.pdf", verdict
    return f"depth {rules['depth']}; a program as .pdf in a zip in a zip: {verdict['verdict']} ({verdict['path']})"


@check
def sender_bound(h, cfg, _):
    master = h.ti.check_output("postconf -P")
    for service in ("submission/inet", "submissions/inet"):
        line = f"{service}/smtpd_sender_restrictions = reject_non_fqdn_sender,reject_sender_login_mismatch"
        assert line in master, f"{service}: no reject_sender_login_mismatch"
    running(h.ti, "rspamd")
    rules = h.ti.file("/etc/rspamd/lua.local.d/govmail.lua").content_string
    assert 'name = "GOVMAIL_FROM"' in rules, "no GOVMAIL_FROM rule in rspamd"
    for address, logins in cfg.senders.items():
        assert f'["{address}"] = {{ ' + "".join(f'["{x}"] = true, ' for x in logins) + "}" in rules, address
    return f"reject_sender_login_mismatch on 587/465; GOVMAIL_FROM with {len(cfg.senders)} senders"


def rspamd_verdict(ti, message: str, *options: str) -> dict:
    """What the host's rspamd answers for `message` (`rspamc --json` on its normal worker, as Postfix's
    milter would ask): its action, symbols and the headers it would add. Nothing is delivered."""
    import shlex

    r = ti.run(f"printf %s {shlex.quote(message)} | rspamc --json -h 127.0.0.1:11333 {' '.join(options)}")
    assert r.rc == 0, f"rspamc: {(r.stderr or r.stdout).strip()[:300]}"
    out = json.loads(r.stdout)
    return out.get("default", out) if isinstance(out, dict) else {}


EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


@check
def antivirus(h, cfg, _):
    """Through the path mail takes: rspamd, asked about a message carrying the EICAR test file,
    answers reject with ClamAV's symbol (a file in rspamd's override.d turning the antivirus off, or
    rspamd or clamd stopped, fails it)."""
    assert cfg.policy.antivirus.enabled, "virus scanning is disabled in the province's data"
    running(h.ti, "clamav-daemon")
    import base64

    # As mail clients attach a file: base64 (a raw 7bit part keeps its last line break, and the file's
    # MD5 is then not EICAR's).
    msg = (f"From: kiemtra@outside.example\nTo: {cfg.postmaster}\nSubject: govmail verify antivirus\n"
           "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
           "Tep dinh kem.\n--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
           "Content-Disposition: attachment; filename=cong-van.txt\n\n"
           f"{base64.b64encode(EICAR.encode()).decode()}\n--b--\n")
    v = rspamd_verdict(h.ti, msg)
    symbols = sorted(v.get("symbols") or {})
    assert v.get("action") == "reject" and "CLAM_VIRUS" in symbols, \
        f"the EICAR test file: action {v.get('action')}, symbols {', '.join(symbols)[:300]}"
    return "the EICAR test file, through rspamd: reject (CLAM_VIRUS)"


@check
def outbound_limit(h, cfg, _):
    running(h.ti, "redis-server")
    dump = h.ti.check_output("rspamadm configdump ratelimit")
    ob = cfg.policy.outbound
    assert f"{ob.messages_per_hour} / 1h" in dump and f"burst = {ob.burst}" in dump, \
        f"rspamd ratelimit: {' '.join(dump.split())[:300]}"
    return f"ratelimit {ob.messages_per_hour} / 1h, burst {ob.burst}"


@check
def dkim_signing(h, cfg, _):
    from ..data.facts import dkim_paths

    key, record = dkim_paths(cfg)
    k = h.ti.file(key)
    assert k.exists and k.mode == 0o640 and k.group == "_rspamd", f"{key}: exists {k.exists}"
    want = h.ti.file(record).content_string.strip()
    assert want.startswith("v=DKIM1; k=rsa; p="), f"{record}: {want[:60]}"
    name = f"{cfg.model.dkim.selector}._domainkey.{cfg.domain}"
    if h.txt:
        published = h.txt(name)
        assert published == [want], f"DNS serves {published!r} for {name}, the host signs with {want[:40]}…"
    # Through the path mail takes: rspamd signs a message a user of the domain submits.
    sender = cfg.postmaster
    v = rspamd_verdict(h.ti, f"From: {sender}\nTo: {sender}\nSubject: govmail verify dkim\n\nkiem tra\n",
                       "--user", sender, "--from", sender, "--ip", "127.0.0.1")
    sig = "".join(str(v.get("dkim-signature") or "").split())
    assert f"d={cfg.domain};" in sig and f"s={cfg.model.dkim.selector};" in sig, \
        f"a message {sender} submits is not signed for {cfg.domain} (rspamd's signature: {sig[:80] or 'none'})"
    said = f"a submitted message signed d={cfg.domain}, s={cfg.model.dkim.selector}"
    return f"{said}; {name} published as the host's record ({want[:32]}…)" if h.txt else f"{said}; key {key}"


@check
def forwarding_out(h, cfg, _):
    ti, pcre = h.ti, "pcre:/etc/postfix/govmail/state-domains.pcre"
    assert "127.0.0.1:10027" in ti.check_output("postconf -M"), "no re-injection service on 127.0.0.1:10027"
    assert doveconf(ti, "submission_host") == "127.0.0.1:10027", "Sieve redirects do not go through it"
    outside = ti.check_output(f"postmap -q someone@outside.example {pcre}")
    inside = ti.check_output(f"postmap -q someone@{cfg.domain} {pcre}")
    assert outside.startswith("REJECT") and inside == "OK", f"outside: {outside}; {cfg.domain}: {inside}"
    # Scripts are checked when saved: ManageSieve's port is govmail's guard, Dovecot's own only on the loopback.
    front, behind = contract.PORTS["managesieve"], contract.PORTS["managesieve_dovecot"]
    listeners = ti.check_output(f"ss -Hltnp 'sport = :{front} or sport = :{behind}'")
    guard = [x for x in listeners.splitlines() if f":{front} " in x]
    assert guard and all("python3" in x for x in guard), f"{front} is not govmail's ManageSieve guard: {listeners}"
    assert all(f"127.0.0.1:{behind}" in x for x in listeners.splitlines() if "dovecot" in x), \
        f"Dovecot's ManageSieve is reachable without the guard: {listeners}"
    running(ti, "govmail-sieve-guard")
    return (f"scripts checked when saved (govmail-sieve-guard on {front}, Dovecot's ManageSieve on "
            f"127.0.0.1:{behind}); "
            f"redirects via 127.0.0.1:10027; outside.example: {outside[:60]}")


@check
def forwarding_in(h, cfg, _):
    assert "GOVMAIL_FORWARD_IN" in h.ti.file("/etc/rspamd/lua.local.d/govmail.lua").content_string, "no GOVMAIL_FORWARD_IN rule"
    return "rspamd rule GOVMAIL_FORWARD_IN"


@check
def bruteforce(h, cfg, _):
    ti, bf = h.ti, cfg.policy.bruteforce
    running(ti, "fail2ban")
    jails = ti.check_output("fail2ban-client status")
    for jail in ("postfix-sasl", "govmail-dovecot", "govmail-passwd", "govmail-webmail"):
        assert jail in jails, f"jail {jail} not running"
        got = [ti.check_output(f"fail2ban-client get {jail} {k}").strip() for k in ("maxretry", "bantime")]
        assert got == [str(bf.maxretry), str(bf.bantime_minutes * 60)], f"{jail}: maxretry, bantime = {got}"
    return f"4 jails, maxretry {bf.maxretry}, bantime {bf.bantime_minutes * 60} s"


@check
def list_members(h, cfg, address):
    got = h.ti.check_output(f"postmap -q {address} {postconf(h.ti, 'virtual_alias_maps')}").strip().split(",")
    assert sorted(got) == sorted(cfg.aliases[address]), f"members on the host: {sorted(got)}"
    return f"{len(got)} members"


@check
def mailbox_exists(h, cfg, address):
    assert h.ti.run(f"postmap -q {address} {postconf(h.ti, 'virtual_mailbox_maps')}").rc == 0, "not accepted by Postfix"
    assert h.ti.run(f"doveadm user {address}").rc == 0, "unknown to Dovecot"
    return "accepted by Postfix, known to Dovecot"
