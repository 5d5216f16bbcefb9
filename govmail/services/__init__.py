"""The services: one module each, `service(ctx) -> Service` (govmail/service.py), and its templates in
templates/<service>/.

A service only declares what a host needs (packages, files, units, checks, actions); the engine
(govmail/engine.py) carries the declarations out. It may import the data (govmail/data/), the host
contract (govmail/host/contract.py), the renderer (govmail/render.py) and the service contract; never
pyinfra, the lab, the targets or the engine (tests/unit/test_structure.py). What a host of each role
runs is SERVICES below, in the order its files are installed and its daemons activated; deploy.py and
the benches read it here.

May import: data, host, publish, render, service.
"""

SERVICES = {
    "mail": ["system", "updates", "base", "host_tools", "tls", "accounts", "dovecot", "sieve_guard", "clamav", "attachments", "rspamd",
             "postfix", "passwd", "webmail", "web", "fail2ban", "logs", "backup", "reports"],
    "backup": ["system", "updates", "backup_host"],
}
