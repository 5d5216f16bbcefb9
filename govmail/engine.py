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
   reload needless), and at the end a wait for every daemon to answer;
6. fetch: results the controller keeps (a DKIM record the host made).

Everything is decided when pyinfra prepares the deploy, from what step 1 read; nothing is asked
again while executing. So `pyinfra --dry` lists exactly what would run, `--diff` shows a unified
diff of every configuration file that would change (secrets excepted), and a second deploy with
no data change runs nothing after step 1.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import shlex
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from pyinfra import logger
from pyinfra.api import FactBase, FileUploadCommand, FunctionCommand, StringCommand, operation
from pyinfra.facts.files import FileContents

from .service import Context, Ensure, File, Service

PENDING = "/var/lib/govmail/pending"
STAGE = "/var/lib/govmail-stage"  # 0700: the bundle holds secrets
APPLY = Path(__file__).resolve().parent / "host" / "apply.py"
DAEMON_RELOAD = "systemd-daemon-reload"
# Marker names of govmail 0.1 (before the service contract) -> today's.
LEGACY_MARKERS = {
    "dovecot": "dovecot-reload", "rspamd": "rspamd-reload", "fail2ban": "fail2ban-reload",
    "govmail-passwd": "passwd-restart", "clamav": "clamav-reload", "clamav-units": DAEMON_RELOAD,
}

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
        sections: dict[str, list[str]] = {}
        current = sections.setdefault("", [])
        for line in output:
            if line.startswith("@@govmail "):
                current = sections.setdefault(line[len("@@govmail "):].strip(), [])
            else:
                current.append(line)
        return sections


def probe_script(probes: dict[str, str]) -> str:
    parts = []
    for name, command in probes.items():
        parts.append(f"echo '@@govmail {name}'; ( {command} ) 2>/dev/null </dev/null")
    return "\n".join(parts + ["true"])


def state_script(files: list[str], packages: list[str], units: list[str], checks: list[str]) -> str:
    lines = [
        "f() { if [ -f \"$1\" ]; then s=$(sha1sum < \"$1\"); printf '%s %s\\n' \"${s%% *}\" "
        "\"$(stat -c '%a %U %G' \"$1\")\"; else echo -; fi; }",
        "echo '@@govmail files'",
        *[f"f {shlex.quote(p)}" for p in files],
        "echo '@@govmail packages'",
    ]
    if packages:
        lines.append("dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' "
                     + " ".join(shlex.quote(p) for p in packages) + " 2>/dev/null")
    lines.append("echo '@@govmail units'")
    if units:
        lines.append("systemctl show -p Id,ActiveState,UnitFileState "
                     + " ".join(shlex.quote(u) for u in units) + " 2>/dev/null")
    lines.append("echo '@@govmail checks'")
    for c in checks:
        lines.append(f"if ( {c} ) >/dev/null 2>&1 </dev/null; then echo 1; else echo 0; fi")
    lines += ["echo '@@govmail pending'", f"ls -1 {PENDING} 2>/dev/null", "true"]
    return "\n".join(lines)


@dataclass
class HostState:
    files: dict[str, tuple[str, int, str, str] | None]
    installed: set[str]
    units: dict[str, tuple[str, str]]  # name -> (UnitFileState, ActiveState)
    checks: dict[str, bool]
    pending: set[str]

    @classmethod
    def parse(cls, sections: dict, files: list[str], units: list[str], checks: list[str]) -> "HostState":
        fl = {}
        for path, line in zip(files, sections.get("files", [])):
            parts = line.split()
            fl[path] = (parts[0], int(parts[1], 8), parts[2], parts[3]) if len(parts) == 4 else None
        installed = set()
        for line in sections.get("packages", []):
            parts = line.split()
            if len(parts) >= 2 and parts[1].startswith("ii"):
                installed.add(parts[0].split(":")[0])
        records, cur = [], {}
        for line in sections.get("units", []):
            key, _, value = line.partition("=")
            if not key:
                continue
            if key in cur:
                records.append(cur)
                cur = {}
            cur[key] = value.strip()
        if cur:
            records.append(cur)
        un = {}
        for name, rec in zip(units, records):
            un[name] = (rec.get("UnitFileState", ""), rec.get("ActiveState", ""))
        ck = {c: line.strip() == "1" for c, line in zip(checks, sections.get("checks", []))}
        pending = {line.strip() for line in sections.get("pending", []) if line.strip()}
        pending = {LEGACY_MARKERS.get(m, m) for m in pending} | ({"legacy"} if pending & set(LEGACY_MARKERS) else set())
        return cls(fl, installed, un, ck, pending)


