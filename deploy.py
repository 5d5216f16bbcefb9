"""govmail deploy: turn bare Debian 13 hosts into a province's mail host and its backup host.

    pyinfra inventories/<province>.py deploy.py          (--dry --diff: what would change, as diffs)

The inventory names the province (host data `province`) and each host's roles; its data file
group_data/<province>.yml was validated when the inventory loaded, before any host was contacted.
Each service is one module in govmail/services/ (and its templates in templates/<service>/) that
declares what it needs; govmail/engine.py carries the declarations out: one apt transaction, one
file transfer, each service's files validated on the host before they replace the live ones,
reload (or restart) only where a change needs it. Adding a service: its module, its templates,
and its name in govmail/services/__init__.py (SERVICES, per role).
"""

from pyinfra import host

from govmail import engine, targets
from govmail.data import load_province
from govmail.services import for_roles

cfg = load_province(host.data.province)
names = for_roles(host.data.get("roles", ["mail"]))
engine.deploy(host, cfg, names, targets.current())
