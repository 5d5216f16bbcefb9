"""Hosts of a province for pyinfra, from the lab (default) or from the data file.

Used by inventories/<province>.py. Loading an inventory validates the province's data file first,
so bad data stops pyinfra before it connects to anything.

Target, chosen by the environment variable GOVMAIL_TARGET:
- `lab` (default): the lab container booted by `govmail lab up <province>`, reached by its
  address on the lab bridge with the lab's SSH key;
- `hosts`: the host names of the data file (`hosts[].name`), reached by SSH as
  GOVMAIL_SSH_USER (default root) with your usual SSH configuration.
"""

from __future__ import annotations

import json
import os
import sys

from .data import DataError, load_province


def _fail(msg: str) -> None:
    print(f"govmail: {msg}", file=sys.stderr)
    sys.exit(2)


def province_hosts(province: str) -> list:
    try:
        cfg = load_province(province)
    except DataError as e:
        _fail(f"{e}\nNothing was deployed: fix the data and run again (`govmail validate {province}`).")
    target = os.environ.get("GOVMAIL_TARGET", "lab")
    data = {"province": province}
    if target == "hosts":
        user = os.environ.get("GOVMAIL_SSH_USER", "root")
        return [(h.name, dict(data, roles=list(h.roles), ssh_user=user)) for h in cfg.model.hosts]
    if target != "lab":
        _fail(f"GOVMAIL_TARGET={target!r}: allowed values are 'lab' and 'hosts'")
    from .lab import GATEWAY, LAB_DIR

    inv_file = LAB_DIR / "inventory.json"
    try:
        inv = json.loads(inv_file.read_text())
    except FileNotFoundError:
        inv = {"hosts": {}}
    out = []
    for h in cfg.model.hosts:
        lab = inv["hosts"].get(h.name)
        if lab is None:
            _fail(
                f"{h.name} is not in the lab ({inv_file}). Start it with `govmail lab up {province}`, "
                "or deploy to the real hosts with GOVMAIL_TARGET=hosts."
            )
        out.append(
            (
                h.name,
                dict(
                    data,
                    roles=list(h.roles),
                    # The machine running the lab and its tests: never banned by fail2ban, so tests
                    # that try wrong passwords do not lock the runner out (the ban test attacks
                    # from the backup host).
                    lab_controller=GATEWAY,
                    ssh_hostname=lab["ip"],
                    ssh_user="root",
                    ssh_key=inv["ssh_key"],
                    ssh_known_hosts_file="/dev/null",
                    ssh_strict_host_key_checking="no",
                ),
            )
        )
    return out
