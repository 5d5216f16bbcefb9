"""Inventory of the lamdong mail host: pyinfra inventories/lamdong.py deploy.py

Targets the lab container by default; GOVMAIL_TARGET=hosts deploys to the hosts named in
group_data/lamdong.yml. See govmail/inventory.py.
"""

from govmail.inventory import province_hosts

mail = province_hosts("lamdong")
