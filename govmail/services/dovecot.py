"""Dovecot: IMAP, POP3, LMTP, SASL for Postfix, quota, quota-status, quota warnings.

templates/dovecot/dovecot.conf.j2 -> /etc/dovecot/dovecot.conf, validated by `doveconf` before it
replaces the live file; Dovecot is reloaded only when it changed.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra.operations import systemd

from ..ops import DOVECOT_VALIDATE, config_file, reload_when
from ..render import PATHS, render

QUOTA_WARNING = Path(__file__).resolve().parent.parent / "host" / "quota_warning.py"
POSTLOGIN = Path(__file__).resolve().parent.parent / "host" / "postlogin.sh"


def configure(cfg) -> list:
    config_file(name="Quota warning program", dest=PATHS["quota_warning"], content=QUOTA_WARNING.read_bytes(), mode=0o755)
    config_file(name="Post-login program (last-login stamp)", dest=f"{PATHS['lib']}/postlogin",
                content=POSTLOGIN.read_bytes(), mode=0o755)
    conf = config_file(
        name="/etc/dovecot/dovecot.conf", dest="/etc/dovecot/dovecot.conf",
        content=render("dovecot/dovecot.conf.j2", cfg), validate=DOVECOT_VALIDATE, pending="dovecot",
    )
    return [conf]


def activate(cfg, changed: list) -> None:
    systemd.service(name="Dovecot enabled and running", service="dovecot", running=True, enabled=True)
    reload_when("Reload Dovecot (its configuration changed)", "systemctl reload-or-restart dovecot", "dovecot", changed)
