"""The plan: from what the services declare and what the host has, what each deploy step does.

Pure Python, no pyinfra: govmail/engine.py reads the host with the scripts made here, turns the
answers into a `HostState`, asks `make_plan` what to do, and carries the plan out. So the rules
(what is missing, which files changed, which markers a change sets, what the activation runs and
in which order) are unit-tested without a host.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from .host import contract
from .host.deploy_lock import LEASE, STAGE
from .service import Ensure, File, Service, Unit

PENDING = contract.PATHS["pending"]
APPLY = Path(__file__).resolve().parent / "host" / "apply.py"
DAEMON_RELOAD = "systemd-daemon-reload"
# Marker names of govmail 0.1 (before the service contract) -> today's.
LEGACY_MARKERS = {
    "dovecot": "dovecot-reload", "rspamd": "rspamd-reload", "fail2ban": "fail2ban-reload",
    "govmail-passwd": "passwd-restart", "clamav": "clamav-reload", "clamav-units": DAEMON_RELOAD,
}


def sections(output) -> dict[str, list[str]]:
    """A read script's output split into its sections (`@@govmail NAME` lines)."""
    out: dict[str, list[str]] = {}
    current = out.setdefault("", [])
    for line in output:
        if line.startswith("@@govmail "):
            current = out.setdefault(line[len("@@govmail "):].strip(), [])
        else:
            current.append(line)
    return out

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
    lines += ["echo '@@govmail pending'", f"ls -1 {PENDING} 2>/dev/null"]
    # What an interrupted deploy left: its lease, its staging directory, files written but not swapped.
    lines += ["echo '@@govmail leftovers'", f"ls -1A {STAGE} 2>/dev/null", f"[ -e {LEASE} ] && echo {LEASE}",
              *[f"[ -e {shlex.quote(p + '.govmail-new')} ] && echo {shlex.quote(p + '.govmail-new')}" for p in files],
              "true"]
    return "\n".join(lines)


@dataclass
class HostState:
    files: dict[str, tuple[str, int, str, str] | None]
    installed: set[str]
    units: dict[str, tuple[str, str]]  # name -> (UnitFileState, ActiveState)
    checks: dict[str, bool]
    pending: set[str]
    leftovers: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, sections: dict, files: list[str], units: list[str], checks: list[str]) -> "HostState":
        fl = {}
        for path, line in zip(files, sections.get("files", []), strict=False):
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
        for name, rec in zip(units, records, strict=False):
            un[name] = (rec.get("UnitFileState", ""), rec.get("ActiveState", ""))
        ck = {c: line.strip() == "1" for c, line in zip(checks, sections.get("checks", []), strict=False)}
        pending = {line.strip() for line in sections.get("pending", []) if line.strip()}
        pending = {LEGACY_MARKERS.get(m, m) for m in pending} | ({"legacy"} if pending & set(LEGACY_MARKERS) else set())
        leftovers = [line.strip() for line in sections.get("leftovers", []) if line.strip()]
        return cls(fl, installed, un, ck, pending, leftovers)


# ---------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    missing_packages: list[str] = field(default_factory=list)
    fixes: list[tuple[Ensure, list[str]]] = field(default_factory=list)  # before the files
    late_fixes: list[tuple[Ensure, list[str]]] = field(default_factory=list)
    changed: list[tuple[Service, list[tuple[File, list[str], bool]]]] = field(default_factory=list)
    meta_only: list[File] = field(default_factory=list)  # same bytes, other owner or mode
    warms: list[Unit] = field(default_factory=list)  # started in the background during the install
    activate: list[str] = field(default_factory=list)  # shell lines
    activate_what: list[str] = field(default_factory=list)  # for the operation's name
    fetches: list = field(default_factory=list)
    legacy_markers: bool = False
    leftovers: list[str] = field(default_factory=list)  # an interrupted deploy's; cleaned when the host is taken

    @property
    def work(self) -> bool:
        """Whether this deploy changes anything (then it takes the host first)."""
        return bool(self.missing_packages or self.fixes or self.legacy_markers or self.changed or self.meta_only
                    or self.activate or self.leftovers)


def markers_for(svc: Service, action: str | None, reactors: dict[str, list[tuple[str, str]]]) -> list[str]:
    # A service's own marker only for an action it has; any change tells the services reacting to it.
    out = [f"{svc.name}-{action}"] if action and action in svc.actions else []
    out += [f"{other}-{theirs}" for other, theirs in reactors.get(svc.name, [])]
    return out


def _wait(check: str, timeout: int) -> str:
    return f"timeout {timeout} sh -c {shlex.quote(f'until {check}; do sleep 0.5; done')} >/dev/null 2>&1"


