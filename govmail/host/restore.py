"""Restores from the province's backups (govmail/host/backup.py makes them), on a mail host.

`restore_mailbox`: one mailbox (or one folder) as it was at a time, merged into the live one:
nothing newer is lost, nothing is duplicated, other mailboxes are untouched. `restore_host`: after
a rebuild, the account store, last logins, TLS and DKIM keys, Sieve filters, logs and every
mailbox from the archive, merged with mail that arrived meanwhile. Standard library only.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile

from . import contract, store, store_db
from .backup import (
    HOMES,
    HOST_KEYS,
    MAIL_STAGE,
    STAGE,
    STAMP,
    STATE_STAGE,
    STORE,
    VMAIL,
    archives,
    borg,
    conf,
    home,
    staged,
)


def pick_archive(c: dict, at: str | None) -> str:
    arcs = archives(c)
    if not arcs:
        raise RuntimeError("the repository has no archive yet")
    if at is None:
        return arcs[-1]["name"]
    when = datetime.datetime.fromisoformat(at)
    ok = [a for a in arcs if datetime.datetime.fromisoformat(a["start"]) <= when]
    if not ok:
        raise RuntimeError(f"no archive at or before {at}; the oldest is from {arcs[0]['start']}")
    return ok[-1]["name"]


def traversable(root: str, path: str) -> None:
    """Let vmail reach `path` under `root` (borg restores the archived 0700 modes of the parents)."""
    rel = os.path.relpath(path, root)
    cur = root
    for part in rel.split(os.sep):
        cur = os.path.join(cur, part)
        if os.path.isdir(cur):
            os.chmod(cur, os.stat(cur).st_mode | 0o111)


def fetch(address: str, fields: str, query: list[str], mail_path: str | None = None) -> list[list[str]]:
    cmd = ["doveadm", "-f", "tab"]
    if mail_path:
        cmd += ["-o", f"mail_path={mail_path}"]
    r = subprocess.run(cmd + ["fetch", "-u", address, fields, *query], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"doveadm fetch for {address} failed: {r.stderr.strip()[-500:]}")
    return [line.split("\t") for line in r.stdout.splitlines()[1:] if line]


def uid_ranges(uids: list[int]) -> list[str]:
    """UIDs as IMAP sets ('1:3,7'), in chunks short enough for one command line each."""
    uids, sets, chunk = sorted(uids), [], []
    start = prev = None
    for u in uids + [None]:
        if u is not None and prev is not None and u == prev + 1:
            prev = u
            continue
        if start is not None:
            chunk.append(f"{start}:{prev}" if prev != start else str(start))
            if len(chunk) >= 500:
                sets.append(",".join(chunk))
                chunk = []
        start = prev = u
    if chunk:
        sets.append(",".join(chunk))
    return sets


def merge_mailbox(address: str, source_maildir: str, folder: str | None = None) -> int:
    """Copy into the live mailbox every archived message it no longer has (by message GUID, which
    Dovecot keeps when it copies): deleted mail comes back, newer mail stays, nothing is doubled,
    and a message the user moved to another folder is not brought back twice. Returns the count."""
    subprocess.run(["chown", "-R", f"{VMAIL}:{VMAIL}", os.path.dirname(source_maildir)], check=True)
    live = {row[0] for row in fetch(address, "guid", ["ALL"])}
    query = ["mailbox", folder, "ALL"] if folder else ["ALL"]
    missing: dict[str, list[int]] = {}
    for mailbox, uid, guid in fetch(address, "mailbox uid guid", query, mail_path=source_maildir):
        if guid not in live:
            missing.setdefault(mailbox, []).append(int(uid))
    n = 0
    for mailbox, uids in missing.items():
        for uidset in uid_ranges(uids):
            r = subprocess.run(["doveadm", "import", "-u", address, f"maildir:{source_maildir}", "",
                                "mailbox", mailbox, "uid", uidset], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"doveadm import into {address}/{mailbox} failed: {r.stderr.strip()[-500:]}")
        n += len(uids)
    return n


def audit(action: str, address: str | None, detail: str) -> None:
    store.audit(store.connect(), action, address, detail)


def restore_mailbox(address: str, at: str | None, folder: str | None) -> int:
    c = conf()
    name = pick_archive(c, at)
    with tempfile.TemporaryDirectory(dir="/var/backups") as tmp:
        os.chmod(tmp, 0o711)
        rel = staged(address).lstrip("/")
        borg(c, "extract", f"{c['repo']}::{name}", rel, cwd=tmp)
        src = os.path.join(tmp, rel, "Maildir")
        if not os.path.isdir(src):
            raise RuntimeError(f"{address} has no mail in archive {name}")
        traversable(tmp, os.path.dirname(src))
        n = merge_mailbox(address, src, folder)
    audit("restored-mail", address, f"{n} messages from archive {name}" + (f", folder {folder}" if folder else ""))
    print(json.dumps({"address": address, "archive": name, "folder": folder or "all", "messages": n}))
    return 0


def restore_sieve(work: str) -> int:
    """Put back each user's Sieve scripts; a script the user saved since the rebuild is kept."""
    n = 0
    for d in glob.glob(os.path.join(work, HOMES.lstrip("/"), "*", "*")):
        dom, local = d.split("/")[-2:]
        h = os.path.join(HOMES, dom, local)
        src = os.path.join(d, "sieve")
        if os.path.isdir(src):
            for path in (h, os.path.join(h, "sieve")):
                if not os.path.isdir(path):
                    os.makedirs(path)
                    shutil.chown(path, VMAIL, VMAIL)
            for fn in os.listdir(src):
                dest = os.path.join(h, "sieve", fn)
                if os.path.isfile(os.path.join(src, fn)) and not os.path.exists(dest):
                    shutil.copy2(os.path.join(src, fn), dest)
                    shutil.chown(dest, VMAIL, VMAIL)
                    n += 1
        link, dest = os.path.join(d, ".dovecot.sieve"), os.path.join(h, ".dovecot.sieve")
        if os.path.islink(link) and not os.path.lexists(dest):
            os.symlink(os.readlink(link), dest)
            pw = pwd.getpwnam(VMAIL)
            os.lchown(dest, pw.pw_uid, pw.pw_gid)
    return n


