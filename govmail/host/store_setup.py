"""The account store's PostgreSQL on the db host: its cluster started, its two login roles with the
passwords the deploy sent, its database, and the reader's rights (`accounts db-check` / `accounts
db-setup`, run by the deploy: govmail/services/db.py).

The writer (contract.STORE_PG["writer"]) owns the database and everything in it; the reader may
connect and SELECT (default privileges: the views the writer re-creates stay readable). The
superuser is reached only through the socket, as the postgres system user (peer). Standard library
only; psql does the SQL, with the passwords as psql variables (never in a command line).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from . import contract

PG = contract.STORE_PG
SECRETS = contract.PATHS["store_secrets"]


PATRONI = contract.PATRONI
# Replication between two db hosts (Patroni): the standby's login, and pg_rewind's (which reads
# files of the primary through these functions, as Patroni's documentation lists them).
CLUSTER_SETUP = """
SELECT format('CREATE ROLE %I LOGIN REPLICATION', :'replication')
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'replication') \\gexec
SELECT format('ALTER ROLE %I LOGIN REPLICATION PASSWORD %L', :'replication', :'replication_pw') \\gexec
SELECT format('CREATE ROLE %I LOGIN', :'rewind') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'rewind') \\gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'rewind', :'rewind_pw') \\gexec
SELECT format('GRANT EXECUTE ON FUNCTION pg_catalog.%s TO %I', f, :'rewind')
    FROM unnest(ARRAY['pg_ls_dir(text, boolean, boolean)', 'pg_stat_file(text, boolean)', 'pg_read_binary_file(text)',
                      'pg_read_binary_file(text, bigint, bigint, boolean)']) AS f \\gexec
"""


def passwords(path: str = SECRETS) -> dict:
    """{"writer": ..., "reader": ...} as the deploy sent them (and, with two db hosts, "replication"
    and "rewind")."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    return {k: doc[k] for k in ("writer", "reader", "replication", "rewind") if k in doc}


def check(path: str = SECRETS) -> list[str]:
    """What is not ready: each of the store's roles logging in over TCP with its password, the
    reader reading."""
    from . import store_db

    problems = []
    for role, password in passwords(path).items():
        if role not in ("writer", "reader"):
            continue
        try:
            db = store_db.connect(contract.store_dsn("127.0.0.1", role, password), readonly=True)
            db.execute("SELECT 1").fetchone()
            db.close()
        except Exception as e:  # psycopg2's OperationalError: refused, no such role, wrong password
            problems.append(f"{PG[role]}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
    cluster = [PG[r] for r in ("replication", "rewind") if r in passwords(path)]
    if cluster and not problems:
        # They log in from the other db host only (pg_hba.conf): their existence is read as the superuser.
        r = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-qAt", "-p", str(PG["port"]), "-d",
                            "postgres", "-c", "SELECT rolname FROM pg_roles WHERE rolcanlogin"],
                           capture_output=True, text=True)
        problems += [f"{name}: no such role" for name in cluster if name not in r.stdout.split()]
    return problems


SETUP = """
\\set ON_ERROR_STOP on
SELECT format('CREATE ROLE %I LOGIN', :'writer') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'writer') \\gexec
SELECT format('CREATE ROLE %I LOGIN', :'reader') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader') \\gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'writer', :'writer_pw') \\gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'reader', :'reader_pw') \\gexec
SELECT format('CREATE DATABASE %I OWNER %I ENCODING ''UTF8'' TEMPLATE template0', :'db', :'writer')
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \\gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \\gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', :'reader') \\gexec
\\connect :db
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'reader') \\gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT SELECT ON TABLES TO %I', :'writer', :'reader') \\gexec
SELECT format('GRANT SELECT ON ALL TABLES IN SCHEMA public TO %I', :'reader') \\gexec
"""


def cluster_running() -> bool:
    return subprocess.run(["pg_isready", "-q", "-p", str(PG["port"])], capture_output=True).returncode == 0


def patroni() -> bool:
    """Whether Patroni runs this host's cluster (two db hosts): its configuration is here."""
    return os.path.exists(PATRONI["config"])


def in_recovery() -> bool:
    """Whether this host's PostgreSQL is a standby (Patroni's replica): it cannot take the setup."""
    r = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-qAt", "-p", str(PG["port"]), "-d", "postgres",
                        "-c", "SELECT pg_is_in_recovery()"], capture_output=True, text=True)
    return r.stdout.strip() == "t"


