"""Run a province's compliance checks against its hosts, wherever they are (`govmail verify`).

The hosts are reached the way the target says (govmail/targets.py): lab containers, or the real
machines over the operator's SSH (the `hosts` target, govmail/targets.py). Nothing here changes a host: the checks
only read. A host that cannot be reached, or a check that breaks, is a FAIL with its evidence, not
a crash; SSH runs in batch mode with a connect timeout, so nothing waits for a password.
"""

from __future__ import annotations

import datetime
import shlex
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..data import ProvinceConfig
from ..data.roles import expand
from ..publish.dnsquery import txt_records
from .checks import CHECKS, Probe, ssh_failure
from .clauses import Clause, clauses, every_host

SSH_GUARD = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=10",
             "-o", "ServerAliveCountMax=3"]

COMMAND_TIMEOUT = 120  # seconds one command on a host may take (a whole backup repository listing included)
IDENTITY = ("hostname -f; cat /etc/machine-id; . /etc/os-release; echo \"$PRETTY_NAME\"; uname -r; "
            "for k in /etc/ssh/ssh_host_ed25519_key.pub; do ssh-keygen -lf $k | cut -d' ' -f2; done")


@dataclass
class Result:
    clause: Clause
    passed: bool
    evidence: str
    seconds: float


@dataclass
class HostRun:
    province: str
    name: str  # the province's name, e.g. "Đắk Nông"
    regulations: list[str]  # "DN: Quyết định 12/2012/QĐ-UBND (2012-08-17)"
    host: str
    target: str
    started: datetime.datetime
    identity: dict = field(default_factory=dict)
    unreachable: str = ""  # why the host could not be reached, when it could not
    results: list[Result] = field(default_factory=list)
    finished: Optional[datetime.datetime] = None
    hosts: dict = field(default_factory=dict)  # every host of the province checked: its roles, and why not reached

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if not r.passed]


_control: list[str] = []


def control_dir() -> str:
    """A private directory for SSH's shared connections: the hundred commands of a run go over one
    connection per host (ControlMaster), which ends by itself 15 s after the last one."""
    if not _control:
        import atexit
        import shutil
        import tempfile

        _control.append(tempfile.mkdtemp(prefix="govmail-ssh-"))
        atexit.register(shutil.rmtree, _control[0], True)
    return _control[0]


def testinfra_host(ssh_argv: list[str]):
    """A testinfra host from the ssh command a target gives (`ssh [options] user@host`)."""
    import testinfra

    shared = ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir()}/%C", "-o", "ControlPersist=15"]
    dest, options = ssh_argv[-1], [*ssh_argv[1:-1], *SSH_GUARD, *shared]
    host = testinfra.get_host(f"ssh://{dest}", ssh_extra_args=" ".join(shlex.quote(o) for o in options))
    run = host.backend.run

    def bounded(command, *args, **kwargs):
        """Every command on the host under `timeout`: a check that waits on a stopped service fails
        with the command's name instead of hanging the run."""
        return run(f"timeout -k 5 {COMMAND_TIMEOUT} sh -c %s", host.backend.get_command(command, *args), **kwargs)

    host.backend.run = bounded
    return host


def identity(ti) -> tuple[dict, str]:
    """(what identifies the host, ''), or ({}, why it could not be reached)."""
    try:
        r = ti.run(IDENTITY)
    except Exception as e:  # ssh could not connect (exit 255: what it said), or the backend itself failed
        res = e.args[0] if isinstance(e, RuntimeError) and e.args else None
        if getattr(res, "exit_status", None) == 255 and str(getattr(res, "stderr", "")).strip():
            return {}, printable(str(res.stderr).strip())[-500:]
        return {}, printable(f"{type(e).__name__}: {e}")
    if r.rc != 0:
        return {}, printable(r.stderr.strip() or r.stdout.strip() or f"exit {r.rc}")[-500:]
    lines = [printable(x, 200) for x in (r.stdout.splitlines() + [""] * 5)[:5]]
    return dict(zip(("hostname", "machine_id", "os", "kernel", "ssh_host_key"), lines, strict=True)), ""


@dataclass
class Reached:
    """A province's hosts as a run reaches them: a probe for each host it reached, why for each it
    did not (a host lost during the run moves from the first to the second), what identifies each."""
    probes: dict[str, Probe] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)
    identities: dict[str, dict] = field(default_factory=dict)


def probes_for(cfg: ProvinceConfig, target) -> Reached:
    """A probe of each of the province's hosts, the mail host first: its own testinfra host and roles,
    and the backup and monitor hosts' for the checks that read them too."""
    out, tis = Reached(), {}
    for name in every_host(cfg):
        try:
            ti = testinfra_host(target.ssh(name))
            out.identities[name], why = identity(ti)
        except Exception as e:  # the target cannot name the host (not in the lab...)
            why = printable(f"{type(e).__name__}: {e}", 500)
        if why:
            out.lost[name] = why
        else:
            tis[name] = ti
    server = target.resolver()
    address = target.host_address(cfg) or cfg.mail_host  # where the active probes connect
    peers = target.private_addresses(cfg)
    for name, ti in tis.items():
        out.probes[name] = Probe(ti, tis.get(cfg.backup_host), lambda n: txt_records(n, server), address, name,
                                 monitor=tis.get(cfg.monitor_host), roles=tuple(expand(cfg.roles(name))), peers=peers)
    return out


