"""Inventory of the thainguyen mail host: pyinfra inventories/thainguyen.py deploy.py

Targets the lab container by default; GOVMAIL_TARGET=hosts deploys to the hosts named in
group_data/thainguyen.yml. See govmail/inventory.py.
"""

from govmail.inventory import province_hosts

mail = province_hosts("thainguyen")
