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
(`gml-<province>`), reached through a veth pair. The nft table `inet govmail_lab` lets lab hosts
reach each other and the package mirror (HTTP/HTTPS to the addresses deb.debian.org has when the lab
starts) and nothing else. The resolver answers only lab names (A, MX) and the mirror's name. The
machine running the lab finds lab hosts by name through a marked block in /etc/hosts.

Every step checks what is already there, so `lab up` can be run twice or after a crash; `lab down`
removes all of it, stopping only the processes whose PIDs the lab recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

from .data import load_province

LAB_DIR = Path(os.environ.get("GOVMAIL_LAB_DIR", "/var/lib/govmail-lab"))
BRIDGE = "gmlab0"
SUBNET = ipaddress.ip_network("10.77.0.0/24")
GATEWAY = "10.77.0.1"
NFT_TABLE = "govmail_lab"
MIRROR = "deb.debian.org"
SUITE = "trixie"
IMAGE_PACKAGES = "systemd,systemd-sysv,dbus,openssh-server,python3,iproute2"
HOSTS_BEGIN = "# BEGIN govmail-lab (managed by `govmail lab`; removed by `govmail lab down`)"
HOSTS_END = "# END govmail-lab"
HOST_TOOLS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "nft": "nftables",
    "ip": "iproute2",
    "dnsmasq": "dnsmasq-base",
    "ssh-keygen": "openssh-client",
}


class LabError(Exception):
    pass


