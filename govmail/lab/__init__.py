"""The local lab: one Debian 13 systemd-nspawn container per province host.

Layout under LAB_DIR (default /var/lib/govmail-lab, env GOVMAIL_LAB_DIR):

    images/trixie/         base root built once with debootstrap, then reused
    machines/<host>/       root of each container (a copy of the image)
    ssh/id_ed25519         the key the lab generates; containers trust it
    state.json             hosts, addresses, PIDs: what `lab down` removes
    dnsmasq.conf, .pid     the lab resolver on the bridge address
    inventory.json         what inventories/<province>.py reads
    logs/<host>.log        console of each container

Network: bridge `gmlab0` with 10.77.0.1/24; each container in its own network namespace
(`gm<last octet of its address>-<province>`), reached through a veth pair. The nft table `inet govmail_lab` lets lab hosts
reach each other and the package mirror (HTTP/HTTPS to the addresses deb.debian.org has when the lab
starts) and nothing else. The resolver answers only lab names (A, MX) and the mirror's name. The
machine running the lab finds lab hosts by name through a marked block in /etc/hosts.

Every step checks what is already there, so `lab up` can be run twice or after a crash; `lab down`
removes all of it, stopping only the processes whose PIDs the lab recorded.

This module: the resolver and the lab's life cycle (up, down, rebuild, status). Its parts:
state.py (directory, lock, state.json), net.py (bridge, namespaces, firewall, /etc/hosts), host.py
(image, containers, SSH), proc.py (processes, by PID). Only the target layer (govmail/targets.py),
the command line and the lab tests use the lab.

May import: data.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import time
from typing import Callable

from ..data import load_province
from ..data.roles import has
from .host import (  # noqa: F401
    HOST_TOOLS,
    IMAGE_PACKAGES,
    SUITE,
    boot,
    build_image,
    check_host,
    ensure_ssh_key,
    kill_leftovers,
    prepare_root,
    remove_cgroup,
    ssh_options,
    stop_container,
    wait_ssh,
)
from .net import (  # noqa: F401 (part of the lab's interface)
    BRIDGE,
    GATEWAY,
    HOSTS_BEGIN,
    HOSTS_END,
    MIRROR,
    NFT_TABLE,
    SUBNET,
    LabError,
    ensure_bridge,
    ensure_firewall,
    ensure_netns,
    link_exists,
    mirror_addresses,
    netns_exists,
    run,
    set_link,
    update_etc_hosts,
)
from .proc import container_pids, pid_alive, wait_gone  # noqa: F401 (part of the lab's interface)
from .state import (  # noqa: F401
    LAB_DIR,
    lab_lock,
    load_inventory,
    load_state,
    locked,
    log,
    save_state,
    ssh_key,
    state_file,
    write_inventory,
)

# ---------------------------------------------------------------------------- state


# ---------------------------------------------------------------------------- prerequisites


# ---------------------------------------------------------------------------- network


def remove_tree(root) -> None:
    """A stopped container's root removed; a process of it still exiting can write a last file
    (the journal) while the tree goes: tried again for up to 10 s ("Directory not empty")."""
    for attempt in range(21):
        if not root.exists():
            return
        try:
            shutil.rmtree(root)
            return
        except OSError:
            if attempt == 20:
                raise
            time.sleep(0.5)


@locked("lab rebuild")
def rebuild(hostname: str) -> None:
    """Destroy one lab host and boot a bare Debian 13 container in its place (same name, address
    and network): a disaster-recovery drill. Its province's other hosts keep running."""
    state = load_state()
    h = state["hosts"].get(hostname)
    if h is None:
        raise LabError(f"no lab host {hostname!r}; running: {', '.join(state['hosts']) or 'none'}")
    image = build_image()
    log(f"{hostname}: destroying (everything on it is lost)")
    stop_container(h)
    kill_leftovers(h["netns"], why="of the container still running after it was stopped")
    remove_cgroup(hostname)
    root = LAB_DIR / "machines" / hostname
    remove_tree(root)
    ensure_netns(h["netns"], h["veth"], h["ip"])
    prepare_root(root, image, hostname, h["ip"])
    h["pid"] = boot(hostname, root, h["netns"])
    save_state(state)
    wait_ssh(h["ip"])
    log(f"{hostname}: a bare Debian 13 host again at {h['ip']} (pid {h['pid']})")


