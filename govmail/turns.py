"""Hosts that share a role restart in turn (issue 29): the mail host and an MX apart never restart
Postfix at the same time, nor two db hosts Patroni.

pyinfra runs each step of a deploy on all its hosts at once, one greenlet per host. The activation
step (govmail/engine.py `activate`) of a host that restarts a serving daemon runs under a lock per
role it shares with another host of the province, taken on the controller and held until its
daemons answer again; reloads, and a host's first deploy, run with the others.
"""

from __future__ import annotations

from pyinfra import logger
from pyinfra.api import StringCommand

from .data.roles import expand
from .plan import Plan

# One lock per role on the controller, for the hosts of a province that share it: their activations
# that restart a daemon take turns (the deploy's hosts run each step at once, in greenlets).
_TURNS: dict[str, object] = {}


def restarts(plan: Plan) -> bool:
    """Whether an activation restarts a daemon that serves (its steps as Plan.activate_what names
    them), which its role's other hosts must not be doing at the same time. A host that gets
    packages in this run (its first deploy) starts its daemons at once, with the others: a new
    province's hosts start together (etcd's members need each other)."""
    return not plan.missing_packages and any("restart" in w for w in plan.activate_what)


def turns_of(cfg, roles) -> tuple[str, ...]:
    """The roles of a host that another host of the province has too (`mx` with an MX apart, `db`
    with a standby): the turns its restarts take."""
    return tuple(sorted(r for r in expand(roles) if len(cfg.hosts_with(r)) > 1))


def in_turn(state, host, command: StringCommand, turns: tuple[str, ...]) -> bool:
    """Run the activation once no other host of the same roles is restarting (locks taken in one
    order: no two hosts wait for each other), then give the turn on."""
    from gevent.lock import Semaphore

    locks = [_TURNS.setdefault(t, Semaphore()) for t in turns]
    busy = [t for t, lock in zip(turns, locks, strict=True) if lock.locked()]
    if busy:
        host.log(f"waits its turn: another host with role {', '.join(busy)} is restarting (one at a time)")
    for lock in locks:
        lock.acquire()
    try:
        ok, out = host.run_shell_command(command)
    finally:
        for lock in reversed(locks):
            lock.release()
    if not ok:
        for line in out.stderr_lines[-20:]:
            host.log(line, logger.error)
    return ok
