"""Inventory of the bacninh mail host: pyinfra inventories/bacninh.py deploy.py

Targets the lab container by default; GOVMAIL_TARGET=hosts deploys to the hosts named in
group_data/bacninh.yml. See govmail/inventory.py.
"""

from govmail.inventory import province_hosts

mail = province_hosts("bacninh")
