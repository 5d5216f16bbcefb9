#!/usr/bin/python3
"""govmail backups on a mail host (installed as /usr/local/lib/govmail/backup).

Backups go to the province's backup host with borgbackup over SSH: encrypted (repokey, the
passphrase in /etc/govmail/backup/passphrase), deduplicated, compressed, and append-only (the
backup host's authorized_keys runs `borg serve --append-only`), so this host cannot rewrite or
delete its own history; the backup host prunes. Python standard library only.

What one archive holds:
  var/backups/govmail/mail/<domain>/<user>/   every mailbox, copied by `doveadm backup` (dsync:
                                              consistent while mail keeps arriving, incremental);
                                              only mailboxes that changed since their last copy
                                              (change_signature, taken once Dovecot has taken in
                                              new mail), each at least weekly
  var/backups/govmail/state/accounts.sqlite   the account store (passwords, statuses, audit log),
                                              copied with SQLite's online backup (the mail host's
                                              archives only: a store apart's hold its own mailboxes,
                                              their stamps and Sieve scripts, its keys and logs)
  var/backups/govmail/state/last-logins.json  last-login stamps
  var/backups/govmail/state/roundcube.sqlite  the web mail's settings, identities and personal
                                              contacts (SQLite's online backup)
  var/vmail/<domain>/<user>/sieve/, .dovecot.sieve
                                              each user's Sieve filters and which one is active
  etc/govmail/                                TLS and DKIM keys, certificates, directory, settings
  var/log/mail.log*                           the mail logs (DN Art. 11.2.e)

The command line is govmail/host/backup_tool.py; restores are in govmail/host/restore.py.
"""

from __future__ import annotations

import datetime
import fcntl
import glob
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib

from . import contract, mail, store, store_db

CONF = contract.PATHS["backup_conf"]
STATUS = contract.PATHS["backup_status"]
STAGE = contract.PATHS["backup_stage"]
MAIL_STAGE = STAGE + "/mail"
STATE_STAGE = STAGE + "/state"
STORE = contract.PATHS["store"]
HOMES = contract.PATHS["vmail"]
STAMP = contract.LAST_LOGIN_STAMP
LOCK = "/run/govmail-backup.lock"
VMAIL = "vmail"
HOST_KEYS = ("tls", "dkim", "webmail")  # directories of /etc/govmail made on the host, put back by restore-host


def conf() -> dict:
    with open(CONF, encoding="utf-8") as f:
        return json.load(f)


def borg_env(c: dict) -> dict:
    env = dict(os.environ)
    env.update({
        "BORG_PASSCOMMAND": f"cat {c['passphrase_file']}",
        "BORG_RSH": (f"ssh -i {c['ssh_key']} -o BatchMode=yes -o StrictHostKeyChecking=accept-new "
                     f"-o UserKnownHostsFile={c['known_hosts']} -o ConnectTimeout=20"),
        "BORG_BASE_DIR": "/var/lib/govmail/borg",
        "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        "BORG_EXIT_CODES": "modern",
        "LANG": "C.UTF-8",
    })
    return env


