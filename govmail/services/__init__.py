"""The services: one module each, `service(ctx) -> Service` (govmail/service.py), and its templates in
templates/<service>/.

A service only declares what a host needs (packages, files, units, checks, actions); the engine
(govmail/engine.py) carries the declarations out. It may import the data (govmail/data/), the host
contract (govmail/host/contract.py), the renderer (govmail/render.py) and the service contract; never
pyinfra, the lab, the targets or the engine (tests/unit/test_structure.py). What a host of each role
runs is SERVICES below, in the order its files are installed and its daemons activated; deploy.py and
the benches read it here.

May import: data, host, monitoring (the alert rules), publish, render, service.
"""

from govmail.data.roles import expand

# Every service, in the order a host installs its files and activates its daemons (the order of
# today's one-host mail host, then the backup host's and the monitor's own).
ORDER = ["system", "updates", "base", "host_tools", "tls", "private_ports", "etcd", "db", "accounts", "dovecot", "standby", "sieve_guard", "clamav",
         "attachments", "rspamd", "postfix", "passwd", "webmail", "web", "fail2ban", "logs", "backup", "reports",
         "backup_host", "exporters", "monitor"]

# What a host of each role runs (govmail/data/roles.py says what each role is). The roles of `mail`
# together run exactly what today's one-host mail host runs (tests/unit/test_roles.py).
_EVERY_HOST = ["system", "updates", "exporters"]
_MAIL_HOST = [*_EVERY_HOST, "base", "host_tools", "tls", "fail2ban", "logs"]
SERVICES = {
    "mx": [*_MAIL_HOST, "clamav", "attachments", "rspamd", "postfix"],
    "store": [*_MAIL_HOST, "private_ports", "accounts", "dovecot", "standby", "sieve_guard", "backup", "reports"],
    "web": [*_MAIL_HOST, "passwd", "webmail", "web"],
    # The account store's database (PostgreSQL; nothing for SQLite), and etcd's member when two hosts
    # carry it (Patroni). The sync from the data and the daily job run on the store host (`accounts`).
    "db": [*_MAIL_HOST, "private_ports", "etcd", "db"],
    # Dovecot's proxy in front of the stores apart: the mail host's own Dovecot, configured to route
    # (govmail/services/dovecot.py `routes`).
    "proxy": [*_MAIL_HOST, "dovecot"],
    "backup": [*_EVERY_HOST, "backup_host"],
    # The host that watches the province (role `monitor`, else the backup host: ProvinceConfig.roles).
    # It also keeps etcd's third member when two hosts carry the account store (govmail/data/roles.py).
    "monitor": [*_EVERY_HOST, "private_ports", "etcd", "monitor"],
}


def for_roles(roles) -> list[str]:
    """The services of a host with these roles (`mail` standing for its parts), each once, in ORDER."""
    wanted = {name for role in expand(roles) for name in SERVICES[role]}
    return [name for name in ORDER if name in wanted]
