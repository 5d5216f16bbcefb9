"""A throwaway PostgreSQL server for the account store's tests on PostgreSQL (govmail/host/store_db.py).

The machine's own PostgreSQL binaries (Debian's `postgresql`, installed by govmail.sh) run a cluster
made for the test session in a scratch directory: no TCP port (a Unix socket in that directory), no
cluster of the machine touched, stopped by its own pid file and removed at the end. As root, the
server runs as the `postgres` user (initdb refuses root). Each test gets a database of its own.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile


def binaries() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


class Server:
    def __init__(self, bindir: str, fsync: bool = False):
        self.bindir = bindir
        self.dir = tempfile.mkdtemp(prefix="govmail-pg-")
        self.data = os.path.join(self.dir, "data")
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.dir, self.user)
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "govmail", "--no-sync", "-E", "UTF8",
                  "--locale", "C.UTF-8")
        self._run("pg_ctl", "-D", self.data, "-w", "-s", "-l", os.path.join(self.dir, "log"), "-o",
                  f"-c listen_addresses='' -c unix_socket_directories={self.dir} -c fsync={'on' if fsync else 'off'}",
                  "start")
        self._names = itertools.count()

    def _run(self, tool: str, *args: str) -> None:
        cmd = [os.path.join(self.bindir, tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.dir)

    def dsn(self, dbname: str) -> str:
        return f"host={self.dir} dbname={dbname} user=govmail"

    def new_database(self) -> str:
        """A fresh, empty database; its connection string."""
        import psycopg2

        name = f"store{next(self._names)}"
        con = psycopg2.connect(self.dsn("postgres"))
        con.autocommit = True
        con.cursor().execute(f"CREATE DATABASE {name}")
        con.close()
        return self.dsn(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", self.data, "-w", "-s", "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
