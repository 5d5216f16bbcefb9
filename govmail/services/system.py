"""The host baseline a mail service that runs day and night needs, on every govmail host (mail and
backup):

- **sshd, keys only** (templates/system/00-govmail.conf.j2 -> /etc/ssh/sshd_config.d/00-govmail.conf):
  no password or keyboard-interactive login, root by key only. sshd keeps the first value it reads
  and reads its drop-ins in name order, so 00- wins over a later drop-in (one saying
  `PermitRootLogin yes`, say); checked by `sshd -t` before it replaces the live file, applied with a
  reload (open sessions stay);
- **the clock** (systemd-timesyncd): DKIM signatures, TLS, the logs' evidence and every timer depend
  on it. Inside a container the unit skips itself (the machine's clock is the container's), which
  counts as done;
- **every enabled timer has a next run**: Debian enables a packaged timer (logrotate, PHP's session
  cleaner, Roundcube's garbage collection) when it installs it, but govmail's install guard refuses
  its start, so without this it would first run after a reboot (contract.IDLE_TIMERS_COMMAND).
"""

from __future__ import annotations

from ..host import contract
from ..render import render
from ..service import Ensure, File, Service, Validator

SSHD = "/etc/ssh/sshd_config.d/00-govmail.conf"


def skipped_or_running(unit: str) -> str:
    """A shell check: the unit runs, or systemd skipped it by its own condition."""
    return (f"systemctl is-active -q {unit} || {{ [ \"$(systemctl show -P ConditionResult {unit})\" = no ] && "
            f"[ \"$(systemctl show -P ConditionTimestampMonotonic {unit})\" != 0 ]; }}")


def service(ctx) -> Service:
    return Service(
        name="system",
        # logrotate: on the backup host too (apt's, unattended-upgrades' and sshd's logs are files there).
        packages=("openssh-server", "systemd-timesyncd", "logrotate"),
        ensures=[
            Ensure("the clock is kept by systemd-timesyncd (skipped in a container)", skipped_or_running(
                "systemd-timesyncd"), "systemctl enable --now systemd-timesyncd >/dev/null 2>&1; "
                f"{skipped_or_running('systemd-timesyncd')}", after_files=True),
            Ensure("every enabled timer has a next run", f"test -z \"$({contract.IDLE_TIMERS_COMMAND})\"",
                   f"for t in $({contract.IDLE_TIMERS_COMMAND}); do systemctl start \"$t\" || exit 1; done",
                   after_files=True),
        ],
        files=[File(SSHD, render("system/00-govmail.conf.j2", ctx.cfg))],
        validator=Validator("/etc/ssh/sshd_config.d", "sshd -t -f {dir}/00-govmail.conf"),
        actions={"reload": "systemctl reload ssh"},
    )
