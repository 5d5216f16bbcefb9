"""Lab hosts: the Debian image, each container's root, its boot under systemd-nspawn, SSH to it,
and stopping it (by PID, with what a crashed container left behind)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from .net import GATEWAY, MIRROR, LabError, run
from .proc import container_pids, pid_alive, wait_gone
from .state import LAB_DIR, log, ssh_key

SUITE = "trixie"
IMAGE_PACKAGES = "systemd,systemd-sysv,dbus,openssh-server,python3,iproute2"
HOST_TOOLS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "nft": "nftables",
    "ip": "iproute2",
    "dnsmasq": "dnsmasq-base",
    "ssh-keygen": "openssh-client",
}


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
    # A lab host lives for one test run: the nightly security upgrade (apt-daily-upgrade.timer, which
    # govmail turns on) is moved to the last evening of the year, so that no package upgrade restarts
    # a daemon under a test; the timer keeps a next run, as verify asks of every host.
    timer = root / "etc/systemd/system/apt-daily-upgrade.timer.d"
    timer.mkdir(parents=True, exist_ok=True)
    (timer / "govmail-lab.conf").write_text("[Timer]\nOnCalendar=\nOnCalendar=*-12-31 23:00\nRandomizedDelaySec=0\n"
                                            "Persistent=false\n")
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

# Each container's own cgroup, in the machine's unified (cgroup v2) hierarchy. nspawn with
# --keep-unit puts the container under the cgroup it was started in: started in the root cgroup,
# every container shared one tree, and a `systemctl stop` or `kill` in one container reached the
# same unit's processes in all the others (a killed Dovecot killed every province's).
CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
CGROUP_DIR = "govmail-lab"


def cgroup_of(hostname: str) -> Path | None:
    """Where the container of `hostname` lives in the unified hierarchy (None without one)."""
    for base in CGROUP_ROOTS:
        if (base / "cgroup.procs").exists() and (base / "cgroup.controllers").exists():
            return base / CGROUP_DIR / hostname
    return None


def remove_cgroup(hostname: str) -> None:
    """The container's cgroup, once empty, with what its systemd made inside (deepest first)."""
    top = cgroup_of(hostname)
    if top is None or not top.exists():
        return
    for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [top]:
        try:
            d.rmdir()
        except OSError:
            pass
    try:
        top.parent.rmdir()  # the lab's own directory, when no container is left
    except OSError:
        pass


def boot(hostname: str, root: Path, netns: str) -> int:
    logs = LAB_DIR / "logs"
    logs.mkdir(exist_ok=True)
    out = open(logs / f"{hostname}.log", "ab")
    env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
    group = cgroup_of(hostname)
    try:
        if group is not None:
            group.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log(f"{hostname}: no cgroup of its own ({e}); it shares the machine's")
        group = None

    def own_cgroup():  # in the child, before it becomes nspawn; a machine that refuses: shared, as before
        if group is not None:
            try:
                (group / "cgroup.procs").write_text(f"{os.getpid()}\n")
            except OSError:
                pass

    p = subprocess.Popen(
        [
            "systemd-nspawn", "-D", str(root), "-b", "--register=no", "--keep-unit",
            f"--network-namespace-path=/run/netns/{netns}", f"--machine={hostname.replace('.', '-')}",
            f"--hostname={hostname}", "--console=passive", "--resolv-conf=off",
            # Its own network namespace only: fail2ban may ban with nftables there, as on a VM.
            "--capability=CAP_NET_ADMIN",
        ],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        preexec_fn=own_cgroup,
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

def control_path() -> str:
    """Where the SSH connection shared by every command to one lab host listens (`%C`: a hash of the
    host, port and user; under the lab's key directory, root's only)."""
    return str(LAB_DIR / "ssh" / "cm-%C")


def ssh_options() -> list[str]:
    """The options every command to a lab host runs with. One connection per host is shared
    (ControlMaster), kept 60 s after its last command: a command then costs ~25 ms, not the ~220 ms
    of a new connection's handshake, and the lab tests run some thousands of them. A command beyond
    the host's sshd MaxSessions gets a connection of its own (OpenSSH falls back by itself); a host
    stopped or rebuilt has its connection closed first (stop_container)."""
    return [
        "-i", str(ssh_key()), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=3",
        "-o", "ControlMaster=auto", "-o", f"ControlPath={control_path()}", "-o", "ControlPersist=60",
        "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
    ]


def close_ssh(ip: str) -> None:
    """The shared connection to `ip` closed (its master process exits), if there is one."""
    subprocess.run(["ssh", *ssh_options(), "-O", "exit", f"root@{ip}"], capture_output=True, timeout=10)

def kill_leftovers(netns: str, exclude: int | None = None, why: str = "left by an earlier crash") -> None:
    pids = container_pids(netns, exclude)
    if not pids:
        return
    log(f"{netns}: stopping {len(pids)} processes {why}")
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    end = time.monotonic() + 10
    while time.monotonic() < end and container_pids(netns, exclude):
        time.sleep(0.1)

def stop_container(h: dict) -> None:
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
            log(f"{h['netns']} ({h['ip']}): not powered off after 20 s; its nspawn is killed")
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 5)
    close_ssh(h["ip"])  # the next command to this address (a host booted again) connects anew
    h["pid"] = None
