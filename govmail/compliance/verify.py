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
from ..publish.dnsquery import txt_records
from .checks import CHECKS, Probe, ssh_failure
from .clauses import Clause, clauses

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
    except Exception as e:  # the backend itself failed (no ssh binary, bad address)
        return {}, printable(f"{type(e).__name__}: {e}")
    if r.rc != 0:
        return {}, printable(r.stderr.strip() or r.stdout.strip() or f"exit {r.rc}")[-500:]
    lines = [printable(x, 200) for x in (r.stdout.splitlines() + [""] * 5)[:5]]
    return dict(zip(("hostname", "machine_id", "os", "kernel", "ssh_host_key"), lines, strict=True)), ""


def probe_for(cfg: ProvinceConfig, target) -> tuple[Probe, str, dict]:
    """The probe of a province's hosts: (probe, why the mail host is unreachable or '', its identity)."""
    ti = testinfra_host(target.ssh(cfg.mail_host))
    ident, why = identity(ti)
    backup = None
    if cfg.backup_host:
        b = testinfra_host(target.ssh(cfg.backup_host))
        if not identity(b)[1]:
            backup = b
    monitor = backup if cfg.monitor_host == cfg.backup_host else None
    if cfg.monitor_host and cfg.monitor_host != cfg.backup_host:
        m = testinfra_host(target.ssh(cfg.monitor_host))
        monitor = None if identity(m)[1] else m
    server = target.resolver()
    address = target.host_address(cfg) or cfg.mail_host  # where the active probes connect
    probe = Probe(ti, backup, lambda name: txt_records(name, server), address, cfg.mail_host, monitor=monitor)
    return probe, why, ident


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


def run_check(probe: Probe, cfg: ProvinceConfig, clause: Clause) -> Result:
    t = time.monotonic()
    try:
        evidence, ok = CHECKS[clause.check](probe, cfg, clause.arg) or "", True
    except AssertionError as e:
        evidence, ok = readable(" ".join(str(e).split())) or "assertion failed", False
    except Exception as e:  # a command that could not run, a host gone mid-way: a FAIL with its cause
        lost = ssh_failure(e)
        if lost:
            raise HostLost(lost) from None
        evidence, ok = f"{type(e).__name__}: {' '.join(str(e).split())}", False
    return Result(clause, ok, printable(evidence), time.monotonic() - t)


def verify(cfg: ProvinceConfig, target, progress: Callable[[Result], None] = lambda r: None,
           active: bool = False) -> HostRun:
    """Every clause of the province checked on its mail host; with `active`, also the network probes
    (govmail/compliance/active.py), one of which sends a message to `verify.probe_mailbox`."""
    regs = [f"{r.key}: {r.decision} ({r.date})" for r in cfg.model.regulations]
    run = HostRun(cfg.key, cfg.model.name, regs, cfg.mail_host, target.name, datetime.datetime.now(datetime.timezone.utc))
    try:
        probe, run.unreachable, run.identity = probe_for(cfg, target)
    except Exception as e:  # the target cannot name the host (not in the lab...)
        probe, run.unreachable = None, f"{type(e).__name__}: {e}"
    for clause in clauses(cfg, active):
        if probe is None or run.unreachable:
            r = Result(clause, False, f"{cfg.mail_host} not reached: {run.unreachable}", 0.0)
        else:
            try:
                r = run_check(probe, cfg, clause)
            except HostLost as e:
                run.unreachable = f"lost during the run: {e}"
                r = Result(clause, False, f"{cfg.mail_host} {run.unreachable}", 0.0)
        run.results.append(r)
        progress(r)
    run.finished = datetime.datetime.now(datetime.timezone.utc)
    return run
