"""The engine: carries out the services' declarations (govmail/service.py) on one host with pyinfra.

For a host, in this order, each step one pyinfra operation and (at most) one round trip:

1. read: one command asks the services' probes (read-only questions such as "which accounts have
   a password"); a second one reads everything declared: checksum, mode and owner of every file,
   package states, unit states, every ensure's check, the pending markers;
2. packages: every missing package of every service in one `apt-get install`, with the guard that
   keeps Debian from starting a service with its default configuration (policy-rc.d);
3. prepare: the fixes of the ensures that do not hold (users, directories, keys made once);
4. files: every changed file in one tar upload; on the host govmail/host/apply.py validates each
   service's new files with its own tool on a copy, then swaps them in and sets pending markers;
5. activate: one shell script: ensures that need the files, `systemctl daemon-reload` when a unit
   file changed, slow daemons started first (their start-up overlaps the rest), then per service:
   named actions, enable/start, reload or restart where a marker asks for it (a start makes a
   reload needless), and at the end a wait for every daemon to answer. Hosts that share a role (two
   MX, two db hosts) restart one at a time: an activation that restarts a daemon waits until the
   other host's activation that restarts has ended and its daemons answer (`activate`, `turns`);
6. fetch: results the controller keeps (a DKIM record the host made).

Steps 2-5 run only while this deploy holds the host (govmail/host/deploy_lock.py, sent with each
step): a deploy with anything to do first takes the host's lease (waiting at most GOVMAIL_LOCK_WAIT
seconds, default 600, for a deploy that is still alive; taking over from one that died, and cleaning
what it left), each step checks that it still holds it, and the last one gives it back. Each run
stages its transfer in a directory of its own, and the host installs nothing from a bundle that is
incomplete, not the planned files, or planned from a host that has changed since it was read.

Everything is decided when pyinfra prepares the deploy, from what step 1 read; nothing is asked
again while executing. So `pyinfra --dry` lists exactly what would run, `--diff` shows a unified
diff of every configuration file that would change (secrets excepted), and a second deploy with
no data change runs nothing after step 1.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import os
import secrets
import shlex
import time
from pathlib import Path

from pyinfra import logger
from pyinfra.api import FactBase, FileUploadCommand, FunctionCommand, StringCommand, operation
from pyinfra.facts.files import FileContents

from .data.facts import operator
from .host import contract, deploy_lock
from .plan import (
    INSTALL_DONE,
    LEGACY_MARKERS,
    PENDING,
    HostState,
    Plan,
    bundle,
    expected_files,
    guarded,
    make_plan,
    probe_script,
    sections,
    state_script,
    warm_launch,
)
from .secrets import province_secrets
from .service import Context, Ensure, File, Refused, Service, Unit
from .turns import in_turn, restarts, turns_of

STAGE = deploy_lock.STAGE  # 0700, a directory per run: the bundle holds secrets
LOCK_PROGRAM = Path(deploy_lock.__file__).read_text()
LOCK_WAIT_DEFAULT = 600

# Debian starts a service as soon as its package is installed, with Debian's default
# configuration, and restarts it on every plugin trigger. govmail installs with GOVMAIL_INSTALLING
# set; this policy-rc.d then refuses those starts, and the activate step starts each service with
# govmail's configuration. Any other apt run (security updates) is unaffected.
POLICY_RC_D = """#!/bin/sh
# Managed by govmail (govmail/engine.py); edits here are overwritten by the next deploy.
# govmail: no service start while govmail installs packages (see govmail/engine.py).
[ -n "$GOVMAIL_INSTALLING" ] && exit 101
exit 0
"""


# ---------------------------------------------------------------------------- reading the host


class ShellReport(FactBase):
    """Output of a govmail-generated read-only script, split into sections (`@@govmail NAME`)."""

    def command(self, script):
        return script

    def process(self, output):
        return sections(output)


# ---------------------------------------------------------------------------- operations


def lock_program(*args: str) -> str:
    """A command running the deploy lock program (sent along: nothing needs to be on the host)."""
    return (f"python3 - {' '.join(shlex.quote(a) for a in args)} <<'GOVMAIL_DEPLOY_LOCK'\n"
            f"{LOCK_PROGRAM}\nGOVMAIL_DEPLOY_LOCK")


def held(run: str, script: str) -> StringCommand:
    """`script` run on the host only while deploy `run` holds it, to its end whatever the controller does."""
    return StringCommand(lock_program("guard", run, "sh", "-c", script))


def new_run() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}"


def lock_wait() -> int:
    raw = os.environ.get("GOVMAIL_LOCK_WAIT", str(LOCK_WAIT_DEFAULT))
    if not raw.isascii() or not raw.isdigit() or int(raw) > 24 * 3600:
        logger.error(f"GOVMAIL_LOCK_WAIT={raw!r}: allowed: the seconds to wait for another deploy, 0..86400")
        raise SystemExit(2)
    return int(raw)


@operation(is_idempotent=False)
def take_host(run: str, wait: int, files: list[tuple[str, str, str]]):
    """This deploy's lease on the host (govmail/host/deploy_lock.py); `files`: every declared file
    with the SHA-1 this deploy read and the one it wants, so a host changed since is not deployed
    from a stale plan."""
    yield StringCommand(lock_program("acquire", run, operator(), str(wait), *(x for f in files for x in f)))


@operation(is_idempotent=False)
def give_back_host(run: str):
    yield StringCommand(lock_program("release", run))


@operation(is_idempotent=False)
def install_packages(packages: list[str], warms: list[Unit], run: str, debconf: tuple[str, ...] = (),
                     early: tuple[tuple[str, bytes, int], ...] = ()):
    """All missing packages in one apt transaction, none of them started by Debian, the services'
    debconf answers and early files (File.early: dest, content, mode) given first; daemons' warm-ups
    (Unit.warm) start in the background as soon as their packages are unpacked."""
    if not packages:
        return
    q = " ".join(shlex.quote(p) for p in packages)
    lines = [f"printf %s {shlex.quote(POLICY_RC_D)} > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d || exit 1"]
    lines += [early_write(*f) for f in early]
    if debconf:
        lines.append(f"printf '%s\\n' {' '.join(shlex.quote(d) for d in debconf)} | debconf-set-selections || exit 1")
    lines += [warm_launch(u) for u in warms]
    lines.append(
        "export DEBIAN_FRONTEND=noninteractive GOVMAIL_INSTALLING=1 && apt-get update -q >/dev/null && "
        f"apt-get install -y -q --no-install-recommends {q} >/dev/null"
        + (f"; rc=$?; touch {INSTALL_DONE}; exit $rc" if warms else "")
    )
    yield held(run, "\n".join(lines))


def early_write(dest: str, content: bytes, mode: int) -> str:
    """The shell line that writes an early file (File.early) whole before the packages come."""
    d, tmp = shlex.quote(os.path.dirname(dest)), shlex.quote(f"{dest}.govmail-early")
    return (f"mkdir -p {d} && printf %s {base64.b64encode(content).decode()} | base64 -d > {tmp} && "
            f"chmod {mode:o} {tmp} && mv -f {tmp} {shlex.quote(dest)} || exit 1")


@operation(is_idempotent=False)
def run_fixes(fixes: list[tuple[Ensure, list[str]]], legacy: bool, run: str):
    lines = []
    if legacy:
        lines.append(" ; ".join(f"[ -e {PENDING}/{old} ] && mv -f {PENDING}/{old} {PENDING}/{new}"
                                for old, new in LEGACY_MARKERS.items()) + " ; true")
    # each fix runs only if its check still fails on the host
    lines += [guarded(e, marks) for e, marks in fixes]
    if lines:
        yield held(run, "\n".join(lines))


@operation(is_idempotent=False)
def install_files(changed, meta_only: list[File], diff: bool, run: str, expected: dict[str, str],
                  directories: list[str] = ()):
    if not changed and not meta_only:
        return
    if diff:
        _show_diffs(changed)
    if meta_only:
        yield held(run, " && ".join(f"chown {f.user}:{f.group} {shlex.quote(f.dest)} && "
                                    f"chmod {f.mode:o} {shlex.quote(f.dest)}" for f in meta_only))
    if not changed:
        return
    data = bundle(changed, expected, directories)
    stage = f"{STAGE}/{run}"
    yield held(run, f"install -d -m 700 {STAGE} {stage}")
    yield FileUploadCommand(io.BytesIO(data), f"{stage}/bundle.tar", remote_temp_filename=f"{stage}/bundle.tar.part")
    yield held(run,
        f"mkdir -m 700 {stage}/bundle && tar -xf {stage}/bundle.tar -C {stage}/bundle && "
        f"python3 {stage}/bundle/apply.py {stage}/bundle; rc=$?; rm -rf {stage}/bundle {stage}/bundle.tar; exit $rc"
    )


def _show_diffs(changed) -> None:
    from pyinfra import host as host_obj
    from pyinfra.operations.util.files import generate_color_diff

    for _svc, files in changed:
        for f, _marks, new in files:
            verb = "create" if new else "modify"
            host_obj.log(f"Will {verb} {f.dest}", logger.info)
            if f.secret:
                logger.info("  (secret: contents not shown)")
                continue
            try:
                desired = f.content.decode().splitlines(keepends=True)
            except UnicodeDecodeError:
                logger.info("  (binary file)")
                continue
            current = [] if new else [line + "\n" for line in (host_obj.get_fact(FileContents, path=f.dest) or [])]
            for line in generate_color_diff(current, desired):
                logger.info("  %s", line)
            logger.info("")


@operation(is_idempotent=False)
def activate(lines: list[str], run: str, turns: tuple[str, ...] = ()):
    """The activation script; with `turns`, run in turn with the other hosts of those roles."""
    if not lines:
        return
    if turns:
        yield FunctionCommand(in_turn, (held(run, "\n".join(lines)), turns), {})
    else:
        yield held(run, "\n".join(lines))


@operation(is_idempotent=False)
def fetch(command: str, receive):
    def run(state, host):
        ok, out = host.run_shell_command(StringCommand(command))
        if not ok:
            raise RuntimeError(f"`{command}` failed: {out.stderr}")
        receive(out.stdout)

    yield FunctionCommand(run, (), {})


# ---------------------------------------------------------------------------- the deploy


def local_files(cfg, host_name: str) -> list[str]:
    """The files the data keeps as the host's own in the directories govmail owns (hosts[].local_files)."""
    return next((list(h.local_files) for h in cfg.model.hosts if h.name == host_name), [])


