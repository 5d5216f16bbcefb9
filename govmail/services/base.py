"""Base system of a mail host: packages, the vmail user, govmail's directories, mail logs.

Stages: install (packages), configure (users, directories).
"""

from __future__ import annotations

from pyinfra.operations import apt, files, server

from ..render import PATHS, VMAIL_UID

PACKAGES = [
    "postfix",
    "dovecot-core",
    "dovecot-imapd",
    "dovecot-pop3d",
    "dovecot-lmtpd",
    # The account store: SQLite, read by Dovecot and Postfix.
    "dovecot-sqlite",
    "postfix-sqlite",
    "openssl",
    # The host's own tools (account store, daily job, password service): standard library only.
    "python3",
    "ca-certificates",
    # Mail logs to /var/log/mail.log (kept for the province's retention period).
    "rsyslog",
]


def install(cfg) -> None:
    apt.update(name="Refresh the package index (at most hourly)", cache_time=3600)
    apt.packages(name="Install the mail packages", packages=PACKAGES, no_recommends=True)


def install_backup_host(cfg) -> None:
    apt.update(name="Refresh the package index (at most hourly)", cache_time=3600)


def configure(cfg) -> None:
    server.group(name="Group vmail", group="vmail", gid=VMAIL_UID, system=True)
    server.user(
        name="User vmail (owns every mailbox)", user="vmail", uid=VMAIL_UID, group="vmail",
        home=PATHS["vmail"], shell="/usr/sbin/nologin", system=True, create_home=False,
    )
    files.directory(name="Mailbox root", path=PATHS["vmail"], user="vmail", group="vmail", mode="750")
    files.directory(name="govmail configuration", path=PATHS["etc"], mode="755")
    # Traversable so Dovecot and Postfix reach the store; the store itself is root:postfix 0640.
    files.directory(name="govmail state", path=PATHS["state"], user="root", group="root", mode="711")
    files.directory(name="govmail programs", path=PATHS["lib"], mode="755")
