"""The directory on the host and the account store Dovecot authenticates against.

configure: upload the account tool and the directory (JSON), make initial passwords (passlib,
bcrypt) for mailboxes the store has never seen, and run `accounts sync` on the host, in one
command, only when something changed. Passwords already in the store are never touched.
"""

from __future__ import annotations

import getpass
import shlex
import socket
from pathlib import Path

from pyinfra import host
from pyinfra.operations import server, systemd

from .. import passwords
from ..data import ROLE_LOCAL_PARTS
from ..ops import StoredAccounts, config_file, json_bytes
from ..render import PATHS, render

HOST_TOOL = Path(__file__).resolve().parent.parent / "host" / "accounts.py"
NEW_PASSWORDS = PATHS["state"] + "/new-passwords.json"


def operator() -> str:
    """Who deploys, for the host's audit log: user@machine of the controller."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def password_url(cfg) -> str:
    port = cfg.model.password_change.port
    return f"https://{cfg.mail_host}{'' if port == 443 else f':{port}'}/"


def directory_document(cfg) -> dict:
    return {
        "province": cfg.key,
        "domain": cfg.domain,
        "accounts": [a.as_dict() for a in cfg.accounts],
        # Password age limits the store enforces at login (LC Art. 4.2); null: no limit.
        "policy": {
            "user_max_age_days": cfg.policy.password.user_max_age_days,
            "admin_max_age_days": cfg.policy.password.admin_max_age_days,
            # Inactivity rule the daily job applies (DN Art. 7.3, LC Art. 8.1).
            "inactivity_action": cfg.policy.inactivity.action,
            "inactivity_after_months": cfg.policy.inactivity.after_months,
            "inactivity_notify_agency": 1 if cfg.policy.inactivity.notify_agency else 0,
            "inactivity_notify_superior": 1 if cfg.policy.inactivity.notify_superior else 0,
            "inactivity_delete_after_months": cfg.policy.inactivity.delete_after_notice_months,
            "inactivity_article": cfg.policy.inactivity.article,
            # Purge of cancelled (and dropped) mailboxes after the retention.
            "cancelled_keep_months": cfg.policy.cancellation.keep_months,
            "cancelled_article": cfg.policy.cancellation.article,
            # First login and the user's own change (DN Art. 12.1, LC Art. 4.1/6.3/7.3, TN Art. 9.1).
            "change_at_first_login": 1 if cfg.policy.password.change_at_first_login else 0,
            "password_min_length": cfg.policy.password.min_length,
            "password_admin_min_length": cfg.policy.password.admin_min_length,
            "password_require": ",".join(cfg.policy.password.require),
            "password_article": cfg.policy.password.article,
            "password_url": password_url(cfg),
        },
        # Role addresses reach the postmaster; root@ too, so the host's own system mail (`sendmail
        # root` is qualified with the province domain) is read rather than bounced.
        "lists": {**{f"{role}@{cfg.domain}": [cfg.postmaster] for role in ROLE_LOCAL_PARTS},
                  **cfg.aliases},
        # Who may send as a list (Postfix smtpd_sender_login_maps); a mailbox sends as itself only.
        "senders": {f"postmaster@{cfg.domain}": [cfg.postmaster], f"abuse@{cfg.domain}": [cfg.postmaster],
                    **cfg.list_senders},
    }


def configure(cfg) -> None:
    tool = config_file(name="Account tool", dest=f"{PATHS['lib']}/accounts", content=HOST_TOOL.read_bytes(), mode=0o755)
    directory = config_file(
        name=f"Directory: {len(cfg.accounts)} mailboxes, {len(cfg.aliases)} lists",
        dest=PATHS["directory"], content=json_bytes(directory_document(cfg)), mode=0o640,
    )
    stored = host.get_fact(StoredAccounts, path=PATHS["store"])
    new = [a for a in cfg.accounts if a.address not in stored and not a.password_hash]
    cmd = f"GOVMAIL_ACTOR={shlex.quote(operator())} {PATHS['lib']}/accounts sync"
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
    units = [
        config_file(name="Daily account job (service)", dest="/etc/systemd/system/govmail-daily.service",
                    content=render("systemd/govmail-daily.service.j2", cfg)),
        config_file(name="Daily account job (timer)", dest="/etc/systemd/system/govmail-daily.timer",
                    content=render("systemd/govmail-daily.timer.j2", cfg)),
    ]
    systemd.daemon_reload(name="systemd picks up the daily job", _if=lambda: any(u.did_change() for u in units))
    systemd.service(name="Daily account job timer enabled", service="govmail-daily.timer", running=True, enabled=True)
    server.shell(
        name="Sync the account store with the directory (existing passwords kept)",
        commands=[cmd],
        _if=lambda: bool(new) or directory.did_change() or tool.did_change() or not stored,
    )