# ---------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    missing_packages: list[str] = field(default_factory=list)
    fixes: list[tuple[Ensure, list[str]]] = field(default_factory=list)  # before the files
    late_fixes: list[tuple[Ensure, list[str]]] = field(default_factory=list)
    changed: list[tuple[Service, list[tuple[File, list[str], bool]]]] = field(default_factory=list)
    meta_only: list[File] = field(default_factory=list)  # same bytes, other owner or mode
    activate: list[str] = field(default_factory=list)  # shell lines
    activate_what: list[str] = field(default_factory=list)  # for the operation's name
    fetches: list = field(default_factory=list)
    legacy_markers: bool = False


def markers_for(svc: Service, action: str | None, reactors: dict[str, list[tuple[str, str]]]) -> list[str]:
    # A service's own marker only for an action it has; any change tells the services reacting to it.
    out = [f"{svc.name}-{action}"] if action and action in svc.actions else []
    out += [f"{other}-{theirs}" for other, theirs in reactors.get(svc.name, [])]
    return out


def _wait(check: str, timeout: int) -> str:
    return f"timeout {timeout} sh -c {shlex.quote(f'until {check}; do sleep 0.5; done')} >/dev/null 2>&1"


def make_plan(services: list[Service], state: HostState) -> Plan:
    plan = Plan(legacy_markers="legacy" in state.pending)
    reactors: dict[str, list[tuple[str, str]]] = {}
    for s in services:
        for other, action in s.reacts.items():
            reactors.setdefault(other, []).append((s.name, action))
    wanted = [p for s in services for p in s.packages]
    plan.missing_packages = list(dict.fromkeys(p for p in wanted if p not in state.installed))
    will_set: set[str] = set()
    for s in services:
        for e in s.ensures:
            if not state.checks.get(e.check, False):
                marks = markers_for(s, e.action, reactors) if e.action else []
                (plan.late_fixes if e.after_files else plan.fixes).append((e, marks))
                will_set.update(marks)
        changed = []
        for f in s.files:
            have = state.files.get(f.dest)
            sha = hashlib.sha1(f.content).hexdigest()
            if have is None or have[0] != sha:
                marks = markers_for(s, f.action, reactors)
                if f.dest.startswith("/etc/systemd/"):
                    marks.append(DAEMON_RELOAD)
                changed.append((f, marks, have is None))
                will_set.update(marks)
            elif have[1:] != (f.mode, f.user, f.group):
                plan.meta_only.append(f)
        if changed:
            plan.changed.append((s, changed))
    pending = state.pending | will_set
    _activation(plan, services, state, pending)
    return plan


