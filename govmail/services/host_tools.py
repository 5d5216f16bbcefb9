"""govmail's own programs on a mail host: the package govmail/host/ and its commands.

govmail/host/*.py -> /usr/local/lib/govmail/govmail_host/ (standard library only; the host contract
module among them), and one small command per tool in /usr/local/lib/govmail/:

    accounts        the account store and the daily job (govmail/host/accounts.py)
    backup          backups and restores (govmail/host/backup_tool.py)
    passwd-service  the password service (govmail/host/passwd_service.py), API only
    quota-warning   run by Dovecot when a mailbox crosses a warning level
    inspector       the attachment inspector rspamd asks (govmail/host/inspector.py)
    migrate         a merged province's mailboxes from its predecessors' hosts (govmail/host/migrate.py)
    report          the monthly operations and annual usage reports (govmail/host/report.py)
    sieve-guard     ManageSieve's port: scripts checked before Dovecot stores them (govmail/host/sieve_guard.py)
    metrics         this host's facts for Prometheus, every 30 s (govmail/host/metrics.py)
    standby         the standby copies of a store's mailboxes (govmail/host/standby.py)
    postlogin       run by Dovecot after each login (stamps the last login)
    pg-clone        how Patroni makes a db host's standby (two db hosts only)

A change of any of them re-syncs the account store and restarts the password service (those
services declare `reacts={"host_tools": ...}`).
"""

from __future__ import annotations

from pathlib import Path

from ..data.roles import has
from ..host import contract
from ..host.contract import PACKAGE
from ..service import File, Service
from . import db

HOST = Path(__file__).resolve().parent.parent / "host"
COMMANDS = {"accounts": "accounts", "backup": "backup_tool", "passwd-service": "passwd_service",
            "quota-warning": "quota_warning", "inspector": "inspector", "migrate": "migrate",
            "report": "report", "sieve-guard": "sieve_guard", "metrics": "metrics", "standby": "standby"}


def command(name: str, module: str) -> str:
    return (f"#!/usr/bin/python3\n# Managed by govmail (govmail/services/host_tools.py): the {name} command,\n"
            f"# govmail/host/{module}.py.\nimport sys\n\nsys.path.insert(0, {contract.PATHS['lib']!r})\n"
            f"from {PACKAGE}.{module} import main  # noqa: E402\n\nsys.exit(main(sys.argv[1:]))\n")


def service(ctx) -> Service:
    lib = contract.PATHS["lib"]
    files = [File(f"{lib}/{PACKAGE}/{p.name}", p.read_bytes(), mode=0o644, action=None)
             for p in sorted(HOST.glob("*.py"))]
    files += [File(f"{lib}/{PACKAGE}/{p.name}", p.read_bytes(), mode=0o644, action=None)
              for p in sorted(HOST.glob("*.html.j2"))]  # the pages host tools fill
    files += [File(f"{lib}/{name}", command(name, module), mode=0o755, action=None)
              for name, module in COMMANDS.items()]
    files.append(File(f"{lib}/postlogin", (HOST / "postlogin.sh").read_bytes(), mode=0o755, action=None))
    if ctx.cfg.store_cluster and ctx.host_name in ctx.cfg.db_hosts:
        # How Patroni makes this host's standby (govmail/services/db.py).
        files.append(File(f"{lib}/pg-clone", (HOST / "pg_clone.sh").read_bytes(), mode=0o755, action=None))
    packages = ()
    # An MX host apart (several MX) reads the store through Postfix's maps only, as the reader: its
    # tools get no writer's password (a gateway in a DMZ must not be able to change accounts).
    writes = any(has(ctx.roles, r) for r in ("store", "web", "db"))
    if ctx.cfg.store_engine == "postgresql" and writes:
        # Where the tools find the account store (govmail/host/store.py: configured_store), as its writer.
        files.append(File(contract.PATHS["store_dsn"], db.dsn(ctx, "writer") + "\n", mode=0o600, secret=True,
                          action=None))
        packages = ("python3-psycopg2",)
    return Service(name="host_tools", packages=packages, files=files)
