#!/usr/bin/python3
"""govmail account store on a mail host (installed as /usr/local/lib/govmail/accounts).

Runs on the host with Python's standard library only. The deploy uploads the directory
(/etc/govmail/directory.json) and calls `sync`; the store is Dovecot's passwd-file
(/var/lib/govmail/dovecot-users), which Dovecot re-reads when it changes.

Rules that keep users' data safe:
- a password already in the store is never replaced by a sync: the data file's `password_hash`
  is an *initial* password only;
- a mailbox that disappears from the directory is not deleted: its login is refused and its mail
  stays on disk until an operator purges it;
- a cancelled mailbox keeps its password and mail; only its login is refused.

Commands:
  sync [--new-passwords FILE]   apply the directory; FILE holds initial passwords made by the
                                deploy for new mailboxes ({address: {hash, password}}), which are
                                stored, handed to the operator in /root/govmail-initial-passwords
                                (mode 0600), and FILE is removed.
  set-password ADDRESS          read a hash ({BLF-CRYPT}...) on stdin and store it for ADDRESS.
  list                          print the store as JSON (no hashes).
"""

import datetime
import json
import os
import sys
import tempfile

DIRECTORY = "/etc/govmail/directory.json"
USERS = "/var/lib/govmail/dovecot-users"
HANDOUT = "/root/govmail-initial-passwords"
LOCKED = "!locked"
REASONS = {
    # passwd-file extra fields cannot hold spaces: one token each.
    "cancelled": "Mailbox-cancelled:-mail-is-kept;-contact-the-provincial-mail-administrator",
    "removed": "Mailbox-no-longer-in-the-directory:-contact-the-provincial-mail-administrator",
    "nopassword": "No-password-issued-yet:-ask-the-provincial-mail-administrator",
}


def read_store(path=None):
    path = path or USERS
    store = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line or line.startswith("#"):
                    continue
                parts = line.split(":", 7)
                parts += [""] * (8 - len(parts))
                fields = dict(x.split("=", 1) if "=" in x else (x, "") for x in parts[7].split())
                store[parts[0]] = {"hash": parts[1], "fields": fields}
    except FileNotFoundError:
        pass
    return store


def write_atomic(path, text, mode, group=None):
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    if group:
        import grp

        try:
            os.chown(tmp, 0, grp.getgrnam(group).gr_gid)
        except KeyError:
            pass
    os.replace(tmp, path)


def render_store(store):
    lines = ["# govmail account store: managed by /usr/local/lib/govmail/accounts; do not edit by hand."]
    for addr in sorted(store):
        e = store[addr]
        extra = " ".join(f"{k}={v}" if v != "" else k for k, v in sorted(e["fields"].items()))
        lines.append(f"{addr}:{e['hash']}::::::{extra}")
    return "\n".join(lines) + "\n"


def sync(new_passwords_file=None):
    with open(DIRECTORY, encoding="utf-8") as f:
        directory = json.load(f)
    new_pw = {}
    if new_passwords_file:
        with open(new_passwords_file, encoding="utf-8") as f:
            new_pw = json.load(f)
    old = read_store()
    store = {}
    report = {"added": [], "cancelled": [], "removed": [], "kept": 0}
    handout = []
    for acc in directory["accounts"]:
        addr = acc["address"]
        prev = old.get(addr)
        h = prev["hash"] if prev and prev["hash"] != LOCKED else None
        if h is None:
            if acc.get("password_hash"):
                h = acc["password_hash"]
            elif addr in new_pw:
                h = new_pw[addr]["hash"]
                handout.append((addr, new_pw[addr]["password"]))
            else:
                h = LOCKED
            report["added"].append(addr)
        else:
            report["kept"] += 1
        fields = {"userdb_quota_storage_size": f"{acc['quota_mb']}M"}
        if acc["status"] != "active":
            fields.update(nologin="y", reason=REASONS["cancelled"])
            report["cancelled"].append(addr)
        elif h == LOCKED:
            fields.update(nologin="y", reason=REASONS["nopassword"])
        store[addr] = {"hash": h, "fields": fields}
    for addr, e in old.items():
        if addr not in store:
            fields = dict(e["fields"], nologin="y", reason=REASONS["removed"])
            store[addr] = {"hash": e["hash"], "fields": fields}
            report["removed"].append(addr)
    text = render_store(store)
    changed = True
    try:
        with open(USERS, encoding="utf-8") as f:
            changed = f.read() != text
    except FileNotFoundError:
        pass
    if changed:
        write_atomic(USERS, text, 0o640, group="dovecot")
    if handout:
        now = datetime.datetime.now().isoformat(timespec="seconds")
        fd = os.open(HANDOUT, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            for addr, pw in handout:
                f.write(f"{addr}\t{pw}\t{now}\n")
        os.chmod(HANDOUT, 0o600)
    if new_passwords_file:
        os.unlink(new_passwords_file)
    report["changed"] = changed
    print(json.dumps(report))


def set_password(address, hashed):
    if not hashed.startswith("{") or ":" in hashed or "\n" in hashed:
        sys.exit("accounts: refusing a malformed hash")
    store = read_store()
    if address not in store:
        sys.exit(f"accounts: {address} is not in the account store")
    store[address]["hash"] = hashed
    f = store[address]["fields"]
    if f.get("reason") == REASONS["nopassword"]:
        f.pop("nologin", None)
        f.pop("reason", None)
    write_atomic(USERS, render_store(store), 0o640, group="dovecot")
    print(json.dumps({"address": address, "password": "set"}))


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, args = argv[0], argv[1:]
    if cmd == "sync":
        f = args[args.index("--new-passwords") + 1] if "--new-passwords" in args else None
        sync(f)
    elif cmd == "set-password" and len(args) == 1:
        set_password(args[0].lower(), sys.stdin.read().strip())
    elif cmd == "list":
        print(json.dumps({a: {k: v for k, v in e["fields"].items()} for a, e in read_store().items()}, indent=1))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
