"""Base system of a mail host: the vmail user, govmail's directories, mail logs (rsyslog).

The packages every mail host needs whatever its services: OpenSSL, Python 3 (the host's own tools
use its standard library only), CA certificates, rsyslog (writes /var/log/mail.log, kept for the
province's period by govmail/services/logs.py).
"""

from __future__ import annotations

from ..host import contract
from ..service import Ensure, Service, Unit, directory


def service(ctx) -> Service:
    return Service(
        name="base",
        packages=("openssl", "python3", "ca-certificates", "rsyslog"),
        ensures=[
            Ensure("group vmail", "getent group vmail", f"groupadd --system --gid {contract.VMAIL_UID} vmail"),
            Ensure("user vmail (owns every mailbox)", "getent passwd vmail",
                   f"useradd --system --uid {contract.VMAIL_UID} --gid vmail --home-dir {contract.PATHS['vmail']} "
                   "--shell /usr/sbin/nologin --no-create-home vmail"),
            directory(contract.PATHS["vmail"], 0o750, "vmail", "vmail"),
            directory(contract.PATHS["etc"], 0o755),
            # Traversable so Dovecot and Postfix reach the store; the store itself is root:postfix 0640.
            directory(contract.PATHS["state"], 0o711),
            directory(contract.PATHS["lib"], 0o755),
        ],
        units=[Unit("rsyslog")],
        # A file taken out of /etc/rsyslog.d (contract.OWNED_DIRS) is forgotten only by a restart.
        actions={"restart": "systemctl restart rsyslog"},
    )
