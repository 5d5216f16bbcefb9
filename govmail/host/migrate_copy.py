"""How a mailbox is copied to the merged host (govmail/host/migrate.py decides which way, and when).

- **into the mailbox** (one old mailbox for the new one) from a govmail host: `doveadm sync -1 -R`
  over SSH: one way, incremental, resumable; folders, flags and dates as they were; what arrived on
  the new host is never touched;
- from an IMAP server (through Dovecot's imapc) always by way of a mirror, as below: an IMAP server
  gives no message identity dsync could match on the next run (every run would copy everything
  again), so each message is imported once from the mirror, into the mailbox's own folders (one old
  mailbox for it) or into a folder of its own (several);
- **into its own folder** (several old mailboxes for one new one, e.g. two departments merged into
  one): each old mailbox is first mirrored, with the same one-way dsync, into a directory of its own
  on this host (`MIRROR/<domain>/<local part>/`, outside every user's mail, quota off), then the
  messages the mailbox has not received yet are imported from the mirror into
  `Thư cũ/<local part>@<predecessor>/<old folder>` of the new mailbox. Which messages it received is
  kept per mirror folder (the highest UID imported, and the message GUIDs already there, should a
  run stop between the two), so a message is imported once, and one the user has since moved or
  deleted is not brought back.

Standard library only.
"""

import os
import subprocess
import tempfile

from . import contract

MIRROR = os.path.join(contract.PATHS["vmail"], ".govmail-migrate")
# The folder of the new mailbox that holds the old mailboxes merged into it.
FOLDER_ROOT = "Thư cũ"
NO_QUOTA = ["-o", "mail_plugins/quota=no"]  # a mirror is not the user's mail: it counts for no quota


def doveadm_table(args):
    """`doveadm -f tab ...` as a list of {column: value}; (rows, error text)."""
    r = subprocess.run(["doveadm", "-f", "tab", *args], capture_output=True, text=True)
    lines = r.stdout.splitlines()
    if r.returncode not in (0, 2) or not lines:
        return [], r.stderr.strip()
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"), strict=False)) for line in lines[1:]], ""


def mailbox_totals(user, options=()):
    """(messages, bytes) of every folder of a mailbox (or of its mirror, with `options`)."""
    rows, _ = doveadm_table([*options, "mailbox", "status", "-u", user, "messages vsize", "*"])
    msgs = sum(int(r.get("messages") or 0) for r in rows if (r.get("messages") or "").isdigit())
    size = sum(int(r.get("size.virtual") or 0) for r in rows if (r.get("size.virtual") or "").isdigit())
    return msgs, size


def folder_name(old, predecessor, taken=()):
    """`Thư cũ/<local>@<predecessor>`: Dovecot's folder names here cannot hold a dot, so dots of the
    local part become '-'; a name another old mailbox already has gets a number."""
    local = old.partition("@")[0].replace(".", "-")
    base = f"{FOLDER_ROOT}/{local}@{predecessor}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def mirror_path(old):
    local, _, domain = old.partition("@")
    return os.path.join(MIRROR, domain, local, "Maildir")


def mirror_options(old):
    return [*NO_QUOTA, "-o", f"mail_path={mirror_path(old)}"]


def _vmail_dirs(path):
    """Make `path` and its parents below the mail root, owned by the mail user."""
    root = contract.PATHS["vmail"]
    os.makedirs(path, exist_ok=True)
    p = path
    while p.startswith(root + "/"):
        os.chown(p, contract.VMAIL_UID, contract.VMAIL_UID)
        p = os.path.dirname(p)
    os.chmod(MIRROR, 0o700)


def dsync(ssh, old, new, options=()):
    """One way, the old host -> this host (into the mailbox, or into its mirror with `options`)."""
    return subprocess.run(["doveadm", *options, "sync", "-1", "-R", "-u", new, *ssh, "dsync", old],
                          capture_output=True, text=True)


