"""Argument types of the command line, and its one way of saying what is wrong.

Every input is hostile: a province is a key of the data directory, an address one address, a time
an ISO time; a bad one is refused by argparse with what is allowed, before anything runs.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys

from ..data import DataError, available_provinces, load_province


def err(msg: str) -> None:
    print(f"govmail: {msg}", file=sys.stderr)


def province_key(value: str) -> str:
    """An argument naming a province: a key of group_data/ (`daknong`), never a path."""
    known = available_provinces()
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", value):
        raise argparse.ArgumentTypeError(
            f"{value[:80]!r} is not a province key; a key is the name of a data file in the data directory "
            f"without .yml (lower-case letters, digits, '-'), one of: {', '.join(known) or 'none'}")
    if value not in known:
        raise argparse.ArgumentTypeError(f"no province {value!r} in the data directory; known: {', '.join(known) or 'none'}")
    return value


def mail_address(value: str) -> str:
    from ..data.text import address_problem

    why = address_problem(value.lower())
    if why:
        raise argparse.ArgumentTypeError(f"{value[:80]!r} is not a mail address: {why}")
    return value.lower()


def iso_time(value: str) -> str:
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value[:40]!r} is not an ISO time such as 2026-11-20T12:00") from None
    return value


def host_name(value: str) -> str:
    from ..data.text import domain_problem

    if domain_problem(value):
        raise argparse.ArgumentTypeError(f"{value[:80]!r} is not a host name such as mail.daknong.gov.vn")
    return value


def imap_endpoint(value: str) -> str:
    """HOST[:PORT] of an IMAP server: a host name and a port 1..65535."""
    host, _, port = value.partition(":")
    if not (port == "" or (port.isdigit() and 0 < int(port) < 65536)):
        raise argparse.ArgumentTypeError(f"{value[:80]!r}: the port must be a number 1..65535")
    return host_name(host) + (f":{port}" if port else "")


def province(key: str):
    """The province's config, or None after printing every problem of its data."""
    try:
        return load_province(key)
    except DataError as e:
        err(str(e))
        return None