def setup(path: str = SECRETS, wait: float = 300) -> None:
    """Start the cluster if it is down, then make the roles, the database and the reader's rights.
    On a standby (Patroni) the primary does that: wait up to `wait` seconds for its roles to arrive."""
    pw = passwords(path)
    if not cluster_running():
        unit = PATRONI["unit"] if patroni() else f"postgresql@{PG['version']}-{PG['cluster']}"
        subprocess.run(["systemctl", "start", unit], check=True)
        for _ in range(int(wait * 2)):
            if cluster_running():
                break
            time.sleep(0.5)
        else:
            sys.exit(f"accounts: PostgreSQL {PG['version']}/{PG['cluster']} does not answer on port {PG['port']}")
    if patroni():
        # Patroni answers pg_isready while it still bootstraps (its own pg_hba.conf comes after).
        _wait_patroni_running(wait)
    if patroni() and in_recovery():
        deadline = time.monotonic() + wait
        while (left := check(path)) and time.monotonic() < deadline:
            time.sleep(2)
        if left:
            sys.exit("accounts: this host's PostgreSQL is the standby and the primary has not made the store's roles "
                     f"after {wait:.0f} s: " + "; ".join(left) + f" (see `patronictl -c {PATRONI['config']} list`)")
        print("the account store's roles log in on this standby (the primary made them)")
        return
    values = {"writer": PG["writer"], "reader": PG["reader"], "db": PG["database"],
              "writer_pw": pw["writer"], "reader_pw": pw["reader"]}
    script = SETUP
    if "replication" in pw and "rewind" in pw:
        values.update(replication=PG["replication"], rewind=PG["rewind"], replication_pw=pw["replication"],
                      rewind_pw=pw["rewind"])
        script = SETUP.replace("\\connect :db", CLUSTER_SETUP + "\\connect :db")
    # The values go in as psql variables (\\set in the script on stdin), quoted by psql itself.
    script = "".join(f"\\set {k} '{_psql_quote(v)}'\n" for k, v in values.items()) + script
    r = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-p", str(PG["port"]), "-d", "postgres"],
                       input=script, text=True, capture_output=True)
    if r.returncode != 0:
        sys.exit(f"accounts: setting up the store's database failed: {r.stderr.strip()[-500:]}")
    left = check(path)
    if left:
        sys.exit("accounts: the store's roles still cannot log in: " + "; ".join(left))
    print(f"the account store's database {PG['database']} is ready (roles {PG['writer']}, {PG['reader']})")


def _wait_patroni_running(wait: float) -> None:
    """Wait until this host's Patroni says its PostgreSQL runs (its REST API's /health answers 200:
    bootstrapped, or cloned, with the configuration it writes), at most `wait` seconds."""
    import re
    import urllib.error
    import urllib.request

    # The REST API's address, as the deploy wrote it (db.py patroni_config: `connect_address: <ip>:<port>`).
    with open(PATRONI["config"], encoding="utf-8") as f:
        found = re.search(rf"^\s+connect_address: '?([0-9A-Za-z.-]+:{PATRONI['api_port']})'?$", f.read(), re.M)
    if not found:
        sys.exit(f"accounts: no REST API address of Patroni in {PATRONI['config']}")
    api = found.group(1)
    deadline, why = time.monotonic() + wait, "no answer yet"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{api}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            why = f"/health {e.code}"
        except OSError as e:
            why = str(e)
        time.sleep(1)
    sys.exit(f"accounts: Patroni on this host does not report its PostgreSQL running after {wait:.0f} s ({why})")


def wait_cluster(wait: float = 540) -> None:
    """Wait until Patroni's cluster exists in etcd (its `initialize` key, read from this host's etcd
    member), at most `wait` seconds: the db host that is not the first starts its Patroni only then."""
    import base64
    import urllib.request

    key = f"{PATRONI['namespace'].rstrip('/')}/{PATRONI['scope']}/initialize"
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
    url = f"http://127.0.0.1:{PATRONI['etcd_client_port']}/v3/kv/range"
    deadline, why = time.monotonic() + wait, "no answer yet"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=5) as r:
                if json.load(r).get("kvs"):
                    return
                why = "etcd answers, no cluster yet"
        except OSError as e:
            why = str(e)
        time.sleep(2)
    sys.exit(f"accounts: the store's cluster did not appear in etcd ({key}) within {wait:.0f} s ({why}): "
             "the first db host makes it; is it up?")


def _psql_quote(value: str) -> str:
    """A value inside psql's single quotes: quote and backslash escaped."""
    if "\n" in value or "\0" in value:
        raise ValueError("a store password holds a line break")
    return value.replace("\\", "\\\\").replace("'", "\\'")
