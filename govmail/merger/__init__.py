"""A merger carried out: readdressing under a new unit structure (readdress.py) and the mailboxes
copied from the predecessors' hosts (migrate.py, the controller's side; the host's side is
govmail/host/migrate.py). What a merged province *is* (predecessors, old addresses, their phases) is
data: govmail/data/predecessors.py.

May import: data, targets.
"""