def borg(c: dict, *args: str, capture: bool = True, cwd: str | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(["borg", *args], env=borg_env(c), capture_output=capture, text=True, cwd=cwd)
    # BORG_EXIT_CODES=modern: 1 and 100-127 are warnings (100: a file changed while it was read, as
    # the mail log does under load): the archive is good. 2 and 3-99 are errors.
    if not (r.returncode in (0, 1) or 100 <= r.returncode <= 127):
        raise RuntimeError(f"borg {args[0]} failed ({r.returncode}): {(r.stderr or '').strip()[-1500:]}")
    return r


def read_status() -> dict:
    try:
        with open(STATUS, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return {}


def write_status(st: dict) -> None:
    tmp = STATUS + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(st, f, indent=1, sort_keys=True)
    os.replace(tmp, STATUS)


def send_mail(c: dict, subject: str, body: str) -> None:
    """A report to the postmaster (never fails the backup itself)."""
    to = f"postmaster@{c['domain']}"
    mail.send_mail(to, subject, body, to, check=False)


def mailboxes(c: dict | None = None) -> list[str]:
    """Addresses whose mail is on this host's disk: every account of the store but the deleted ones,
    or on a store apart (`store` in its settings) those it holds."""
    return store.mailbox_addresses(held_by=(c or {}).get("store"))


def home(address: str) -> str:
    local, _, dom = address.partition("@")
    return os.path.join(HOMES, dom, local)


def staged(address: str, root: str = "") -> str:
    local, _, dom = address.partition("@")
    return os.path.join(root + MAIL_STAGE, dom, local)


SYNCED = "/var/lib/govmail/backup-synced.json"  # address -> change signature at its last good copy
RESYNC_EVERY = 7 * 86400  # an unchanged mailbox is still copied again once a week, whatever its signature
PARALLEL = 4  # doveadm backup processes at once


def change_signature(maildir: str) -> list | None:
    """What moves whenever a Maildir's content changes, and not when it is only read: the set of its
    folders, and in each the modification times of cur/ and new/ (a message delivered, expunged or
    flagged adds, removes or renames a file there), of dovecot-uidlist (new UIDs) and of
    dovecot-keywords (custom flags); the subscriptions file. Folder directories' own times are not
    used: reading a mailbox (dsync included) takes lock files there. The cost is a few stat calls per
    folder, never a listing of cur/ or new/. None when the mailbox has no Maildir."""
    if not os.path.isdir(maildir):
        return None
    sig: list = []
    stack = [""]
    while stack:
        rel = stack.pop()
        d = os.path.join(maildir, rel)
        try:
            entries = {e.name: e for e in os.scandir(d)}
        except FileNotFoundError:
            continue
        sig.append(rel)
        for name in ("cur", "new", "dovecot-uidlist", "dovecot-keywords") + (("subscriptions",) if not rel else ()):
            e = entries.get(name)
            sig.append(e.stat(follow_symlinks=False).st_mtime_ns if e else 0)
        for name in sorted(entries, reverse=True):
            e = entries[name]
            if name not in ("cur", "new", "tmp") and e.is_dir(follow_symlinks=False):
                stack.append(os.path.join(rel, name))
    return sig


def mailbox_signature(address: str) -> list | None:
    return change_signature(os.path.join(home(address), "Maildir"))


def stage_mail(addresses: list[str], now: float | None = None, dsync=None, settle=None) -> tuple[int, int]:
    """dsync into the staging mirror every mailbox that changed since its last copy (incremental);
    returns (copied, unchanged). Unchanged mailboxes cost a few stat calls, not a doveadm process:
    a province of 50,000 mostly quiet mailboxes backs up in minutes."""
    from concurrent.futures import ThreadPoolExecutor

    now = now or time.time()
    dsync, settle = dsync or _dsync, settle or _settle
    try:
        with open(SYNCED) as f:
            synced = json.load(f)
    except (FileNotFoundError, ValueError):
        synced = {}
    changed, unchanged = [], 0
    for address in addresses:
        sig = mailbox_signature(address)
        if sig is None:
            continue
        last = synced.get(address)
        if (last and last["sig"] == sig and now - last["at"] < RESYNC_EVERY
                and os.path.isdir(os.path.join(staged(address), "Maildir"))):
            unchanged += 1
            continue
        changed.append(address)
    # The first reader of new mail changes the mailbox itself (Dovecot moves it from new/ to cur/ and
    # gives it a UID). One doveadm process does that for every changed mailbox first, so the
    # signature taken next is the one the copy will leave.
    if changed:
        settle(changed)
    todo = [(a, mailbox_signature(a)) for a in changed]

    def copy(item) -> tuple[str | None, list | None]:
        """(error, the signature the copy covers; None when the mailbox changed during the copy:
        then the next backup copies it again)."""
        address, before = item
        error = dsync(address)
        if error:
            return error, None
        return None, before if mailbox_signature(address) == before else None

    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(copy, todo))
    errors = [e for e, _ in results if e]
    if errors:
        raise RuntimeError("; ".join(errors[:5]) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""))
    for (address, _), (_, sig) in zip(todo, results, strict=False):
        if sig is None:
            synced.pop(address, None)
        elif address in synced:
            synced[address] = {"sig": sig, "at": int(now)}
        else:  # a first copy is dated back by a fixed share of the week, so the weekly copies of a
            # province's mailboxes spread over the nights instead of all falling on one
            synced[address] = {"sig": sig, "at": int(now) - zlib.crc32(address.encode()) % RESYNC_EVERY}
    # Mirrors of mailboxes deleted since (purged by the daily job) leave the staging area too.
    keep = {staged(a) for a in addresses}
    for d in glob.glob(MAIL_STAGE + "/*/*"):
        if d not in keep:
            shutil.rmtree(d)
    synced = {a: v for a, v in synced.items() if staged(a) in keep}
    tmp = SYNCED + ".new"
    with open(tmp, "w") as f:
        json.dump(synced, f)
    os.replace(tmp, SYNCED)
    return len(todo), unchanged