def add_drift_ensures(services: list[Service], keep_local: list[str],
                      foreign: list[str]) -> dict[str, tuple[str, bool]]:
    """For each directory govmail owns on this host (contract.OWNED_DIRS, by the service that reads it):
    a file there that is not govmail's, not a Debian package's and not in the data's local_files is
    moved to contract.QUARANTINE/<time>/ before the files are validated, and the service reloaded.
    `foreign`: such files, as the first read of the host found them. Returns, by directory, its check
    and what that read says of it (True: nothing to move), so the host's second read need not run
    them; a host that gets packages in this run checks each again right before its fix (a package
    brings files: Debian's unread dovecot/conf.d)."""
    by_name = {s.name: s for s in services}
    declared = [f.dest for s in services for f in s.files]
    dirs: dict[str, tuple[str, bool]] = {}
    for directory, name in contract.OWNED_DIRS.items():
        svc = by_name.get(name)
        if svc is None:
            continue
        keep = [p for p in [*declared, *keep_local] if os.path.dirname(p) == directory]
        found = contract.foreign_files_command(directory, keep)
        action = "reload" if "reload" in svc.actions else "restart" if "restart" in svc.actions else None
        check = f"test -z \"$( {found} )\""
        svc.ensures.append(Ensure(
            f"only govmail's, Debian's and the data's own files in {directory}", check,
            # One name per line, read whole: a name with spaces is one file.
            f"q={contract.QUARANTINE}/$(date -u +%Y%m%dT%H%M%SZ); {found} | while IFS= read -r f; do "
            "echo \"govmail: $f is not govmail's, a package's or in the data's local_files: moved to $q$f\" >&2; "
            "mkdir -p \"$q$(dirname \"$f\")\" && mv \"$f\" \"$q$f\" || exit 1; done",
            action=action))
        dirs[directory] = (check, not any(os.path.dirname(p) == directory for p in foreign))
    return dirs


