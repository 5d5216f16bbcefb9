"""A mailbox's place in the account store during `govmail move-mailbox` (govmail/cli/move.py drives
the move; this module only writes the store, on the mail host: `accounts move ADDRESS ...`).

A move's states, all in the account store, so that a move stopped anywhere resumes where it was:

- `moving = TO`: the mail is being copied to TO; TO's Dovecot knows the mailbox (its userdb), every
  login and delivery still goes where the mail is (`store`);
- `hold_until = T` (seconds): the last copy. Logins wait until T (the proxy's `delay_until`) and
  then go to TO; deliveries still go where the mail is (they never wait);
- switched: `store = TO`, `moved_from = FROM` (FROM's Dovecot still knows the mailbox, for the
  catch-up copy of what was delivered there meanwhile), logins still waiting until T;
- released: `hold_until` and `moved_from` cleared (one transaction each, audited).

Standard library only.
"""

from __future__ import annotations

import re
import time

from . import store

# Dovecot refuses a `delay_until` more than 5 minutes ahead; a hold is far shorter.
MAX_HOLD = 240
HOST = re.compile(r"[a-z0-9][a-z0-9.-]{0,252}")


class MoveRefused(Exception):
    pass


def _row(db, address):
    row = db.execute("SELECT status, store, moving, hold_until, moved_from, failed_from FROM accounts "
                     "WHERE address = ?", (address,)).fetchone()
    if row is None:
        raise MoveRefused(f"{address} is not in the account store")
    return row


def state(address, db_path=None) -> dict:
    """Where the mailbox is and how far a move of it has come."""
    db = store.read_only(db_path)
    status, where, moving, hold, left, lost = _row(db, address)
    mail_host = store.meta_value(db, "mail_host")
    return {"address": address, "status": status, "store": where or mail_host, "moving": moving,
            "held": bool(hold and hold > int(time.time())), "hold_until": hold, "moved_from": left,
            "failed_from": lost}


def _write(address, db_path, check, sql, params, action, detail):
    db = store.connect(db_path)
    db.begin_write()
    try:
        row = _row(db, address)
        check(row)
        db.execute(sql, params)
        store.audit(db, action, address, detail)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return state(address, db_path)


def begin(address, to, db_path=None) -> dict:
    """The mail starts being copied to `to` (a move to elsewhere under way is refused)."""
    if not HOST.fullmatch(to):
        raise MoveRefused(f"{to!r} is not a host name")

    def check(row):
        status, where, moving, _, left, lost = row
        if lost:
            raise MoveRefused(f"{address} was failed over from {lost}: the mail {lost} took after its last copy is "
                              f"not brought back yet (govmail failover {lost} --recover, once it is back)")
        if left:
            raise MoveRefused(f"{address} was just moved from {left}: its last catch-up is not done (run the move "
                              "again: it finishes it)")
        if status == "deleted":
            raise MoveRefused(f"{address} was deleted by the daily job: it has no mail to move")
        if moving and moving != to:
            raise MoveRefused(f"{address} is being moved to {moving}: finish that move, or abort it "
                              f"(govmail move-mailbox {address} --abort)")
        if where == to:
            raise MoveRefused(f"{address} is already on {to}")

    return _write(address, db_path, check, "UPDATE accounts SET moving = ? WHERE address = ?", (to, address),
                  "move-begin", f"copying its mail to {to}")


def hold(address, seconds, db_path=None) -> dict:
    """Logins of the mailbox wait for `seconds` (the last copy), then go to where it is moving."""
    if not 1 <= seconds <= MAX_HOLD:
        raise MoveRefused(f"a hold of {seconds} s: allowed 1 to {MAX_HOLD}")

    def check(row):
        if not row[2]:
            raise MoveRefused(f"{address} is not being moved")

    return _write(address, db_path, check, "UPDATE accounts SET hold_until = ? WHERE address = ?",
                  (int(time.time()) + seconds, address), "move-hold", f"logins wait {seconds} s")


def switch(address, to, db_path=None) -> dict:
    """The mailbox is on `to` from now on: logins and deliveries go there, the hold ends."""

    def check(row):
        if row[2] != to:
            raise MoveRefused(f"{address} is not being moved to {to}")

    before = state(address, db_path)["store"]
    return _write(address, db_path, check,
                  "UPDATE accounts SET store = ?, moving = NULL, moved_from = ? WHERE address = ?", (to, before, address),
                  "move-mailbox", f"its mail moved from {before} to {to}")