def make_plan(services: list[Service], state: HostState) -> Plan:
    plan = Plan(legacy_markers="legacy" in state.pending, leftovers=list(state.leftovers))
    reactors: dict[str, list[tuple[str, str]]] = {}
    for s in services:
        for other, action in s.reacts.items():
            reactors.setdefault(other, []).append((s.name, action))
    wanted = [p for s in services for p in s.packages]
    plan.missing_packages = list(dict.fromkeys(p for p in wanted if p not in state.installed))
    # A host that gets packages in this run was read before they were there: what a check or a unit
    # state said may change with the install (a file a package brings, a unit it enables). Every
    # ensure is then planned, and each is checked again on the host right before its fix.
    fresh = bool(plan.missing_packages)
    missing = set(plan.missing_packages)
    plan.warms = [u for s in services for u in s.units
                  if u.warm and u.running and missing & set(u.warm_after)]
    will_set: set[str] = set()
    for s in services:
        for e in s.ensures:
            if fresh or not state.checks.get(e.check, False):
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
    _activation(plan, services, state, pending, fresh)
    return plan


def _ready_or_fail(u: Unit) -> str:
    return (f"{_wait(u.ready, u.ready_timeout)} || "
            f"{{ echo {shlex.quote(f'govmail: {u.name} does not answer after {u.ready_timeout} s')} >&2; exit 1; }}")


def guarded(e: Ensure, marks: list[str]) -> str:
    """An ensure's fix as the host runs it: only when its check fails at that moment; the markers of
    the action it needs are set first (a fix that is cut short still gets its action next time)."""
    touch = f"mkdir -p {PENDING} && touch {' '.join(f'{PENDING}/{m}' for m in marks)} && " if marks else ""
    return (f"if ! ( {e.check} ) >/dev/null 2>&1 </dev/null; then {touch}( {e.fix} ) || "
            f"{{ echo {shlex.quote(f'govmail: {e.name} failed')} >&2; exit 1; }}; fi")


def _activation(plan: Plan, services: list[Service], state: HostState, pending: set[str], fresh: bool) -> None:
    """The activate step's shell lines: late ensures, daemon-reload, then per service its named
    actions, unit enable/start, and the reload or restart a marker asks for; slow daemons are
    started first and every daemon this run touched is waited for at the end."""
    lines, what, slow_starts, warmed_starts, waits = [], [], [], [], []

    def fail(label: str) -> str:
        return f"{{ echo {shlex.quote(f'govmail: {label} failed')} >&2; exit 1; }}"

    def marked(marker: str, command: str, label: str) -> bool:
        if marker not in pending:
            return False
        lines.append(f"if [ -e {PENDING}/{marker} ]; then ( {command} ) || {fail(label)}; rm -f {PENDING}/{marker}; fi")
        what.append(label)
        return True

    # systemd reads the new unit files before any start, the slow ones' too (a slow daemon started
    # before it ran on its old unit and drop-ins); the late ensures come after the slow starts (the
    # account store's setup needs etcd started).
    marked(DAEMON_RELOAD, "systemctl daemon-reload", "systemd reloads unit files")
    prelude = len(lines)
    for e, marks in plan.late_fixes:
        lines.append(guarded(e, marks))
        what.append(e.name)
    for s in services:
        for name, command in s.actions.items():
            if name not in ("reload", "restart"):
                marked(f"{s.name}-{name}", command, f"{s.name}: {name}")
        started = touched = False
        fresh_units = set()  # the units this activation (re)starts: they read the new files
        for u in s.units:
            enabled, active = state.units.get(u.name, ("", ""))
            if not u.running:
                if enabled == "enabled" or active in ("active", "activating") or fresh:
                    lines.append(f"systemctl disable -q --now {u.name} || true")
                    what.append(f"stop {u.name}")
                continue
            if enabled not in ("enabled", "static", "indirect", "alias", "generated"):
                lines.append(f"systemctl enable -q {u.name}")
                what.append(f"enable {u.name}")
            ready = u.ready is None or state.checks.get(u.ready, False)
            if active != "active":
                start = u.start or f"systemctl start{' --no-block' if u.slow else ''} {u.name}"
                if u in plan.warms:  # after the other starts: its warm-up may still be running
                    warmed_starts.append(f"{warm_wait(u)}; {start}")
                else:
                    (slow_starts if u.slow else lines).append(start)
                what.append(f"start {u.name}")
                started = touched = True
                fresh_units.add(u.name)
            elif not ready:
                if not u.slow:  # a slow daemon may still be starting: wait for it below
                    lines.append(f"systemctl restart {u.name}")
                    what.append(f"restart {u.name} (not answering)")
                    started = True
                    fresh_units.add(u.name)
                touched = True
            if u.ready and u.gate and touched:
                lines.append(_ready_or_fail(u))
            elif u.ready:
                waits.append((s.name, u, touched))
        restart, reload = f"{s.name}-restart", f"{s.name}-reload"
        # Only when every running unit of the service starts afresh has it read the new files; one
        # unit restarted (not answering) leaves the others to their reload or restart.
        if started and all(u.name in fresh_units for u in s.units if u.running):
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
    if not lines and not slow_starts and not warmed_starts:
        return
    body = lines[:prelude] + slow_starts + lines[prelude:] + warmed_starts
    for _n, u, touched in waits:
        if touched:
            body.append(_ready_or_fail(u))
    plan.activate = body
    plan.activate_what = what




