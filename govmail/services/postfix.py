"""Postfix: SMTP for the province's domain, submission (587 STARTTLS, 465 TLS), size limit.

templates/postfix/<file>.j2 -> /etc/postfix/<file>; main.cf and master.cf are validated with
`postconf` on a copy before they replace the live files; Postfix reloads only when a file changed.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.operations import server, systemd

from ..ops import CommandSucceeds, config_file, done, ensure_running, pending, postfix_validate, reload_when
from ..render import PATHS, render


def configure(cfg) -> tuple[list, list]:
    """Returns (files that need a reload, files that need a restart)."""
    maps = PATHS["postfix_maps"]
    reload_ops = [
        config_file(name="Postfix mailbox map (account store)", dest=f"{maps}/mailboxes.cf",
                    content=render("postfix/sqlite-mailboxes.cf.j2", cfg), group="postfix", mode=0o640,
                    pending="postfix-reload"),
        config_file(name="Postfix lists and role addresses (account store)", dest=f"{maps}/aliases.cf",
                    content=render("postfix/sqlite-aliases.cf.j2", cfg), group="postfix", mode=0o640,
                    pending="postfix-reload"),
        config_file(name="Postfix sender ownership (account store)", dest=f"{maps}/senders.cf",
                    content=render("postfix/sqlite-senders.cf.j2", cfg), group="postfix", mode=0o640,
                    pending="postfix-reload"),
        config_file(name="Postfix: where Sieve redirects may go (state domains)", dest=f"{maps}/state-domains.pcre",
                    content=render("postfix/state-domains.pcre.j2", cfg, state_domains=cfg.policy.forwarding.state_domains),
                    pending="postfix-reload"),
    ]
    # /etc/aliases in the aliases format ("name: value"), compiled to the hash map main.cf names;
    # compiled again whenever the map is older than the file (a deploy stopped in between).
    aliases = config_file(name="/etc/aliases (root -> postmaster)", dest="/etc/aliases",
                          content=render("postfix/aliases.local.j2", cfg))
    compiled = host.get_fact(CommandSucceeds, check="test -e /etc/aliases.db && ! test /etc/aliases -nt /etc/aliases.db")
    server.shell(name="postalias (/etc/aliases -> /etc/aliases.db)", commands=["postalias hash:/etc/aliases"],
                 _if=lambda: aliases.did_change() or not compiled)
    # Some main.cf/master.cf parameters (inet_protocols, inet_interfaces) only take effect on a
    # restart, and a reload that meets them stops the master: restart when these change.
    restart_ops = [
        config_file(
            name="/etc/postfix/main.cf", dest="/etc/postfix/main.cf",
            content=render("postfix/main.cf.j2", cfg), validate=postfix_validate("main.cf"), pending="postfix-restart",
        ),
        config_file(
            name="/etc/postfix/master.cf", dest="/etc/postfix/master.cf",
            content=render("postfix/master.cf.j2", cfg), validate=postfix_validate("master.cf"), pending="postfix-restart",
        ),
    ]
    return reload_ops, restart_ops


def activate(cfg, reload_ops: list, restart_ops: list) -> None:
    systemd.service(name="Postfix enabled", service="postfix", enabled=True)
    # A restart also does what a reload would: it clears both markers; a reload only when no restart.
    left_restart = pending("postfix-restart")
    reload_when("Restart Postfix (main.cf, master.cf or TLS changed)",
                f"postfix check && systemctl restart postfix && sleep 1 && postfix status && {done('postfix-reload')}",
                "postfix-restart", restart_ops)
    reload_when("Reload Postfix (its maps changed)",
                "postfix check && systemctl reload-or-restart postfix && sleep 1 && postfix status",
                "postfix-reload", reload_ops,
                also=lambda: not (left_restart or any(op.did_change() for op in restart_ops)))
    # The postfix unit is a wrapper that stays "active" even when the master is gone: ask Postfix.
    ensure_running(name="Postfix master is running", check="postfix status", start="systemctl restart postfix && sleep 1")
