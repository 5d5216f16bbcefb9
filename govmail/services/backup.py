"""Backups (borgbackup over SSH to the province's backup host): the mail host's side.

Mail host and each store apart (this module, a repository each): the backup tool (govmail/host/backup.py), its settings, the province's
passphrase and SSH key (from the controller's secrets directory, govmail/secrets.py), the backup
and late-check timers. Backup host (govmail/services/backup_host.py): a `govmail-backup` user whose
only SSH use is `borg serve --append-only` into the mail host's repository, the repository itself
(made once), and the daily pruning to the province's retention.

Why borgbackup: it is in Debian, encrypts and deduplicates, and its server side can be forced to
append-only per SSH key, so a compromised mail host cannot delete or rewrite its own backups; the
backup host prunes on its own schedule. (restic needs its REST server for that.)
"""

from __future__ import annotations

from ..host import contract
from ..render import render
from ..service import File, Service, Unit, directory, json_bytes

CONF_DIR = "/etc/govmail/backup"
REPO_ROOT = "/srv/govmail-backup"
BACKUP_USER = "govmail-backup"
STAGE = contract.PATHS["backup_stage"]


def clients(cfg) -> list[str]:
    """The hosts that back up their mail: the mail host, then each store apart (a repository each)."""
    return [cfg.mail_host, *cfg.stores_apart]


def repo_path(cfg, host: str | None = None) -> str:
    return f"{REPO_ROOT}/{host or cfg.mail_host}"


def repo_url(cfg, host: str | None = None) -> str:
    return f"ssh://{BACKUP_USER}@{cfg.backup_host}{repo_path(cfg, host)}"


def ssh_key(ctx, host: str, public: bool = False) -> bytes:
    """The SSH key `host` reaches the backup host with: the province's for the mail host, its own for
    a store apart (govmail/secrets.py)."""
    kind = "ssh_public" if public else "ssh_key"
    return ctx.secrets[kind if host == ctx.cfg.mail_host else f"{kind}:{host}"]


def service(ctx) -> Service:
    """The mail host's side; nothing without a backup host in the data."""
    cfg = ctx.cfg
    if not cfg.backup_host:
        return None
    sec = ctx.secrets
    settings = {
        "repo": repo_url(cfg, ctx.host_name), "domain": cfg.domain, "article": cfg.cite("backup"),
        "max_age_hours": cfg.policy.backup.max_age_hours, "passphrase_file": f"{CONF_DIR}/passphrase",
        "ssh_key": f"{CONF_DIR}/id_ed25519", "known_hosts": f"{CONF_DIR}/known_hosts",
        # A store apart backs up the mailboxes it holds (the account store is the mail host's to back up).
        **({"store": ctx.host_name} if ctx.host_name in cfg.stores_apart else {}),
    }
    units = ("govmail-backup.service", "govmail-backup.timer", "govmail-backup-check.service",
             "govmail-backup-check.timer")
    return Service(
        name="backup",
        packages=("borgbackup",),
        ensures=[
            directory(CONF_DIR, 0o700),
            directory(STAGE, 0o711),
            directory(f"{STAGE}/mail", 0o700, "vmail", "vmail"),  # Dovecot's copies of the mailboxes
        ],
        files=[
            # From the controller's secrets (govmail/secrets.py), so a rebuilt host gets the same ones.
            File(f"{CONF_DIR}/passphrase", sec["passphrase"], mode=0o600, action=None, secret=True),
            File(f"{CONF_DIR}/id_ed25519", ssh_key(ctx, ctx.host_name), mode=0o600, action=None, secret=True),
            File(f"{CONF_DIR}/backup.json", json_bytes(settings), mode=0o600, action=None),
            *[File(f"/etc/systemd/system/{u}", render(f"systemd/{u}.j2", cfg), action=None) for u in units],
        ],
        units=[Unit("govmail-backup.timer"), Unit("govmail-backup-check.timer")],
    )