def printable(text: str, limit: int = 2000) -> str:
    """What a host said, on one line, control characters shown as escapes (\\x1b), at most `limit`."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in " ".join(text.split()))[:limit]


class HostLost(Exception):
    """SSH itself failed (exit 255): the host went away during the run."""


def readable(text: str) -> str:
    """testinfra's words for a command that failed ("Unexpected exit code 75 for CommandResult(backend=
    <...>, exit_status=75, command=b'...', _stdout=..., _stderr=...)") as an inspector reads them: the
    command, its exit code and what it said."""
    import re

    m = re.match(r"Unexpected exit code (\d+) for CommandResult\(", text)
    if not m:
        return text

    def field(name: str) -> str:
        f = re.search(name + r"=b?(['\"])(.*?)(?<!\\)\1", text, re.S)
        return f.group(2).encode().decode("unicode_escape", errors="replace").strip() if f else ""

    said = field("_stderr") or field("stderr") or field("_stdout") or field("stdout")
    command = re.sub(r"^timeout -k 5 \d+ sh -c ", "", field("command")).strip("'")
    if m.group(1) == "124":
        return f"`{command}` did not finish in {COMMAND_TIMEOUT} s (a service it waits on does not answer)"
    return f"`{command}` exited {m.group(1)}" + (f": {said}" if said else " and said nothing")


def run_check(probe: Probe, cfg: ProvinceConfig, clause: Clause) -> tuple[bool, str]:
    """(passed, evidence) of a clause's check on the probe's host; HostLost when SSH itself failed."""
    try:
        evidence, ok = CHECKS[clause.check](probe, cfg, clause.arg) or "", True
    except AssertionError as e:
        evidence, ok = readable(" ".join(str(e).split())) or "assertion failed", False
    except Exception as e:  # a command that could not run, a host gone mid-way: a FAIL with its cause
        lost = ssh_failure(e)
        if lost:
            raise HostLost(lost) from None
        evidence, ok = f"{type(e).__name__}: {' '.join(str(e).split())}", False
    return ok, printable(evidence)


def check_clause(reached: Reached, cfg: ProvinceConfig, clause: Clause) -> Result:
    """A clause checked on each host it is checked on (Clause.hosts): it passes when it passes on
    every one of them. The evidence names each host when the clause is not the mail host's alone,
    the failures first; a host not reached fails it with the reason."""
    t, parts = time.monotonic(), []
    for name in clause.hosts(cfg):
        if name not in reached.lost:
            try:
                ok, evidence = run_check(reached.probes[name], cfg, clause)
                parts.append((ok, name, evidence))
                continue
            except HostLost as e:
                reached.lost[name] = f"lost during the run: {e}"
        parts.append((False, name, f"{name} not reached: {reached.lost[name]}"))
    if clause.on == "mail":
        ok, _, evidence = parts[0]
    else:
        parts.sort(key=lambda p: p[0])  # failures first: a shortened evidence still shows them
        ok = all(p[0] for p in parts)
        evidence = "; ".join(e if e.startswith(f"{n} not reached") else f"{n}: {e}" for _, n, e in parts)
    return Result(clause, ok, printable(evidence), time.monotonic() - t)


def verify(cfg: ProvinceConfig, target, progress: Callable[[Result], None] = lambda r: None,
           active: bool = False) -> HostRun:
    """Every clause of the province checked on the hosts it concerns (the mail host; every MX host;
    every host: Clause.on); with `active`, also the network probes (govmail/compliance/active.py),
    one of which sends a message to `verify.probe_mailbox`."""
    regs = [f"{r.key}: {r.decision} ({r.date})" for r in cfg.model.regulations]
    run = HostRun(cfg.key, cfg.model.name, regs, cfg.mail_host, target.name, datetime.datetime.now(datetime.timezone.utc))
    try:
        reached = probes_for(cfg, target)
    except Exception as e:  # the target cannot name the province's resolver or address
        why = printable(f"{type(e).__name__}: {e}", 500)
        reached = Reached(lost={h.name: why for h in cfg.model.hosts})
    run.identity = reached.identities.get(cfg.mail_host, {})
    for clause in clauses(cfg, active):
        r = check_clause(reached, cfg, clause)
        run.results.append(r)
        progress(r)
    run.unreachable = reached.lost.get(cfg.mail_host, "")
    run.hosts = {name: ", ".join(cfg.roles(name)) + (f"; not reached: {reached.lost[name]}" if name in reached.lost else "")
                 for name in every_host(cfg)}
    run.finished = datetime.datetime.now(datetime.timezone.utc)
    return run
