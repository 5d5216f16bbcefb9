"""The directory on the host and the account store Dovecot authenticates against.

configure: upload the account tool and the directory (JSON), make initial passwords (passlib,
bcrypt) for mailboxes the store has never seen, and run `accounts sync` on the host, in one
command, only when something changed. Passwords already in the store are never touched.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.operations import server

from .. import passwords
from ..ops import StoredAccounts, config_file, json_bytes
from ..render import PATHS

HOST_TOOL = Path(__file__).resolve().parent.parent / "host" / "accounts.py"
NEW_PASSWORDS = PATHS["state"] + "/new-passwords.json"


def directory_document(cfg) -> dict:
    return {
        "province": cfg.key,
        "domain": cfg.domain,
        "accounts": [a.as_dict() for a in cfg.accounts],
        "lists": {f"postmaster@{cfg.domain}": [cfg.postmaster], f"abuse@{cfg.domain}": [cfg.postmaster], **cfg.aliases},
    }


def configure(cfg) -> None:
    tool = config_file(name="Account tool", dest=f"{PATHS['lib']}/accounts", content=HOST_TOOL.read_bytes(), mode=0o755)
    directory = config_file(
        name=f"Directory: {len(cfg.accounts)} mailboxes, {len(cfg.aliases)} lists",
        dest=PATHS["directory"], content=json_bytes(directory_document(cfg)), mode=0o640,
    )
    stored = host.get_fact(StoredAccounts, path=PATHS["store"])
    new = [a for a in cfg.accounts if a.address not in stored and not a.password_hash]
    cmd = f"{PATHS['lib']}/accounts sync"
    if new:
        made = {}
        for a in new:
            pw = passwords.generate(cfg.policy.password, admin=a.role == "admin")
            made[a.address] = {"hash": passwords.hash_password(pw, rounds=passwords.INITIAL_ROUNDS), "password": pw}
        config_file(
            name=f"Initial passwords for {len(new)} new mailboxes (handed out in {PATHS['initial_passwords']})",
            dest=NEW_PASSWORDS, content=json_bytes(made), mode=0o600,
        )
        cmd += f" --new-passwords {NEW_PASSWORDS}"
    server.shell(
        name="Sync the account store with the directory (existing passwords kept)",
        commands=[cmd],
        _if=lambda: bool(new) or directory.did_change() or tool.did_change() or not stored,
    )
