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
import subprocess
import sys
import time

from . import contract

PG = contract.STORE_PG
SECRETS = contract.PATHS["store_secrets"]


def passwords(path: str = SECRETS) -> dict:
    """{"writer": ..., "reader": ...} as the deploy sent them."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    return {k: doc[k] for k in ("writer", "reader")}


def check(path: str = SECRETS) -> list[str]:
    """What is not ready: each role logging in over TCP with its password, the reader reading."""
    from . import store_db

    problems = []
    for role, password in passwords(path).items():
        try:
            db = store_db.connect(contract.store_dsn("127.0.0.1", role, password), readonly=True)
            db.execute("SELECT 1").fetchone()
            db.close()
        except Exception as e:  # psycopg2's OperationalError: refused, no such role, wrong password
            problems.append(f"{PG[role]}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
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


def setup(path: str = SECRETS) -> None:
    """Start the cluster if it is down, then make the roles, the database and the reader's rights."""
    pw = passwords(path)
    if not cluster_running():
        subprocess.run(["systemctl", "start", f"postgresql@{PG['version']}-{PG['cluster']}"], check=True)
        for _ in range(60):
            if cluster_running():
                break
            time.sleep(0.5)
        else:
            sys.exit(f"accounts: PostgreSQL {PG['version']}/{PG['cluster']} does not answer on port {PG['port']}")
    values = {"writer": PG["writer"], "reader": PG["reader"], "db": PG["database"],
              "writer_pw": pw["writer"], "reader_pw": pw["reader"]}
    # The values go in as psql variables (\\set in the script on stdin), quoted by psql itself.
    script = "".join(f"\\set {k} '{_psql_quote(v)}'\n" for k, v in values.items()) + SETUP
    r = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-p", str(PG["port"]), "-d", "postgres"],
                       input=script, text=True, capture_output=True)
    if r.returncode != 0:
        sys.exit(f"accounts: setting up the store's database failed: {r.stderr.strip()[-500:]}")
    left = check(path)
    if left:
        sys.exit("accounts: the store's roles still cannot log in: " + "; ".join(left))
    print(f"the account store's database {PG['database']} is ready (roles {PG['writer']}, {PG['reader']})")


def _psql_quote(value: str) -> str:
    """A value inside psql's single quotes: quote and backslash escaped."""
    if "\n" in value or "\0" in value:
        raise ValueError("a store password holds a line break")
    return value.replace("\\", "\\\\").replace("'", "\\'")
