"""ManageSieve with every script checked before it is stored (govmail/host/sieve_guard.py).

Mail clients and the web mail store users' filters over ManageSieve (port 4190, STARTTLS). The
guard answers there in Dovecot's place and passes each session to Dovecot's ManageSieve on the
loopback (127.0.0.1:4191, PROXY protocol: the client's address and its TLS), except a script whose
redirect, notify or program would send mail outside the state domains: that one is refused when it
is saved, with the article (`policy.forwarding`, LC Art. 12.5), whatever client sends it.
/etc/govmail/sieve-guard.json holds what it needs; templates/systemd/govmail-sieve-guard.service.j2
runs it as the system user govmail-sieve (Pigeonhole's compiler looks its user up, so not a dynamic
one), without privileges: the TLS key reaches it as a systemd credential.
"""

from __future__ import annotations

from ..host import contract
from ..render import render
from ..service import Ensure, File, Service, Unit, json_bytes

CONF = contract.PATHS["sieve_guard"]
USER = "govmail-sieve"


def settings(cfg) -> dict:
    f = cfg.policy.forwarding
    return {
        "port": contract.PORTS["managesieve"],
        "backend_port": contract.PORTS["managesieve_dovecot"],
        "cert": "/run/credentials/govmail-sieve-guard.service/tls.crt",
        "key": "/run/credentials/govmail-sieve-guard.service/tls.key",
        "state_domains": list(f.state_domains),
        "refuse_outbound": f.refuse_outbound,
        "article": f.article,
        "version": contract.DOCUMENTS["sieve_guard"],
    }


def service(ctx) -> Service | None:
    cfg = ctx.cfg
    # A store apart: clients reach ManageSieve through the mail host's guard, whose Dovecot
    # proxies them here.
    if ctx.host_name in cfg.stores_apart:
        return None
    return Service(
        name="sieve_guard",
        ensures=[Ensure(f"user {USER} (the ManageSieve guard)", f"getent passwd {USER}",
                        f"useradd --system --user-group --home-dir /nonexistent --no-create-home "
                        f"--shell /usr/sbin/nologin {USER}")],
        files=[
            File(CONF, json_bytes(settings(cfg)), mode=0o644, action="restart"),
            File("/etc/systemd/system/govmail-sieve-guard.service",
                 render("systemd/govmail-sieve-guard.service.j2", cfg, conf=CONF, user=USER), action="restart"),
        ],
        units=[Unit("govmail-sieve-guard", ready=f"bash -c 'echo > /dev/tcp/127.0.0.1/{contract.PORTS['managesieve']}' 2>/dev/null",
                    ready_timeout=30)],
        actions={"restart": "systemctl restart govmail-sieve-guard"},
        # A new certificate, or new host tools (its program among them).
        reacts={"tls": "restart", "host_tools": "restart"},
    )

