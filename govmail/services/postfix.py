"""Postfix: SMTP for the province's domain, submission (587 STARTTLS, 465 TLS), size limit, maps.

templates/postfix/<file>.j2 -> /etc/postfix/<file>; main.cf and master.cf are checked with
`postconf` on a copy of /etc/postfix before they replace the live files (any warning fails).

A change is applied with `postfix reload`: the master re-reads its configuration and replaces its
daemons as they finish their sessions, so no SMTP session is cut and no message accepted twice.
Only the parameters a reload cannot apply (`inet_interfaces`, `inet_protocols`) make a change
restart Postfix; the host's live values are read in the deploy's first round trip to tell.
"""

from __future__ import annotations

import re

from ..data.roles import has
from ..data.text import Trusted
from ..data.text import host_address as address
from ..host import contract
from ..render import render
from ..service import Ensure, File, Service, Unit, Validator, restarted_after_crash
from . import db

RESTART_ONLY = ("inet_interfaces", "inet_protocols")
# The copy's main.cf and master.cf are pointed at the copy's maps (they name /etc/postfix/...),
# so the maps are checked as they will be; any warning fails.
VALIDATE = (
    "sed -i 's#/etc/postfix/#{dir}/#g' {dir}/main.cf {dir}/master.cf && "
    "err=$(postconf -c {dir} -n 2>&1 >/dev/null) && [ -z \"$err\" ] && "
    "err=$(postconf -c {dir} -M 2>&1 >/dev/null) && [ -z \"$err\" ] || { echo \"$err\"; exit 1; }; "
    # postconf accepts a master.cf whose `-o` value has a space in it; the daemon then dies on the
    # word after the space ("unexpected command-line argument") and the service is down. Each
    # argument of an smtpd service must be an option, `-o name=value` or `-o { name = value }`.
    "postconf -c {dir} -M | awk '$8 == \"smtpd\" { for (i = 9; i <= NF; i++) { "
    "if ($i == \"-o\") { i++; if (substr($i, 1, 1) == \"{\") { d = 0; for (; i <= NF; i++) { "
    "d += gsub(/[{]/, \"{\", $i) - gsub(/[}]/, \"}\", $i); if (d <= 0) break } } "
    "else if ($i !~ /=/) { print \"master.cf: \" $1 \": -o \" $i \": not name=value\"; bad = 1 } } "
    "else if ($i !~ /^-/) { print \"master.cf: \" $1 \": stray argument \" $i \" (a space inside an -o value?)\"; "
    "bad = 1 } } } END { exit bad }'"
)


def probes(cfg) -> dict[str, str]:
    return {"postfix_restart_only": f"postconf -h {' '.join(RESTART_ONLY)}"}


def restart_only_values(main_cf: str) -> list[str]:
    """The values main.cf gives the parameters a reload cannot apply (Postfix's default: all)."""
    out = []
    for name in RESTART_ONLY:
        m = re.search(rf"^{name}\s*=\s*(.*)$", main_cf, re.M)
        out.append(m.group(1).strip() if m else "all")
    return out


SMTP_GREETS = ("postfix status >/dev/null 2>&1 && timeout 5 bash -c "
               "'exec 3<>/dev/tcp/127.0.0.1/25 && head -c 4 <&3 && printf \"QUIT\\r\\n\" >&3' 2>/dev/null | grep -q '^220'")


def store_at(ctx):
    """An MX host apart from the store: the store's private address (its LMTP and quota-status:
    govmail/services/dovecot.py `mx_apart`); None on the store's own host."""
    if has(ctx.roles, "store"):
        return None
    return address(ctx.addresses.get(ctx.cfg.mail_host, ctx.cfg.mail_host))


