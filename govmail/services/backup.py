"""Backups (borgbackup over SSH to the province's backup host) and mail-log retention.

Mail host (`configure_mail`): the backup tool (govmail/host/backup.py), its settings, the province's
passphrase and SSH key (from the controller's secrets directory, govmail/secrets.py), the backup
and late-check timers, and logrotate keeping the mail logs for the province's period.
Backup host (`configure_backup_host`): a `govmail-backup` user whose only SSH use is
`borg serve --append-only` into the mail host's repository, the repository itself (made once), and
the daily pruning to the province's retention.

Why borgbackup: it is in Debian, encrypts and deduplicates, and its server side can be forced to
append-only per SSH key, so a compromised mail host cannot delete or rewrite its own backups; the
backup host prunes on its own schedule. (restic needs its REST server for that.)
"""

from __future__ import annotations

import shlex
from pathlib import Path

from pyinfra.operations import files, server, systemd

from . import base
from ..ops import config_file, file_exists, json_bytes
from ..render import PATHS, render
from ..secrets import backup_secrets

TOOL = Path(__file__).resolve().parent.parent / "host" / "backup.py"
CONF_DIR = "/etc/govmail/backup"
REPO_ROOT = "/srv/govmail-backup"
BACKUP_USER = "govmail-backup"


def repo_path(cfg) -> str:
    return f"{REPO_ROOT}/{cfg.mail_host}"


def repo_url(cfg) -> str:
    return f"ssh://{BACKUP_USER}@{cfg.backup_host}{repo_path(cfg)}"


def install(cfg) -> None:
    base.packages("Install borgbackup and logrotate", ["borgbackup", "logrotate"])


def _timers(cfg, units: list[tuple[str, str]]) -> None:
    ops = [config_file(name=f"Unit {u}", dest=f"/etc/systemd/system/{u}", content=render(t, cfg)) for u, t in units]
    systemd.daemon_reload(name="systemd picks up the backup units", _if=lambda: any(o.did_change() for o in ops))


def configure_mail(cfg) -> None:
    """The mail host's side. Without a backup host in the data, only the log retention."""
    files.line(
        name="Debian's rsyslog rotation leaves mail.log to govmail's (kept for the province's period)",
        path="/etc/logrotate.d/rsyslog", line=r"^/var/log/mail\.log$", present=False,
    )
    config_file(
        name=f"Mail logs kept {cfg.policy.logs.retention_months} months ({cfg.cite('logs')})",
        dest="/etc/logrotate.d/govmail-mail", content=render("logrotate/govmail-mail.j2", cfg),
        validate="logrotate -d {new}",
    )
    if not cfg.backup_host:
        return
    sec = backup_secrets(cfg.key, f"govmail-backup@{cfg.mail_host}")
    files.directory(name="Backup settings directory", path=CONF_DIR, mode="0700")
    config_file(name="Backup passphrase (from the controller's secrets)", dest=f"{CONF_DIR}/passphrase",
                content=sec["passphrase"], mode=0o600)
    config_file(name="Backup SSH key (from the controller's secrets)", dest=f"{CONF_DIR}/id_ed25519",
                content=sec["ssh_key"], mode=0o600)
    settings = {
        "repo": repo_url(cfg), "domain": cfg.domain, "article": cfg.cite("backup"),
        "max_age_hours": cfg.policy.backup.max_age_hours, "passphrase_file": f"{CONF_DIR}/passphrase",
        "ssh_key": f"{CONF_DIR}/id_ed25519", "known_hosts": f"{CONF_DIR}/known_hosts",
    }
    config_file(name="Backup settings", dest=f"{CONF_DIR}/backup.json", content=json_bytes(settings), mode=0o600)
    config_file(name="Backup tool", dest=f"{PATHS['lib']}/backup", content=TOOL.read_bytes(), mode=0o755)
    files.directory(name="Backup staging area", path="/var/backups/govmail", mode="0711")
    files.directory(name="Backup staging area for mail (Dovecot's copies)", path="/var/backups/govmail/mail",
                    user="vmail", group="vmail", mode="0700")
    _timers(cfg, [
        ("govmail-backup.service", "systemd/govmail-backup.service.j2"),
        ("govmail-backup.timer", "systemd/govmail-backup.timer.j2"),
        ("govmail-backup-check.service", "systemd/govmail-backup-check.service.j2"),
        ("govmail-backup-check.timer", "systemd/govmail-backup-check.timer.j2"),
    ])
    for t in ("govmail-backup.timer", "govmail-backup-check.timer"):
        systemd.service(name=f"{t} enabled", service=t, running=True, enabled=True)


def configure_backup_host(cfg) -> None:
    sec = backup_secrets(cfg.key, f"govmail-backup@{cfg.mail_host}")
    server.user(name="User that receives the backups", user=BACKUP_USER, home=REPO_ROOT, shell="/bin/sh",
                system=True, create_home=True)
    files.directory(name="Backup repositories", path=REPO_ROOT, user=BACKUP_USER, group=BACKUP_USER, mode="0700")
    files.directory(name="SSH directory of the backup user", path=f"{REPO_ROOT}/.ssh", user=BACKUP_USER,
                    group=BACKUP_USER, mode="0700")
    # The mail host's key may only run borg, append-only, in its own repository.
    key = sec["ssh_public"].decode().strip()
    forced = f"borg serve --append-only --restrict-to-repository {repo_path(cfg)}"
    config_file(name=f"{cfg.mail_host} may only append to its repository",
                dest=f"{REPO_ROOT}/.ssh/authorized_keys", content=f'command="{forced}",restrict {key}\n',
                mode=0o600, user=BACKUP_USER, group=BACKUP_USER)
    files.directory(name="Backup settings directory", path=CONF_DIR, mode="0755")
    passphrase = f"{CONF_DIR}/{cfg.mail_host}.passphrase"
    config_file(name="Passphrase for pruning (from the controller's secrets)", dest=passphrase,
                content=sec["passphrase"], mode=0o400, user=BACKUP_USER, group=BACKUP_USER)
    repo = repo_path(cfg)
    if not file_exists(f"{repo}/config"):
        server.shell(
            name=f"Encrypted repository for {cfg.mail_host} (made once)",
            commands=[f"runuser -u {BACKUP_USER} -- env BORG_PASSCOMMAND={shlex.quote('cat ' + passphrase)} "
                      f"BORG_BASE_DIR={REPO_ROOT}/.borg borg init --encryption=repokey-blake2 {repo}"],
        )
    extra = {"repo": repo, "repo_root": REPO_ROOT, "passphrase": passphrase}
    ops = [config_file(name=f"Unit {u}", dest=f"/etc/systemd/system/{u}", content=render(t, cfg, **extra))
           for u, t in (("govmail-prune.service", "systemd/govmail-prune.service.j2"),
                        ("govmail-prune.timer", "systemd/govmail-prune.timer.j2"))]
    systemd.daemon_reload(name="systemd picks up the pruning units", _if=lambda: any(o.did_change() for o in ops))
    systemd.service(name="govmail-prune.timer enabled", service="govmail-prune.timer", running=True, enabled=True)

