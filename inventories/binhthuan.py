"""Inventory of the binhthuan mail host: pyinfra inventories/binhthuan.py deploy.py

Targets the lab container by default; GOVMAIL_TARGET=hosts deploys to the hosts named in
group_data/binhthuan.yml. See govmail/inventory.py.
"""

from govmail.inventory import province_hosts

mail = province_hosts("binhthuan")