def release(address, db_path=None) -> dict:
    """The move is over: logins no longer wait, the old host's Dovecot forgets the mailbox."""

    def check(row):
        if row[2]:
            raise MoveRefused(f"{address} is still being moved to {row[2]}")

    return _write(address, db_path, check, "UPDATE accounts SET hold_until = NULL, moved_from = NULL WHERE address = ?",
                  (address,), "move-release", "logins no longer wait")


def abort(address, db_path=None) -> dict:
    """The move stops: the mailbox stays where it is; what was copied stays on the other host, unread
    (a later move copies over it)."""

    def check(row):
        if not row[2]:
            raise MoveRefused(f"{address} is not being moved")

    return _write(address, db_path, check, "UPDATE accounts SET moving = NULL, hold_until = NULL WHERE address = ?",
                  (address,), "move-abort", "the move stopped; the mailbox stays where it was")


def places(db_path=None) -> dict:
    """How many mailboxes (not deleted) each host holds, is being moved to, or was just moved from: what
    the deploy asks before a host leaves the data ({"stores": {host: n}, "moving": ..., "moved_from": ...};
    a NULL store: the mail host)."""
    db = store.read_only(db_path)
    mail_host = store.meta_value(db, "mail_host") or ""
    out = {"stores": {}, "moving": {}, "moved_from": {}}
    for column, key in (("store", "stores"), ("moving", "moving"), ("moved_from", "moved_from")):
        for where, n in db.execute(f"SELECT {column}, count(*) FROM accounts WHERE status != 'deleted' "
                                   f"GROUP BY {column}"):
            if where or key == "stores":
                out[key][where or mail_host] = out[key].get(where or mail_host, 0) + n
    return out


# ---------------------------------------------------------------- a lost store's failover


def _on(db, host) -> list[str]:
    """The mailboxes whose mail is on `host` (NULL `store`: the mail host), not failed over already."""
    mail_host = store.meta_value(db, "mail_host") or ""
    return [r[0] for r in db.execute("SELECT address FROM accounts WHERE status != 'deleted' AND failed_from IS NULL "
                                     "AND (store = ? OR (store IS NULL AND ? = ?)) ORDER BY address",
                                     (host, host, mail_host)).fetchall()]


def on_store(host, db_path=None) -> list[str]:
    """What `fail_over(host, ...)` would hand to the standby."""
    return _on(store.read_only(db_path), host)


def fail_over(lost, standby, db_path=None) -> list[str]:
    """Every mailbox whose mail is on `lost` is on `standby` from now on (one transaction, audited):
    `store = standby`, `failed_from = lost` (the lost store's Dovecot still knows it, for `recover`).
    A move under way from `lost` stops (its mail was there). Returns the mailboxes."""
    for name in (lost, standby):
        if not HOST.fullmatch(name):
            raise MoveRefused(f"{name!r} is not a host name")
    db = store.connect(db_path)
    db.begin_write()
    try:
        rows = _on(db, lost)
        for address in rows:
            db.execute("UPDATE accounts SET store = ?, failed_from = ?, moving = NULL, hold_until = NULL, "
                       "moved_from = NULL WHERE address = ?", (standby, lost, address))
            store.audit(db, "failover", address, f"{lost} lost: served from its standby copy on {standby}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return rows


def failed_over(lost, db_path=None) -> list[dict]:
    """The mailboxes failed over from `lost` whose mail of after the last copy is not brought back yet."""
    db = store.read_only(db_path)
    return [{"address": a, "store": s} for a, s in db.execute(
        "SELECT address, store FROM accounts WHERE failed_from = ? ORDER BY address", (lost,)).fetchall()]


def recovered(address, db_path=None) -> dict:
    """What the lost store took after the last copy is on the standby: the mailbox is whole again."""

    def check(row):
        if not row[5]:
            raise MoveRefused(f"{address} was not failed over")

    return _write(address, db_path, check, "UPDATE accounts SET failed_from = NULL WHERE address = ?", (address,),
                  "failover-recovered", "the mail its lost store took after the last copy brought over")
