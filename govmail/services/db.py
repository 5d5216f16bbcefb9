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

Two db hosts (`cluster_service`): Debian's Patroni runs the cluster instead of Debian's unit, with
etcd's three members (govmail/services/etcd.py) keeping the leader key:

    /etc/patroni/17-main.yml          Patroni's configuration (a YAML document made here, postgres 0600)
    /etc/postgresql-common/createcluster.d/govmail.conf   no cluster of Debian's own (written before
                                      the packages: File.early)
    /etc/systemd/system/patroni@17-main.service.d/govmail.conf   restart after a crash; the second db
                                      host waits for the cluster to exist before its Patroni starts

The first db host bootstraps the cluster (Debian's pg_createcluster), or takes over its one-host
data; the second clones it (govmail/host/pg_clone.sh) and streams from it; commits wait for the standby
while it runs (synchronous mode), so a failover loses no acknowledged change. Patroni writes
postgresql.conf and pg_hba.conf (the rules of pg_hba.conf.j2, as a list in its configuration).

This module also says how every other service reaches the store (`dsn`, `addresses`, `password`):
written once, used by the host tools (/etc/govmail/store.dsn: libpq tries each db host and keeps
the one that takes writes), Dovecot and Postfix (either db host: they only read).
"""

from __future__ import annotations

import re

from ..data.text import host_address
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


def addresses(ctx) -> list[str]:
    """Where this host reaches the store's PostgreSQL: each db host (its own as the loopback), in the
    data's order. Two under Patroni: libpq, Postfix and Dovecot try them in turn."""
    return ["127.0.0.1" if h == ctx.host_name else host_address(ctx.addresses.get(h, h)) for h in ctx.cfg.db_hosts]


def failfast(ctx) -> dict:
    """The TCP settings of every store client when there are two db hosts (contract.STORE_FAILFAST)."""
    from ..data.text import Trusted

    return {Trusted(k): v for k, v in contract.STORE_FAILFAST.items()} if ctx.cfg.store_cluster else {}


def dsn(ctx, role: str) -> str:
    """The libpq connection string of `role` from this host (every db host; the one that takes writes)."""
    return contract.store_dsn(addresses(ctx), role, password(ctx, role))


def reader_hosts(cfg, addresses, me: str) -> list[str]:
    """The addresses of the province's other hosts that read or write the store (the other db host's
    host tools too)."""
    out = []
    for role in (*READERS, "db"):
        for h in cfg.hosts_with(role):
            a = addresses.get(h, h)
            if h != me and a not in out:
                out.append(a)
    return out


def service(ctx):
    cfg = ctx.cfg
    if cfg.store_engine != "postgresql":
        return None
    if cfg.store_cluster:
        return cluster_service(ctx)
    others = reader_hosts(cfg, ctx.addresses, ctx.host_name)
    lib = contract.PATHS["lib"]
    # The loopback, and this host's own private address when other hosts read the store.
    listen = ["127.0.0.1", *([host_address(ctx.addresses.get(ctx.host_name, ctx.host_name))] if others else [])]
    return Service(
        name="db",
        packages=(f"postgresql-{PG['version']}", "python3-psycopg2"),
        files=[
            File(f"{CONF}/conf.d/govmail.conf", render(f"postgresql/{PG['version']}/main/conf.d/govmail.conf.j2", cfg,
                                                        listen=listen, port=PG["port"]),
                 action="restart"),
            File(f"{CONF}/pg_hba.conf", pg_hba(ctx, others), user="postgres", group="postgres", mode=0o640),
            secrets_file(ctx),
        ],
        # postgres reads the copy as itself: the scratch directory is made readable to it.
        validator=Validator(CONF, "chmod 755 \"$(dirname {dir})\" && chmod -R a+rX {dir} && "
                            f"runuser -u postgres -- {BIN}/postgres -C listen_addresses "
                            "--config-file={dir}/postgresql.conf >/dev/null"),
        ensures=[setup_ensure(lib)],
        units=[Unit(UNIT, ready=READY, ready_timeout=60)],
        actions={"reload": f"systemctl reload {UNIT}", "restart": f"systemctl restart {UNIT}"},
    )


READY = f"pg_isready -q -h 127.0.0.1 -p {PG['port']}"


def pg_hba(ctx, clients: list[str], peers: tuple[str, ...] = ()) -> str:
    """Client authentication: the store's roles from `clients`, replication and pg_rewind from `peers`."""
    return render(f"postgresql/{PG['version']}/main/pg_hba.conf.j2", ctx.cfg, clients=clients, peers=list(peers),
                  pg=PG)


def secrets_file(ctx, roles: tuple[str, ...] = ("writer", "reader")) -> File:
    """The db host's record of the store's passwords (`accounts db-setup` gives them to the roles)."""
    return File(contract.PATHS["store_secrets"], json_bytes({r: password(ctx, r) for r in roles}), mode=0o600,
                secret=True, action=None)


def setup_ensure(lib: str) -> Ensure:
    return Ensure("the account store's PostgreSQL roles log in with the province's passwords",
                  f"{lib}/accounts db-check >/dev/null 2>&1", f"{lib}/accounts db-setup", after_files=True)



# Two db hosts: Debian's Patroni runs the cluster, etcd (govmail/services/etcd.py) keeps its leader.
P = contract.PATRONI
CREATECLUSTER = "/etc/postgresql-common/createcluster.d/govmail.conf"
DROPIN = f"/etc/systemd/system/{P['unit']}.service.d/govmail.conf"
CLUSTER_ROLES = ("writer", "reader", "replication", "rewind")
# Patroni's timing (seconds): the leader key lives `ttl`, Patroni acts every `loop_wait`, and gives a
# slow etcd or PostgreSQL `retry_timeout` (loop_wait + 2 x retry_timeout <= ttl).
TIMING = {"ttl": 20, "loop_wait": 5, "retry_timeout": 5}


def patroni_config(ctx) -> bytes:
    """/etc/patroni/17-main.yml, as a YAML document made from typed values (addresses checked, the
    passwords of PASSWORD's letters): the cluster's name and members, etcd's members, how a standby
    is made (Debian's pg_clonecluster) and a new cluster (pg_createcluster), the client
    authentication (the same rules as one db host's, and replication between the db hosts)."""
    import yaml

    checked = host_address

    cfg = ctx.cfg
    me = checked(ctx.addresses.get(ctx.host_name, ctx.host_name))
    peers = [checked(ctx.addresses.get(h, h)) for h in cfg.db_hosts]
    clients = reader_hosts(cfg, ctx.addresses, ctx.host_name)
    # Replication from the loopback too: Patroni reads its own timeline that way before a rewind.
    hba = [line for line in pg_hba(ctx, clients, ("127.0.0.1", *peers)).splitlines()
           if line.strip() and not line.startswith("#")]
    api, port = f"{me}:{P['api_port']}", f"{me}:{PG['port']}"
    login = {r: {"username": PG[r], "password": password(ctx, r)} for r in ("replication", "rewind")}
    doc = {
        "scope": P["scope"], "namespace": P["namespace"], "name": ctx.host_name,
        "restapi": {"listen": api, "connect_address": api,
                    "authentication": {"username": P["api_user"], "password": password(ctx, "patroni")}},
        "etcd3": {"hosts": [f"{checked(ctx.addresses.get(h, h))}:{P['etcd_client_port']}" for h in cfg.etcd_members]},
        "bootstrap": {
            "method": "pg_createcluster",
            "pg_createcluster": {"command": "/usr/share/patroni/pg_createcluster_patroni"},
            # The cluster's shared settings, written to etcd when it is first made (`patronictl
            # edit-config` changes them afterwards): a commit waits for the standby while it runs.
            "dcs": {**TIMING, "maximum_lag_on_failover": 1048576, "synchronous_mode": True,
                    "postgresql": {"use_pg_rewind": True,
                                   "parameters": {"max_connections": 200, "wal_log_hints": "on"}}},
        },
        "postgresql": {
            "listen": f"127.0.0.1,{port}", "connect_address": port,
            "data_dir": f"/var/lib/postgresql/{PG['version']}/{PG['cluster']}", "bin_dir": BIN, "config_dir": CONF,
            "pgpass": f"/var/lib/postgresql/{P['scope']}.pgpass", "use_unix_socket": True,
            "authentication": {"superuser": {"username": "postgres"}, **login},
            # Debian's layout and a base backup taken at once (govmail/host/pg_clone.sh).
            "create_replica_methods": ["govmail_clone"],
            "govmail_clone": {"command": f"{contract.PATHS['lib']}/pg-clone"},
            "pg_hba": hba,
            "parameters": {"unix_socket_directories": "/var/run/postgresql", "password_encryption": "scram-sha-256"},
        },
    }
    head = ("# Managed by govmail (govmail/services/db.py); edits here are overwritten by the next deploy.\n"
            "# Patroni's configuration of the account store's cluster; a change is reloaded (settings\n"
            "# that need PostgreSQL restarted wait for `patronictl restart`).\n")
    return (head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)).encode()