def deploy(host, cfg, names: list[str], target) -> list[Service]:
    """Declare the pyinfra operations that bring `host` to what the named services declare.
    `target`: govmail.targets.Target, whose answers the services get through their Context."""
    from pyinfra.context import state as pyinfra_state

    mods = [importlib.import_module(f"govmail.services.{n}") for n in names]
    # What sits in the directories govmail owns, besides Debian's files (govmail's own among them):
    # what is neither declared nor the data's own is named before the deploy moves it (a dry run too).
    probes: dict[str, str] = {"owned_files": contract.foreign_files_command(list(contract.OWNED_DIRS), [])}
    for m in mods:
        if hasattr(m, "probes"):
            probes.update(m.probes(cfg))
    answers = host.get_fact(ShellReport, script=probe_script(probes))
    ctx = Context(
        cfg=cfg, host_name=host.name, roles=tuple(host.data.get("roles", ["mail"])),
        probes={k: "\n".join(v) for k, v in answers.items() if k},
        trusted_clients=tuple(target.trusted_clients), signature_mirror=target.signature_mirror,
        published=target.published, secrets=province_secrets(cfg, target.secrets_dir(cfg.key)),
        addresses=target.private_addresses(cfg), verifiable_tls=target.verifiable_tls,
    )
    # The engine's own file: the guard it installs packages under, kept current on every host.
    own = Service("engine", files=[File("/usr/sbin/policy-rc.d", POLICY_RC_D, mode=0o755, action=None)])
    try:
        declared = [m.service(ctx) for m in mods]
    except Refused as e:
        logger.error(f"{host.name}: {e}")
        raise SystemExit(f"govmail: {host.name}: {e}; nothing was changed on any host") from None
    services = [own] + [s for s in declared if s is not None]
    keep = {f.dest for s in services for f in s.files} | set(local_files(cfg, host.name))
    foreign = [p for p in answers.get("owned_files", []) if p and p not in keep]
    by_dir = add_drift_ensures(services, local_files(cfg, host.name), foreign)
    owned, drift = list(by_dir), dict(by_dir.values())
    foreign = [p for p in foreign if os.path.dirname(p) in owned]
    if foreign:
        host.log(f"not govmail's, a package's or in hosts[].local_files, to be moved to {contract.QUARANTINE}/<time>/: "
                 + ", ".join(foreign), logger.warning)
    for s in services:
        for w in s.warnings:
            logger.warning(f"{host.name}: {w}")

    files = [f.dest for s in services for f in s.files]
    units = list(dict.fromkeys(u.name for s in services for u in s.units))
    checks = list(dict.fromkeys([e.check for s in services for e in s.ensures if e.check not in drift]
                                + [u.ready for s in services for u in s.units if u.ready]))
    packages = list(dict.fromkeys(p for s in services for p in s.packages))
    read = host.get_fact(ShellReport, script=state_script(files, packages, units, checks))
    state = HostState.parse(read, files, units, checks)
    state.checks.update(drift)  # read by the first read (above), not run again
    plan = make_plan(services, state)

    _describe(host, plan, len(files), len(packages))
    run = new_run()
    if plan.work:
        take_host(name="Take the host (one deploy at a time)", run=run, wait=lock_wait(),
                  files=[(f.dest, (state.files.get(f.dest) or ("-",))[0], hashlib.sha1(f.content).hexdigest())
                         for s in services for f in s.files])
    install_packages(name="Packages (one apt transaction)", packages=plan.missing_packages, warms=plan.warms, run=run,
                     debconf=tuple(dict.fromkeys(d for s in services for d in s.debconf)),
                     early=tuple((f.dest, f.content, f.mode) for s in services for f in s.files if f.early))
    run_fixes(name="Prepare (users, directories, keys made once)", fixes=plan.fixes, legacy=plan.legacy_markers,
              run=run)
    install_files(name="Configuration files (one transfer; validated, then swapped)", changed=plan.changed,
                  meta_only=plan.meta_only, diff=bool(pyinfra_state.config.DIFF), run=run,
                  expected=expected_files(services, plan.changed), directories=owned)
    turns = turns_of(cfg, ctx.roles) if restarts(plan) else ()
    activate(name="Activate (start, reload or restart what changed; wait until they answer)"
             + (f"; restarts in turn with the other {'/'.join(turns)} hosts" if turns else ""),
             lines=plan.activate, run=run, turns=turns)
    if plan.work:
        give_back_host(name="Give the host back", run=run)
    for s in services:
        for fx in s.fetches:
            fetch(name=fx.name, command=fx.command, receive=fx.receive)
    return services


