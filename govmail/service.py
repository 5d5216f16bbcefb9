"""The service contract: what a service module declares, and nothing about how it is carried out.

A service module in govmail/services/ has one function, `service(ctx) -> Service`, and may have a
`probes(cfg) -> dict` of read-only shell commands whose output it needs (read in the deploy's first
round trip and handed back as `ctx.probes`). It declares:

- `packages`: Debian packages (installed with every other service's, in one apt transaction);
- `ensures`: conditions on the host with the commands that make them true (users, directories,
  keys made once); checked in the one state read, fixed only where they do not hold;
- `files`: rendered on the controller, sent in one transfer with every other service's, validated
  on the host by the service's `validator` on a copy of its configuration, and only then swapped in;
- `units`: systemd units to enable and keep running (or off);
- `actions`: what a change needs (`reload`, `restart`, or a named step such as `sync`), as commands;
  each changed file or fixed ensure names the action it needs, and a pending marker on the host
  remembers it until it has run, so a deploy that stops half-way applies it on the next run;
- `reacts`: another service whose change needs one of ours (`{"tls": "reload"}`).

govmail/engine.py carries all of this out for a host. Services never touch pyinfra, the lab or
another service's internals.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional


class Refused(Exception):
    """A service cannot declare itself for this host as the data asks (the host's account store is
    on another engine, a secret is unusable ...): one message for the operator, raised while the
    deploy is prepared, so no host is touched."""


@dataclass(frozen=True)
class File:
    """A file the service owns on the host: `content` at `dest`, with owner and mode."""

    dest: str
    content: bytes
    mode: int = 0o644
    user: str = "root"
    group: str = "root"
    # The service action a change of this file needs (a key of Service.actions), or None.
    action: Optional[str] = "reload"
    # Secrets (keys, passphrases, initial passwords) are never shown in a diff.
    secret: bool = False
    # The host reads it once and removes it (initial passwords): not among the files verify expects.
    consumed: bool = False
    # Also written before the packages are installed, when a run installs any: a package's own
    # install script reads it (postgresql-common's createcluster.d). Root's, not secret.
    early: bool = False

    def __post_init__(self):
        if isinstance(self.content, str):
            object.__setattr__(self, "content", self.content.encode())


@dataclass(frozen=True)
class Ensure:
    """A condition on the host: `check` exits 0 when it holds; otherwise `fix` makes it hold.

    `action`: the service action to run when it was fixed. `after_files`: fixed once the files are
    in place (a repository initialised with a passphrase file the deploy sends), not before."""

    name: str
    check: str
    fix: str
    action: Optional[str] = None
    after_files: bool = False


@dataclass(frozen=True)
class Validator:
    """How the host checks the service's new files before they replace the live ones.

    `copy`: a directory copied to a scratch directory with the new files laid over it (those of
    the service's files that live under it); `command` runs with `{dir}` replaced by that copy."""

    copy: str
    command: str


@dataclass(frozen=True)
class Unit:
    """A systemd unit the service keeps enabled and running (or disabled and stopped).

    `ready`: a quick shell check that the daemon serves (a port answers, a socket exists); the
    engine waits for it after a start, up to `ready_timeout` seconds. `slow`: started first, without
    waiting, so its start-up overlaps the other services'; waited for at the end. `warm`: see below."""

    name: str
    running: bool = True
    ready: Optional[str] = None
    ready_timeout: int = 60
    slow: bool = False
    # How to (re)start it when it is not running or not ready (default: systemctl start).
    start: Optional[str] = None
    # The services after it need it answering (the account store's Patroni before the accounts'
    # sync): its wait comes right after its start, not with the others at the end.
    gate: bool = False
    # Work the daemon's first start would otherwise do itself, on the critical path (rspamd compiles
    # its URL patterns into a cache): a shell command the engine runs in the background as soon as
    # the `warm_after` packages are unpacked, while the rest of the install goes on. Only on a run
    # that installs one of those packages; the unit's first start then waits for it.
    warm: Optional[str] = None
    warm_after: tuple[str, ...] = ()


@dataclass
class Service:
    name: str
    packages: tuple[str, ...] = ()
    # Answers to the packages' install-time questions (debconf-set-selections lines: "package
    # question type value"), given before any package is installed: Debian's default answer may
    # depend on what else is installed (roundcube's database type follows a local PostgreSQL).
    debconf: tuple[str, ...] = ()
    ensures: list[Ensure] = field(default_factory=list)
    files: list[File] = field(default_factory=list)
    validator: Optional[Validator] = None
    units: list[Unit] = field(default_factory=list)
    # action name -> shell command. `reload` and `restart` act on a running daemon and are not
    # needed when the engine has just started it; other actions (e.g. `sync`) always run, in order.
    actions: dict[str, str] = field(default_factory=dict)
    # another service's name -> the action of ours that its change needs
    reacts: dict[str, str] = field(default_factory=dict)
    # said to the engineer during the deploy (pyinfra's warning log)
    warnings: list[str] = field(default_factory=list)
    # Steps that run on the controller after the host's changes (e.g. fetch a public key the host
    # made and publish it): (name, function(host_output) -> None, shell command whose output it
    # receives). Only emitted when `needed` is true.
    fetches: list["Fetch"] = field(default_factory=list)


@dataclass(frozen=True)
class Fetch:
    """Read something the host made (a command's output) back to the controller after the deploy."""

    name: str
    command: str
    receive: Callable[[str], None]


@dataclass
class Context:
    """What a service knows when it declares itself: the province, the host, what the host told
    the first round trip (`probes`), and the target's answers to target-neutral questions."""

    cfg: object  # govmail.data.ProvinceConfig
    host_name: str
    roles: tuple[str, ...]
    probes: dict[str, str]
    # Addresses never banned by fail2ban (the machine running a lab's tests).
    trusted_clients: tuple[str, ...] = ()
    # Whether the host can reach ClamAV's signature mirror (freshclam).
    signature_mirror: bool = True
    # Where the controller keeps what a province publishes (the DKIM record), and how it tells the
    # world (a lab resolver refresh; nothing on real hosts, where the operator publishes the zone).
    published: Optional["Published"] = None
    # The province's secrets, made on the controller before anything is declared (govmail/secrets.py):
    # the backup passphrase and SSH key pair ("passphrase", "ssh_key", "ssh_public"). A service only
    # reads them; it never makes a key or runs a program while declaring.
    secrets: Mapping[str, bytes] = field(default_factory=dict)
    # Where the province's hosts reach each other (host name -> address): the monitor scrapes there.
    addresses: Mapping[str, str] = field(default_factory=dict)
    # Whether other hosts' certificates can be verified (false in the lab: self-signed certificates).
    verifiable_tls: bool = True


class Published:
    """The controller's copy of what a province publishes in DNS; given by the target layer."""

    def dkim_record(self, cfg, domain: Optional[str] = None) -> Optional[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def set_dkim_record(self, cfg, value: str, domain: Optional[str] = None) -> None:  # pragma: no cover
        raise NotImplementedError


def _one_line() -> Callable[[object], str]:
    """JSON of one value on one line, keys sorted, UTF-8 kept. json.JSONEncoder.encode builds its C
    encoder anew on every call (a third of the time for 50,000 small objects): built once here."""
    base = json.JSONEncoder(sort_keys=True, ensure_ascii=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    try:
        enc = make(None, base.default, json.encoder.encode_basestring, None, ": ", ", ", True, False, True)
    except TypeError:  # no C accelerator (make is None) or another signature: the plain way
        return base.encode
    return lambda value: "".join(enc(value, 0))


def json_bytes(obj) -> bytes:
    """A JSON document for a host: keys sorted, one line per top-level key and, inside a top-level
    list or mapping, one line per item (readable, diffable), each line by json's C encoder (an
    indented dump goes through the pure-Python one: 5 s for a 50,000-mailbox directory)."""
    one = _one_line()
    if not isinstance(obj, dict):
        return (one(obj) + "\n").encode()
    out = []
    for k in sorted(obj):
        v = obj[k]
        if isinstance(v, list) and v:
            body = "[\n  " + ",\n  ".join(one(x) for x in v) + "\n ]"
        elif isinstance(v, dict) and v:
            body = "{\n  " + ",\n  ".join(f"{one(str(x))}: {one(v[x])}" for x in sorted(v)) + "\n }"
        else:
            body = one(v)
        out.append(f" {one(str(k))}: {body}")
    return ("{\n" + ",\n".join(out) + "\n}\n").encode()


def directory(path: str, mode: int, user: str = "root", group: str = "root") -> Ensure:
    """A directory with its mode and owner."""
    want, q = f"{mode:o} {user} {group}", shlex.quote(path)
    return Ensure(
        name=f"directory {path} ({want})",
        check=f"[ \"$(stat -c '%a %U %G' {q} 2>/dev/null)\" = '{want}' ]",
        fix=f"install -d -m {mode:o} -o {user} -g {group} {q}",
    )


def made_once(name: str, path: str, commands: str, action: Optional[str] = None, after_files: bool = False) -> Ensure:
    """Something the host makes once and keeps (a key, a repository): made only while `path` is missing."""
    return Ensure(name=name, check=f"test -e {shlex.quote(path)}", fix=commands, action=action, after_files=after_files)


def restarted_after_crash(unit: str, why: str, seconds: int = 5) -> File:
    """A drop-in that has systemd start `unit` again `seconds` after it dies (Debian's units for
    Postfix, Dovecot, clamd and nginx leave it down: Restart=no). `why`: what stops while it is down.
    An orderly stop (`systemctl stop`, a deploy's restart) is not a failure and is left alone."""
    return File(f"/etc/systemd/system/{unit}.service.d/govmail-restart.conf",
                "# Managed by govmail (govmail/service.py, restarted_after_crash); overwritten by the next deploy.\n"
                f"# Started again {seconds} s after a crash: {why}.\n"
                f"[Service]\nRestart=on-failure\nRestartSec={seconds}s\n", action=None)
