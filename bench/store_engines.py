#!/usr/bin/env python3
"""The account store on its two engines at a merged province's size (printed, never asserted).

    .venv/bin/python bench/store_engines.py [N]        (default N = 50000; as root or not)

Runs the host's own store code (govmail/host/store.py, as `accounts sync` and `accounts check` do)
on this machine against an SQLite file and against a PostgreSQL server of this machine's Debian
binaries (tests/unit/postgres.py, fsync on, a Unix socket), with a directory of N mailboxes:
  1. the first sync (N new mailboxes, their initial passwords given as hashes);
  2. a sync with one quota changed; 3. a sync with no change; 4. `accounts check`;
then the move of the N-mailbox SQLite store into an empty PostgreSQL store (the first sync after
`account_store.engine: postgresql`). Figures beside their floors.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from govmail.host import store as host_store  # noqa: E402
from govmail.host import store_move  # noqa: E402
from tests.unit import postgres  # noqa: E402

# How long each step may take on PostgreSQL at 50,000 mailboxes (a step of a deploy: the cold deploy
# of 50,000 mailboxes takes 100 s, a no-change one 4 s; bench/directory_scale.py), and the move.
FLOORS = {"first sync": 5.0, "one quota changed": 1.0, "no change": 1.0, "accounts check": 1.0}
FLOOR_MOVE_S = 60.0


def directory(n: int, changed: bool = False) -> dict:
    accounts = [{"address": f"canbo{i:06d}@lamdong.gov.vn", "name": f"Cán bộ {i}", "kind": "person",
                 "owner": f"so{i % 40}", "role": "user", "quota_mb": 1024 + (7 if changed and i == 0 else 0),
                 "status": "active", "password_hash": "{BLF-CRYPT}$2b$04$" + f"{i:053d}", "manager": None,
                 "superior": None} for i in range(n)]
    return {"version": 4, "domain": "lamdong.gov.vn", "accounts": accounts, "lists": {}, "policy": {}}


def run(target: str, work: Path, n: int) -> dict:
    host_store.DB, host_store.SQLITE = target, str(work / "no-such.sqlite")
    doc = work / "directory.json"
    out = {}
    for what, changed in (("first sync", False), ("one quota changed", True), ("no change", True)):
        doc.write_text(json.dumps(directory(n, changed)))
        t = time.monotonic()
        host_store.sync()
        out[what] = time.monotonic() - t
    t = time.monotonic()
    assert host_store.differences() == []
    out["accounts check"] = time.monotonic() - t
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    bindir = postgres.binaries()
    if bindir is None:
        sys.exit("no PostgreSQL binaries (Debian's `postgresql`; govmail.sh installs it)")
    server = postgres.Server(bindir, fsync=True)
    work = Path(tempfile.mkdtemp(prefix="govmail-bench-store-"))
    host_store.DIRECTORY, host_store.HANDOUT = str(work / "directory.json"), str(work / "handout")
    host_store.LEGACY_USERS, host_store.READERS_CONF = str(work / "none"), ()
    try:
        results = {}
        for engine, target in (("SQLite", str(work / "accounts.sqlite")), ("PostgreSQL", server.new_database())):
            with contextlib.redirect_stdout(io.StringIO()):
                results[engine] = run(target, work, n)
        t = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()):
            moved = store_move.move(str(work / "accounts.sqlite"), host_store.connect(server.new_database()))
        move_s = time.monotonic() - t
    finally:
        server.stop()
    print(f"the account store on its two engines ({n:,} mailboxes; this machine, PostgreSQL {bindir.split('/')[4]})")
    print(f"  {'':28} {'SQLite':>9} {'PostgreSQL':>11}   floor (PostgreSQL, at {n:,})")
    for what in results["SQLite"]:
        print(f"  {what:28} {results['SQLite'][what]:8.1f}s {results['PostgreSQL'][what]:10.1f}s   "
              f"at most {FLOORS[what]:.0f} s")
    print(f"  -> move SQLite -> PostgreSQL ({moved['accounts']:,} accounts, {moved['audit']:,} audit lines) "
          f"{move_s:5.1f} s   (floor: at most {FLOOR_MOVE_S:.0f} s)")


if __name__ == "__main__":
    main()