@locked("lab restart")
def restart(hostname: str) -> None:
    """Reboot one lab host as a machine reboots: its systemd shuts everything down, then it boots
    again from the same disk (nspawn does not restart a container that reboots: this does)."""
    state = load_state()
    h = state["hosts"].get(hostname)
    if h is None:
        raise LabError(f"no lab host {hostname!r}; running: {', '.join(state['hosts']) or 'none'}")
    stop_container(h)
    kill_leftovers(h["netns"], why="of the container still running after it was stopped")
    ensure_netns(h["netns"], h["veth"], h["ip"])
    h["pid"] = boot(hostname, LAB_DIR / "machines" / hostname, h["netns"])
    save_state(state)
    wait_ssh(h["ip"])
    log(f"{hostname}: rebooted (pid {h['pid']})")


# ---------------------------------------------------------------------------- DNS


OUTSIDE_DOMAIN = "outside.test"
# Written by the lab tests when their deploy fails; `govmail test` prints it after pytest's summary.
DEPLOY_FAILURE = LAB_DIR / "logs" / "lab-deploy-failed.txt"


# What the provinces in the lab publish (SPF, DMARC, TLS-RPT, SRV, DKIM), as dnsmasq lines, for a
# list of provinces. Given by the target layer (govmail/targets.py), which knows the records.
Records = Callable[[list[str]], list[str]]


def dns_records(state: dict, records: Records | None = None) -> list[str]:
    provinces = sorted({h["province"] for h in state["hosts"].values()})
    lines = list(records(provinces)) if records else []
    # A domain whose MX the records give (a merged province that took it over) is not its old host's.
    taken = {line.split("=", 1)[1].split(",", 1)[0] for line in lines if line.startswith("mx-host=")}
    for name, h in sorted(state["hosts"].items()):
        lines.append(f"host-record={name},{h['ip']}")
        if has(h.get("roles", ["mail"]), "mx") and h["domain"] not in taken:
            lines.append(f"mx-host={h['domain']},{name},10")
        lines.append(f"ptr-record={ipaddress.ip_address(h['ip']).reverse_pointer},{name}")
    # A stand-in for the world outside the state mail system (`.test` is reserved, RFC 2606): tests
    # use it as a sender domain that resolves. Nothing listens for mail there and no test sends any.
    lines += [f"host-record=mx.{OUTSIDE_DOMAIN},{GATEWAY}", f"mx-host={OUTSIDE_DOMAIN},mx.{OUTSIDE_DOMAIN},10"]
    return lines


def ensure_dns(state: dict, mirrors: list[str], records: Records | None = None) -> None:
    conf = LAB_DIR / "dnsmasq.conf"
    text = "\n".join(
        [
            "# govmail lab resolver: lab names and the package mirror, nothing else.",
            f"listen-address={GATEWAY}",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "log-facility=" + str(LAB_DIR / "dnsmasq.log"),
            *[f"address=/{MIRROR}/{ip}" for ip in mirrors],
            # The lab zones are answered here only: an unknown name in them does not exist.
            "local=/gov.vn/",
            f"local=/{OUTSIDE_DOMAIN}/",
            *dns_records(state, records),
            "",
        ]
    )
    pid = state.get("dnsmasq_pid")
    old = conf.read_text() if conf.exists() else None
    if pid_alive(pid) and old == text:
        return
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        wait_gone(pid)
    conf.write_text(text)
    pidfile = LAB_DIR / "dnsmasq.pid"
    run("dnsmasq", f"--conf-file={conf}", f"--pid-file={pidfile}")
    for _ in range(50):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.1)
    state["dnsmasq_pid"] = int(pidfile.read_text().strip())


def refresh_dns(records: Records | None = None) -> None:
    """Restart the lab resolver with the records as they are now (e.g. a DKIM key a deploy just
    fetched). Deploys of several provinces run in parallel: one at a time, under the lab's lock."""
    with lab_lock("refreshing the lab resolver"):
        state = load_state()
        if not state.get("hosts"):
            return
        ensure_dns(state, mirror_addresses(), records)
        save_state(state)


# ---------------------------------------------------------------------------- containers


def host_entries(state: dict, province: str) -> list[tuple[str, dict]]:
    """The lab entries of a province's hosts (mail host first), created on first use: one container,
    network namespace and address each."""
    cfg = load_province(province)
    out = []
    for host in sorted(cfg.model.hosts, key=lambda x: not has(x.roles, "store")):
        name = host.name
        h = state["hosts"].get(name)
        if h is None:
            used = {x["ip"] for x in state["hosts"].values()}
            ip = next(str(a) for a in list(SUBNET.hosts())[9:] if str(a) not in used)
            octet = ip.rsplit(".", 1)[1]
            # one namespace per host, unique by the address's last octet whatever the roles (15 characters)
            h = {"ip": ip, "province": province, "domain": cfg.domain, "netns": f"gm{octet}-{province}"[:15],
                 "veth": f"gmv{octet}", "pid": None, "roles": list(host.roles)}
            state["hosts"][name] = h
        out.append((name, h))
    return out


