"""Dovecot: IMAP, POP3, LMTP, SASL for Postfix, quota, quota-status, quota warnings, Sieve.

templates/dovecot/dovecot.conf.j2 -> /etc/dovecot/dovecot.conf, checked by `doveconf` on a copy
of /etc/dovecot before it replaces the live file (templates/dovecot/conf.d/README.j2 says in the
unread conf.d where the configuration lives); Dovecot reloads when it (or the certificate)
changed. Its metrics (logins, failed logins, deliveries, IMAP commands) are served to the
province's monitor on the private address (govmail/services/exporters.py). The quota-warning and post-login programs it runs are govmail's host tools
(govmail/services/host_tools.py).
"""

from __future__ import annotations

from ..data.text import Trusted
from ..data.text import host_address as address
from ..host import contract
from ..render import render
from ..service import Ensure, File, Refused, Service, Unit, Validator, directory, restarted_after_crash
from . import db, standby

# Where the proxy sends a delivery to a mailbox in a move's hold: a port nothing serves on the mail
# host's loopback, so LMTP answers 451 4.4.0 and Postfix keeps the message queued (govmail/cli/move.py).
HELD = ("127.0.0.1", 9)
# A message Postfix hands over again after a stop or crash, dropped before the users' filters.
DUPLICATES = "/etc/dovecot/sieve/duplicates"


def probes(cfg) -> dict[str, str]:
    return {"dovecot_sql_driver": "doveconf -h sql_driver 2>/dev/null || true"}


def mx_apart(ctx) -> dict | None:
    """With MX hosts apart from this store (role `mx` on another host): where its LMTP and
    quota-status listen for them (its private address), else None."""
    if ctx.host_name != ctx.cfg.mail_host or not [h for h in ctx.cfg.mx_hosts if h != ctx.host_name]:
        return None
    return {"listen": address(ctx.addresses.get(ctx.host_name, ctx.host_name))}


def _literal(name: str) -> str:
    """A host name or address as an SQL string literal in a Dovecot query (typed: no quote, no `%`)."""
    return f"'{address(name)}'"


def _holds(cfg, name: str) -> str:
    """SQL: the mailbox's mail is on `name` (`store`; NULL: the mail host, for mailboxes made before
    it had stores apart)."""
    return f"(store IS NULL OR store = {_literal(name)})" if name == cfg.mail_host else f"store = {_literal(name)}"


def _own(cfg, name: str, copies: bool = True) -> Trusted:
    """The mailboxes `name`'s Dovecot knows: those it holds, those a move is bringing to it or has just
    taken from it, those failed over from it (until their mail of after the last copy is brought back),
    and (`copies`) those of the stores it keeps the standby copy of (`hosts[].standby`)."""
    me = _literal(name)
    parts = [_holds(cfg, name), f"moving = {me}", f"moved_from = {me}", f"failed_from = {me}"]
    parts += [_holds(cfg, store) for store, standby in cfg.standbys.items() if standby == name and copies]
    return Trusted("(" + " OR ".join(parts) + ")")


def routes(ctx) -> dict:
    """Where this host's Dovecot stands among the province's stores (stores apart: role `store` alone,
    behind the mail host's `proxy`): `own`, the SQL condition on the account store's `store` column
    that picks the mailboxes it knows (None: all of them, one store), and `iterated`, those of them
    `doveadm -A` goes through (not the standby copies of another store's mailboxes: that store's quota
    figures and jobs); `proxy` on the mail host (the
    stores apart, as the passdb query returns them); `backend` on a store apart (where it listens,
    which proxy it trusts, where its Sieve and quota warnings send mail)."""
    cfg, at = ctx.cfg, (lambda n: address(ctx.addresses.get(n, n)))
    apart = cfg.stores_apart
    if not apart:
        return {"own": None, "iterated": None, "proxy": None, "backend": None}
    if ctx.host_name in apart:
        proxies = [at(cfg.mail_host)]
        return {"own": _own(cfg, ctx.host_name), "iterated": _own(cfg, ctx.host_name, copies=False), "proxy": None,
                "backend": {"listen": at(ctx.host_name), "proxies": Trusted(", ".join(proxies)),
                            "trusted": Trusted(" ".join(f"{a}/32" for a in proxies)),
                            "submission": Trusted(f"{at(cfg.mail_host)}:{contract.PORTS['sieve_out']}")}}
    names = ", ".join(_literal(n) for n in apart)
    # Where the mailbox is: deliveries and doveadm go where its mail is (`store`); a login during a
    # move's hold goes where the mail is moving to (`login_store`), once the hold is over.
    where = "CASE WHEN '%{protocol}' IN ('lmtp', 'doveadm') THEN store ELSE login_store END"
    cases = " ".join(f"WHEN {_literal(n)} THEN {_literal(at(n))}" for n in apart)
    port = (f"CASE '%{{protocol}}' WHEN 'lmtp' THEN {contract.PORTS['lmtp']} "
            f"WHEN 'sieve' THEN {contract.PORTS['managesieve']} END")
    # Proxied: a mailbox of a store apart, unless its login is refused (LMTP and doveadm still reach it).
    routed = f"(nologin IS NULL OR '%{{protocol}}' IN ('lmtp', 'doveadm')) AND {where} IN ({names})"
    # A delivery during a move's hold goes nowhere: LMTP answers 451 and the message waits in the MX
    # queue (as for a store that is down) until the move is done.
    held = "'%{protocol}' = 'lmtp' AND delay_until IS NOT NULL"
    nowhere, closed = HELD
    return {"own": _own(cfg, ctx.host_name), "iterated": _own(cfg, ctx.host_name, copies=False), "backend": None,
            "proxy": {"names": Trusted(", ".join(apart)), "apart": Trusted(routed),
                      "on": Trusted(f"({held}) OR ({routed})"),
                      "host": Trusted(f"CASE WHEN {held} THEN '{nowhere}' ELSE CASE {where} {cases} END END"),
                      "port": Trusted(f"CASE WHEN {held} THEN {closed} ELSE {port} END")}}


