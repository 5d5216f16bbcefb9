"""Inventory of the laichau mail host: pyinfra inventories/laichau.py deploy.py

Targets the lab container by default; GOVMAIL_TARGET=hosts deploys to the hosts named in
group_data/laichau.yml. See govmail/inventory.py.
"""

from govmail.inventory import province_hosts

mail = province_hosts("laichau")
