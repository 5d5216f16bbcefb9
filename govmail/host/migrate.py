"""govmail migration tool on a mail host (/usr/local/lib/govmail/migrate): a merged province's
mailboxes copied from its predecessors' hosts (issue 15; `govmail migrate` on the controller).

    migrate key            (merged host) the host's migration key, made once; prints its public half
    migrate run            (merged host) a plan (JSON on stdin) carried out, one JSON line per mailbox
    migrate source         (old host) the only command the merged host's key may run there: its
                           SSH_ORIGINAL_COMMAND is `export`, `dsync ADDRESS` or `sieve ADDRESS`

From a govmail host, each mailbox is copied with dsync over SSH (`doveadm sync -1 -R`: one way,
old -> new, incremental, resumable; what arrived on the new host is never touched), then its Sieve
scripts (when the new mailbox has none yet), its password hash (when its user has not yet set one on
the new host, so nobody is made to change it again) and its last login. From any IMAP server, the
messages, folders, flags and dates come through Dovecot's imapc, with a master login or each user's
own password. Standard library only.
"""

import json
import os
import re
import subprocess
import sys
import tarfile
import time

from . import contract, store

KEY = "/etc/govmail/migrate/id_ed25519"
KNOWN_HOSTS = "/etc/govmail/migrate/known_hosts"
ADDRESS = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?@[a-z0-9]([a-z0-9.-]*[a-z0-9])?\Z")
SIEVE_FILES = ("sieve", ".dovecot.sieve")
# Which source each mailbox was copied from: dsync and imapc give the same message different GUIDs,
# so a mailbox copied one way and then the other would hold every message twice.
STATE = "/var/lib/govmail/migrate-state.json"


def load_state():
    try:
        with open(STATE, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def save_state(state):
    tmp = STATE + ".new"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1, sort_keys=True)
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


def imapc_options(src, old, password):
    """doveadm -o settings for Dovecot's imapc (Dovecot 2.4 names) reading `old` on an IMAP server."""
    opts = {"imapc_host": src["host"], "imapc_port": str(src.get("port", 993)),
            "imapc_ssl": "imaps" if src.get("port", 993) == 993 else "starttls",
            "imapc_user": old, "imapc_password": password}
    if src.get("insecure"):
        opts["ssl_client_require_valid_cert"] = "no"
    if src.get("master_user"):
        opts["imapc_master_user"] = src["master_user"]
    return opts


def copy_imap(src, old, new, password):
    """One way (-1 -R: the IMAP server -> this host) and never a backup: what reached this host stays.
    The imapc settings go in a 0600 file that includes the host's configuration, so the password is
    not on a command line."""
    import tempfile

    def quoted(v):
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in str(v)):
            raise ValueError("a control character in an IMAP setting")
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    with tempfile.NamedTemporaryFile("w", prefix="govmail-imapc-", suffix=".conf", dir="/run", delete=True) as conf:
        # Dovecot 2.4 wants its version settings first, then the host's configuration.
        with open("/etc/dovecot/dovecot.conf", encoding="utf-8") as main:
            conf.writelines(x for x in main if x.startswith(("dovecot_config_version", "dovecot_storage_version")))
        conf.write("!include /etc/dovecot/dovecot.conf\n")
        conf.writelines(f"{k} = {quoted(v)}\n" for k, v in imapc_options(src, old, password).items())
        conf.flush()
        return subprocess.run(["doveadm", "-c", conf.name, "sync", "-1", "-R", "-u", new, "imapc:"],
                              capture_output=True, text=True)


def take_password(new, info):
    """The old host's hash, unless the user already set their own on this host."""
    if info.get("password"):
        return store.import_password(new, info["password"], info.get("password_set"), info.get("must_change") or 0)
    return False