def _describe(host, plan: Plan, n_files: int, n_packages: int) -> None:
    """What this host's steps will do, said once while pyinfra prepares (names are shared by hosts)."""
    said = []
    if plan.missing_packages:
        said.append(f"{len(plan.missing_packages)} of {n_packages} packages to install")
    if plan.fixes:
        said.append("prepare: " + "; ".join(e.name for e, _ in plan.fixes))
    changed = [(s.name, len(f)) for s, f in plan.changed]
    if changed:
        said.append(f"{sum(n for _, n in changed)} of {n_files} files change ("
                    + ", ".join(f"{name} {n}" for name, n in changed) + ")")
    if plan.meta_only:
        said.append(f"{len(plan.meta_only)} files get their owner or mode back")
    if plan.activate_what:
        said.append("activate: " + ", ".join(plan.activate_what))
    if plan.leftovers:
        lease = [x for x in plan.leftovers if x == deploy_lock.LEASE]
        new = [x for x in plan.leftovers if x.endswith(".govmail-new")]
        stage = len(plan.leftovers) - len(lease) - len(new)
        what = (["its lease"] if lease else []) + ([f"{stage} staging director{'y' if stage == 1 else 'ies'}"] if stage
                else []) + ([f"{len(new)} file(s) written but not swapped in"] if new else [])
        said.append("clean what an interrupted deploy left: " + ", ".join(what))
    host.log("; ".join(said) if said else "up to date", logger.info)


def all_packages(services: list[Service]) -> list[str]:
    return list(dict.fromkeys(p for s in services for p in s.packages))


def declared_packages(cfg, role: str, services: dict | None = None) -> list[str]:
    """Every package a host of `role` gets (for the apt-floor bench), as the services declare them
    for a host that has nothing yet."""
    import shutil
    import tempfile
    from pathlib import Path

    from .services import for_roles

    names = services[role] if services is not None else for_roles((role,))
    scratch = Path(tempfile.mkdtemp(prefix="govmail-packages-"))
    try:
        ctx = Context(cfg=cfg, host_name=cfg.mail_host, roles=(role,), probes={}, signature_mirror=False,
                      secrets=province_secrets(cfg, scratch))
        out = []
        for name in names:
            svc = importlib.import_module(f"govmail.services.{name}").service(ctx)
            if svc is not None:
                out += svc.packages
    finally:
        shutil.rmtree(scratch)
    return list(dict.fromkeys(out))

