"""The compliance checks of the mail service itself: domain, mailboxes, quotas, sizes, clients, web
mail, TLS, logs, filtering, signing, forwarding, brute force, lists (one per clause kind,
govmail/compliance/clauses.py; the operations ones are in checks_ops.py). Checks only read: none
changes a host. `CHECKS` holds them all.
"""

from __future__ import annotations

import shlex
import time

from ..host import contract
from . import active, checks_filter, checks_host, checks_ops  # noqa: F401  (registers the active probes, the filter's, the host's and the operations checks)
from .base import (
    CHECKS,
    Probe,
    check,
    doveconf,
    lookup_table,
    postconf,
    quota_limits_mib,
    running,
    ssh_failure,
    store_rows,
    web_get,
)
from .checks_live import configured_ignoreip, ignored, jail_ignoreip, networks, smtpd_cleartext, smtpd_sizes

__all__ = ["CHECKS", "Probe", "ssh_failure"]


@check
def mail_domain(h, cfg, _):
    """Postfix receives the domain's mail under the host's own name (an MX apart names itself)."""
    got = (postconf(h.ti, "virtual_mailbox_domains"), postconf(h.ti, "myhostname"), h.ti.check_output("hostname -f").strip())
    assert got == (cfg.domain, h.name, h.name), f"domains, myhostname, hostname -f: {got}"
    return f"virtual_mailbox_domains = {got[0]}; myhostname = {got[1]}; hostname -f = {got[2]}"


@check
def directory_deliverable(h, cfg, _):
    """Postfix accepts every address of the directory (an MX apart reads the store over the private
    network); the store's Dovecot knows each."""
    maps = lookup_table(h.ti, "virtual_mailbox_maps")
    # One command for all addresses: each that Postfix does not accept is printed.
    script = "".join(f"postmap -q {shlex.quote(a.address)} {shlex.quote(maps)} >/dev/null || echo {shlex.quote(a.address)}\n"
                     for a in cfg.accounts)
    missing = h.ti.check_output(f"sh -c {shlex.quote(script)}").split()
    assert not missing, f"not accepted by Postfix: {missing}"
    if not h.runs("store"):
        return f"{len(cfg.accounts)} addresses accepted by Postfix ({maps})"
    held = cfg.held_agencies()
    here = [a.address for a in cfg.accounts if cfg.store_of(a, held) == h.name]
    # Once more after a failure: a connection of Dovecot's pool that the account store closed (a
    # failover, a restart) fails one query, and the next opens a new one.
    listing = f"doveadm user -u '*@{cfg.domain}'"
    r = h.ti.run(listing)
    if r.rc != 0:
        time.sleep(1)
        r = h.ti.run(listing)
    assert r.rc == 0, f"`{listing}` exited {r.rc}: {' '.join(r.stderr.split())[:300]}"
    users = set(r.stdout.split())
    unknown = sorted(set(here) - users)
    # The mailboxes of the stores apart, and any the data put here that Dovecot does not know: which
    # the mail host's proxy routes to a store (one round trip for all).
    apart = {a.address: cfg.store_of(a, held) for a in cfg.accounts if cfg.store_of(a, held) != cfg.mail_host}
    routed = proxied(h, [*unknown, *apart]) if cfg.stores_apart else set()
    elsewhere = [a for a in unknown if a in routed]
    assert not elsewhere, (f"on a store apart while the data puts them on {h.name} (a mailbox stays where it "
                           f"was made until it is moved): {elsewhere}")
    assert not unknown, f"unknown to Dovecot: {unknown}"
    lost = sorted(a for a in apart if a not in routed)
    assert not lost, f"not routed to their store apart by the proxy: {lost}"
    counts = {s: sum(1 for v in apart.values() if v == s) for s in cfg.stores_apart}
    return (f"{len(cfg.accounts)} addresses accepted by Postfix ({maps}); {len(here)} known to Dovecot here"
            + "".join(f", {n} routed to {s}" for s, n in counts.items()))


def proxied(h, addresses) -> set[str]:
    """Of `addresses`, those the host's Dovecot passdb sends to another host (`proxy` set)."""
    script = "".join(f"doveadm auth lookup {shlex.quote(a)} | grep -qx '  proxy *: *y' && echo {shlex.quote(a)}\n"
                     for a in addresses)
    return set(h.ti.run(f"sh -c {shlex.quote(script)}").stdout.split()) if addresses else set()


@check
def quota_max(h, cfg, _):
    limits = quota_limits_mib(h.ti)
    if not limits and h.name in cfg.stores_apart:
        return "no mailbox on this store yet"
    over = {u: ln or "unlimited" for u, ln in limits.items() if ln is None or ln > cfg.policy.quota.max_mb}
    assert limits and not over, f"over {cfg.policy.quota.max_mb} MiB: {over}"
    return f"largest quota {max(limits.values())} MiB of {len(limits)} mailboxes"


