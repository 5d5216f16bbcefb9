"""The account store on PostgreSQL (`account_store.engine: postgresql`), on the host with role `db`.

Debian's PostgreSQL 17 and its cluster `17/main`; govmail adds a drop-in to its configuration and
owns its client authentication:

    templates/postgresql/17/main/conf.d/govmail.conf.j2 -> /etc/postgresql/17/main/conf.d/govmail.conf
    templates/postgresql/17/main/pg_hba.conf.j2         -> /etc/postgresql/17/main/pg_hba.conf

both checked by `postgres -C` on a copy of /etc/postgresql/17/main before they replace the live
ones. The database and its two roles (contract.STORE_PG: the writer the host tools use, the reader
Postfix and Dovecot use) are made by `accounts db-setup` (govmail/host/store_setup.py) with the
passwords of the province's secrets (govmail/secrets.py), and checked at every deploy by logging in
with them. A SQLite province declares nothing here.

This module also says how every other service reaches the store (`dsn`, `address`, `password`):
written once, used by the host tools (/etc/govmail/store.dsn), Dovecot and Postfix.
"""

from __future__ import annotations

import re

from ..host import contract
from ..render import render
from ..service import Ensure, File, Refused, Service, Unit, Validator, json_bytes

PG = contract.STORE_PG
CONF = f"/etc/postgresql/{PG['version']}/{PG['cluster']}"
UNIT = f"postgresql@{PG['version']}-{PG['cluster']}"
BIN = f"/usr/lib/postgresql/{PG['version']}/bin"
# What a store password may hold: it goes unquoted into libpq strings and Postfix/Dovecot settings.
PASSWORD = re.compile(r"[A-Za-z0-9_-]{16,128}")
# The services whose hosts read the store (Postfix's maps, Dovecot, the password page's service).
READERS = ("mx", "store", "web")


def password(ctx, role: str) -> str:
    """The store password of `role` (writer | reader) from the province's secrets, checked."""
    raw = ctx.secrets.get(f"store_{role}", b"").decode("utf-8", "replace").strip()
    if not PASSWORD.fullmatch(raw):
        raise Refused(f"the secret store-password-{role} of {ctx.cfg.key} is not 16 to 128 letters, digits, "
                      "- or _; put such a value there (or remove the file: the next deploy makes one)")
    return raw


def address(ctx) -> str:
    """Where this host reaches the store's PostgreSQL: its loopback on the db host, else the db
    host's private address."""
    db = ctx.cfg.db_host
    return "127.0.0.1" if ctx.host_name == db else ctx.addresses.get(db, db)


def dsn(ctx, role: str) -> str:
    """The libpq connection string of `role` from this host."""
    return contract.store_dsn(address(ctx), role, password(ctx, role))


def reader_hosts(cfg, addresses) -> list[str]:
    """The addresses of the province's other hosts that read or write the store."""
    out = []
    for role in (*READERS, "db"):
        for h in cfg.hosts_with(role):
            a = addresses.get(h, h)
            if h != cfg.db_host and a not in out:
                out.append(a)
    return out


def service(ctx):
    cfg = ctx.cfg
    if cfg.store_engine != "postgresql":
        return None
    others = reader_hosts(cfg, ctx.addresses)
    lib = contract.PATHS["lib"]
    secrets = {"writer": password(ctx, "writer"), "reader": password(ctx, "reader")}
    return Service(
        name="db",
        packages=(f"postgresql-{PG['version']}", "python3-psycopg2"),
        files=[
            File(f"{CONF}/conf.d/govmail.conf", render(f"postgresql/{PG['version']}/main/conf.d/govmail.conf.j2", cfg,
                                                        listen=["127.0.0.1", *others], port=PG["port"]),
                 action="restart"),
            File(f"{CONF}/pg_hba.conf", render(f"postgresql/{PG['version']}/main/pg_hba.conf.j2", cfg,
                                               clients=others, pg=PG), user="postgres", group="postgres",
                 mode=0o640),
            File(contract.PATHS["store_secrets"], json_bytes(secrets), mode=0o600, secret=True, action=None),
        ],
        # postgres reads the copy as itself: the scratch directory is made readable to it.
        validator=Validator(CONF, "chmod 755 \"$(dirname {dir})\" && chmod -R a+rX {dir} && "
                            f"runuser -u postgres -- {BIN}/postgres -C listen_addresses "
                            "--config-file={dir}/postgresql.conf >/dev/null"),
        ensures=[Ensure("the account store's PostgreSQL roles log in with the province's passwords",
                        f"{lib}/accounts db-check >/dev/null 2>&1", f"{lib}/accounts db-setup",
                        after_files=True)],
        units=[Unit(UNIT, ready=f"pg_isready -q -h 127.0.0.1 -p {PG['port']}", ready_timeout=60)],
        actions={"reload": f"systemctl reload {UNIT}", "restart": f"systemctl restart {UNIT}"},
    )
