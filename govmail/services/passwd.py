"""The password service: users change their own password over HTTPS (govmail/host/passwd_service.py).

A first login (DN Art. 12.1, LC Art. 6.3/7.3, TN Art. 9.1) and an expired password (LC Art. 4.2)
are refused by Dovecot with the address of this page; changing the password there lifts the block.
templates/systemd/govmail-passwd.service.j2 -> /etc/systemd/system/govmail-passwd.service.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra.operations import systemd

from ..ops import config_file, ensure_running, pending, reload_when
from ..render import PATHS, render

SERVICE = Path(__file__).resolve().parent.parent / "host" / "passwd_service.py"


def configure(cfg) -> list:
    program = config_file(name="Password service program", dest=f"{PATHS['lib']}/passwd-service",
                          content=SERVICE.read_bytes(), mode=0o755, pending="govmail-passwd")
    unit = config_file(name="Password service unit", dest="/etc/systemd/system/govmail-passwd.service",
                       content=render("systemd/govmail-passwd.service.j2", cfg), pending="govmail-passwd")
    left = pending("govmail-passwd")
    systemd.daemon_reload(name="systemd picks up the password service", _if=lambda: left or unit.did_change())
    return [program, unit]


def activate(cfg, changed: list) -> None:
    port = cfg.model.password_change.port
    systemd.service(name="Password service enabled and running", service="govmail-passwd", running=True, enabled=True)
    reload_when("Restart the password service (its program, unit or certificate changed)",
                "systemctl restart govmail-passwd", "govmail-passwd", changed)
    # The service is up when it answers on its port (systemd says "running" before it listens).
    ensure_running(
        name=f"Password service answers on port {port}",
        check=f"timeout 5 bash -c 'until echo > /dev/tcp/127.0.0.1/{port}; do sleep 0.2; done' 2>/dev/null",
        start="true",
    )