@check
def quota_min(h, cfg, _):
    limits = quota_limits_mib(h.ti)
    if not limits and h.name in cfg.stores_apart:
        return "no mailbox on this store yet"
    under = {u: ln for u, ln in limits.items() if ln is not None and ln < cfg.policy.quota.min_mb}
    assert limits and not under, f"under {cfg.policy.quota.min_mb} MiB: {under}"
    return f"smallest quota {min(v for v in limits.values() if v is not None)} MiB of {len(limits)} mailboxes"


@check
def quota_per_mailbox(h, cfg, _):
    limits = quota_limits_mib(h.ti)
    held = cfg.held_agencies()
    here = [a for a in cfg.accounts if cfg.store_of(a, held) == h.name]  # this store's mailboxes
    wrong = {a.address: (limits.get(a.address) or "unlimited", a.quota_mb) for a in here
             if limits.get(a.address) != a.quota_mb}
    assert not wrong, f"quota in MiB (on the host, in the data) differ: {wrong}"
    return f"{len(here)} mailboxes, Dovecot's limits as in the data"


@check
def size_limit(h, cfg, _):
    """Postfix's message_size_limit on every smtpd port (main.cf's, or a master.cf override) and in
    cleanup, which every message passes."""
    sizes = {**smtpd_sizes(h), "main.cf": int(postconf(h.ti, "message_size_limit"))}
    wrong = {k: v for k, v in sizes.items() if v != cfg.message_size_limit}
    assert not wrong, "; ".join(f"{k}: message_size_limit = {v:,}" for k, v in wrong.items()) + \
        f" (the data's limit is {cfg.message_size_limit:,})"
    return f"message_size_limit = {cfg.message_size_limit} on {', '.join(sizes)}"


@check
def utf8(h, cfg, _):
    if not h.runs("store"):
        got = postconf(h.ti, "smtputf8_enable")
        assert got == "yes", f"smtputf8_enable = {got}"
        return "smtputf8_enable = yes"
    got = (postconf(h.ti, "smtputf8_enable"), doveconf(h.ti, "mail_utf8_extensions"))
    assert got == ("yes", "yes"), f"smtputf8_enable, mail_utf8_extensions: {got}"
    return "smtputf8_enable = yes; mail_utf8_extensions = yes"


@check
def client_ports(h, cfg, _):
    closed = [p for p in (993, 995, 587, 465, 25) if not h.ti.socket(f"tcp://0.0.0.0:{p}").is_listening]
    assert not closed, f"not listening: {closed}"
    return "listening: 25, 465, 587, 993, 995"


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


DOVECOT_PROTOCOLS = ("imap", "pop3", "submission", "sieve")


@check
def no_cleartext_auth(h, cfg, _):
    """No password login without TLS, as the services apply it: Postfix per port (master.cf
    overrides included), Dovecot per protocol (a `protocol pop3 { }` block included) where it runs."""
    got = {
        "smtpd_tls_auth_only": postconf(h.ti, "smtpd_tls_auth_only"),
        "smtpd_sasl_auth_enable": postconf(h.ti, "smtpd_sasl_auth_enable"),
        "smtpd_tls_protocols": postconf(h.ti, "smtpd_tls_protocols"),
    }
    want = {"smtpd_tls_auth_only": "yes", "smtpd_sasl_auth_enable": "no", "smtpd_tls_protocols": ">=TLSv1.2",
            "auth_allow_cleartext": "no", "ssl": "required", "ssl_min_protocol": "TLSv1.2"}
    dovecot = DOVECOT_PROTOCOLS if h.runs("store") else ()
    if dovecot:
        got.update({k: doveconf(h.ti, k) for k in ("auth_allow_cleartext", "ssl", "ssl_min_protocol")})
    for proto in dovecot:
        for key in ("auth_allow_cleartext", "ssl"):
            got[f"{key} ({proto})"] = h.ti.check_output(f"doveconf -f protocol={proto} -h {key}").strip()
            want[f"{key} ({proto})"] = want[key]
    wrong = {k: v for k, v in got.items() if v != want[k]}
    bad, said = smtpd_cleartext(h)
    bad += [f"{k} = {v}, expected {want[k]}" for k, v in wrong.items()]
    assert not bad, "; ".join(bad)
    return "; ".join(f"{k} = {v}" for k, v in got.items() if "(" not in k) + \
        (f"; the same for Dovecot's {', '.join(dovecot)}; " if dovecot else "; ") + "; ".join(said)


@check
def accounts_as_data(h, cfg, _):
    """The account store holds what the data says where a deploy writes it (each mailbox's quota,
    status, name and roles; the lists, the senders, the former addresses, the policy): the host's
    `accounts check` against the directory the deploy sent. A difference is put back by the next
    deploy."""
    r = h.ti.run(f"{contract.PATHS['lib']}/accounts check")
    found = r.stdout.strip().splitlines()
    assert r.rc == 0, f"{len(found)} differences: " + "; ".join(found[:10]) if found else \
        f"accounts check exited {r.rc}: {r.stderr.strip()[-300:]}"
    return f"the store agrees with the data's {len(cfg.accounts)} mailboxes, lists and policy"


