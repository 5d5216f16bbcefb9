"""Hosts of a province for pyinfra: `mail = province_hosts("daknong")` in inventories/<province>.py.

Loading an inventory validates the province's data file first, so bad data stops pyinfra before it
connects to anything. Which hosts, and how pyinfra reaches them, is the target's answer
(govmail/targets.py: the lab by default, or the real hosts of the data).
"""

from __future__ import annotations

import sys

from .data import DataError, load_province
from .targets import TargetError, current


def _fail(msg: str) -> None:
    print(f"govmail: {msg}", file=sys.stderr)
    sys.exit(2)


def province_hosts(province: str) -> list:
    try:
        cfg = load_province(province)
    except DataError as e:
        _fail(f"{e}\nNothing was deployed: fix the data and run again (`govmail validate {province}`).")
    try:
        return current().inventory(cfg)
    except TargetError as e:
        _fail(str(e))