def _activation(plan: Plan, services: list[Service], state: HostState, pending: set[str]) -> None:
    """The activate step's shell lines: late ensures, daemon-reload, then per service its named
    actions, unit enable/start, and the reload or restart a marker asks for; slow daemons are
    started first and every daemon this run touched is waited for at the end."""
    lines, what, slow_starts, waits = [], [], [], []

    def fail(label: str) -> str:
        return f"{{ echo {shlex.quote(f'govmail: {label} failed')} >&2; exit 1; }}"

    def marked(marker: str, command: str, label: str) -> bool:
        if marker not in pending:
            return False
        lines.append(f"if [ -e {PENDING}/{marker} ]; then ( {command} ) || {fail(label)}; rm -f {PENDING}/{marker}; fi")
        what.append(label)
        return True

    for e, _marks in plan.late_fixes:
        lines.append(f"( {e.fix} ) || {fail(e.name)}")
        what.append(e.name)
    marked(DAEMON_RELOAD, "systemctl daemon-reload", "systemd reloads unit files")
    for s in services:
        for name, command in s.actions.items():
            if name not in ("reload", "restart"):
                marked(f"{s.name}-{name}", command, f"{s.name}: {name}")
        started = touched = False
        for u in s.units:
            enabled, active = state.units.get(u.name, ("", ""))
            if not u.running:
                if enabled == "enabled" or active in ("active", "activating"):
                    lines.append(f"systemctl disable -q --now {u.name} || true")
                    what.append(f"stop {u.name}")
                continue
            if enabled not in ("enabled", "static", "indirect", "alias", "generated"):
                lines.append(f"systemctl enable -q {u.name}")
                what.append(f"enable {u.name}")
            ready = u.ready is None or state.checks.get(u.ready, False)
            if active != "active":
                (slow_starts if u.slow else lines).append(u.start or f"systemctl start{' --no-block' if u.slow else ''} {u.name}")
                what.append(f"start {u.name}")
                started = touched = True
            elif not ready:
                if not u.slow:  # a slow daemon may still be starting: wait for it below
                    lines.append(f"systemctl restart {u.name}")
                    what.append(f"restart {u.name} (not answering)")
                    started = True
                touched = True
            if u.ready:
                waits.append((s.name, u, touched))
        restart, reload = f"{s.name}-restart", f"{s.name}-reload"
        if started:
            gone = [m for m in (restart, reload) if m in pending]
            if gone:
                lines.append(f"rm -f {' '.join(f'{PENDING}/{m}' for m in gone)}  # started with the new files")
        else:
            how = "restart" if restart in pending else "reload" if reload in pending else None
            if how:
                # A service without a restart action applies everything with a reload, and vice versa.
                cmd = s.actions.get(how) or s.actions.get("reload" if how == "restart" else "restart")
                if cmd:
                    marked(restart if how == "restart" else reload, cmd, f"{s.name}: {how}")
                    if how == "restart" and reload in pending:
                        lines.append(f"rm -f {PENDING}/{reload}")
                    touched = True
        waits[:] = [(n, u, t or (n == s.name and touched)) for n, u, t in waits]
    if not lines and not slow_starts:
        return
    body = slow_starts + lines
    for _n, u, touched in waits:
        if touched:
            body.append(f"{_wait(u.ready, u.ready_timeout)} || "
                        f"{{ echo {shlex.quote(f'govmail: {u.name} does not answer after {u.ready_timeout} s')} >&2; exit 1; }}")
    plan.activate = body
    plan.activate_what = what


# ---------------------------------------------------------------------------- operations


def bundle(changed: list[tuple[Service, list[tuple[File, list[str], bool]]]]) -> bytes:
    import json

    plan = {"pending": PENDING, "services": []}
    buf = io.BytesIO()
    n = 0
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes, mode: int = 0o600) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))

        for svc, files in changed:
            entry = {"name": svc.name, "files": [],
                     "validator": {"copy": svc.validator.copy, "command": svc.validator.command} if svc.validator else None}
            for f, marks, _ in files:
                n += 1
                add(f"files/{n}", f.content)
                entry["files"].append({"dest": f.dest, "blob": str(n), "mode": f.mode, "user": f.user,
                                       "group": f.group, "markers": marks})
            plan["services"].append(entry)
        add("plan.json", json.dumps(plan, indent=1).encode())
        add("apply.py", APPLY.read_bytes(), 0o700)
    return buf.getvalue()


@operation(is_idempotent=False)
def install_packages(packages: list[str]):
    """All missing packages in one apt transaction, none of them started by Debian."""
    if not packages:
        return
    q = " ".join(shlex.quote(p) for p in packages)
    yield StringCommand(f"printf %s {shlex.quote(POLICY_RC_D)} > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d")
    yield StringCommand(
        "export DEBIAN_FRONTEND=noninteractive GOVMAIL_INSTALLING=1 && apt-get update -q >/dev/null && "
        f"apt-get install -y -q --no-install-recommends {q} >/dev/null"
    )


@operation(is_idempotent=False)
def run_fixes(fixes: list[tuple[Ensure, list[str]]], legacy: bool):
    if legacy:
        moves = " ; ".join(f"[ -e {PENDING}/{old} ] && mv -f {PENDING}/{old} {PENDING}/{new}"
                           for old, new in LEGACY_MARKERS.items())
        yield StringCommand(f"{moves} ; true")
    for e, marks in fixes:
        if marks:
            yield StringCommand(f"mkdir -p {PENDING} && touch " + " ".join(f"{PENDING}/{m}" for m in marks))
        yield StringCommand(f"( {e.fix} ) || {{ echo {shlex.quote(f'govmail: {e.name} failed')} >&2; exit 1; }}")


