"""`standby`: the standby copies of a store's mailboxes (`hosts[].standby` in the data), kept current.

/etc/govmail/standby.json (written by the deploy: govmail/services/standby.py) names the pairs this
host copies: each a store, its standby, which end this host is, and the other end's doveadm server.
`standby sync` (govmail-standby.timer, every minute) makes each standby copy the same as its store's
copy with `doveadm backup` (one way: nothing is ever copied back), for every mailbox the account
store puts on the store that changed since its last copy (`signatures`: the store asked once for
all; each mailbox still copied once an hour), except:

- a mailbox being moved (`moving`, or `moved_from` until its catch-up is done): the move copies it,
  and puts the copy it left aside;
- a mailbox failed over (`failed_from`): its lost store may hold mail of after the last copy, which
  `govmail failover --recover` brings over; a copy now would overwrite it.

A mailbox is also copied right after each delivery to it: this host's Dovecot writes each LMTP
recipient it accepted for the store to EVENTS (its stats process, an event exporter:
govmail/services/dovecot.py), and govmail-standby-deliveries.service (`standby follow`) copies those
mailboxes within a second (while a minute's pass runs, the pass copies them between two of its
mailboxes). A delivery it misses (written as a pass lets go of its lock, or while the file is cut
back) is copied by the next minute's pass.

The copy runs on the mail host when it is one end (it receives with `-R`: its own doveadm server
would proxy the mailbox back to the store), else on the store. Each mailbox's last good copy is
kept in /var/lib/govmail/standby/state.json; `govmail failover` reads it (the recovery point of
each mailbox), and Prometheus reads the oldest (node-exporter's textfile collector).

Standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

from . import contract, store

CONF = "/etc/govmail/standby.json"
STATE_DIR = "/var/lib/govmail/standby"
STATE = STATE_DIR + "/state.json"
EVENTS = contract.PATHS["standby_deliveries"]
# Where `standby delivered` has read EVENTS to: {"ino", "offset"}.
READ = STATE_DIR + "/deliveries-read.json"
# EVENTS is cut back to nothing once read to its end and longer than this, or not written for QUIET
# seconds (its lines name senders and recipients: kept no longer than they are needed).
EVENTS_KEEP = 1 << 20
QUIET = 60
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


# A mailbox its store shows unchanged since its last copy is not copied again by the minute's pass
# (a store of thousands of quiet mailboxes: one doveadm for the pass, not two a mailbox), except once
# in this many seconds (a standby copy altered or lost on the standby's side is made whole again).
RECOPY_EVERY = 3600
FOLDER_STATUS = "guid messages uidnext highestmodseq"


def status_command(pair: dict, users: str) -> list[str]:
    """The folders of the mailboxes named in the file `users` (-F: doveadm reads it with pread, not a
    pipe), as their store has them: one doveadm for all (on the mail host as the standby, proxied to
    the store as `inbox_guid_command` is)."""
    local = ["-o", "doveadm_port=0"] if pair["here"] == "store" else []
    return ["doveadm", *local, "-f", "tab", "mailbox", "status", "-F", users, FOLDER_STATUS, "*"]


def signatures(pair: dict, boxes: list[str], run, users: str) -> dict[str, tuple[str, str]]:
    """{address: (its INBOX's GUID, a digest of its folders' GUID, count, next UID and highest modseq:
    a delivery, an expunge, a flag changed moves one)} as the store says now; a mailbox it did not
    answer for is left out (copied as before)."""
    if not boxes:
        return {}
    _write(users, "".join(f"{a}\n" for a in boxes))
    r = run(status_command(pair, users), capture_output=True, text=True, timeout=600)
    lines = r.stdout.splitlines()
    head = lines[0].lower().split("\t") if lines else []
    if not {"username", "mailbox", "guid"} <= set(head):
        return {}
    user, name, guid = head.index("username"), head.index("mailbox"), head.index("guid")
    rows: dict[str, list[list[str]]] = {}
    for line in lines[1:]:
        f = line.split("\t")
        if len(f) == len(head):
            rows.setdefault(f[user], []).append(f)
    return {a: (next((f[guid] for f in fs if f[name] == "INBOX"), ""),
                hashlib.sha1("\n".join(sorted("\t".join(f) for f in fs)).encode()).hexdigest())
            for a, fs in rows.items()}


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
         run=subprocess.run, now=time.time, events_path: str = EVENTS, read_path: str = READ) -> int:
    """Every mailbox of each pair's store copied; between two mailboxes, those just delivered to first (a
    pass over thousands of mailboxes takes minutes: the copies after deliveries do not wait for it)."""
    conf = _load(conf_path, {"pairs": []})
    os.makedirs(os.path.dirname(state_path), exist_ok=True)
    with open(state_path + ".lock", "w") as lock:
        # A pass after deliveries under way is waited for (systemd never runs this unit twice at once).
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = _load(state_path, {})
        listed = _listed(conf, db_path)
        if listed is None:
            return 0
        after = _Deliveries(conf, state, db_path, run, now, events_path, read_path)
        failed, lines = after.failed, []
        for pair in conf["pairs"]:
            mine = state.setdefault(pair["store"], {})
            boxes = listed[pair["store"]]
            t0, asked = time.monotonic(), now()
            sigs, unchanged = signatures(pair, boxes, run, os.path.join(os.path.dirname(state_path), "pass-mailboxes")), 0
            for address in boxes:
                while after.copy():
                    pass
                sig, last = sigs.get(address), mine.get(address) or {}
                if sig and last.get("sig") == sig[1] and asked - last.get("whole", 0) < RECOPY_EVERY:
                    # as at its last copy: the standby had all of it when the store was asked
                    last["copied"] = max(last["copied"], int(asked))
                    unchanged += 1
                    continue
                problem = _copy(pair, address, mine, run, now, sig)
                if problem:
                    failed.append(problem)
            for gone in set(mine) - set(boxes):  # moved, failed over or deleted: no longer copied from here
                del mine[gone]
            lines.append(f"{pair['store']} -> {pair['standby']}: {len(boxes)} mailboxes in "
                         f"{time.monotonic() - t0:.1f} s ({unchanged} unchanged since their last copy)")
        while after.copy():  # those delivered during the last copy (the trigger finds the lock held)
            pass
        _write(state_path, json.dumps(state, indent=1, sort_keys=True) + "\n")
        _write(metrics_path, metrics(conf, state, now()))
    for line in lines + after.said():
        print(line)
    for f in failed:
        print(f"standby: not copied: {f}", file=sys.stderr)
    # A copy that fails (the store or the standby rebooting, unreachable) is tried again next minute; the
    # unit does not fail for it (a planned reboot would raise JobFailed): the monitor alerts when a
    # store's oldest copy is ten minutes old (StoreStandbyBehind, from the metric written above).
    return 0


def _copy(pair: dict, address: str, mine: dict, run, now, sig: tuple[str, str] | None = None) -> str | None:
    """One mailbox made the same on the standby as on its store; its last good copy noted in `mine`
    (with `sig`, what `signatures` said of it before). Why it was not copied, or None."""
    started = now()
    # A store's INBOX made anew (a store rebuilt bare, its mailboxes empty or restored from an older
    # backup) is never mirrored over the standby's copy, which may be the only whole one.
    if sig and sig[0]:
        guid = sig[0]
    else:
        g = run(inbox_guid_command(pair, address), capture_output=True, text=True, timeout=600)
        guid = g.stdout.strip().splitlines()[-1].split("\t")[-1] if g.returncode == 0 and g.stdout.strip() else ""
    known = (mine.get(address) or {}).get("inbox")
    if guid and known and guid != known:
        return (f"{address} ({pair['store']} -> {pair['standby']}): its INBOX on {pair['store']} was made anew "
                f"since the last copy: not copied over the standby's (govmail failover {pair['store']}, or "
                f"`standby forget {address}` once it is whole)")
    r = run(copy_command(pair, address), capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        return (f"{address} ({pair['store']} -> {pair['standby']}): "
                f"{(r.stderr.strip().splitlines() or ['exit %d' % r.returncode])[-1]}")
    # what the store had when it began; `sig`, to know it unchanged (none after a delivery's copy: the
    # next pass copies it once more)
    mine[address] = {"copied": int(started), "inbox": guid or known, "whole": int(started),
                     **({"sig": sig[1]} if sig else {})}
    return None


class _Deliveries:
    """The copies after deliveries, for `delivered` and between the mailboxes of a pass (`sync`): each
    `copy()` reads EVENTS on from where the last read ended and copies the mailboxes there (into
    `state`); whether it read any."""

    def __init__(self, conf, state, db_path, run, now, events_path, read_path):
        self.conf, self.state, self.db_path, self.run, self.now = conf, state, db_path, run, now
        self.events_path, self.read_path = events_path, read_path
        self.copied: set[str] = set()
        self.failed: list[str] = []
        self.lag = 0.0

    def copy(self) -> bool:
        boxes, read = deliveries(self.events_path, self.read_path)
        listed = _listed(self.conf, self.db_path) if boxes else {}
        for pair in self.conf["pairs"] if listed else ():
            mine = self.state.setdefault(pair["store"], {})
            for address in sorted(set(boxes) & set(listed[pair["store"]])):
                problem = _copy(pair, address, mine, self.run, self.now)
                if problem:
                    self.failed.append(problem)
                else:
                    self.copied.add(address)
                    self.lag = max(self.lag, self.now() - boxes[address]) if boxes[address] else self.lag
        cut = read["offset"] == read["size"] > 0 and (read["size"] > EVENTS_KEEP
                                                      or time.time() - read["written"] > QUIET)
        if cut:
            # Read to its end: cut back (a line Dovecot writes between the look and the cut is lost here;
            # the minute's pass copies its mailbox).
            os.truncate(self.events_path, 0)
            read["offset"] = read["size"] = 0
        if read["offset"] != read["start"] or cut:
            _write(self.read_path, json.dumps(read) + "\n")
        return bool(boxes)

    def said(self) -> list[str]:
        return [f"standby: {len(self.copied)} mailboxes copied after their deliveries, each {self.lag:.1f} s after "
                "its last delivery at most"] if self.copied else []


def delivered(conf_path: str = CONF, state_path: str = STATE, metrics_path: str = METRICS,
              events_path: str = EVENTS, read_path: str = READ, db_path=None, run=subprocess.run,
              now=time.time) -> int:
    """Copy the mailboxes delivered to since the last read of EVENTS (`follow` runs it when Dovecot has
    written there), again while more arrive. With a pass under way, nothing: the pass copies them
    between two of its mailboxes."""
    conf = _load(conf_path, {"pairs": []})
    os.makedirs(os.path.dirname(state_path), exist_ok=True)
    with open(state_path + ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        state = _load(state_path, {})
        after = _Deliveries(conf, state, db_path, run, now, events_path, read_path)
        while after.copy():
            pass
        if after.copied or after.failed:
            _write(state_path, json.dumps(state, indent=1, sort_keys=True) + "\n")
            _write(metrics_path, metrics(conf, state, now()))
    for line in after.said():
        print(line)
    for f in after.failed:
        print(f"standby: not copied: {f}", file=sys.stderr)
    return 0


def follow(every: float = 0.5, events_path: str = EVENTS, read_path: str = READ, rounds: int | None = None,
           **kw) -> int:
    """`standby follow` (govmail-standby-deliveries.service): look at EVENTS every `every` seconds and
    copy what was delivered since (`delivered`). One stat a look: no inotify watch, no process started
    per delivery (a path unit started one each time, and in the lab's full run starting it failed)."""
    if rounds is None:  # the service: a stop is not a failure
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    n = 0
    while rounds is None or n < rounds:
        n += 1
        try:
            size, last = os.stat(events_path).st_size, _load(read_path, {})
            if size != last.get("offset", 0):
                delivered(events_path=events_path, read_path=read_path, **kw)
                sys.stdout.flush()
        except FileNotFoundError:
            pass
        except Exception as e:  # noqa: BLE001 - said, and tried again at the next look (the minute's pass copies meanwhile)
            print(f"standby: follow: {type(e).__name__}: {e}", file=sys.stderr)
        time.sleep(every)
    return 0


def deliveries(events_path: str, read_path: str) -> tuple[dict[str, float], dict]:
    """The mailboxes delivered to since the last read of `events_path` (Dovecot's JSON lines, one per
    recipient it accepted): {address: when (unix time; 0 unknown)}, and where this read ends."""
    last = _load(read_path, {})
    try:
        f = open(events_path, "rb")
    except OSError:
        return {}, {"ino": 0, "start": 0, "offset": 0, "size": 0, "written": 0}
    with f:
        st = os.fstat(f.fileno())
        # Another file, or cut back since: read from its start.
        offset = last.get("offset", 0) if last.get("ino") == st.st_ino and last.get("offset", 0) <= st.st_size else 0
        f.seek(offset)
        data = f.read(min(st.st_size - offset, 16 * EVENTS_KEEP))
    end = data.rfind(b"\n") + 1  # a line still being written is read next time
    out: dict[str, float] = {}
    for line in data[:end].splitlines():
        try:
            event = json.loads(line)
            fields = event.get("fields") or {}
            who = str(fields.get("user") or fields.get("rcpt_to") or "").strip().lower()
        except (ValueError, AttributeError):
            continue
        if who:
            out[who] = max(out.get(who, 0.0), _when(event.get("end_time")))
    return out, {"ino": st.st_ino, "start": offset, "offset": offset + end, "size": st.st_size,
                 "written": st.st_mtime}


def _when(stamp) -> float:
    """An event's RFC 3339 time as unix time (0: none or not one)."""
    try:
        return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


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
    sub.add_parser("delivered", help="copy the mailboxes delivered to since the last time (after each delivery)")
    sub.add_parser("follow", help="copy the mailboxes delivered to as they are (govmail-standby-deliveries.service)")
    sub.add_parser("state", help="each mailbox's last good copy (JSON)")
    sub.add_parser("status", help="per store copied from here: its mailboxes to copy, those never copied, the "
                   "oldest copy's age in seconds (JSON)")
    p = sub.add_parser("forget", help="copy a mailbox again although its store's INBOX was made anew (once that "
                       "copy is the whole one: after a restore the operator checked)")
    p.add_argument("address")
    args = ap.parse_args(argv)
    if args.cmd == "state":
        print(json.dumps(_load(STATE, {}), sort_keys=True))
        return 0
    if args.cmd == "status":
        print(json.dumps(status()))
        return 0
    if args.cmd == "forget":
        return forget(args.address.lower())
    if args.cmd == "delivered":
        return delivered()
    if args.cmd == "follow":
        return follow()
    return sync()


def status(conf_path: str = CONF, state_path: str = STATE, db_path=None, now=time.time) -> dict:
    """{store: {"standby", "mailboxes", "never": [never copied], "oldest": age of the oldest copy (s) or
    None}} of the pairs this host copies (`govmail verify`'s mailbox_standby_current reads it)."""
    conf, state = _load(conf_path, {"pairs": []}), _load(state_path, {})
    listed = _listed(conf, db_path, wait=10) or {}
    out = {}
    for pair in conf["pairs"]:
        boxes, mine = listed.get(pair["store"], []), state.get(pair["store"], {})
        times = [mine[a]["copied"] for a in boxes if a in mine]
        out[pair["store"]] = {"standby": pair["standby"], "mailboxes": len(boxes),
                              "never": [a for a in boxes if a not in mine],
                              "oldest": round(now() - min(times)) if times else None}
    return out


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

