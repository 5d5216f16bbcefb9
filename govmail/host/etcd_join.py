#!/usr/bin/python3
"""etcd-join: put this host back into the province's etcd cluster before its member first starts.

Run by the deploy (govmail/services/etcd.py) on an etcd member whose data directory is empty: a host
rebuilt from bare, whose old member the others still list. etcd's members are fixed when the cluster
first starts (ETCD_INITIAL_CLUSTER_STATE=new in /etc/default/etcd); a member that lost its data must
be removed from the cluster and added again, then start as `existing` with the cluster as it is now.

- the data directory holds a member's log (member/wal): nothing to do (a reboot, a crash, a network
  cut keep it); a `member` directory without a log (what a start that failed leaves) is set aside;
- no other member answers: the cluster is being made (a province's first deploy): nothing to do, the
  member starts as /etc/default/etcd says;
- another member answers and lists this host's peer address as a member that has started before:
  that member (this host's lost self) is removed and this host added, through the answering member's
  v3 JSON gateway; not listed (removed by hand): added;
- listed and never started (the first deploy, the other two members already up; or an earlier run of
  this tool that was interrupted): kept.

In the last three cases it writes ENV (ETCD_INITIAL_CLUSTER_STATE=existing and the members as the
cluster has them), which the drop-in etcd.service.d/govmail-join.conf reads after /etc/default/etcd;
ENV is on /run, gone at the next boot, when the member has its data. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
import urllib.request

DEFAULTS = "/etc/default/etcd"
ENV = "/run/govmail/etcd-join.env"


def settings(path: str = DEFAULTS) -> dict[str, str]:
    out = {}
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def call(client_url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(client_url.rstrip("/") + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def client_urls(s: dict[str, str]) -> list[str]:
    """The other members' client URLs: their peer addresses with this member's client port."""
    name = s["ETCD_NAME"]
    port = urllib.parse.urlsplit(s["ETCD_ADVERTISE_CLIENT_URLS"].split(",")[0]).port
    out = []
    for item in s["ETCD_INITIAL_CLUSTER"].split(","):
        other, _, peer = item.partition("=")
        if other != name:
            out.append(f"http://{urllib.parse.urlsplit(peer).hostname}:{port}")
    return out


def main(defaults: str = DEFAULTS, env: str = ENV) -> int:
    s = settings(defaults)
    member = os.path.join(s["ETCD_DATA_DIR"], "member")
    if os.path.isdir(os.path.join(member, "wal")):
        return 0
    mine = s["ETCD_INITIAL_ADVERTISE_PEER_URLS"]
    members, via = None, None
    for url in client_urls(s):
        try:
            members, via = call(url, "/v3/cluster/member/list", {}).get("members", []), url
            break
        except (OSError, ValueError):
            continue
    if os.path.exists(env):
        os.remove(env)
    if members is None:
        print("etcd-join: no other member answers: the member starts as /etc/default/etcd says (a new cluster)")
        return 0
    if os.path.isdir(member):  # what a start that failed left (a database file, no log): set aside
        aside = f"{member}.failed-start-{int(time.time())}"
        os.rename(member, aside)
        print(f"etcd-join: {member} held no log (a failed start): moved to {aside}")
    me = next((m for m in members if mine in m.get("peerURLs", [])), None)
    if me is not None and me.get("clientURLs"):
        print(f"etcd-join: {via} lists this host ({mine}) as a member that has run: its data is gone; "
              "removing it and adding this host again")
        call(via, "/v3/cluster/member/remove", {"ID": me["ID"]})
        me = None
    if me is None:
        call(via, "/v3/cluster/member/add", {"peerURLs": [mine]})
        print(f"etcd-join: added {mine} to the cluster through {via}")
    members = call(via, "/v3/cluster/member/list", {}).get("members", [])
    names = {peer: n for n, _, peer in (i.partition("=") for i in s["ETCD_INITIAL_CLUSTER"].split(","))}
    cluster = ",".join(f"{names.get(u) or m.get('name') or 'member-' + str(m['ID'])}={u}"
                       for m in members for u in m.get("peerURLs", []))
    os.makedirs(os.path.dirname(env), exist_ok=True)
    with open(env + ".new", "w", encoding="utf-8") as f:
        f.write(f"ETCD_INITIAL_CLUSTER_STATE=existing\nETCD_INITIAL_CLUSTER={cluster}\n")
    os.replace(env + ".new", env)
    print(f"etcd-join: the member starts as `existing` in {cluster}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, KeyError, ValueError) as e:
        sys.exit(f"etcd-join: {e}")
