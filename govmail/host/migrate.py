"""govmail migration tool on a mail host (/usr/local/lib/govmail/migrate): a merged province's
mailboxes copied from its predecessors' hosts (issue 15; `govmail migrate` on the controller).

    migrate key            (merged host) the host's migration key, made once; prints its public half
    migrate run            (merged host) a plan (JSON on stdin) carried out, one JSON line per mailbox
    migrate source         (old host) the only command the merged host's key may run there: its
                           SSH_ORIGINAL_COMMAND is `export`, `dsync ADDRESS` or `sieve ADDRESS`

Every old mailbox the plan names is copied, each exactly once, or the run says why not and exits 1.
One old mailbox for a new one is copied into it (govmail/host/migrate_copy.py), then its Sieve
scripts (when the new mailbox has none yet), its password hash (when its user has not yet set one on
the new host, so nobody is made to change it again) and its last login. Several old mailboxes for one
new one (merged units) each go into a folder of their own in it, `Thư cũ/<local part>@<predecessor>`,
keeping their folders below it; the new mailbox keeps its own password and filters. From any IMAP
server, the messages, folders, flags and dates come through Dovecot's imapc, with a master login or
each user's own password. Standard library only.
"""

import json
import os
import re
import subprocess
import sys
import tarfile
import time

from . import contract, store, store_sql
from .migrate_copy import (
    copy_imap,
    dsync,
    folder_name,
    import_new,
    mailbox_totals,
    mirror_options,
    prepare_mirror,
)

KEY = "/etc/govmail/migrate/id_ed25519"
KNOWN_HOSTS = "/etc/govmail/migrate/known_hosts"
ADDRESS = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?@[a-z0-9]([a-z0-9.-]*[a-z0-9])?\Z")
SIEVE_FILES = ("sieve", ".dovecot.sieve")
# Per old mailbox: where it went (the new mailbox, into it or into its own folder), from which source
# and by which method (dsync and imapc give the same message different GUIDs, so a mailbox copied one
# way and then the other would hold every message twice), and for a folder what was imported.
STATE = "/var/lib/govmail/migrate-state.json"
PLAN_VERSION = 2


def load_state():
    try:
        with open(STATE, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return {"version": 2, "sources": {}}
    if state.get("version") != 2:  # govmail before 2026-12: {new: {from, method, last}}, always into the mailbox
        state = {"version": 2, "sources": {v["from"]: {"new": new, "method": v["method"], "mode": "direct",
                                                       "last": v.get("last")}
                                           for new, v in state.items() if isinstance(v, dict) and "from" in v}}
    return state


def save_state(state):
    tmp = STATE + ".new"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1, sort_keys=True, ensure_ascii=False)
    os.replace(tmp, STATE)


def home(address):
    local, _, domain = address.partition("@")
    return os.path.join(contract.PATHS["vmail"], domain, local)


def last_login(address):
    try:
        return int(os.stat(os.path.join(home(address), contract.LAST_LOGIN_STAMP)).st_mtime)
    except OSError:
        return None


# ---------------------------------------------------------------------------- on the old host


def mailbox_sizes():
    """{address: (messages, bytes)} of every mailbox, from one doveadm run."""
    r = subprocess.run(["doveadm", "-f", "tab", "mailbox", "status", "-A", "messages vsize", "*"],
                       capture_output=True, text=True)
    out = {}
    for line in r.stdout.splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 3 and parts[-1].isdigit() and parts[-2].isdigit():
            m, b = out.get(parts[0], (0, 0))
            out[parts[0]] = (m + int(parts[-2]), b + int(parts[-1]))
    return out


def export():
    db = store.connect()
    sizes = mailbox_sizes()
    rows = db.execute("SELECT address, password, password_set, must_change, status FROM accounts")
    return {a: {"password": pw, "password_set": pset, "must_change": mc, "status": st,
                "last_login": last_login(a), "messages": sizes.get(a, (0, 0))[0], "bytes": sizes.get(a, (0, 0))[1]}
            for a, pw, pset, mc, st in rows}


