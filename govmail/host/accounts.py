"""govmail account tool on a mail host (/usr/local/lib/govmail/accounts).

The command line over the account store (govmail/host/store.py), the user's own password change
(password_change.py) and the daily life-cycle job (lifecycle.py). Standard library only.
"""

import argparse
import datetime
import json
import os
import sys

from . import lifecycle, mailbox_moves, notice, password_change, store, store_db, store_sql

EPILOG = """
The store: one database that Dovecot (passdb/userdb) and Postfix (its maps) read through views:
the SQLite file /var/lib/govmail/accounts.sqlite, or PostgreSQL where /etc/govmail/store.dsn names it. The data file says who exists; the store keeps what lives on
the host: passwords users set, when they set them, statuses. A sync never replaces a password
already in the store, never deletes a mailbox that left the data file (it is marked removed), and a
cancelled mailbox keeps its mail.
"""


def run_sql(statement, write=False, db_path=None):
    """One statement on the store (`accounts sql`): its rows as lists (none for a write). Its
    placeholders give what differs between the engines: {strong} and {issued} (conditions on a
    row `a` of accounts), {now}, {scheme} (a.password's scheme, and bcrypt's cost)."""
    db = store.connect(db_path) if write else store.read_only(db_path)
    d = db.dialect
    scheme = ("substr(a.password, 1, strpos(a.password, '}'))" if d.name == "postgresql"
              else "substr(a.password, 1, instr(a.password, '}'))")
    cost = f"CASE WHEN {d.matches('a.password', '{BLF-CRYPT}$2[aby]$[0-9][0-9]$*')} " \
           "THEN ' cost ' || substr(a.password, 16, 2) ELSE '' END"
    sql = statement.replace("{strong}", store_sql.strong(d)).replace("{issued}", store_sql.issued(d)).replace("{now}", d.now) \
        .replace("{scheme}", f"({scheme} || {cost})")
    if not write:
        return [list(r) for r in db.execute(sql).fetchall()]
    db.begin_write()
    try:
        cur = db.execute(sql)
        store.audit(db, "sql-by-hand", None, statement[:500])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return [{"rows": cur.rowcount}]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="accounts", description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sync", help="apply /etc/govmail/directory.json in one transaction")
    p.add_argument("--new-passwords", metavar="FILE",
                   help="initial passwords made by the deploy for new mailboxes ({address: {hash, password}}): "
                        "stored, handed to the operator in /root/govmail-initial-passwords (0600); FILE is removed")
    p = sub.add_parser("set-password", help="an administrator's reset: a hash ({BLF-CRYPT}...) on stdin; where the "
                       "province requires it (DN Art. 12.1, LC Art. 7.3, TN Art. 9.1) the user changes it first")
    p.add_argument("address")
    p = sub.add_parser("hand-over", help="a unit's mailbox to a new head (DN Art. 13.2, TN Art. 10.2): hash on "
                       "stdin, content kept, recorded")
    p.add_argument("address")
    p.add_argument("--to", required=True, metavar="NAME")
    p = sub.add_parser("change-password", help="the user's own change: the current password, then the new one, "
                       "one per line on stdin; checked against the province's policy")
    p.add_argument("address")
    sub.add_parser("check", help="exit 1, naming each, when the store differs from /etc/govmail/directory.json "
                   "where a sync writes it (a quota, a status, a list changed by hand); the deploy then syncs")
    sub.add_parser("strengthen", help="rehash at the full cost the issued passwords not changed yet (the deploy "
                   "hashes them at the lowest cost), from the handout file; run after each sync and daily")
    sub.add_parser("list", help="the store as JSON (no hashes)")
    sub.add_parser("stored", help="addresses with a password, and deleted ones (what the deploy asks)")
    p = sub.add_parser("daily", help="the daily job: expiry warnings, inactivity, deletions, purges")
    p.add_argument("--held-by", metavar="STORE", help="on a store apart: its name; only the inactivity and deletion "
                   "rules, for the mailboxes it holds")
    p.add_argument("--domain", help="the province's domain, where the directory is not on the host (a store apart)")
    p.add_argument("--dry-run", action="store_true", help="list what would be done, do nothing")
    p.add_argument("--now", metavar="T", help="unix time or ISO date to run as if it were then (default: the "
                   "environment variable GOVMAIL_CLOCK, so a test can run the timer's own unit at another date)")
    p = sub.add_parser("restore", help="lift the suspension of an inactive mailbox (LC Art. 8.3), or re-create "
                       "a deleted one")
    p.add_argument("address")
    p = sub.add_parser("notice", help="the outage notice (BN Art. 13, TN Art. 16.5): `set` shows it on the web "
                       "mail's login page and mails every mailbox (text on stdin); `clear` withdraws it")
    p.add_argument("what", choices=["set", "clear"])
    p.add_argument("--until-ts", type=int, help="unix time the notice stops showing")
    p.add_argument("--until", help="the expected recovery, as the notice says it")
    p.add_argument("--sender", help="who the mail comes from (postmaster@<domain>)")
    p = sub.add_parser("sql", help="one SQL statement on the store, whatever its engine; rows as JSON. Read-only "
                       "unless --write. {strong}, {issued}: the password-strength conditions on `a.password`; {now}: "
                       "the time; {scheme}: a password's scheme and cost")
    p.add_argument("statement")
    p.add_argument("--write", action="store_true", help="run it in one transaction that may write, recorded in the "
                   "audit log as `sql-by-hand` (a repair by hand; the next deploy puts data-file values back)")
    sub.add_parser("db-check", help="exit 1, naming each, while the store's PostgreSQL roles cannot log in (db host)")
    sub.add_parser("db-setup", help="start the store's PostgreSQL and make its roles, database and rights (db host)")
    sub.add_parser("db-wait-cluster", help="wait until the store's Patroni cluster exists in etcd (a second db host "
                   "joins it, never makes its own)")
    p = sub.add_parser("move", help="a mailbox's place during `govmail move-mailbox` (which drives the move): "
                       "its state as JSON, or one step")
    p.add_argument("address")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--begin", metavar="STORE", help="its mail is being copied to STORE (whose Dovecot then knows it)")
    g.add_argument("--hold", metavar="SECONDS", type=int, help="its logins wait that long")
    g.add_argument("--switch", metavar="STORE", help="it is on STORE from now on")
    g.add_argument("--release", action="store_true", help="the move is over: logins no longer wait")
    g.add_argument("--abort", action="store_true", help="the move stops; it stays where it is")
    sub.add_parser("places", help="how many mailboxes each host holds, and is being moved to (JSON)")
    p = sub.add_parser("failover", help="a lost store's mailboxes on its standby (`govmail failover` drives it): "
                       "the list of those failed over from STORE (JSON), or one step")
    p.add_argument("store")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--to", metavar="STANDBY", help="every mailbox on STORE is on STANDBY from now on")
    g.add_argument("--recovered", metavar="ADDRESS", help="the mail STORE took after the last copy is back")
    g.add_argument("--on", action="store_true", help="the mailboxes on STORE that a failover would hand over")
    p = sub.add_parser("audit", help="the latest account actions: when, who, what, which mailbox")
    p.add_argument("--limit", type=int, default=50)
    return ap