@locked("lab up")
def up(provinces: list[str], fresh: bool = False, records: Records | None = None,
       new_mail_host: Callable[[str], None] | None = None) -> dict:
    """Boot the provinces' hosts. `records`: what the resolver serves for them; `new_mail_host`:
    called with the province when its mail host is made anew from the image."""
    check_host()
    t0 = time.monotonic()
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    state = load_state()
    image = build_image()
    ensure_ssh_key()
    mirrors = mirror_addresses()
    ensure_bridge()
    ensure_firewall(mirrors)
    names = [e for p in provinces for e in host_entries(state, p)]
    save_state(state)
    ensure_dns(state, mirrors, records)
    save_state(state)
    update_etc_hosts(state)
    booted = []
    for name, h in names:
        root = LAB_DIR / "machines" / name
        if fresh:
            stop_container(h)
            kill_leftovers(h["netns"], why="of the container still running after it was stopped")
            remove_cgroup(name)
            remove_tree(root)
        ensure_netns(h["netns"], h["veth"], h["ip"])
        if pid_alive(h.get("pid")):
            log(f"{name}: already running (pid {h['pid']}, {h['ip']})")
            continue
        kill_leftovers(h["netns"])
        if has(h.get("roles", []), "store") and not root.exists() and new_mail_host:
            new_mail_host(h["province"])
        prepare_root(root, image, name, h["ip"])
        h["pid"] = boot(name, root, h["netns"])
        save_state(state)
        booted.append((name, h))
        log(f"{name}: booting at {h['ip']} (pid {h['pid']})")
    for name, h in booted:
        wait_ssh(h["ip"])
        log(f"{name}: up, ssh root@{name}")
    log(f"lab ready in {time.monotonic() - t0:.0f} s; inventory: {LAB_DIR / 'inventory.json'}")
    return state


@locked("lab down")
def down(provinces: list[str] | None = None, keep_image: bool = True, records: Records | None = None) -> None:
    """Stop containers and remove what the lab made. With provinces: just those hosts."""
    state = load_state()
    for name, h in list(state["hosts"].items()):
        if provinces and h["province"] not in provinces:
            continue
        log(f"{name}: stopping")
        stop_container(h)
        kill_leftovers(h["netns"], why="of the container still running after it was stopped")
        remove_cgroup(name)
        if link_exists(h["veth"]):
            run("ip", "link", "del", h["veth"], check=False)
        if netns_exists(h["netns"]):
            run("ip", "netns", "del", h["netns"], check=False)
        remove_tree(LAB_DIR / "machines" / name)
        del state["hosts"][name]
        save_state(state)
    if state["hosts"]:
        ensure_dns(state, mirror_addresses(), records)
        save_state(state)
        update_etc_hosts(state)
        return
    pid = state.get("dnsmasq_pid")
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        wait_gone(pid)
    state.pop("dnsmasq_pid", None)
    run("nft", "delete", "table", "inet", NFT_TABLE, check=False)
    if link_exists(BRIDGE):
        run("ip", "link", "del", BRIDGE, check=False)
    update_etc_hosts(state)
    for f in ("state.json", "inventory.json", "dnsmasq.conf", "dnsmasq.pid"):
        (LAB_DIR / f).unlink(missing_ok=True)
    if not keep_image and (LAB_DIR / "images").exists():
        shutil.rmtree(LAB_DIR / "images")
    log("lab removed" + ("" if keep_image else " (image too)"))


def unplug(hostname: str, plugged: bool = False) -> None:
    """Cut a running lab host off the lab's network (`plugged=True`: connect it again)."""
    h = load_state()["hosts"].get(hostname)
    if not h:
        raise LabError(f"{hostname}: not a lab host")
    set_link(h["veth"], plugged)


def status() -> list[dict]:
    state = load_state()
    out = []
    for name, h in sorted(state["hosts"].items()):
        out.append({"host": name, "province": h["province"], "ip": h["ip"], "running": pid_alive(h.get("pid")), "pid": h.get("pid")})
    return out