def source(command):
    """The forced command of the merged host's key: nothing else runs with it."""
    words = command.split()
    known = lambda a: ADDRESS.match(a) and store.connect().execute(  # noqa: E731
        "SELECT 1 FROM accounts WHERE address = ?", (a,)).fetchone()
    if words == ["export"]:
        json.dump(export(), sys.stdout)
        return 0
    # `doveadm sync` appends `dsync-server` to the remote command it is given.
    if len(words) in (2, 3) and words[0] == "dsync" and words[2:] in ([], ["dsync-server"]) and known(words[1]):
        os.execvp("doveadm", ["doveadm", "dsync-server", "-u", words[1]])
    if len(words) == 2 and words[0] == "sieve" and known(words[1]):
        with tarfile.open(fileobj=sys.stdout.buffer, mode="w|gz") as tar:
            for name in SIEVE_FILES:
                path = os.path.join(home(words[1]), name)
                if os.path.lexists(path):
                    tar.add(path, arcname=name)
        return 0
    print(f"migrate source: refused: {command[:80]!r} (allowed: export, dsync ADDRESS, sieve ADDRESS)", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------------- on the merged host


def make_key():
    if not os.path.exists(KEY):
        os.makedirs(os.path.dirname(KEY), mode=0o700, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"govmail-migrate@{os.uname().nodename}",
                        "-f", KEY], check=True)
    with open(KEY + ".pub", encoding="utf-8") as f:
        print(f.read().strip())
    return 0


def ssh(host):
    return ["ssh", "-i", KEY, "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={KNOWN_HOSTS}",
            "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=20", f"root@{host}"]


def take_password(new, info):
    """The old host's hash, unless the user already set their own on this host."""
    if info.get("password"):
        return store.import_password(new, info["password"], info.get("password_set"), info.get("must_change") or 0)
    return False


def take_sieve(host, old, new):
    """The old mailbox's Sieve scripts, when the new one has none yet; True only when some came."""
    dest = home(new)
    if any(os.path.lexists(os.path.join(dest, n)) for n in SIEVE_FILES):
        return False
    r = subprocess.run(ssh(host) + ["sieve", old], capture_output=True)
    if r.returncode != 0 or not r.stdout:
        return False
    import io

    with tarfile.open(fileobj=io.BytesIO(r.stdout), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.split("/")[0] in SIEVE_FILES]
        if not [m for m in members if m.isfile() or m.issym()]:
            return False  # an empty sieve folder: nothing to bring
        os.makedirs(dest, exist_ok=True)
        tar.extractall(dest, members=members, filter="data")
    came = [os.path.join(dest, n) for n in SIEVE_FILES if os.path.lexists(os.path.join(dest, n))]
    if came:
        subprocess.run(["chown", "-hR", f"{contract.VMAIL_UID}:{contract.VMAIL_UID}", *came], check=False)
    return bool(came)


def take_last_login(new, when):
    if not when:
        return
    path = os.path.join(home(new), contract.LAST_LOGIN_STAMP)
    have = last_login(new)
    if have is None or have < when:
        os.makedirs(home(new), exist_ok=True)
        open(path, "a").close()
        os.utime(path, (when, when))
        os.chown(path, contract.VMAIL_UID, contract.VMAIL_UID)


def line(**kw):
    print(json.dumps(kw, ensure_ascii=False), flush=True)


def mode_for(pair, state, method):
    """'direct' (into the new mailbox) or 'folder': what the old mailbox had, else direct only when it
    is the one old mailbox the data maps to the new one and none other went into it directly."""
    old, new = pair["old"], pair["new"]
    had = state["sources"].get(old)
    if had and had.get("new") == new:
        return had.get("mode", "direct"), had.get("folder")
    direct_other = any(v.get("new") == new and v.get("mode", "direct") == "direct" and o != old
                       for o, v in state["sources"].items())
    if pair.get("several") or direct_other:
        taken = {v.get("folder") for v in state["sources"].values() if v.get("new") == new}
        return "folder", folder_name(old, pair.get("predecessor", "cu"), taken)
    return "direct", None


