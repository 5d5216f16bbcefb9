"""The lab's network: bridge, network namespaces, firewall, and the machine's /etc/hosts block.

Bridge `gmlab0` with 10.77.0.1/24; each container in its own network namespace, reached through a
veth pair. The nft table `inet govmail_lab` lets lab hosts reach each other and the package mirror
(HTTP/HTTPS to the addresses deb.debian.org has when the lab starts) and nothing else. Used by
govmail/lab/__init__.py, which owns the lab's state; nothing here keeps state of its own.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from pathlib import Path

BRIDGE = "gmlab0"
SUBNET = ipaddress.ip_network("10.77.0.0/24")
GATEWAY = "10.77.0.1"
NFT_TABLE = "govmail_lab"
MIRROR = "deb.debian.org"
HOSTS_BEGIN = "# BEGIN govmail-lab (managed by `govmail lab`; removed by `govmail lab down`)"
HOSTS_END = "# END govmail-lab"


class LabError(Exception):
    pass


def run(*cmd: str, check: bool = True, capture: bool = False, input: str | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, text=True, capture_output=True, input=input)
    if check and r.returncode != 0:
        raise LabError(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr.strip()}")
    return r


def link_exists(name: str, netns: str | None = None) -> bool:
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", name]
    return run(*cmd, check=False).returncode == 0

def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()

def mirror_addresses() -> list[str]:
    try:
        infos = socket.getaddrinfo(MIRROR, 80, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise LabError(f"cannot resolve the package mirror {MIRROR}: {e}") from None
    return sorted({i[4][0] for i in infos})

def ensure_bridge() -> None:
    if not link_exists(BRIDGE):
        run("ip", "link", "add", BRIDGE, "type", "bridge")
    r = run("ip", "-4", "addr", "show", "dev", BRIDGE, capture=True)
    if GATEWAY not in r.stdout:
        run("ip", "addr", "add", f"{GATEWAY}/{SUBNET.prefixlen}", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")

def ensure_firewall(mirrors: list[str]) -> None:
    """(Re)load the lab's nft table: lab <-> lab, lab -> mirror:80/443, nothing else."""
    elements = ", ".join(mirrors)
    rules = f"""
table inet {NFT_TABLE} {{
  set mirror {{ type ipv4_addr; elements = {{ {elements} }} }}
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname "{BRIDGE}" oifname "{BRIDGE}" accept
    iifname "{BRIDGE}" ip daddr @mirror tcp dport {{ 80, 443 }} accept
    oifname "{BRIDGE}" ct state established,related accept
    iifname "{BRIDGE}" counter drop
    oifname "{BRIDGE}" counter drop
  }}
  chain postrouting {{
    type nat hook postrouting priority 100;
    ip saddr {SUBNET} ip daddr @mirror oifname != "{BRIDGE}" masquerade
  }}
}}
"""
    run("nft", "delete", "table", "inet", NFT_TABLE, check=False)
    run("nft", "-f", "-", input=rules)

def ensure_netns(name: str, veth_host: str, ip: str) -> None:
    if not netns_exists(name):
        run("ip", "netns", "add", name)
    if not link_exists("eth0", name):
        if link_exists(veth_host):
            run("ip", "link", "del", veth_host)
        run("ip", "link", "add", veth_host, "type", "veth", "peer", "name", "eth0", "netns", name)
    run("ip", "link", "set", veth_host, "master", BRIDGE, "up")
    r = run("ip", "-n", name, "-4", "addr", "show", "dev", "eth0", capture=True)
    if ip not in r.stdout:
        run("ip", "-n", name, "addr", "add", f"{ip}/{SUBNET.prefixlen}", "dev", "eth0")
    run("ip", "-n", name, "link", "set", "lo", "up")
    run("ip", "-n", name, "link", "set", "eth0", "up")
    r = run("ip", "-n", name, "route", "show", "default", capture=True)
    if GATEWAY not in r.stdout:
        run("ip", "-n", name, "route", "replace", "default", "via", GATEWAY)

def update_etc_hosts(state: dict) -> None:
    path = Path("/etc/hosts")
    text = path.read_text()
    if HOSTS_BEGIN in text:
        before, _, rest = text.partition(HOSTS_BEGIN)
        _, _, after = rest.partition(HOSTS_END)
        text = before.rstrip("\n") + "\n" + after.lstrip("\n")
    block = ""
    if state["hosts"]:
        block = HOSTS_BEGIN + "\n" + "".join(f"{h['ip']}\t{n}\n" for n, h in sorted(state["hosts"].items())) + HOSTS_END + "\n"
    new = text.rstrip("\n") + "\n" + block
    if new != path.read_text():
        path.write_text(new)


def set_link(veth_host: str, up: bool) -> None:
    """Plug a lab host's cable in or pull it out (its end on the bridge): the host runs on, cut off
    from every other host, as when its machine or its network is lost."""
    run("ip", "link", "set", veth_host, "up" if up else "down")
