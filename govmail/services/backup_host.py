"""The province's backup host: receives the mail host's backups (govmail/services/backup.py).

A `govmail-backup` user whose only SSH use is `borg serve --append-only` into the mail host's
repository (forced command on its key), the encrypted repository itself (made once, with the
province's passphrase from the controller's secrets), and the daily pruning to the province's
retention (templates/systemd/govmail-prune.*).
"""

from __future__ import annotations

import shlex

from ..data.text import authorized_keys_command
from ..render import render
from ..service import Ensure, File, Service, Unit, directory, made_once
from .backup import BACKUP_USER, CONF_DIR, REPO_ROOT, repo_path


def service(ctx) -> Service:
    cfg = ctx.cfg
    sec = ctx.secrets
    repo = repo_path(cfg)
    passphrase = f"{CONF_DIR}/{cfg.mail_host}.passphrase"
    # The mail host's key may only run borg, append-only, in its own repository.
    key = sec["ssh_public"].decode().strip()
    forced = authorized_keys_command(f"borg serve --append-only --restrict-to-repository {shlex.quote(repo)}")
    extra = {"repo": repo, "repo_root": REPO_ROOT, "passphrase": passphrase}
    u = BACKUP_USER
    return Service(
        name="backup-host",
        packages=("borgbackup",),
        ensures=[
            Ensure("user that receives the backups", f"getent passwd {u}",
                   f"useradd --system --home-dir {REPO_ROOT} --create-home --shell /bin/sh {u}"),
            directory(REPO_ROOT, 0o700, u, u),
            directory(f"{REPO_ROOT}/.ssh", 0o700, u, u),
            directory(CONF_DIR, 0o755),
            made_once(f"encrypted repository for {cfg.mail_host} (made once)", f"{repo}/config",
                      f"runuser -u {u} -- env BORG_PASSCOMMAND={shlex.quote('cat ' + shlex.quote(passphrase))} "
                      f"BORG_BASE_DIR={REPO_ROOT}/.borg borg init --encryption=repokey-blake2 {shlex.quote(repo)}",
                      after_files=True),
        ],
        files=[
            File(f"{REPO_ROOT}/.ssh/authorized_keys", f'command="{forced}",restrict {key}\n', mode=0o600,
                 user=u, group=u, action=None),
            File(passphrase, sec["passphrase"], mode=0o400, user=u, group=u, action=None, secret=True),
            *[File(f"/etc/systemd/system/{name}", render(f"systemd/{name}.j2", cfg, **extra), action=None)
              for name in ("govmail-prune.service", "govmail-prune.timer")],
        ],
        units=[Unit("govmail-prune.timer")],
    )
