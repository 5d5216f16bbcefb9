"""What the data says of a province as every other layer needs it: where users change their password,
the password service's addresses, where the DKIM keys lie on the mail host, who gets the reports,
who is deploying.

Services declare with these facts, and the compliance checks, the administration commands and the
tests read the same ones: none of them asks a service module. Pure functions of the province's
config (and, for the operator, of this machine).
"""

from __future__ import annotations

import getpass
import socket

from ..host import contract


def operator() -> str:
    """Who deploys or administers, for the host's audit log: user@machine of the controller."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def password_url(cfg) -> str:
    """Where a user whose password must change is sent: the web mail, whose login takes them to the
    change form (govmail/services/webmail.py)."""
    return f"https://{cfg.mail_host}/"


def password_service_url(cfg) -> str:
    """The password service from outside (`govmail passwd`): its API under this address."""
    port = cfg.model.password_change.port
    return f"https://{cfg.mail_host}{'' if port == 443 else f':{port}'}/"


def password_api(cfg) -> str:
    """The password service's API on the host itself (web mail's password driver; `govmail passwd`
    reaches the same API from outside on the host's name)."""
    return f"https://127.0.0.1:{cfg.model.password_change.port}/api/"


def dkim_paths(cfg, domain: str | None = None) -> tuple[str, str]:
    """(private key, DNS record) of a domain's DKIM key on the mail host (default: the province's
    domain; a merged province has one per predecessor domain too, `cfg.dkim_keys`)."""
    domain = domain or cfg.domain
    stem = f"{contract.PATHS['dkim']}/{domain}.{dict(cfg.dkim_keys)[domain]}"
    return stem + ".key", stem + ".txt"


def report_recipients(cfg) -> list[str]:
    """Who gets the operations and usage reports: the province's administrators (role admin), else its
    postmaster."""
    admins = [a.address for a in cfg.accounts if a.role == "admin" and a.status == "active"]
    return admins or [cfg.postmaster]