@check
def account_store_private(h, cfg, _):
    """Only root and the mail daemons read the account store; the initial passwords only root."""
    init = h.ti.file(contract.PATHS["initial_passwords"])
    if cfg.store_engine == "postgresql":
        want = {contract.PATHS["store_dsn"]: ("root", "root", "0o600"),
                contract.PATHS["store_dovecot"]: ("root", "dovecot", "0o640")}
    else:
        want = {contract.PATHS["store"]: ("root", "postfix", "0o640")}
    got = {}
    for path in want:
        f = h.ti.file(path)
        got[path] = (f.exists and f.user, f.exists and f.group, f.exists and oct(f.mode))
    got[contract.PATHS["initial_passwords"]] = init.exists and oct(init.mode)
    want[contract.PATHS["initial_passwords"]] = "0o600"
    assert got == want, f"owner, group, mode: {got}"
    return "; ".join(f"{p} {' '.join(v) if isinstance(v, tuple) else v}" for p, v in want.items())


# Each stored password's scheme (and bcrypt's cost), whether it is strong, whether it is an issued
# one not changed yet, and whether its login is blocked: the host's `accounts sql` fills in each
# engine's conditions.
HASHES = ("SELECT a.address, {scheme}, {strong}, {issued}, b.block FROM accounts a JOIN login_blocks b "
          "ON b.address = a.address WHERE a.password IS NOT NULL AND a.status NOT IN ('removed', 'deleted')")


@check
def password_hashes_strong(h, cfg, _):
    """Every password in the account store is hashed strongly (bcrypt at cost 10 or more, Argon2,
    SHA-512 crypt; an issued one not changed yet may wait for the host to rehash it): a weaker hash
    ({PLAIN}, {SHA}, bcrypt at a low cost) is named, and its owner cannot log in before changing it."""
    rows = store_rows(h.ti, HASHES)
    schemes: dict[str, int] = {}
    for _, scheme, *_ in rows:
        schemes[scheme] = schemes.get(scheme, 0) + 1
    weak = [f"{a} ({scheme}; login {'blocked until changed' if block == 'weakhash' else 'NOT blocked'})"
            for a, scheme, strong, issued, block in rows if not strong and not issued]
    waiting = sum(1 for _, _, strong, issued, _ in rows if issued and not strong)
    assert not weak, f"{len(weak)} weak password hashes: {', '.join(weak[:10])}"
    return "; ".join(f"{k}: {v}" for k, v in sorted(schemes.items())) + \
        (f" ({waiting} issued, not changed yet, being rehashed at cost {contract.BCRYPT_COST} by the host)" if waiting else "")


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
    line, want = jail_ignoreip(ti)
    configured = configured_ignoreip(ti.run("fail2ban-client -d").stdout)
    for jail in ("postfix-sasl", "govmail-dovecot", "govmail-passwd", "govmail-webmail", "sshd"):
        assert jail in jails, f"jail {jail} not running ({' '.join(jails.split())[-200:]})"
        # Every running jail ignores no more than govmail's ignoreip: what widens it (a jail.d file,
        # a `fail2ban-client set … addignoreip`) is named as configured, else as fail2ban shows it.
        live = ignored(ti.check_output(f"fail2ban-client get {jail} ignoreip"))
        if any(networks([a]) - networks(want) for a in live):
            extra = [a for a in configured.get(jail, []) if networks([a]) - networks(want)] or \
                sorted(a for a in live if networks([a]) - networks(want))
            raise AssertionError(f"{jail} never bans {', '.join(extra)}, beyond govmail's `{line.strip()}`")
        if jail == "sshd":
            continue  # Debian's jail, at fail2ban's own times
        got = [ti.check_output(f"fail2ban-client get {jail} {k}").strip() for k in ("maxretry", "bantime")]
        assert got == [str(bf.maxretry), str(bf.bantime_minutes * 60)], f"{jail}: maxretry, bantime = {got}"
    return (f"4 mail jails, maxretry {bf.maxretry}, bantime {bf.bantime_minutes * 60} s; Debian's sshd jail; "
            f"none ignores more than {', '.join(sorted(want))}")


@check
def list_members(h, cfg, address):
    got = h.ti.check_output(f"postmap -q {address} {lookup_table(h.ti, 'virtual_alias_maps')}").strip().split(",")
    assert sorted(got) == sorted(cfg.aliases[address]), f"members on the host: {sorted(got)}"
    return f"{len(got)} members"


@check
def mailbox_exists(h, cfg, address):
    assert h.ti.run(f"postmap -q {address} {lookup_table(h.ti, 'virtual_mailbox_maps')}").rc == 0, "not accepted by Postfix"
    assert h.ti.run(f"doveadm user {address}").rc == 0, "unknown to Dovecot"
    return "accepted by Postfix, known to Dovecot"
