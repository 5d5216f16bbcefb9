"""Postfix: SMTP for the province's domain, submission (587 STARTTLS, 465 TLS), size limit.

templates/postfix/<file>.j2 -> /etc/postfix/<file>; main.cf and master.cf are validated with
`postconf` on a copy before they replace the live files; Postfix reloads only when a file changed.
"""

from __future__ import annotations

from pyinfra.operations import server, systemd

from ..ops import config_file, postfix_validate
from ..render import PATHS, render


def configure(cfg) -> list:
    maps = PATHS["postfix_maps"]
    ops = [
        config_file(name="Postfix mailbox map", dest=f"{maps}/mailboxes", content=render("postfix/mailboxes.j2", cfg)),
        config_file(name="Postfix lists and role addresses", dest=f"{maps}/aliases", content=render("postfix/aliases.j2", cfg)),
        config_file(name="/etc/aliases (root -> postmaster)", dest="/etc/aliases", content=render("postfix/aliases.local.j2", cfg)),
        config_file(
            name="/etc/postfix/main.cf", dest="/etc/postfix/main.cf",
            content=render("postfix/main.cf.j2", cfg), validate=postfix_validate("main.cf"),
        ),
        config_file(
            name="/etc/postfix/master.cf", dest="/etc/postfix/master.cf",
            content=render("postfix/master.cf.j2", cfg), validate=postfix_validate("master.cf"),
        ),
    ]
    return ops


def activate(cfg, changed: list) -> None:
    systemd.service(name="Postfix enabled and running", service="postfix", running=True, enabled=True)
    server.shell(
        name="Reload Postfix (its configuration changed)",
        commands=["postfix check && systemctl reload-or-restart postfix"],
        _if=lambda: any(op.did_change() for op in changed),
    )
