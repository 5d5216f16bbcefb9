"""`standby`: the standby copies of a store's mailboxes (`hosts[].standby` in the data), kept current.

/etc/govmail/standby.json (written by the deploy: govmail/services/standby.py) names the pairs this
host copies: each a store, its standby, which end this host is, and the other end's doveadm server.
`standby sync` (govmail-standby.timer, every minute) makes each standby copy the same as its store's
copy with `doveadm backup` (one way: nothing is ever copied back), for every mailbox the account
store puts on the store, except:

- a mailbox being moved (`moving`, or `moved_from` until its catch-up is done): the move copies it,
  and puts the copy it left aside;
- a mailbox failed over (`failed_from`): its lost store may hold mail of after the last copy, which
  `govmail failover --recover` brings over; a copy now would overwrite it.

The copy runs on the mail host when it is one end (it receives with `-R`: its own doveadm server
would proxy the mailbox back to the store), else on the store. Each mailbox's last good copy is
kept in /var/lib/govmail/standby/state.json; `govmail failover` reads it (the recovery point of
each mailbox), and Prometheus reads the oldest (node-exporter's textfile collector).

Standard library only.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time

from . import store

CONF = "/etc/govmail/standby.json"
STATE_DIR = "/var/lib/govmail/standby"
STATE = STATE_DIR + "/state.json"
METRICS = "/var/lib/prometheus/node-exporter/govmail-standby.prom"


def mailboxes(db, store_name: str, mail_host: str) -> list[str]:
    """The mailboxes whose mail is on `store_name`, to be copied (neither moving nor failed over)."""
    rows = db.execute("SELECT address FROM accounts WHERE status != 'deleted' AND moving IS NULL AND moved_from IS "
                      "NULL AND failed_from IS NULL AND (store = ? OR (store IS NULL AND ? = ?)) ORDER BY address",
                      (store_name, store_name, mail_host)).fetchall()
    return [r[0] for r in rows]


def copy_command(pair: dict, address: str) -> list[str]:
    """`doveadm backup` of one mailbox from the store to its standby, as this host runs it."""
    receive = pair["here"] == "standby"
    return ["doveadm", "-o", "doveadm_port=0", "backup", *(["-R"] if receive else []), "-u", address,
            f"tcp:{pair['peer']}:{pair['port']}"]


def inbox_guid_command(pair: dict, address: str) -> list[str]:
    """The store's INBOX's GUID, asked where this host runs: on the store its own Dovecot; on the mail
    host as the standby, its doveadm proxies the question to the store that holds the mailbox."""
    local = ["-o", "doveadm_port=0"] if pair["here"] == "store" else []
    return ["doveadm", *local, "-f", "tab", "mailbox", "status", "-u", address, "guid", "INBOX"]


def _load(path: str, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def _write(path: str, text: str) -> None:
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def sync(conf_path: str = CONF, state_path: str = STATE, metrics_path: str = METRICS, db_path=None,
         run=subprocess.run, now=time.time) -> int:
    conf = _load(conf_path, {"pairs": []})
    os.makedirs(os.path.dirname(state_path), exist_ok=True)
    with open(state_path + ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("standby: a copy is already running", file=sys.stderr)
            return 0
        state = _load(state_path, {})
        listed = _listed(conf, db_path)
        if listed is None:
            return 0
        failed, lines = [], []
        for pair in conf["pairs"]:
            mine = state.setdefault(pair["store"], {})
            boxes = listed[pair["store"]]
            t0 = time.monotonic()
            for address in boxes:
                started = now()
                # A store's INBOX made anew (a store rebuilt bare, its mailboxes empty or restored from an
                # older backup) is never mirrored over the standby's copy, which may be the only whole one.
                g = run(inbox_guid_command(pair, address), capture_output=True, text=True, timeout=600)
                guid = g.stdout.strip().splitlines()[-1].split("\t")[-1] if g.returncode == 0 and g.stdout.strip() else ""
                known = (mine.get(address) or {}).get("inbox")
                if guid and known and guid != known:
                    failed.append(f"{address} ({pair['store']} -> {pair['standby']}): its INBOX on {pair['store']} "
                                  f"was made anew since the last copy: not copied over the standby's (govmail "
                                  f"failover {pair['store']}, or `standby forget {address}` once it is whole)")
                    continue
                r = run(copy_command(pair, address), capture_output=True, text=True, timeout=3600)
                if r.returncode == 0:
                    # what the store had when this copy began is on the standby
                    mine[address] = {"copied": int(started), "inbox": guid or known}
                else:
                    failed.append(f"{address} ({pair['store']} -> {pair['standby']}): "
                                  f"{(r.stderr.strip().splitlines() or ['exit %d' % r.returncode])[-1]}")
            for gone in set(mine) - set(boxes):  # moved, failed over or deleted: no longer copied from here
                del mine[gone]
            lines.append(f"{pair['store']} -> {pair['standby']}: {len(boxes)} mailboxes in "
                         f"{time.monotonic() - t0:.1f} s")
        _write(state_path, json.dumps(state, indent=1, sort_keys=True) + "\n")
        _write(metrics_path, metrics(conf, state, now()))
    for line in lines:
        print(line)
    for f in failed:
        print(f"standby: not copied: {f}", file=sys.stderr)
    # A copy that fails (the store or the standby rebooting, unreachable) is tried again next minute; the
    # unit does not fail for it (a planned reboot would raise JobFailed): the monitor alerts when a
    # store's oldest copy is ten minutes old (StoreStandbyBehind, from the metric written above).
    return 0


def _listed(conf: dict, db_path, wait: float = 45) -> dict | None:
    """{store: its mailboxes to copy}, the account store asked again for `wait` seconds while it does not
    answer (a db primary failing over); None when it still does not (its own alerts say so)."""
    end = time.monotonic() + wait
    while True:
        try:
            db = store.read_only(db_path)
            mail_host = store.meta_value(db, "mail_host", "")
            return {p["store"]: mailboxes(db, p["store"], mail_host) for p in conf["pairs"]}
        except Exception as e:  # noqa: BLE001 - sqlite3's or psycopg2's errors alike
            if time.monotonic() > end:
                print(f"standby: the account store does not answer ({str(e).strip()[:200]}): no copy this minute",
                      file=sys.stderr)
                return None
            time.sleep(3)


def metrics(conf: dict, state: dict, now: float) -> str:
    """The oldest last good copy of each store's mailboxes, for Prometheus: the recovery point now."""
    out = ["# HELP govmail_standby_oldest_copy_seconds When the least recently copied mailbox of a store was last "
           "copied to its standby (unix time).", "# TYPE govmail_standby_oldest_copy_seconds gauge"]
    for pair in conf["pairs"]:
        times = [m["copied"] for m in state.get(pair["store"], {}).values()]
        oldest = min(times) if times else now
        out.append(f'govmail_standby_oldest_copy_seconds{{store="{pair["store"]}",standby="{pair["standby"]}"}} '
                   f"{oldest:.0f}")
    return "\n".join(out) + "\n"


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="standby", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sync", help="copy every store's mailboxes to its standby (the timer's job)")
    sub.add_parser("state", help="each mailbox's last good copy (JSON)")
    p = sub.add_parser("forget", help="copy a mailbox again although its store's INBOX was made anew (once that "
                       "copy is the whole one: after a restore the operator checked)")
    p.add_argument("address")
    args = ap.parse_args(argv)
    if args.cmd == "state":
        print(json.dumps(_load(STATE, {}), sort_keys=True))
        return 0
    if args.cmd == "forget":
        return forget(args.address.lower())
    return sync()


def forget(address: str, state_path: str = STATE) -> int:
    with open(state_path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = _load(state_path, {})
        hit = [s for s, boxes in state.items() if boxes.pop(address, None) is not None]
        _write(state_path, json.dumps(state, indent=1, sort_keys=True) + "\n")
    print(f"standby: {address}: " + (f"copied afresh from {hit[0]} at the next pass" if hit else "not known"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

