"""etcd's member for the account store's Patroni cluster (two db hosts: govmail/services/db.py).

Three members: the province's two db hosts and the witness (govmail/data/roles.py: the monitor,
else the backup host), so the store keeps a primary while any one of the three is away. Debian's
etcd-server 3.5 and its etcd.service, configured by its environment file:

    templates/etcd/etcd.j2 -> /etc/default/etcd

Clients (Patroni) on port contract.PATRONI["etcd_client_port"], peers on "etcd_peer_port", both on
the host's private address (the client port on the loopback too); plain HTTP on the province's
private network. A change restarts the member (etcd reads its settings at start only). The members
are fixed when the cluster first starts (ETCD_INITIAL_CLUSTER_STATE=new): a host rebuilt from bare
(its data directory empty) is put back by `etcd-join` (govmail/host/etcd_join.py, installed in
/usr/local/lib/govmail/) before its member starts: its lost self removed from the cluster, itself
added, and `existing` given to etcd through /run/govmail/etcd-join.env, which the drop-in
/etc/systemd/system/etcd.service.d/govmail-join.conf reads after /etc/default/etcd.
"""

from __future__ import annotations

from pathlib import Path

from ..data.text import host_address as address
from ..host import contract, etcd_join
from ..render import render
from ..service import File, Service, Unit

P = contract.PATRONI
JOIN = f"{contract.PATHS['lib']}/etcd-join"
DROP_IN = f"""# Managed by govmail (govmail/services/etcd.py); edits here are overwritten by the next deploy.
# A member rebuilt from bare joins the cluster as it is now: etcd-join writes this file (on /run).
[Service]
EnvironmentFile=-{etcd_join.ENV}
"""
# The member answers when its own health endpoint says so (it has a leader: a quorum of members).
HEALTH = ("python3 -c \"import json,sys,urllib.request; sys.exit(json.load(urllib.request.urlopen("
          f"'http://127.0.0.1:{P['etcd_client_port']}/health', timeout=3))['health'] != 'true')\" 2>/dev/null")


def service(ctx):
    cfg = ctx.cfg
    if ctx.host_name not in cfg.etcd_members:
        return None
    members = [{"name": h, "address": address(ctx.addresses.get(h, h))} for h in cfg.etcd_members]
    me = members[cfg.etcd_members.index(ctx.host_name)]
    return Service(
        name="etcd",
        packages=("etcd-server",),
        files=[File(P["etcd_config"], render("etcd/etcd.j2", cfg, name=me["name"], address=me["address"],
                                             members=members, token=f"govmail-{cfg.key}",
                                             peer_port=P["etcd_peer_port"], client_port=P["etcd_client_port"]),
                    action="restart"),
               File(JOIN, Path(etcd_join.__file__).read_bytes(), mode=0o755, action=None),
               File("/etc/systemd/system/etcd.service.d/govmail-join.conf", DROP_IN, action=None)],
        # Started without waiting: a member is healthy only once a second one runs, and the province's
        # hosts activate side by side; the wait for its health comes at the end.
        # Each start on this host first puts a member that lost its data back into the cluster (etcd-join
        # returns at once when the member has its log).
        units=[Unit("etcd", ready=HEALTH, ready_timeout=180, slow=True,
                    start=f"{JOIN} && systemctl start --no-block etcd")],
        actions={"restart": "systemctl restart etcd"},
    )
