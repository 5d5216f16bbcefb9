"""The lab's state on this machine: its directory, its lock, state.json and the inventory file.

Layout under LAB_DIR (default /var/lib/govmail-lab, env GOVMAIL_LAB_DIR): images/, machines/<host>/,
ssh/id_ed25519, state.json (hosts, addresses, PIDs: what `lab down` removes), inventory.json (what
govmail/targets.py gives pyinfra), logs/.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import sys
from pathlib import Path

from .net import LabError

LAB_DIR = Path(os.environ.get("GOVMAIL_LAB_DIR", "/var/lib/govmail-lab"))


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
            _wait_for(f)
        f.truncate(0)
        f.write(f"{what} (pid {os.getpid()})\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)


def _wait_for(f) -> None:
    """Take the lock once it is free. Inside a deploy (pyinfra runs each host in a gevent greenlet of
    one process, without monkey-patching) a blocking flock would stop every greenlet, the one holding
    the lock too (two hosts of a province refreshing the resolver at once hung for good): there it
    polls and yields."""
    gevent = sys.modules.get("gevent")
    if gevent is None:
        fcntl.flock(f, fcntl.LOCK_EX)
        return
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            gevent.sleep(0.2)


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