def take_sieve(host, old, new):
    dest = home(new)
    if any(os.path.lexists(os.path.join(dest, n)) for n in SIEVE_FILES):
        return False
    r = subprocess.run(ssh(host) + ["sieve", old], capture_output=True)
    if r.returncode != 0 or not r.stdout:
        return False
    import io

    os.makedirs(dest, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(r.stdout), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.split("/")[0] in SIEVE_FILES]
        tar.extractall(dest, members=members, filter="data")
    subprocess.run(["chown", "-R", f"{contract.VMAIL_UID}:{contract.VMAIL_UID}", *[
        os.path.join(dest, n) for n in SIEVE_FILES if os.path.lexists(os.path.join(dest, n))]], check=False)
    return True


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


def run(plan):
    src, pairs, dry = plan["source"], plan["pairs"], plan.get("dry_run", False)
    local = {r[0] for r in store.connect().execute("SELECT address FROM accounts")}
    if src["kind"] == "govmail":
        r = subprocess.run(ssh(src["host"]) + ["export"], capture_output=True, text=True)
        if r.returncode != 0:
            line(error=f"{src['host']}: the old host did not answer ({r.stderr.strip()[:300]})")
            return 1
        old_side = json.loads(r.stdout)
    else:
        old_side = {old: {} for old, _ in pairs}
    failed = 0
    state = load_state()
    method = f"{src['kind']}:{src['host']}"
    for old, new in pairs:
        info = old_side.get(old)
        if info is None or new not in local:
            line(old=old, new=new, skipped="no such mailbox on the old host" if info is None
                 else "not a mailbox of this host (a list: it is an alias here)")
            continue
        password = src.get("master_password") or plan.get("passwords", {}).get(old)
        if src["kind"] == "imap" and not password and not dry:
            line(old=old, new=new, skipped="no password given for it (--passwords) and no master login")
            continue
        if state.get(new, {}).get("method", method) != method or state.get(new, {}).get("from", old) != old:
            line(old=old, new=new, skipped=f"already copied from {state[new]['from']} by {state[new]['method']}; "
                 "another source or method would give it every message twice")
            continue
        if dry:
            line(old=old, new=new, messages=info.get("messages"), bytes=info.get("bytes"), dry_run=True)
            continue
        t0 = time.monotonic()
        if src["kind"] == "govmail":
            cmd = ["doveadm", "sync", "-1", "-R", "-u", new, *ssh(src["host"]), "dsync", old]
            r = subprocess.run(cmd, capture_output=True, text=True)
        else:
            r = copy_imap(src, old, new, password)
        if r.returncode not in (0, 2):  # 2: changes happened meanwhile; the next run continues
            failed += 1
            line(old=old, new=new, ok=False, error=(r.stderr.strip().splitlines() or ["?"])[-1][:300])
            continue
        state[new] = {"from": old, "method": method, "last": int(time.time())}
        save_state(state)
        extra = {}
        if src["kind"] == "govmail":
            extra = {"sieve": take_sieve(src["host"], old, new), "password": take_password(new, info)}
            take_last_login(new, info.get("last_login"))
        st = subprocess.run(["doveadm", "-f", "tab", "mailbox", "status", "-u", new, "messages vsize", "*"],
                            capture_output=True, text=True).stdout.splitlines()[1:]
        msgs = sum(int(x.split("\t")[0]) for x in st if x.split("\t")[0].isdigit())
        size = sum(int(x.split("\t")[1]) for x in st if len(x.split("\t")) > 1 and x.split("\t")[1].isdigit())
        line(old=old, new=new, ok=True, messages=msgs, bytes=size, seconds=round(time.monotonic() - t0, 2), **extra)
    return 1 if failed else 0


def main(argv):
    if argv[:1] == ["key"]:
        return make_key()
    if argv[:1] == ["source"]:
        return source(os.environ.get("SSH_ORIGINAL_COMMAND", ""))
    if argv[:1] == ["run"]:
        return run(json.load(sys.stdin))
    print("usage: migrate key | run < plan.json | source (the forced SSH command on an old host)", file=sys.stderr)
    return 2