@operation(is_idempotent=False)
def install_files(changed, meta_only: list[File], diff: bool):
    if not changed and not meta_only:
        return
    if diff:
        _show_diffs(changed)
    for f in meta_only:
        yield StringCommand(f"chown {f.user}:{f.group} {shlex.quote(f.dest)} && chmod {f.mode:o} {shlex.quote(f.dest)}")
    if not changed:
        return
    data = bundle(changed)
    tar = f"{STAGE}/bundle.tar"
    yield StringCommand(f"install -d -m 700 {STAGE} && rm -rf {STAGE}/bundle {STAGE}/bundle.tar")
    yield FileUploadCommand(io.BytesIO(data), tar, remote_temp_filename=f"{STAGE}/bundle.tar.part")
    yield StringCommand(
        f"mkdir -m 700 {STAGE}/bundle && tar -xf {tar} -C {STAGE}/bundle && "
        f"python3 {STAGE}/bundle/apply.py {STAGE}/bundle; rc=$?; rm -rf {STAGE}/bundle {tar}; exit $rc"
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
def activate(lines: list[str]):
    if lines:
        yield StringCommand("\n".join(lines))


@operation(is_idempotent=False)
def fetch(command: str, receive):
    def run(state, host):
        ok, out = host.run_shell_command(StringCommand(command))
        if not ok:
            raise RuntimeError(f"`{command}` failed: {out.stderr}")
        receive(out.stdout)

    yield FunctionCommand(run, (), {})


# ---------------------------------------------------------------------------- the deploy


def deploy(host, cfg, names: list[str], target) -> list[Service]:
    """Declare the pyinfra operations that bring `host` to what the named services declare.
    `target`: govmail.targets.Target, whose answers the services get through their Context."""
    from pyinfra.context import state as pyinfra_state

    mods = [importlib.import_module(f"govmail.services.{n}") for n in names]
    probes: dict[str, str] = {}
    for m in mods:
        if hasattr(m, "probes"):
            probes.update(m.probes(cfg))
    answers = host.get_fact(ShellReport, script=probe_script(probes)) if probes else {}
    ctx = Context(
        cfg=cfg, host_name=host.name, roles=tuple(host.data.get("roles", ["mail"])),
        probes={k: "\n".join(v) for k, v in answers.items() if k},
        trusted_clients=tuple(target.trusted_clients), signature_mirror=target.signature_mirror,
        published=target.published, secrets_dir=target.secrets_dir(cfg.key),
    )
    # The engine's own file: the guard it installs packages under, kept current on every host.
    own = Service("engine", files=[File("/usr/sbin/policy-rc.d", POLICY_RC_D, mode=0o755, action=None)])
    services = [own] + [s for s in (m.service(ctx) for m in mods) if s is not None]
    for s in services:
        for w in s.warnings:
            logger.warning(f"{host.name}: {w}")

    files = [f.dest for s in services for f in s.files]
    units = list(dict.fromkeys(u.name for s in services for u in s.units))
    checks = list(dict.fromkeys([e.check for s in services for e in s.ensures]
                                + [u.ready for s in services for u in s.units if u.ready]))
    packages = list(dict.fromkeys(p for s in services for p in s.packages))
    sections = host.get_fact(ShellReport, script=state_script(files, packages, units, checks))
    state = HostState.parse(sections, files, units, checks)
    plan = make_plan(services, state)

    _describe(host, plan, len(files), len(packages))
    install_packages(name="Packages (one apt transaction)", packages=plan.missing_packages)
    run_fixes(name="Prepare (users, directories, keys made once)", fixes=plan.fixes, legacy=plan.legacy_markers)
    install_files(name="Configuration files (one transfer; validated, then swapped)", changed=plan.changed,
                  meta_only=plan.meta_only, diff=bool(pyinfra_state.config.DIFF))
    activate(name="Activate (start, reload or restart what changed; wait until they answer)", lines=plan.activate)
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
    host.log("; ".join(said) if said else "up to date", logger.info)


def all_packages(services: list[Service]) -> list[str]:
    return list(dict.fromkeys(p for s in services for p in s.packages))

