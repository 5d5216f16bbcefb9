"""Inventory of the daknong mail host: pyinfra inventories/daknong.py deploy.py

Targets the lab container by default; GOVMAIL_TARGET=hosts deploys to the hosts named in
group_data/daknong.yml. See govmail/inventory.py.
"""

from govmail.inventory import province_hosts

mail = province_hosts("daknong")
