"""govmail deploy: turn bare Debian 13 hosts into a province's mail host and its backup host.

    pyinfra inventories/<province>.py deploy.py

The inventory names the province (host data `province`) and each host's roles; its data file
group_data/<province>.yml was validated when the inventory loaded, before any host was contacted.
Each service has its module in govmail/services/ with install / configure / activate stages;
configuration files are validated on the host before they replace live ones, and services reload
only when their files changed.
"""

from pyinfra import host

from govmail.data import load_province
from govmail.services import accounts, backup, base, clamav, dovecot, fail2ban, passwd, postfix, rspamd, tls

cfg = load_province(host.data.province)
roles = host.data.get("roles", ["mail"])

if "mail" in roles:
    # install
    base.install(cfg)
    backup.install(cfg)
    fail2ban.install(cfg)
    rspamd.install(cfg)
    clamav.install(cfg)

    # configure
    base.configure(cfg)
    tls_ops = tls.configure(cfg)
    accounts.configure(cfg)
    dovecot_ops = dovecot.configure(cfg)
    postfix_reload, postfix_restart = postfix.configure(cfg)
    passwd_ops = passwd.configure(cfg)
    backup.configure_mail(cfg)
    fail2ban_ops = fail2ban.configure(cfg)
    clamav_ops = clamav.configure(cfg)
    rspamd_ops = rspamd.configure(cfg)

    # activate
    dovecot.activate(cfg, dovecot_ops + tls_ops)
    clamav.activate(cfg, clamav_ops)
    rspamd.activate(cfg, rspamd_ops)
    postfix.activate(cfg, postfix_reload, postfix_restart + tls_ops)
    passwd.activate(cfg, passwd_ops + tls_ops)
    fail2ban.activate(cfg, fail2ban_ops)

if "backup" in roles:
    base.install_backup_host(cfg)
    backup.install(cfg)
    backup.configure_backup_host(cfg)