def patroni_dropin(ctx) -> str:
    """Patroni restarts after a crash (Debian's unit leaves it down); a db host other than the first
    waits for the cluster to exist in etcd before its Patroni starts, so it joins as the standby and
    never makes a second, empty cluster of its own while the first host (with the province's
    accounts) is still starting."""
    wait = (f"ExecStartPre=+{contract.PATHS['lib']}/accounts db-wait-cluster\n"
            if ctx.host_name != ctx.cfg.db_hosts[0] else "")
    return (f"# Managed by govmail (govmail/services/db.py).\n[Service]\nRestart=on-failure\nRestartSec=5s\n"
            f"TimeoutStartSec=600\n{wait}")


def cluster_service(ctx) -> Service:
    lib = contract.PATHS["lib"]
    start_conf = f"{CONF}/start.conf"
    return Service(
        name="db",
        packages=(f"postgresql-{PG['version']}", "python3-psycopg2", "patroni", "python3-etcd"),
        files=[
            # Before postgresql-17 is installed: no cluster of Debian's own (Patroni makes or clones it).
            File(CREATECLUSTER, "# Managed by govmail (govmail/services/db.py): Patroni makes the store's cluster.\n"
                 "create_main_cluster = false\n", action=None, early=True),
            File(P["config"], patroni_config(ctx), user="postgres", group="postgres", mode=0o600, secret=True),
            File(DROPIN, patroni_dropin(ctx), action=None),
            secrets_file(ctx, CLUSTER_ROLES),
        ],
        ensures=[
            # A one-host store moving to two: Debian's cluster must not start by itself any more.
            Ensure("the store's cluster is started by Patroni only, never by Debian's postgresql.service",
                   f"! grep -qx auto {start_conf} 2>/dev/null", f"sed -i 's/^auto$/manual/' {start_conf}"),
            setup_ensure(lib),
        ],
        # Read back as Patroni reads it (`patroni --validate-config` would also ask etcd and the port,
        # which are not up before the first start).
        validator=Validator("/etc/patroni", "python3 -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); "
                            "sys.exit(0 if d[\"scope\"] and d[\"etcd3\"][\"hosts\"] and d[\"postgresql\"][\"data_dir\"] "
                            f"else 1)' {{dir}}/{P['scope']}.yml"),
        # Debian's own unit for the cluster stops first (a one-host store moving to two): Patroni then
        # takes its data over as the first primary.
        units=[Unit(UNIT, running=False), Unit(P["unit"], ready=READY, ready_timeout=600, gate=True)],
        # Never restarted by a deploy: a restart of the primary's Patroni is a failover.
        actions={"reload": f"systemctl reload {P['unit']}"},
    )