def imapc_options(src, old, password):
    """doveadm settings for Dovecot's imapc (Dovecot 2.4 names) reading `old` on an IMAP server."""
    opts = {"imapc_host": src["host"], "imapc_port": str(src.get("port", 993)),
            "imapc_ssl": "imaps" if src.get("port", 993) == 993 else "starttls",
            "imapc_user": old, "imapc_password": password}
    if src.get("insecure"):
        opts["ssl_client_require_valid_cert"] = "no"
    if src.get("master_user"):
        opts["imapc_master_user"] = src["master_user"]
    return opts


def copy_imap(src, old, new, password, options=()):
    """One way (-1 -R: the IMAP server -> this host) and never a backup: what reached this host stays.
    The imapc settings go in a 0600 file that includes the host's configuration, so the password is
    not on a command line."""

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
        return subprocess.run(["doveadm", "-c", conf.name, *options, "sync", "-1", "-R", "-u", new, "imapc:"],
                              capture_output=True, text=True)


def uid_set(uids):
    """1,2,3,7,9,10 -> '1:3,7,9:10'."""
    out, start, prev = [], None, None
    for u in sorted(uids):
        if start is None:
            start = prev = u
        elif u == prev + 1:
            prev = u
        else:
            out.append(f"{start}:{prev}" if prev > start else str(start))
            start = prev = u
    if start is not None:
        out.append(f"{start}:{prev}" if prev > start else str(start))
    return ",".join(out)


def import_new(old, new, folder, ledger):
    """Import into `new` (under `folder`, or into its own folders when folder is "") what the mirror of
    `old` holds above the ledger's UIDs and the mailbox does not hold yet: not the same message (its
    GUID), nor one with the same Message-ID and size (a copy made another way, or by a run that stopped
    before it wrote the ledger). `ledger`: {mirror folder GUID: {"name", "uid"}}, updated in place.
    Returns (imported, error or None)."""
    fields = "mailbox mailbox-guid uid guid hdr.message-id size.virtual"
    mirror, error = doveadm_table([*mirror_options(old), "fetch", "-u", new, fields, "all"])
    if error:
        return 0, f"reading the mirror: {error[-300:]}"
    query = ["mailbox", f"{folder}/*"] if folder else ["all"]
    have, error = doveadm_table(["fetch", "-u", new, "guid hdr.message-id size.virtual", *query])
    if error and "doesn't exist" not in error:
        return 0, f"reading {folder or new}: {error[-300:]}"
    present = {r.get("guid") for r in have}
    same = {(r.get("hdr.message-id", "").strip(), r.get("size.virtual")) for r in have if r.get("hdr.message-id", "").strip()}
    by_box = {}
    for r in mirror:
        if not (r.get("uid") or "").isdigit():
            continue
        box = by_box.setdefault(r["mailbox-guid"], {"name": r["mailbox"], "new": [], "max": 0})
        box["max"] = max(box["max"], int(r["uid"]))
        mid = r.get("hdr.message-id", "").strip()
        if (int(r["uid"]) > ledger.get(r["mailbox-guid"], {}).get("uid", 0) and r.get("guid") not in present
                and not (mid and (mid, r.get("size.virtual")) in same)):
            box["new"].append(int(r["uid"]))
    imported = 0
    for guid, box in sorted(by_box.items(), key=lambda kv: kv[1]["name"]):
        if box["new"]:
            r = subprocess.run(["doveadm", "import", "-u", new, "-s", f"maildir:{mirror_path(old)}", folder,
                                "mailbox", box["name"], "uid", uid_set(box["new"])], capture_output=True, text=True)
            if r.returncode not in (0, 2):
                return imported, (r.stderr.strip().splitlines() or ["?"])[-1][:300]
            imported += len(box["new"])
        ledger[guid] = {"name": box["name"], "uid": max(box["max"], ledger.get(guid, {}).get("uid", 0))}
    return imported, None


def prepare_mirror(old):
    _vmail_dirs(mirror_path(old))