def clock(value):
    if not value:
        return None
    return int(value) if value.isdigit() else int(datetime.datetime.fromisoformat(value).timestamp())


def main(argv):
    args = parser().parse_args(argv)
    if args.cmd == "sync":
        store.sync(args.new_passwords)
    elif args.cmd == "set-password":
        store.set_password(args.address.lower(), sys.stdin.read().strip())
    elif args.cmd == "hand-over":
        store.hand_over(args.address.lower(), sys.stdin.read().strip(), args.to)
    elif args.cmd == "change-password":
        lines = sys.stdin.read().split("\n")
        if len(lines) < 2:
            sys.exit("accounts: give the current password and the new one on two lines of stdin")
        try:
            print(json.dumps(password_change.change_password(args.address, lines[0], lines[1],
                                                             source="command line")))
        except password_change.ChangeRefused as e:
            sys.exit(f"accounts: {e}")
    elif args.cmd == "check":
        found = store.differences()
        print("\n".join(found) if found else "the store agrees with the directory")
        return 1 if found else 0
    elif args.cmd == "strengthen":
        done, unknown = password_change.strengthen()
        print(f"{done} issued passwords rehashed at the full cost" +
              (f"; {unknown} whose password the handout no longer holds" if unknown else ""))
    elif args.cmd == "list":
        store.list_store()
    elif args.cmd == "stored":
        print("\n".join(store.stored_addresses()))
    elif args.cmd == "daily":
        if not args.dry_run and os.path.islink(store.SQLITE) and store_db.is_postgresql(store.DB):
            from . import store_move

            store_move.retire_link(store.SQLITE, store.READERS_CONF)  # the link a move left, once unused
        lifecycle.daily(now=clock(args.now or os.environ.get("GOVMAIL_CLOCK")), dry_run=args.dry_run,
                        held_by=args.held_by, domain=args.domain)
        if not args.dry_run and not args.held_by:
            password_change.strengthen()
    elif args.cmd == "restore":
        lifecycle.restore(args.address.lower())
    elif args.cmd == "notice" and args.what == "set":
        text = sys.stdin.read().strip()
        if not text or args.until_ts is None or not args.until or not args.sender:
            sys.exit("accounts: notice set needs the text on stdin, --until-ts, --until and --sender")
        print(f"notice set until {args.until}; mailed to {notice.set_notice(text, args.until_ts, args.until, args.sender)} mailboxes")
    elif args.cmd == "notice":
        print("notice withdrawn" if notice.clear_notice() else "no notice was showing")
    elif args.cmd == "sql":
        print(json.dumps(run_sql(args.statement, write=args.write), default=str))
    elif args.cmd == "db-check":
        from . import store_setup

        left = store_setup.check()
        print("\n".join(left) if left else "the store's roles log in")
        return 1 if left else 0
    elif args.cmd == "db-setup":
        from . import store_setup

        store_setup.setup()
    elif args.cmd == "db-wait-cluster":
        from . import store_setup

        store_setup.wait_cluster()
    elif args.cmd == "move":
        a = args.address.lower()
        try:
            done = (mailbox_moves.begin(a, args.begin) if args.begin else mailbox_moves.hold(a, args.hold)
                    if args.hold is not None else mailbox_moves.switch(a, args.switch) if args.switch
                    else mailbox_moves.release(a) if args.release else mailbox_moves.abort(a) if args.abort
                    else mailbox_moves.state(a))
        except mailbox_moves.MoveRefused as e:
            sys.exit(f"accounts: {e}")
        print(json.dumps(done))
    elif args.cmd == "failover":
        try:
            done = (mailbox_moves.fail_over(args.store, args.to) if args.to
                    else mailbox_moves.recovered(args.recovered.lower()) if args.recovered
                    else mailbox_moves.on_store(args.store) if args.on
                    else mailbox_moves.failed_over(args.store))
        except mailbox_moves.MoveRefused as e:
            sys.exit(f"accounts: {e}")
        print(json.dumps(done))
    elif args.cmd == "places":
        print(json.dumps(mailbox_moves.places()))
    elif args.cmd == "audit":
        store.show_audit(args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
