"""What every compliance check stands on: the probe it receives, the registry, small readers.

A check is registered with `@check`, named after what it verifies (govmail/compliance/clauses.py
names it), receives a `Probe`, the province's configuration and the clause's argument, returns the
evidence it found and fails with an AssertionError whose message is the value it found instead.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..host import contract

CHECKS: dict[str, Callable[..., str]] = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


@dataclass
class Probe:
    ti: Any  # testinfra host of the host checked (the mail host, or another for a clause on several)
    backup: Any = None  # testinfra host of the backup host, when the province has one
    txt: Optional[Callable[[str], list[str]]] = None  # TXT records as the province's resolver serves them
    address: str = ""  # where the active probes connect to (govmail/compliance/active.py)
    name: str = ""  # the checked host's name, sent in TLS (SNI)
    reports: dict = field(default_factory=dict)  # what the host said, read once per run (report figures…)
    monitor: Any = None  # testinfra host of the monitor host (the backup host's, when it watches)
    roles: tuple = ("mx", "store", "web", "db")  # the checked host's roles (govmail/data/roles.py MAIL)
    peers: dict = field(default_factory=dict)  # the province's hosts' private addresses, as the target knows them

    def runs(self, role: str) -> bool:
        """Whether the checked host has `role` (a check on several hosts reads only what each runs)."""
        return role in self.roles


def ssh_failure(e: Exception) -> str:
    """Why SSH failed, when `e` is testinfra's report of an ssh exit 255; else ''."""
    res = e.args[0] if isinstance(e, RuntimeError) and e.args else None
    if getattr(res, "exit_status", None) == 255:
        cmd = res.command.decode(errors="replace") if isinstance(res.command, bytes) else str(res.command)
        return f"ssh failed running `{cmd[:80]}`: {' '.join(res.stderr.split())[:300]}"
    return ""


def postconf(ti, key):
    return ti.check_output(f"postconf -h {key}").strip()


def lookup_table(ti, key):
    """A Postfix map setting without `proxy:`: postmap then reads the table itself instead of asking
    Postfix's proxymap, which waits for ever when Postfix is stopped."""
    return postconf(ti, key).replace("proxy:", "")


def doveconf(ti, key):
    return ti.check_output(f"doveconf -h {key}").strip()


def running(ti, *units) -> None:
    for u in units:
        s = ti.service(u)
        assert s.is_running and s.is_enabled, f"{u}: running={s.is_running}, enabled={s.is_enabled}"


def quota_limits_mib(ti) -> dict[str, Optional[int]]:
    """Effective STORAGE limit of every mailbox, as Dovecot enforces it (MiB)."""
    table = contract.quota_table(ti.check_output(contract.QUOTA_COMMAND))
    return {user: limit // 1024 if limit is not None else None for user, (_used, limit) in table.items()}


def store_rows(ti, sql: str) -> list:
    """Rows of a read-only query on the host's account store, whatever its engine (`accounts sql`:
    its placeholders {strong}, {issued}, {scheme}, {now})."""
    return json.loads(ti.check_output(f"{contract.PATHS['lib']}/accounts sql {shlex.quote(sql)}"))


def store_meta(ti) -> dict:
    return dict(store_rows(ti, "SELECT key, value FROM meta"))


WEB_GET = """
import http.client, ssl, sys
host, path, tls = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
c = (http.client.HTTPSConnection("127.0.0.1", 443, context=ssl._create_unverified_context(), timeout=20) if tls
     else http.client.HTTPConnection("127.0.0.1", 80, timeout=20))
c.request("GET", path, headers={"Host": host})
r = c.getresponse()
body = r.read()
sys.stdout.buffer.write(f"{r.status} {r.getheader('Location') or '-'} {len(body)}\\n".encode() + body)
"""


def web_get(ti, host, path, tls=True):
    """(status, Location, body) of a request to the host's own web server, by name."""
    out = ti.run(f"python3 -c {shlex.quote(WEB_GET)} {shlex.quote(host)} {shlex.quote(path)} {int(tls)}")
    assert out.rc == 0, f"GET {path}: {out.stderr.strip()[-300:]}"
    head, _, body = out.stdout.partition("\n")
    status, location, _ = head.split(" ", 2)
    return int(status), location, body
