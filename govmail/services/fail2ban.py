"""fail2ban: clients that keep failing to log in are banned from the mail ports, with nftables.

templates/fail2ban/jail.d/govmail.local.j2 -> /etc/fail2ban/jail.d/govmail.local (jails for SMTP
AUTH, IMAP/POP3, the password service and the web mail; times from `policy.bruteforce`), and the filters for Dovecot
2.4's wording and for the password service. The whole configuration is tested by
`fail2ban-client -t` on a copy of /etc/fail2ban before it replaces the live files; fail2ban reloads
when it changed.
"""

from __future__ import annotations

from ..render import render
from ..service import File, Service, Unit, Validator

FILES = ("filter.d/govmail-passwd.conf", "filter.d/govmail-dovecot.conf", "filter.d/govmail-webmail.conf",
         "jail.d/govmail.local")


def service(ctx) -> Service:
    # `trusted`: addresses the target says are never banned (the machine running a lab's tests).
    extra = dict(trusted_clients=list(ctx.trusted_clients))
    return Service(
        name="fail2ban",
        packages=("fail2ban", "nftables", "python3-systemd"),
        files=[File(f"/etc/fail2ban/{f}", render(f"fail2ban/{f}.j2", ctx.cfg, **extra)) for f in FILES],
        validator=Validator("/etc/fail2ban", "fail2ban-client -c {dir} -t >/dev/null"),
        units=[Unit("fail2ban")],
        # Just started, the server needs a moment before it takes commands.
        actions={"reload": "timeout 60 sh -c 'until fail2ban-client ping >/dev/null 2>&1; do sleep 0.5; done' "
                           "&& fail2ban-client reload >/dev/null"},
    )
