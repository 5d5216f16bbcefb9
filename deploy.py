"""govmail deploy: turn a bare Debian 13 host into a province's mail host.

    pyinfra inventories/<province>.py deploy.py

The inventory names the province (host data `province`); its data file group_data/<province>.yml
was validated when the inventory loaded, before any host was contacted. Each service has its
module in govmail/services/ with install / configure / activate stages; configuration files are
validated on the host before they replace live ones, and services reload only when their files
changed.
"""

from pyinfra import host

from govmail.data import load_province
from govmail.services import accounts, base, dovecot, passwd, postfix, tls

cfg = load_province(host.data.province)

# install
base.install(cfg)

# configure
base.configure(cfg)
tls_ops = tls.configure(cfg)
accounts.configure(cfg)
dovecot_ops = dovecot.configure(cfg)
postfix_reload, postfix_restart = postfix.configure(cfg)
passwd_ops = passwd.configure(cfg)

# activate
dovecot.activate(cfg, dovecot_ops + tls_ops)
postfix.activate(cfg, postfix_reload, postfix_restart + tls_ops)
passwd.activate(cfg, passwd_ops + tls_ops)
