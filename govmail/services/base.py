"""Base system of a mail host: packages, the vmail user, govmail's directories, mail logs.

Stages: install (packages), configure (users, directories).
"""

from __future__ import annotations

from pyinfra.operations import apt, files, server, systemd

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
    # Where Sieve redirects may go (state domains): a PCRE map.
    "postfix-pcre",
    # Sieve filters (and ManageSieve, so users edit them with their mail client).
    "dovecot-sieve",
    "dovecot-managesieved",
    "openssl",
    # The host's own tools (account store, daily job, password service): standard library only.
    "python3",
    "ca-certificates",
    # Mail logs to /var/log/mail.log (kept for the province's retention period).
    "rsyslog",
]


# Debian starts a service as soon as its package is installed, with Debian's default
# configuration, and restarts it on every plugin trigger. govmail installs with GOVMAIL_INSTALLING
# set; this policy-rc.d then refuses those starts, and each service is started by its module's
# activate stage with govmail's configuration. Any other apt run (security updates) is unaffected.
POLICY_RC_D = """#!/bin/sh
# Managed by govmail (govmail/services/base.py); edits here are overwritten by the next deploy.
# govmail: no service start while govmail installs packages (see govmail/services/base.py).
[ -n "$GOVMAIL_INSTALLING" ] && exit 101
exit 0
"""
INSTALLING = {"GOVMAIL_INSTALLING": "1"}


def packages(name: str, packages: list[str]) -> None:
    """apt install without recommends, and without Debian starting the services it installs."""
    apt.packages(name=name, packages=packages, no_recommends=True, _env=INSTALLING)


def install(cfg) -> None:
    apt.update(name="Refresh the package index (at most hourly)", cache_time=3600)
    policy_rc_d()
    packages("Install the mail packages", PACKAGES)


def policy_rc_d() -> None:
    from io import StringIO

    files.put(name="policy-rc.d: packages installed by govmail are started by govmail",
              src=StringIO(POLICY_RC_D), dest="/usr/sbin/policy-rc.d", mode="755")


def install_backup_host(cfg) -> None:
    apt.update(name="Refresh the package index (at most hourly)", cache_time=3600)
    policy_rc_d()


def configure(cfg) -> None:
    server.group(name="Group vmail", group="vmail", gid=VMAIL_UID, system=True)
    server.user(
        name="User vmail (owns every mailbox)", user="vmail", uid=VMAIL_UID, group="vmail",
        home=PATHS["vmail"], shell="/usr/sbin/nologin", system=True, create_home=False,
    )
    files.directory(name="Mailbox root", path=PATHS["vmail"], user="vmail", group="vmail", mode="750")
    # Dovecot puts its sockets for Postfix (auth, LMTP, quota-status) here; Postfix makes it on its
    # first start, which comes after Dovecot's (packages are installed without starting services).
    files.directory(name="Postfix's private socket directory", path="/var/spool/postfix/private",
                    user="postfix", group="root", mode="700")
    # Mail logs (policy.logs): rsyslog writes /var/log/mail.log. Installed without being started.
    systemd.service(name="rsyslog enabled and running", service="rsyslog", running=True, enabled=True)
    files.directory(name="govmail configuration", path=PATHS["etc"], mode="755")
    # Traversable so Dovecot and Postfix reach the store; the store itself is root:postfix 0640.
    files.directory(name="govmail state", path=PATHS["state"], user="root", group="root", mode="711")
    files.directory(name="govmail programs", path=PATHS["lib"], mode="755")
