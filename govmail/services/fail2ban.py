"""fail2ban: clients that keep failing to log in are banned from the mail ports, with nftables.

templates/fail2ban/jail.d/govmail.local.j2 -> /etc/fail2ban/jail.d/govmail.local (jails for SMTP
AUTH, IMAP/POP3 and the password page; times from `policy.bruteforce`), and the filters for Dovecot
2.4's wording and for the password service. The whole configuration is tested by
`fail2ban-client -t` on a copy before it replaces the live files; fail2ban reloads when it changed.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.operations import systemd

from . import base
from ..ops import config_file, reload_when
from ..render import render

# The staged file is tested inside a copy of /etc/fail2ban, under its real name.
VALIDATE = (
    "sh -c 'd=$(mktemp -d) && cp -a /etc/fail2ban/. \"$d\"/ && cp \"$1\" \"$d/$2\" && "
    "fail2ban-client -c \"$d\" -t >/dev/null; rc=$?; rm -rf \"$d\"; exit $rc' _ {new} "
)


def install(cfg) -> None:
    base.packages("Install fail2ban (nftables, journal reader)", ["fail2ban", "nftables", "python3-systemd"])


def configure(cfg) -> list:
    files = [
        ("filter.d/govmail-passwd.conf", "fail2ban/filter.d/govmail-passwd.conf.j2"),
        ("filter.d/govmail-dovecot.conf", "fail2ban/filter.d/govmail-dovecot.conf.j2"),
        ("jail.d/govmail.local", "fail2ban/jail.d/govmail.local.j2"),
    ]
    return [
        config_file(name=f"/etc/fail2ban/{rel}", dest=f"/etc/fail2ban/{rel}",
                    content=render(tpl, cfg, lab_controller=host.data.get("lab_controller")),
                    validate=VALIDATE + rel, pending="fail2ban")
        for rel, tpl in files
    ]


def activate(cfg, changed: list) -> None:
    systemd.service(name="fail2ban enabled and running", service="fail2ban", running=True, enabled=True)
    # Just started (first deploy), the server needs a moment before it takes commands.
    reload_when("Reload fail2ban (its jails or filters changed)",
                "timeout 60 sh -c 'until fail2ban-client ping >/dev/null 2>&1; do sleep 0.5; done' && fail2ban-client reload",
                "fail2ban", changed)