@contextlib.contextmanager
def lab_lock(what: str):
    """One lab change at a time (up, down, rebuild, resolver refresh): two of them at once would
    each save their own view of state.json. A second command waits and says for whom."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, nspawn, nftables)")
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    with open(LAB_DIR / "lab.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            log(f"waiting for another lab command: {f.read().strip() or 'unknown'}")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.truncate(0)
        f.write(f"{what} (pid {os.getpid()})\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)


def locked(what: str):
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*a, **kw):
            with lab_lock(what):
                return fn(*a, **kw)
        return inner
    return wrap


def log(msg: str) -> None:
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


def run(*cmd: str, check: bool = True, capture: bool = False, input: str | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, text=True, capture_output=True, input=input)
    if check and r.returncode != 0:
        raise LabError(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr.strip()}")
    return r


# ---------------------------------------------------------------------------- state


def state_file() -> Path:
    return LAB_DIR / "state.json"


def load_state() -> dict:
    try:
        return json.loads(state_file().read_text())
    except FileNotFoundError:
        return {"hosts": {}}


def save_state(state: dict) -> None:
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(state_file())
    write_inventory(state)


def load_inventory() -> dict:
    try:
        return json.loads((LAB_DIR / "inventory.json").read_text())
    except FileNotFoundError:
        return {"hosts": {}, "ssh_key": str(ssh_key())}


def write_inventory(state: dict) -> None:
    inv = {
        "ssh_key": str(ssh_key()),
        "hosts": {name: {"ip": h["ip"], "province": h["province"]} for name, h in state["hosts"].items()},
    }
    (LAB_DIR / "inventory.json").write_text(json.dumps(inv, indent=2, sort_keys=True))


def ssh_key() -> Path:
    return LAB_DIR / "ssh" / "id_ed25519"


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie or a recycled PID is not ours: check the command line.
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if ") Z" in stat:
        return False
    return any(b"systemd-nspawn" in c or b"dnsmasq" in c for c in cmd)


# ---------------------------------------------------------------------------- prerequisites


def check_host() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, nspawn, nftables)")
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if not shutil.which(tool)})
    if missing:
        raise LabError(f"missing host packages: {' '.join(missing)} (apt-get install {' '.join(missing)})")


def build_image(force: bool = False) -> Path:
    image = LAB_DIR / "images" / SUITE
    if image.is_dir() and (image / "usr/lib/systemd/systemd").exists() and not force:
        return image
    partial = image.with_name(SUITE + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    image.parent.mkdir(parents=True, exist_ok=True)
    log(f"building the Debian {SUITE} image with debootstrap (about a minute, done once)")
    t = time.monotonic()
    r = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={IMAGE_PACKAGES}", SUITE, str(partial), f"http://{MIRROR}/debian"],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise LabError(f"debootstrap failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    if image.exists():
        shutil.rmtree(image)
    partial.rename(image)
    log(f"image ready in {time.monotonic() - t:.0f} s: {image}")
    return image


def ensure_ssh_key() -> Path:
    key = ssh_key()
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "govmail-lab", "-f", str(key))
    return key


# ---------------------------------------------------------------------------- network


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
    _stop(h)
    kill_leftovers(h["netns"])
    root = LAB_DIR / "machines" / hostname
    if root.exists():
        shutil.rmtree(root)
    ensure_netns(h["netns"], h["veth"], h["ip"])
    prepare_root(root, image, hostname, h["ip"])
    h["pid"] = boot(hostname, root, h["netns"])
    save_state(state)
    wait_ssh(h["ip"])
    log(f"{hostname}: a bare Debian 13 host again at {h['ip']} (pid {h['pid']})")


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
    for name, h in sorted(state["hosts"].items()):
        lines.append(f"host-record={name},{h['ip']}")
        if "mail" in h.get("roles", ["mail"]):
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
        _wait_gone(pid)
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


def _wait_gone(pid: int, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and pid_alive(pid):
        time.sleep(0.1)


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


# ---------------------------------------------------------------------------- containers


def prepare_root(root: Path, image: Path, hostname: str, ip: str) -> None:
    if not root.exists():
        log(f"{hostname}: copying the image")
        partial = root.with_name(root.name + ".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        if partial.exists():
            shutil.rmtree(partial)
        run("cp", "-a", "--reflink=auto", str(image), str(partial))
        # Each container gets its own identity: machine id and SSH host keys.
        (partial / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        for k in (partial / "etc/ssh").glob("ssh_host_*"):
            k.unlink()
        run("chroot", str(partial), "ssh-keygen", "-A")
        partial.rename(root)
    (root / "etc/hostname").write_text(hostname + "\n")
    short = hostname.split(".")[0]
    (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n{ip}\t{hostname} {short}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    # A lab-only bound on how long systemd waits for a stopping service. systemd in a container
    # occasionally misses that a stopped service's cgroup became empty and waits the full default
    # 90 s; 20 s keeps such a miss from stalling a deploy (real hosts keep Debian's default).
    conf = root / "etc/systemd/system.conf.d"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "govmail-lab.conf").write_text("[Manager]\nDefaultTimeoutStopSec=20s\n")
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    resolv.write_text(f"nameserver {GATEWAY}\n")
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text(ssh_key().with_suffix(".pub").read_text())
    os.chmod(ssh / "authorized_keys", 0o600)
    (root / "etc/apt/sources.list").write_text(
        f"deb http://{MIRROR}/debian {SUITE} main\ndeb http://{MIRROR}/debian {SUITE}-updates main\n"
    )


def boot(hostname: str, root: Path, netns: str) -> int:
    logs = LAB_DIR / "logs"
    logs.mkdir(exist_ok=True)
    out = open(logs / f"{hostname}.log", "ab")
    env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
    p = subprocess.Popen(
        [
            "systemd-nspawn", "-D", str(root), "-b", "--register=no", "--keep-unit",
            f"--network-namespace-path=/run/netns/{netns}", f"--machine={hostname.replace('.', '-')}",
            f"--hostname={hostname}", "--console=passive", "--resolv-conf=off",
            # Its own network namespace only: fail2ban may ban with nftables there, as on a VM.
            "--capability=CAP_NET_ADMIN",
        ],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )
    return p.pid


def wait_ssh(ip: str, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    last = ""
    while time.monotonic() < end:
        r = subprocess.run(
            ["ssh", *ssh_options(), f"root@{ip}", "systemctl is-system-running --wait"],
            capture_output=True, text=True, timeout=60,
        )
        last = (r.stdout + r.stderr).strip()
        if r.returncode == 0 or last in ("degraded",):
            return
        time.sleep(1)
    raise LabError(f"{ip}: no SSH / systemd not running after {timeout:.0f} s: {last}")


def ssh_options() -> list[str]:
    return [
        "-i", str(ssh_key()), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=3",
    ]


def host_entries(state: dict, province: str) -> list[tuple[str, dict]]:
    """The lab entries of a province's hosts (mail host first), created on first use: one container,
    network namespace and address each."""
    cfg = load_province(province)
    out = []
    for host in sorted(cfg.model.hosts, key=lambda x: "mail" not in x.roles):
        name = host.name
        h = state["hosts"].get(name)
        if h is None:
            used = {x["ip"] for x in state["hosts"].values()}
            ip = next(str(a) for a in list(SUBNET.hosts())[9:] if str(a) not in used)
            octet = ip.rsplit(".", 1)[1]
            prefix = "gml" if "mail" in host.roles else "gmb"
            h = {"ip": ip, "province": province, "domain": cfg.domain, "netns": f"{prefix}-{province}"[:15],
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
            _stop(h)
            if root.exists():
                shutil.rmtree(root)
        ensure_netns(h["netns"], h["veth"], h["ip"])
        if pid_alive(h.get("pid")):
            log(f"{name}: already running (pid {h['pid']}, {h['ip']})")
            continue
        kill_leftovers(h["netns"])
        if "mail" in h.get("roles", []) and not root.exists() and new_mail_host:
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


def container_pids(netns: str, exclude: int | None = None) -> list[int]:
    """PIDs of processes inside the lab network namespace `netns` (through /proc/PID/ns/net).

    After a crash of systemd-nspawn (or SIGKILL) the container's systemd can outlive it; these are
    the processes `lab up` and `lab down` must stop, identified by PID, never by name. `exclude`
    is a running nspawn whose container must be left alone.
    """
    try:
        want = os.stat(f"/run/netns/{netns}").st_ino
    except FileNotFoundError:
        return []
    keep = set()
    if exclude and pid_alive(exclude):
        keep = {exclude} | _descendants(exclude)
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in keep:
            continue
        try:
            if os.stat(d / "ns/net").st_ino == want:
                pids.append(int(d.name))
        except OSError:
            continue
    return sorted(pids)


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def kill_leftovers(netns: str, exclude: int | None = None) -> None:
    pids = container_pids(netns, exclude)
    if not pids:
        return
    log(f"{netns}: stopping {len(pids)} processes left by an earlier crash")
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    end = time.monotonic() + 10
    while time.monotonic() < end and container_pids(netns, exclude):
        time.sleep(0.1)


def _stop(h: dict) -> None:
    pid = h.get("pid")
    if pid_alive(pid):
        # Ask systemd in the container to power off; nspawn exits when it has. SIGKILL after 20 s.
        try:
            ip = h["ip"]
            subprocess.run(["ssh", *ssh_options(), f"root@{ip}", "systemctl poweroff"], capture_output=True, timeout=10)
        except subprocess.TimeoutExpired:
            pass
        end = time.monotonic() + 20
        while time.monotonic() < end and pid_alive(pid):
            time.sleep(0.2)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5)
    h["pid"] = None


@locked("lab down")
def down(provinces: list[str] | None = None, keep_image: bool = True, records: Records | None = None) -> None:
    """Stop containers and remove what the lab made. With provinces: just those hosts."""
    state = load_state()
    for name, h in list(state["hosts"].items()):
        if provinces and h["province"] not in provinces:
            continue
        log(f"{name}: stopping")
        _stop(h)
        kill_leftovers(h["netns"])
        if link_exists(h["veth"]):
            run("ip", "link", "del", h["veth"], check=False)
        if netns_exists(h["netns"]):
            run("ip", "netns", "del", h["netns"], check=False)
        root = LAB_DIR / "machines" / name
        if root.exists():
            shutil.rmtree(root)
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
        _wait_gone(pid)
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


def status() -> list[dict]:
    state = load_state()
    out = []
    for name, h in sorted(state["hosts"].items()):
        out.append({"host": name, "province": h["province"], "ip": h["ip"], "running": pid_alive(h.get("pid")), "pid": h.get("pid")})
    return out


def ssh_command(host: str, command: str) -> subprocess.CompletedProcess:
    state = load_state()
    h = state["hosts"].get(host)
    if h is None:
        raise LabError(f"no lab host {host!r}")
    return subprocess.run(["ssh", *ssh_options(), f"root@{h['ip']}", command], capture_output=True, text=True)
