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

SERVICES = {
    "mail": ["system", "updates", "base", "host_tools", "tls", "accounts", "dovecot", "sieve_guard", "clamav", "attachments", "rspamd",
             "postfix", "passwd", "webmail", "web", "fail2ban", "logs", "backup", "reports", "exporters"],
    "backup": ["system", "updates", "backup_host", "exporters"],
    # The host that watches the province (role `monitor`, else the backup host: ProvinceConfig.roles).
    "monitor": ["system", "updates", "exporters", "monitor"],
}


def for_roles(roles) -> list[str]:
    """The services of a host with these roles, each once, in the order of its first role's list."""
    return list(dict.fromkeys(name for role in roles for name in SERVICES[role]))
