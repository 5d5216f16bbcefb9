"""Secrets a province's hosts need and no repository may hold: the backup passphrase, the SSH key
the mail host uses to reach its backup host, and the passwords of the account store's two
PostgreSQL roles (`account_store.engine: postgresql`).

They live on the controller, outside the repository, one directory per province:

    $GOVMAIL_SECRETS/<province>/backup-passphrase     (0600)
    $GOVMAIL_SECRETS/<province>/backup-ssh-key[.pub]  (0600 / 0644)
    $GOVMAIL_SECRETS/<province>/store-password-{writer,reader}  (0600; only with PostgreSQL)
    $GOVMAIL_SECRETS/<province>/store-password-{replication,rewind,patroni}  (0600; two db hosts)
    $GOVMAIL_SECRETS/<province>/backup-ssh-key-<host>[.pub]  (a store apart's own key to the backup host)
    $GOVMAIL_SECRETS/<province>/doveadm-password      (0600; stores apart: the mail host's doveadm
                                                      runs commands on their doveadm servers)

GOVMAIL_SECRETS overrides the base directory; by default the target chooses it
(govmail/targets.py: /var/lib/govmail-lab/secrets for the lab, ~/.config/govmail/secrets for real
hosts). A deploy creates them the first time and uploads them
from then on, so a rebuilt host gets the same ones. The operator keeps a copy of this directory in
the organisation's password vault: without the passphrase no backup can be read, and a
disaster-recovery rebuild starts by putting the directory back on the controller.
"""

from __future__ import annotations

import os
import re
import secrets as _random
import subprocess
import time
from pathlib import Path


def province_secrets(cfg, d: Path) -> dict[str, bytes]:
    """Every secret a province's hosts need, made before its services declare themselves (they only
    read them: `Context.secrets`)."""
    out = backup_secrets(d, f"govmail-backup@{cfg.mail_host}")
    if cfg.store_engine == "postgresql":
        out.update(store_secrets(d, CLUSTER_ROLES if cfg.store_cluster else ()))
    if cfg.stores_apart:  # the mail host's doveadm reaches the stores' doveadm servers with it
        out["doveadm"] = _made_once(d / "doveadm-password")
    if cfg.backup_host:
        for host in cfg.stores_apart:
            out.update(store_backup_keys(d, host))
    return out


def _made_once(path: Path) -> bytes:
    """A random secret kept in `path` (0600), made the first time. The hosts of a province deploy in
    parallel, each asking for it: it is written aside and linked into place, so a second asker finds
    it whole or makes none."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{_random.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_random.token_urlsafe(32) + "\n")
        _link_once(tmp, path)
    return path.read_bytes()


def _link_once(tmp: Path, path: Path) -> None:
    """`tmp` becomes `path` unless `path` exists already (made by a parallel deploy); `tmp` goes."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


# With two db hosts (Patroni): the standby's streaming login, pg_rewind's login, and Patroni's REST API.
CLUSTER_ROLES = ("replication", "rewind", "patroni")


def store_secrets(d: Path, more: tuple[str, ...] = ()) -> dict[str, bytes]:
    """The passwords of the account store's writer and reader roles, and `more` (CLUSTER_ROLES)
    (letters, digits, - and _ only: they go into libpq connection strings, Postfix and Dovecot
    settings unquoted)."""
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return {f"store_{role}": _made_once(d / f"store-password-{role}") for role in ("writer", "reader", *more)}


def backup_secrets(d: Path, comment: str) -> dict[str, bytes]:
    """The province's backup passphrase and SSH key pair in its secrets directory `d` (given by the
    target), made on first use."""
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    pp = d / "backup-passphrase"
    _made_once(pp)
    key, public = _key_pair(d, "backup-ssh-key", comment)
    return {"passphrase": pp.read_bytes(), "ssh_key": key, "ssh_public": public}


def store_backup_keys(d: Path, host: str) -> dict[str, bytes]:
    """A store apart's own SSH key pair to the backup host, which lets it into its own repository
    only (`backup-ssh-key-<host>`)."""
    # A host name is checked by the data (letters, digits, dots, hyphens); a file name never takes more.
    key, public = _key_pair(d, "backup-ssh-key-" + re.sub(r"[^A-Za-z0-9.-]", "_", host)[:200], "govmail-backup")
    return {f"ssh_key:{host}": key, f"ssh_public:{host}": public}


def _key_pair(d: Path, name: str, comment: str) -> tuple[bytes, bytes]:
    """An ed25519 key pair `d/name` and `d/name.pub`, made the first time."""
    key = d / name
    if not key.exists():
        tmp = d / f".{name}.{os.getpid()}.{_random.token_hex(4)}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(tmp)], check=True)
        try:
            os.link(tmp, key)  # the deploy that links the private key first gives the public one too
            os.replace(f"{tmp}.pub", f"{key}.pub")
        except FileExistsError:
            pass
        finally:
            for p in (tmp, Path(f"{tmp}.pub")):
                p.unlink(missing_ok=True)
    for _ in range(100):  # a parallel deploy between its two links
        if (d / f"{name}.pub").exists():
            break
        time.sleep(0.05)
    return key.read_bytes(), (d / f"{name}.pub").read_bytes()