def explained(stderr):
    """doveadm's last words, with what to do when they say the new mailbox is full."""
    last = (stderr.strip().splitlines() or ["?"])[-1][:300]
    if "quota" in last.lower() or "mailbox is full" in last.lower():
        last += (" -- the new mailbox's quota is too small for the old mail: raise its quota_mb in the data "
                 "(within policy.quota.max_mb), deploy, and run the migration again (nothing copied is lost)")
    return last


def quota_check(pairs, old_side, local):
    """Per new mailbox: the old mail planned into it beside its quota (a warning line when it cannot fit)."""
    want = {}
    for p in pairs:
        info = (old_side or {}).get(p["old"]) or {}
        if not p.get("list") and p["new"] in local and info.get("bytes"):
            want[p["new"]] = want.get(p["new"], 0) + info["bytes"]
    for new, size in sorted(want.items()):
        r = subprocess.run(["doveadm", "-f", "tab", "quota", "get", "-u", new], capture_output=True, text=True)
        used, limit = contract.quota_table(r.stdout, user=new).get(new, (0, None))
        if limit is not None and used * 1024 + size > limit * 1024:
            line(quota=new, needed=used * 1024 + size, limit=limit * 1024)


def skip(pair, why, todo):
    line(old=pair["old"], new=pair["new"], skipped=why, todo=todo)


def copy_one(pair, info, src, plan, state, method):
    """Copy one old mailbox; one JSON line says what happened. False when it failed."""
    old, new = pair["old"], pair["new"]
    mode, folder = mode_for(pair, state, method)
    dry = plan.get("dry_run", False)
    password = src.get("master_password") or plan.get("passwords", {}).get(old)
    if dry:
        line(old=old, new=new, mode=mode, folder=folder, messages=info.get("messages"), bytes=info.get("bytes"),
             dry_run=True)
        return True
    t0 = time.monotonic()
    before = mailbox_totals(new)
    entry = dict(state["sources"].get(old) or {}, new=new, method=method, mode=mode, folder=folder)
    mirrored = mode == "folder" or src["kind"] == "imap"  # copied into a mirror, then imported once each
    if mirrored:
        prepare_mirror(old)
        r = (dsync(ssh(src["host"]), old, new, mirror_options(old)) if src["kind"] == "govmail"
             else copy_imap(src, old, new, password, mirror_options(old)))
    else:
        r = dsync(ssh(src["host"]), old, new)
    if r.returncode not in (0, 2):  # 2: changes happened meanwhile; the next run continues
        line(old=old, new=new, mode=mode, folder=folder, ok=False, error=explained(r.stderr))
        return False
    extra = {}
    if mirrored:
        ledger = entry.setdefault("imported", {})
        copied, error = import_new(old, new, folder or "", ledger)
        entry["last"] = int(time.time())
        state["sources"][old] = entry
        save_state(state)
        if error:
            line(old=old, new=new, mode=mode, folder=folder, ok=False, error=explained(error), copied=copied)
            return False
        old_msgs, old_bytes = mailbox_totals(new, mirror_options(old))
    else:
        entry["last"] = int(time.time())
        state["sources"][old] = entry
        save_state(state)
        if src["kind"] == "govmail":
            extra = {"sieve": take_sieve(src["host"], old, new), "password": take_password(new, info)}
        after = mailbox_totals(new)
        copied = max(after[0] - before[0], 0)
        old_msgs, old_bytes = info.get("messages"), info.get("bytes")
    if src["kind"] == "govmail":
        take_last_login(new, info.get("last_login"))
    msgs, size = mailbox_totals(new)
    line(old=old, new=new, mode=mode, folder=folder, ok=True, old_messages=old_msgs, old_bytes=old_bytes,
         copied=copied, messages=msgs, bytes=size, seconds=round(time.monotonic() - t0, 2), **extra)
    return True