def _settle(addresses: list[str]) -> None:
    """Have Dovecot take in new mail of these mailboxes (one process for all; only a speed-up, so
    its errors are not the backup's)."""
    with tempfile.NamedTemporaryFile("w", suffix=".users") as f:
        f.write("\n".join(addresses) + "\n")
        f.flush()
        subprocess.run(["doveadm", "mailbox", "status", "-F", f.name, "messages", "*"], capture_output=True)


def _dsync(address: str) -> str | None:
    """One mailbox into its staging mirror with `doveadm backup`; an error text or None.

    A mailbox whose INBOX was made anew since its last copy (a mailbox deleted and re-created, one a
    migration or a restore filled) no longer matches its mirror, and dsync cannot bring the mirror
    round ("INBOX can't be deleted"): the mirror is then set aside and the mailbox copied afresh;
    the old copy goes only once the new one is whole (the archives keep every earlier copy)."""
    dest = staged(address)
    os.makedirs(dest, exist_ok=True)
    shutil.chown(dest, VMAIL, VMAIL)
    r = _backup_into(address, dest)
    if r.returncode == 0:
        return None
    first = r.stderr.strip()[-300:]
    aside = dest + ".diverged"
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(dest, aside)
    os.makedirs(dest)
    shutil.chown(dest, VMAIL, VMAIL)
    r = _backup_into(address, dest)
    if r.returncode == 0:
        shutil.rmtree(aside, ignore_errors=True)
        return None
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(aside, dest)
    return f"doveadm backup of {address} failed: {first}; copied afresh: {r.stderr.strip()[-300:]}"


def _backup_into(address: str, dest: str) -> subprocess.CompletedProcess:
    return subprocess.run(["doveadm", "backup", "-u", address, f"maildir:{dest}/Maildir"],
                          capture_output=True, text=True)


def _stage_stores() -> None:
    """The account store and the web mail's database, as SQLite files."""
    if store_db.is_postgresql(store.DB):
        # Whatever the engine, the archive keeps the store as an SQLite file (one restore path).
        from . import store_move

        if os.path.exists(STATE_STAGE + "/accounts.sqlite.tmp"):
            os.unlink(STATE_STAGE + "/accounts.sqlite.tmp")
        store_move.export(store.read_only(), store.connect(STATE_STAGE + "/accounts.sqlite.tmp"))
    else:
        src = sqlite3.connect(f"file:{STORE}?mode=ro", uri=True)
        dst = sqlite3.connect(STATE_STAGE + "/accounts.sqlite.tmp")
        src.backup(dst)
        dst.close()
    os.replace(STATE_STAGE + "/accounts.sqlite.tmp", STATE_STAGE + "/accounts.sqlite")
    webmail = contract.PATHS["webmail_db"]
    if os.path.exists(webmail):
        src = sqlite3.connect(f"file:{webmail}?mode=ro", uri=True)
        dst = sqlite3.connect(STATE_STAGE + "/roundcube.sqlite.tmp")
        src.backup(dst)
        dst.close()
        os.replace(STATE_STAGE + "/roundcube.sqlite.tmp", STATE_STAGE + "/roundcube.sqlite")


def stage_state(addresses: list[str], account_store: bool = True) -> None:
    """The last-login stamps of `addresses`; with `account_store` (the mail host), the account store
    and the web mail's database too."""
    os.makedirs(STATE_STAGE, mode=0o700, exist_ok=True)
    if account_store:
        _stage_stores()
    stamps = {}
    for a in addresses:
        try:
            stamps[a] = int(os.stat(os.path.join(home(a), STAMP)).st_mtime)
        except FileNotFoundError:
            pass
    with open(STATE_STAGE + "/last-logins.json", "w", encoding="utf-8") as f:
        json.dump(stamps, f, indent=0, sort_keys=True)