def stores_out(ctx) -> dict | None:
    """On the mail host with stores apart: where its listener for their Dovecot's mail (Sieve,
    vacation, quota warnings) listens (its private address) and whom it takes it from."""
    cfg = ctx.cfg
    if ctx.host_name != cfg.mail_host or not cfg.stores_apart:
        return None
    at = {n: address(ctx.addresses.get(n, n)) for n in [cfg.mail_host, *cfg.stores_apart]}
    return {"listen": Trusted(f"{at[cfg.mail_host]}:{contract.PORTS['sieve_out']}"),
            "from": Trusted(" ".join(f"{at[n]}/32" for n in cfg.stores_apart))}


def service(ctx) -> Service:
    cfg, maps = ctx.cfg, contract.PATHS["postfix_maps"]
    # On the store's host Postfix is the mail host's (`me` is cfg.mail_host); an MX host apart names itself.
    apart = dict(me=Trusted(ctx.host_name) if store_at(ctx) else cfg.mail_host, store_at=store_at(ctx))
    main_cf = render("postfix/main.cf.j2", cfg, **apart)
    pg = cfg.store_engine == "postgresql"
    # Postfix reads the store as its reader role (the maps are root:postfix 0640: they hold its password).
    store = {"hosts": db.addresses(ctx), "port": contract.STORE_PG["port"], "database": contract.STORE_PG["database"],
             "user": contract.STORE_PG["reader"], "password": db.password(ctx, "reader"),
             "failfast": db.failfast(ctx)} if pg else None
    live = [v.strip() for v in ctx.probes.get("postfix_restart_only", "").splitlines()]
    conf_action = "restart" if live and live != restart_only_values(main_cf) else "reload"
    return Service(
        name="postfix",
        packages=("postfix", "postfix-pgsql" if pg else "postfix-sqlite", "postfix-pcre"),
        ensures=[
            # /etc/aliases is compiled again whenever the map is older (a deploy stopped in between).
            Ensure("/etc/aliases.db is compiled from /etc/aliases",
                   "test -e /etc/aliases.db && ! test /etc/aliases -nt /etc/aliases.db", "true", action="postalias"),
        ],
        files=[
            File(f"{maps}/mailboxes.cf", render("postfix/sqlite-mailboxes.cf.j2", cfg, store=store), group="postfix", mode=0o640,
                 secret=pg),
            File(f"{maps}/aliases.cf", render("postfix/sqlite-aliases.cf.j2", cfg, store=store), group="postfix", mode=0o640,
                 secret=pg),
            File(f"{maps}/senders.cf", render("postfix/sqlite-senders.cf.j2", cfg, store=store), group="postfix", mode=0o640,
                 secret=pg),
            File(f"{maps}/relocated.cf", render("postfix/sqlite-relocated.cf.j2", cfg, store=store), group="postfix", mode=0o640,
                 secret=pg),
            # Where Sieve redirects may go (state domains).
            File(f"{maps}/state-domains.pcre", render("postfix/state-domains.pcre.j2", cfg,
                                                      state_domains=cfg.policy.forwarding.state_domains)),
            # root -> postmaster, in the aliases format, compiled to the hash map main.cf names.
            File("/etc/aliases", render("postfix/aliases.local.j2", cfg), action="postalias"),
            File("/etc/postfix/main.cf", main_cf, action=conf_action),
            File("/etc/postfix/master.cf", render("postfix/master.cf.j2", cfg, **apart, stores_out=stores_out(ctx))),
            restarted_after_crash("postfix", "no mail comes in or goes out while it is down (its queue is on disk)"),
        ],
        validator=Validator("/etc/postfix", VALIDATE),
        # The postfix unit is a wrapper that stays "active" when the master is gone, and the master
        # runs on while every smtpd it starts dies (a broken main.cf): ready is an SMTP greeting on 25.
        units=[Unit("postfix", ready=SMTP_GREETS, ready_timeout=30)],
        actions={
            "postalias": "postalias hash:/etc/aliases",
            "reload": "postfix check && postfix reload 2>/dev/null",
            "restart": "postfix check && systemctl restart postfix",
        },
        reacts={"tls": "reload"},
    )
