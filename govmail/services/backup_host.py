"""The province's backup host: receives the mail host's backups (govmail/services/backup.py).

A `govmail-backup` user whose only SSH use is `borg serve --append-only` into the mail host's
repository (forced command on its key; each store apart has its own key and repository), the
encrypted repository itself (made once, with the
province's passphrase from the controller's secrets), and the daily pruning to the province's
retention (templates/systemd/govmail-prune.*).
"""

from __future__ import annotations

import shlex

from ..data.text import authorized_keys_command
from ..render import render
from ..service import Ensure, File, Service, Unit, directory, made_once
from .backup import BACKUP_USER, CONF_DIR, REPO_ROOT, clients, repo_path, ssh_key


def service(ctx) -> Service:
    cfg = ctx.cfg
    sec = ctx.secrets
    repos = {host: repo_path(cfg, host) for host in clients(cfg)}
    passphrase = f"{CONF_DIR}/{cfg.mail_host}.passphrase"
    # Each client's key (the mail host's, each store apart's) may only run borg, append-only, in its
    # own repository.
    keys = ""
    for host, repo in repos.items():
        forced = authorized_keys_command(f"borg serve --append-only --restrict-to-repository {shlex.quote(repo)}")
        keys += f'command="{forced}",restrict {ssh_key(ctx, host, public=True).decode().strip()}\n'
    extra = {"repos": list(repos.values()), "repo_root": REPO_ROOT, "passphrase": passphrase,
             "clients": ", ".join(repos)}
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
            *[made_once(f"encrypted repository for {host} (made once)", f"{repo}/config",
                        f"runuser -u {u} -- env BORG_PASSCOMMAND={shlex.quote('cat ' + shlex.quote(passphrase))} "
                        f"BORG_BASE_DIR={REPO_ROOT}/.borg borg init --encryption=repokey-blake2 {shlex.quote(repo)}",
                        after_files=True) for host, repo in repos.items()],
        ],
        files=[
            File(f"{REPO_ROOT}/.ssh/authorized_keys", keys, mode=0o600, user=u, group=u, action=None),
            File(passphrase, sec["passphrase"], mode=0o400, user=u, group=u, action=None, secret=True),
            *[File(f"/etc/systemd/system/{name}", render(f"systemd/{name}.j2", cfg, **extra), action=None)
              for name in ("govmail-prune.service", "govmail-prune.timer")],
        ],
        units=[Unit("govmail-prune.timer")],
    )