def run() -> int:
    c = conf()
    t0 = time.time()
    st = read_status()
    lock = open(LOCK, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("backup: another backup is running", file=sys.stderr)
        return 1
    try:
        addresses = mailboxes(c)
        copied, unchanged = stage_mail(addresses)
        n = copied + unchanged
        stage_state(addresses, account_store=not c.get("store"))
        name = f"{socket.gethostname()}-{datetime.datetime.now().strftime('%Y-%m-%dT%H:%M:%S')}"
        paths = [STAGE, "/etc/govmail", *sieve_paths(), *sorted(glob.glob("/var/log/mail.log*"))]
        r = borg(c, "create", "--json", "--compression", "zstd,6", f"{c['repo']}::{name}", *paths)
        stats = json.loads(r.stdout)["archive"]["stats"]
        st.update({
            "last_ok": int(time.time()), "archive": name, "mailboxes": n, "mailboxes_copied": copied,
            "original_size": stats["original_size"], "deduplicated_size": stats["deduplicated_size"],
            "duration_s": round(time.time() - t0, 1), "repo": c["repo"],
        })
        st.pop("last_error", None)
        write_status(st)
        print(json.dumps({"ok": True, "archive": name, "mailboxes": n, "mailboxes_copied": copied,
                          "original_size": stats["original_size"],
                          "deduplicated_size": stats["deduplicated_size"], "seconds": st["duration_s"]}))
        return 0
    except Exception as e:
        st.update({"last_error": int(time.time()), "error": str(e)[-2000:]})
        write_status(st)
        send_mail(c, f"govmail: BACKUP FAILED on {socket.gethostname()} / Sao lưu thất bại",
                  f"The backup of {socket.gethostname()} to {c['repo']} failed:\n\n{e}\n\n"
                  f"Last good backup: {fmt(st.get('last_ok'))}.\nStatus: /usr/local/lib/govmail/backup status\n")
        print(f"backup: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        lock.close()


def fmt(ts) -> str:
    return datetime.datetime.fromtimestamp(ts).isoformat(timespec="seconds") if ts else "never"


def check(now: float | None = None) -> int:
    c = conf()
    now = now or time.time()
    st = read_status()
    limit = c["max_age_hours"] * 3600
    last = st.get("last_ok")
    if last and now - last <= limit:
        print(json.dumps({"late": False, "age_hours": round((now - last) / 3600, 1)}))
        return 0
    if now - st.get("late_notice", 0) >= 86400:
        send_mail(c, f"govmail: backup LATE on {socket.gethostname()} / Sao lưu bị trễ",
                  f"The last good backup of {socket.gethostname()} is from {fmt(last)}, older than "
                  f"{c['max_age_hours']} hours ({c['article']}).\nLast error: {st.get('error', 'none')}\n")
        st["late_notice"] = int(now)
        write_status(st)
    print(json.dumps({"late": True, "last_ok": fmt(last)}))
    return 1


def archives(c: dict) -> list[dict]:
    return json.loads(borg(c, "list", "--json", c["repo"]).stdout)["archives"]


def status() -> int:
    c = conf()
    st = read_status()
    out = {"host": socket.gethostname(), "repo": c["repo"], "last_ok": fmt(st.get("last_ok")),
           "age_hours": round((time.time() - st["last_ok"]) / 3600, 1) if st.get("last_ok") else None,
           "late": not st.get("last_ok") or time.time() - st["last_ok"] > c["max_age_hours"] * 3600,
           "archive": st.get("archive"), "mailboxes": st.get("mailboxes"),
           "original_size": st.get("original_size"), "deduplicated_size": st.get("deduplicated_size"),
           "last_error": fmt(st.get("last_error")) if st.get("last_error") else None, "error": st.get("error"),
           # the last run failed: its error is newer than the last good backup
           "failed": bool(st.get("last_error") and st["last_error"] >= (st.get("last_ok") or 0))}
    try:
        out["archives"] = len(archives(c))
    except RuntimeError as e:
        out["archives"] = None
        out["repo_error"] = str(e)[-300:]
    print(json.dumps(out, indent=1, ensure_ascii=False))
    # 0 only while the last run succeeded, in time, and the repository answers.
    return 0 if not (out["late"] or out["failed"] or out["archives"] is None) else 1


def sieve_paths() -> list[str]:
    """Users' Sieve scripts (small files beside the Maildir, outside what `doveadm backup` copies)."""
    return sorted(glob.glob(os.path.join(HOMES, "*", "*", "sieve"))
                  + [p for p in glob.glob(os.path.join(HOMES, "*", "*", ".dovecot.sieve")) if os.path.islink(p)])