def doveadm_password(ctx) -> str | None:
    """With stores apart: the secret the mail host's doveadm and the stores' doveadm servers share."""
    if not ctx.cfg.stores_apart:
        return None
    raw = ctx.secrets.get("doveadm", b"").decode("utf-8", "replace").strip()
    if not db.PASSWORD.fullmatch(raw):
        raise Refused(f"the secret doveadm-password of {ctx.cfg.key} is not 16 to 128 letters, digits, - or _; "
                      "put such a value there (or remove the file: the next deploy makes one)")
    return raw


def service(ctx) -> Service:
    cfg = ctx.cfg
    # Dovecot's own metrics (`service stats`, OpenMetrics) on the private address, for the monitor.
    stats = address(ctx.addresses.get(ctx.host_name, ctx.host_name)) if cfg.monitor_host else None
    pg = cfg.store_engine == "postgresql"
    # Dovecot's auth process keeps the configuration it started with while it has clients (login
    # processes, Postfix's SASL connections: it is never idle), and there is one: a reload leaves the
    # store's old engine in use. Moving the store to another engine, or another server or password,
    # restarts Dovecot (IMAP and POP3 clients reconnect; deliveries wait in Postfix's queue).
    live = ctx.probes.get("dovecot_sql_driver", "").strip()
    conf_action = "restart" if live and live != ("pgsql" if pg else "sqlite") else "reload"
    store = []
    if pg:
        # How Dovecot reaches the store, as its reader: apart from dovecot.conf (0644) for the password.
        store.append(File(contract.PATHS["store_dovecot"], render("dovecot/govmail-store.conf.ext.j2", cfg,
                                                                  hosts=db.addresses(ctx), pg=contract.STORE_PG,
                                                                  failfast=db.failfast(ctx),
                                                                  password=db.password(ctx, "reader"),
                                                                  doveadm_password=doveadm_password(ctx)),
                          group="dovecot", mode=0o640, secret=True, action="restart"))
    return Service(
        name="dovecot",
        packages=("dovecot-core", "dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd",
                  # the account store (SQLite or PostgreSQL), Sieve filters and ManageSieve
                  "dovecot-pgsql" if pg else "dovecot-sqlite", "dovecot-sieve", "dovecot-managesieved"),
        # Dovecot puts its sockets for Postfix (auth, LMTP, quota-status) here; Postfix would make it
        # on its first start, which comes after Dovecot's.
        ensures=[*([] if ctx.host_name in cfg.stores_apart else
                   [directory("/var/spool/postfix/private", 0o700, "postfix", "root")]),
                 # The Sieve script run before the users' own, compiled here: Dovecot's LMTP (as vmail)
                 # cannot write beside it and would compile it again at each delivery.
                 Ensure(name=f"{DUPLICATES} compiled",
                        check=f"[ {DUPLICATES}.svbin -nt {DUPLICATES}.sieve ]",
                        fix=f"sievec {DUPLICATES}.sieve", after_files=True)],
        files=[
            File("/etc/dovecot/dovecot.conf", render("dovecot/dovecot.conf.j2", cfg, stats_address=stats,
                                                     mx_apart=mx_apart(ctx), mx_count=len(cfg.mx_hosts), **routes(ctx),
                                                     deliveries=standby.deliveries(ctx),
                                                     lmtp_concurrency=contract.POSTFIX_LMTP_CONCURRENCY),
                 action=conf_action),
            File(f"{DUPLICATES}.sieve", render("dovecot/sieve/duplicates.sieve.j2", cfg), action=None),
            # Debian's conf.d is not read (dovecot.conf includes nothing): its files go to the
            # quarantine (contract.OWNED_DIRS) and this note says where the configuration lives.
            File("/etc/dovecot/conf.d/README", render("dovecot/conf.d/README.j2", ctx.cfg,
                                                      quarantine=contract.QUARANTINE), action=None),
            *store,
            restarted_after_crash("dovecot", "no login, no delivery (mail waits in Postfix's queue)"),
        ],
        validator=Validator("/etc/dovecot", "doveconf -c {dir}/dovecot.conf -n >/dev/null && "
                                                 "sievec -c {dir}/dovecot.conf {dir}/sieve/duplicates.sieve {dir}/sieve/duplicates.svbin"),
        units=[Unit("dovecot")],
        actions={"reload": "systemctl reload dovecot", "restart": "systemctl restart dovecot"},
        reacts={"tls": "reload"},
    )
