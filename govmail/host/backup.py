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
                                              copied with SQLite's online backup
  var/backups/govmail/state/last-logins.json  last-login stamps
  var/vmail/<domain>/<user>/sieve/, .dovecot.sieve
                                              each user's Sieve filters and which one is active
  etc/govmail/                                TLS and DKIM keys, certificates, directory, settings
  var/log/mail.log*                           the mail logs (DN Art. 11.2.e)

Commands:
  run                          make a backup now (govmail-backup.timer runs this); a failure is
                               mailed to postmaster@
  check                        mail postmaster@ when the last good backup is older than allowed
                               (govmail-backup-check.timer, hourly; once a day at most)
  status                       JSON: last good backup (time, age, sizes), last error, archives
  list                         the archives in the repository
  restore-mailbox ADDRESS [--at TIME] [--folder NAME]
                               bring back one mailbox (or one folder) as it was at TIME (default:
                               the last archive), merged into the live one: nothing newer is lost,
                               nothing is duplicated, other mailboxes are untouched
  restore-host [--at TIME]     after a rebuild: account store, last logins, TLS, logs and every
                               mailbox from the archive, merged with mail that arrived meanwhile
"""

from __future__ import annotations

import datetime
import fcntl
import glob
import json
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib

CONF = "/etc/govmail/backup/backup.json"
STATUS = "/var/lib/govmail/backup-status.json"
STAGE = "/var/backups/govmail"
MAIL_STAGE = STAGE + "/mail"
STATE_STAGE = STAGE + "/state"
STORE = "/var/lib/govmail/accounts.sqlite"
HOMES = "/var/vmail"
STAMP = ".govmail-last-login"
LOCK = "/run/govmail-backup.lock"
VMAIL = "vmail"
HOST_KEYS = ("tls", "dkim")  # directories of /etc/govmail made on the host, put back by restore-host


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
    if r.returncode not in (0, 1):  # 1: warnings (e.g. a file changed while read): the archive is good
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
    from email.header import Header
    from email.mime.text import MIMEText
    from email.utils import formatdate, make_msgid

    to = f"postmaster@{c['domain']}"
    msg = MIMEText(body, "plain", "utf-8")
    msg["From"], msg["To"] = to, to
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=c["domain"])
    msg["Subject"] = Header(subject, "utf-8")
    msg["Auto-Submitted"] = "auto-generated"
    subprocess.run(["/usr/sbin/sendmail", "-i", "-f", to, to], input=msg.as_bytes(), check=False)


def mailboxes() -> list[str]:
    """Addresses whose mail is on disk: every account of the store but the deleted ones."""
    db = sqlite3.connect(f"file:{STORE}?mode=ro", uri=True)
    return [r[0] for r in db.execute("SELECT address FROM accounts WHERE status != 'deleted' ORDER BY address")]


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
    """One mailbox into its staging mirror with `doveadm backup`; an error text or None."""
    dest = staged(address)
    os.makedirs(dest, exist_ok=True)
    shutil.chown(dest, VMAIL, VMAIL)
    r = subprocess.run(["doveadm", "backup", "-u", address, f"maildir:{dest}/Maildir"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"doveadm backup of {address} failed: {r.stderr.strip()[-500:]}"
    return None


def stage_state(addresses: list[str]) -> None:
    os.makedirs(STATE_STAGE, mode=0o700, exist_ok=True)
    src = sqlite3.connect(f"file:{STORE}?mode=ro", uri=True)
    dst = sqlite3.connect(STATE_STAGE + "/accounts.sqlite.tmp")
    src.backup(dst)
    dst.close()
    os.replace(STATE_STAGE + "/accounts.sqlite.tmp", STATE_STAGE + "/accounts.sqlite")
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
        addresses = mailboxes()
        copied, unchanged = stage_mail(addresses)
        n = copied + unchanged
        stage_state(addresses)
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
           "last_error": fmt(st.get("last_error")) if st.get("last_error") else None, "error": st.get("error")}
    try:
        out["archives"] = len(archives(c))
    except RuntimeError as e:
        out["archives"] = None
        out["repo_error"] = str(e)[-300:]
    print(json.dumps(out, indent=1, ensure_ascii=False))
    return 0 if not out["late"] else 1


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
    db = sqlite3.connect(STORE, timeout=30)
    who = os.environ.get("GOVMAIL_ACTOR") or "root@" + socket.gethostname()
    db.execute("INSERT INTO audit VALUES (?,?,?,?,?)", (int(time.time()), who, action, address, detail))
    db.commit()


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


def sieve_paths() -> list[str]:
    """Users' Sieve scripts (small files beside the Maildir, outside what `doveadm backup` copies)."""
    return sorted(glob.glob(os.path.join(HOMES, "*", "*", "sieve"))
                  + [p for p in glob.glob(os.path.join(HOMES, "*", "*", ".dovecot.sieve")) if os.path.islink(p)])


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
    # 1. The account store: passwords users set, statuses, last logins, audit log.
    src_store = os.path.join(work, STATE_STAGE.lstrip("/"), "accounts.sqlite")
    tmp = STORE + ".restore"
    shutil.copy2(src_store, tmp)
    sqlite3.connect(tmp).execute("PRAGMA integrity_check").fetchone()
    shutil.chown(tmp, "root", "postfix")
    os.chmod(tmp, 0o640)
    os.replace(tmp, STORE)
    # Mailboxes added to the data file since the archive come back from the current directory.
    subprocess.run(["/usr/local/lib/govmail/accounts", "sync"], check=True, capture_output=True)
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
                changed = True
    if changed:
        # Reloads, not restarts: sessions in progress (mail arriving during the restore) finish.
        for svc in ("postfix", "dovecot", "rspamd"):
            subprocess.run(["systemctl", "try-reload-or-restart", svc], capture_output=True)
        subprocess.run(["systemctl", "try-restart", "govmail-passwd"], capture_output=True)
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
    shutil.rmtree(work)
    audit("restored-host", None, f"from archive {name}: {msgs} messages in {n} mailboxes")
    print(json.dumps(done))
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, args = argv[0], argv[1:]

    def opt(flag):
        return args[args.index(flag) + 1] if flag in args else None

    try:
        if cmd == "run":
            return run()
        if cmd == "check":
            return check(float(opt("--now")) if opt("--now") else None)
        if cmd == "status":
            return status()
        if cmd == "list":
            for a in archives(conf()):
                print(f"{a['start']}\t{a['name']}")
            return 0
        if cmd == "restore-mailbox" and args and not args[0].startswith("-"):
            return restore_mailbox(args[0].lower(), opt("--at"), opt("--folder"))
        if cmd == "restore-host":
            return restore_host(opt("--at"))
    except RuntimeError as e:
        print(f"backup: {e}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