def restore_webmail(work: str) -> str:
    src = os.path.join(work, STATE_STAGE.lstrip("/"), "roundcube.sqlite")
    dest = contract.PATHS["webmail_db"]
    if not os.path.exists(src) or not os.path.isdir(os.path.dirname(dest)):
        return "none in the archive" if not os.path.exists(src) else "web mail not installed"
    put_back_sqlite(src, dest, "www-data", "www-data", 0o660)
    return "restored"


def put_back_sqlite(src: str, dest: str, user: str, group: str, mode: int) -> None:
    """A database from the archive in place of the live one: checked, owned, then renamed over it."""
    tmp = dest + ".restore"
    shutil.copy2(src, tmp)
    sqlite3.connect(tmp).execute("PRAGMA integrity_check").fetchone()
    shutil.chown(tmp, user, group)
    os.chmod(tmp, mode)
    os.replace(tmp, dest)


def restore_host(at: str | None) -> int:
    """After a rebuild (deploy on a bare host): bring back what lives only on the host."""
    c = conf()
    name = pick_archive(c, at)
    work = STAGE + ".restore"
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(work, mode=0o711)
    borg(c, "extract", f"{c['repo']}::{name}", cwd=work)
    done = {"archive": name}
    # 1. The account store: passwords users set, statuses, last logins, audit log. Not on a store
    #    apart (`store` in its settings): the mail host's archives keep the account store, which is
    #    on the db hosts and was not lost with this one.
    if not c.get("store"):
        saved = os.path.join(work, STATE_STAGE.lstrip("/"), "accounts.sqlite")
        if store_db.is_postgresql(store.DB):
            from . import store_move

            store_move.replace_all(saved, store.connect())
        else:
            put_back_sqlite(saved, STORE, "root", "postfix", 0o640)
        # Mailboxes added to the data file since the archive come back from the current directory.
        r = subprocess.run(["/usr/local/lib/govmail/accounts", "sync"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"accounts sync after the store's restore failed: {(r.stderr or r.stdout).strip()[-1500:]}")
        subprocess.run(["doveadm", "reload"], capture_output=True)
    with open(os.path.join(work, STATE_STAGE.lstrip("/"), "last-logins.json"), encoding="utf-8") as f:
        stamps = json.load(f)
    for address, ts in stamps.items():
        h = home(address)
        os.makedirs(h, exist_ok=True)
        shutil.chown(h, VMAIL, VMAIL)
        p = os.path.join(h, STAMP)
        open(p, "a").close()
        os.utime(p, (ts, ts))
        shutil.chown(p, VMAIL, VMAIL)
    done["last_logins"] = len(stamps)
    # 2. Keys made on the host (TLS, DKIM): the same as before
    #    the disaster, so certificates and published DNS keys stay valid.
    changed = False
    for sub in HOST_KEYS:
        src_dir = os.path.join(work, "etc/govmail", sub)
        if not os.path.isdir(src_dir):
            continue
        os.makedirs(os.path.join("/etc/govmail", sub), exist_ok=True)
        for fn in os.listdir(src_dir):
            a, b = os.path.join(src_dir, fn), os.path.join("/etc/govmail", sub, fn)
            if os.path.isfile(a) and (not os.path.exists(b) or open(a, "rb").read() != open(b, "rb").read()):
                shutil.copy2(a, b)
                if sub == "dkim":  # rspamd reads the key through its group
                    shutil.chown(b, "root", "_rspamd")
                elif sub == "webmail":  # Roundcube (php-fpm, www-data) reads its session key
                    shutil.chown(b, "root", "www-data")
                changed = True
    if changed:
        # Reloads, not restarts: sessions in progress (mail arriving during the restore) finish.
        for svc in ("postfix", "dovecot", "rspamd"):
            subprocess.run(["systemctl", "try-reload-or-restart", svc], capture_output=True)
        subprocess.run(["systemctl", "try-restart", "govmail-passwd"], capture_output=True)
        subprocess.run(["systemctl", "try-reload-or-restart", f"php{contract.PHP}-fpm", "nginx"], capture_output=True)
    done["keys"] = "restored" if changed else "unchanged"
    # 3. Mail logs of before the disaster, beside the current ones.
    logs = 0
    for p in sorted(glob.glob(os.path.join(work, "var/log/mail.log*"))):
        dest = os.path.join("/var/log", os.path.basename(p))
        if os.path.exists(dest):
            dest += f".restored-{name}"
        shutil.copy2(p, dest)
        logs += 1
    done["logs"] = logs
    # 4. Every mailbox, merged with what arrived since the rebuild.
    n = msgs = 0
    for d in sorted(glob.glob(os.path.join(work, MAIL_STAGE.lstrip("/"), "*", "*"))):
        dom, local = d.split("/")[-2:]
        if os.path.isdir(os.path.join(d, "Maildir")):
            traversable(work, d)
            msgs += merge_mailbox(f"{local}@{dom}", os.path.join(d, "Maildir"))
            n += 1
    done["mailboxes"], done["messages"] = n, msgs
    done["sieve_scripts"] = restore_sieve(work)
    # 5. The web mail's settings, identities and personal contacts (the mail host's).
    if not c.get("store"):
        done["webmail"] = restore_webmail(work)
    shutil.rmtree(work)
    audit("restored-host", None, f"from archive {name}: {msgs} messages in {n} mailboxes")
    print(json.dumps(done))
    return 0