WARM_TIMEOUT = 900  # a warm-up left behind by a failed install ends by itself


def _warm_pid(u: Unit) -> str:
    return f"/run/govmail-warm-{u.name}.pid"


INSTALL_DONE = "/run/govmail-install.done"  # made when the deploy's apt run has ended, well or not


def warm_launch(u: Unit) -> str:
    """Start `u.warm` in the background (returns at once). It waits until `u.warm_after` are unpacked
    by the install that follows, runs, and if that fails (a library not unpacked yet) runs once more
    when the install has ended (INSTALL_DONE). Output in /var/log/govmail-warm-<unit>.log, PID in /run."""
    pk = " ".join(shlex.quote(p) for p in u.warm_after)
    status = "dpkg-query -W -f='${db:Status-Status}' \"$p\" 2>/dev/null"
    script = (
        f"for p in {pk}; do until case \"$({status})\" in unpacked|half-configured|installed|triggers-*) true;; "
        f"*) [ -e {INSTALL_DONE} ];; esac; do sleep 0.5; done; done; ( {u.warm} ) && exit 0; "
        f"until [ -e {INSTALL_DONE} ]; do sleep 1; done; {u.warm}"
    )
    return (f"rm -f {INSTALL_DONE}; nohup timeout {WARM_TIMEOUT} sh -c {shlex.quote(script)} "
            f">/var/log/govmail-warm-{u.name}.log 2>&1 </dev/null & echo $! > {_warm_pid(u)}")


def warm_wait(u: Unit) -> str:
    """Wait until `u`'s warm-up (if one runs) has ended."""
    pid = _warm_pid(u)
    return (f"n=0; while kill -0 \"$(cat {pid} 2>/dev/null)\" 2>/dev/null && [ $n -lt {WARM_TIMEOUT * 2} ]; "
            f"do sleep 0.5; n=$((n+1)); done; rm -f {pid}")


def bundle(changed: list[tuple[Service, list[tuple[File, list[str], bool]]]],
           expected: dict[str, str] | None = None, directories=()) -> bytes:
    """The one transfer of a deploy: plan.json, every changed file as `files/<sha256>`, apply.py.
    `expected`: the SHA-1 every other declared file must still have on the host when the bundle is
    applied (what this deploy read, and wants); apply.py installs nothing when one differs.
    `directories`: those govmail owns on this host (contract.OWNED_DIRS), recorded with the files."""
    plan = {"pending": PENDING, "services": [], "expected": expected or {},
            "manifest": {"path": contract.PATHS["deployed_files"], "version": contract.DOCUMENTS["deployed_files"],
                         "directories": list(directories)}}
    buf = io.BytesIO()
    added: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes, mode: int = 0o600) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))

        for svc, files in changed:
            entry = {"name": svc.name, "files": [],
                     "validator": {"copy": svc.validator.copy, "command": svc.validator.command} if svc.validator else None}
            for f, marks, _ in files:
                blob = hashlib.sha256(f.content).hexdigest()
                if blob not in added:
                    add(f"files/{blob}", f.content)
                    added.add(blob)
                entry["files"].append({"dest": f.dest, "blob": blob, "mode": f.mode, "user": f.user,
                                       "group": f.group, "markers": marks, "kept": not f.consumed})
            plan["services"].append(entry)
        add("plan.json", json.dumps(plan, indent=1).encode())
        add("apply.py", APPLY.read_bytes(), 0o700)
    return buf.getvalue()


def expected_files(services: list[Service], changed) -> dict[str, str]:
    """Every declared file this deploy does not send, with the SHA-1 it has (and must keep) on the host."""
    sent = {f.dest for _s, files in changed for f, _m, _n in files}
    return {f.dest: hashlib.sha1(f.content).hexdigest() for s in services for f in s.files if f.dest not in sent}
