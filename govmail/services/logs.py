"""Mail-log retention (`policy.logs`): /var/log/mail.log kept for the province's period.

rsyslog (govmail/services/base.py) writes the log; templates/logrotate/govmail-mail.j2 ->
/etc/logrotate.d/govmail-mail rotates it monthly and keeps the province's number of months,
checked by `logrotate -d` before it replaces the live file. Debian's own rsyslog rotation would
otherwise drop mail.log after four weeks, so its line is taken out of /etc/logrotate.d/rsyslog.
"""

from __future__ import annotations

from ..render import render
from ..service import Ensure, File, Service, Validator

RSYSLOG = "/etc/logrotate.d/rsyslog"


def service(ctx) -> Service:
    cfg = ctx.cfg
    return Service(
        name="logs",
        packages=("logrotate",),
        ensures=[Ensure(
            "Debian's rsyslog rotation leaves mail.log to govmail's", f"! grep -qx /var/log/mail.log {RSYSLOG}",
            f"sed -i '\\#^/var/log/mail\\.log$#d' {RSYSLOG}", after_files=False)],
        files=[File("/etc/logrotate.d/govmail-mail", render("logrotate/govmail-mail.j2", cfg), action=None)],
        validator=Validator("/etc/logrotate.d", "logrotate -d {dir}/govmail-mail >/dev/null 2>&1 || "
                                                 "logrotate -d {dir}/govmail-mail"),
    )
