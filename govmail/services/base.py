"""Base system of a mail host: the vmail user, govmail's directories, mail logs (rsyslog).

The packages every mail host needs whatever its services: OpenSSL, Python 3 (the host's own tools
use its standard library only), CA certificates, rsyslog (writes /var/log/mail.log, kept for the
province's period by govmail/services/logs.py).

With MX hosts apart (several MX) or stores apart, each sends its mail log to the mail host, whose
reports count the mail they receive, refuse and deliver:

    templates/rsyslog/govmail-to-store.conf.j2 -> /etc/rsyslog.d/govmail-to-store.conf  (an MX apart)
    templates/rsyslog/govmail-mx-logs.conf.j2  -> /etc/rsyslog.d/govmail-mx-logs.conf   (the store's host)

checked by `rsyslogd -N1` on Debian's rsyslog.conf reading the staged directory, then rsyslog
restarted (it reads its configuration only when it starts). One-host provinces have neither.
"""

from __future__ import annotations

from ..data.text import Trusted
from ..data.text import host_address as address
from ..host import contract
from ..render import render
from ..service import Ensure, File, Service, Unit, Validator, directory

# Debian's rsyslog.conf, reading the staged /etc/rsyslog.d instead of the live one.
CHECK = ("c=$(mktemp) && sed 's#/etc/rsyslog.d/#{dir}/#g' /etc/rsyslog.conf > \"$c\" && rsyslogd -N1 -f \"$c\" "
         ">/dev/null; r=$?; rm -f \"$c\"; exit $r")


def mail_log_files(ctx) -> list[File]:
    """The mail log's way from each MX host or store apart to the mail host (none in a one-host province)."""
    cfg = ctx.cfg
    apart = [*(h for h in cfg.mx_hosts if h != cfg.mail_host), *cfg.stores_apart]
    if not apart:
        return []
    at = {n: address(ctx.addresses.get(n, n)) for n in [cfg.mail_host, *apart]}
    if ctx.host_name in apart:
        return [File("/etc/rsyslog.d/govmail-to-store.conf",
                     render("rsyslog/govmail-to-store.conf.j2", cfg, store=at[cfg.mail_host]), action="restart")]
    if ctx.host_name != cfg.mail_host:
        return []
    senders = [Trusted(f'$fromhost-ip == "{at[n]}"' if at[n].replace(".", "").isdigit() else f'$fromhost == "{at[n]}"')
               for n in apart]
    return [File("/etc/rsyslog.d/govmail-mx-logs.conf",
                 render("rsyslog/govmail-mx-logs.conf.j2", cfg, senders=senders, names=", ".join(apart)),
                 action="restart")]


def service(ctx) -> Service:
    files = mail_log_files(ctx)
    return Service(
        name="base",
        packages=("openssl", "python3", "ca-certificates", "rsyslog"),
        files=files,
        validator=Validator("/etc/rsyslog.d", CHECK) if files else None,
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