def run(plan):
    if plan.get("version") != PLAN_VERSION:
        line(error=f"this host's migration tool reads plans of version {PLAN_VERSION}, not {plan.get('version')}: "
             "deploy this govmail version to it first")
        return 2
    src, pairs = plan["source"], plan["pairs"]
    # Each mailbox, and the store apart that holds it (None: this host). A store apart's mail is on that
    # host, which this tool does not copy into yet.
    rows = list(store.connect().execute(f"SELECT address, CASE WHEN {store_sql.HERE} THEN NULL ELSE store END FROM accounts"))
    local = {a for a, apart_on in rows if apart_on is None}
    apart = {a: apart_on for a, apart_on in rows if apart_on is not None}
    if src["kind"] == "govmail":
        r = subprocess.run(ssh(src["host"]) + ["export"], capture_output=True, text=True)
        if r.returncode != 0:
            line(error=f"{src['host']}: the old host did not answer ({r.stderr.strip()[:300]})")
            return 1
        old_side = json.loads(r.stdout)
        mapped = {p["old"] for p in plan.get("all_mapped", pairs)}
        unmapped = sorted([a, v.get("messages") or 0, v.get("bytes") or 0] for a, v in old_side.items()
                          if a not in mapped and a.endswith("@" + plan.get("domain", "")) and v.get("messages"))
        if unmapped:
            line(unmapped=unmapped)
        quota_check(pairs, old_side, local)
    else:
        old_side = None
    bad = 0
    state = load_state()
    method = f"{src['kind']}:{src['host']}"
    for pair in pairs:
        old, new = pair["old"], pair["new"]
        info = {} if old_side is None else old_side.get(old)
        if pair.get("list"):  # the new address is a list: the old one is an alias of it, nothing to copy
            if info and info.get("messages"):
                skip(pair, f"the old host has a mailbox {old} with {info['messages']} messages, but {new} is a list "
                     "here, which keeps no mail", f"map {old} to a mailbox (its `former:`), or copy its mail by hand")
                bad += 1
            else:
                line(old=old, new=new, alias=True)
            continue
        if info is None:
            skip(pair, "the old host has no such mailbox",
                 "correct this `former:` address in the data (see the old host's mailboxes not mapped, below)")
            bad += 1
            continue
        if new in apart:
            skip(pair, f"{new} is held by the store apart {apart[new]}, into which migrations are not done yet",
                 "copy its mail there by hand (doveadm on that store), or keep the agency on the mail host until "
                 "its mail is migrated")
            bad += 1
            continue
        if new not in local:
            skip(pair, f"{new} is not a mailbox of this host", "deploy the merged province's data to this host first")
            bad += 1
            continue
        password = src.get("master_password") or plan.get("passwords", {}).get(old)
        if src["kind"] == "imap" and not password and not plan.get("dry_run"):
            skip(pair, "no password for it", f"add the line `{old},PASSWORD` to --passwords, or give --master-user")
            bad += 1
            continue
        had = state["sources"].get(old)
        if had and (had.get("method") != method or had.get("new") != new):
            skip(pair, f"copied before to {had.get('new')} by {had.get('method')}; another source, method or "
                 "mailbox would give it every message twice",
                 f"copy it again the same way (from {had.get('method', '').partition(':')[2]}), or move its "
                 f"entry out of {STATE} if that copy is to be dropped")
            bad += 1
            continue
        if not copy_one(pair, info, src, plan, state, method):
            bad += 1
    return 1 if bad else 0


def main(argv):
    if argv[:1] == ["key"]:
        return make_key()
    if argv[:1] == ["source"]:
        return source(os.environ.get("SSH_ORIGINAL_COMMAND", ""))
    if argv[:1] == ["run"]:
        return run(json.load(sys.stdin))
    print("usage: migrate key | run < plan.json | source (the forced SSH command on an old host)", file=sys.stderr)
    return 2
