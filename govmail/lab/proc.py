"""Processes of the lab: which PIDs are alive and ours, and the ones a crashed container left.

Everything is found by PID (through /proc), never by name: the lab stops only what it started.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


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

def wait_gone(pid: int, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and pid_alive(pid):
        time.sleep(0.1)

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
