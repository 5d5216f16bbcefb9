"""The password service: users change their own password over HTTPS (govmail/host/passwd_service.py).

A first login (DN Art. 12.1, LC Art. 6.3/7.3, TN Art. 9.1) and an expired password (LC Art. 4.2)
are refused by Dovecot with the address of this page; changing the password there lifts the block.
templates/systemd/govmail-passwd.service.j2 -> /etc/systemd/system/govmail-passwd.service.
"""

from __future__ import annotations

from ..render import render
from ..service import File, Service, Unit


def service(ctx) -> Service:
    port = ctx.cfg.model.password_change.port
    return Service(
        name="passwd",
        files=[
            File("/etc/systemd/system/govmail-passwd.service", render("systemd/govmail-passwd.service.j2", ctx.cfg),
                 action="restart"),
        ],
        # systemd says "running" before the service listens: it is up when it answers on its port.
        units=[Unit("govmail-passwd", ready=f"bash -c 'echo > /dev/tcp/127.0.0.1/{port}' 2>/dev/null",
                    ready_timeout=30)],
        actions={"restart": "systemctl restart govmail-passwd"},
        # A new certificate, or new host tools (its program among them).
        reacts={"tls": "restart", "host_tools": "restart"},
    )
