"""rspamd: spam scoring at SMTP time, through Postfix's milter (rspamd's proxy on localhost:11332).

templates/rspamd/local.d/<file>.j2 -> /etc/rspamd/local.d/<file>. Each file is checked with
`rspamadm configtest` on a copy of the configuration before it replaces the live one; rspamd
reloads only when a file changed. Postfix's milter settings are in templates/postfix/main.cf.j2;
when rspamd does not answer, Postfix answers 4xx (the sender retries: no mail is lost).
"""

from __future__ import annotations

from pyinfra.operations import apt, systemd

from ..ops import config_file, ensure_running, reload_when
from ..render import render

VALIDATE = (
    "sh -c 'd=$(mktemp -d) && cp -a /etc/rspamd/. \"$d\"/ && cp \"$1\" \"$d/local.d/$2\" && "
    "rspamadm --var=CONFDIR=\"$d\" --var=LOCAL_CONFDIR=\"$d\" configtest -c \"$d/rspamd.conf\" >/dev/null; "
    "rc=$?; rm -rf \"$d\"; exit $rc' _ {new} "
)


def install(cfg) -> None:
    apt.packages(name="Install rspamd", packages=["rspamd"], no_recommends=True)


def configure(cfg) -> list:
    return [
        config_file(name=f"/etc/rspamd/local.d/{f}", dest=f"/etc/rspamd/local.d/{f}",
                    content=render(f"rspamd/local.d/{f}.j2", cfg), validate=VALIDATE + f, pending="rspamd")
        for f in ("actions.conf", "milter_headers.conf")
    ]


def activate(cfg, changed: list) -> None:
    systemd.service(name="rspamd enabled and running", service="rspamd", running=True, enabled=True)
    reload_when("Reload rspamd (its configuration changed)", "systemctl reload-or-restart rspamd", "rspamd", changed)
    ensure_running(name="rspamd's milter answers on localhost:11332",
                   check="timeout 20 bash -c 'until echo > /dev/tcp/127.0.0.1/11332; do sleep 0.3; done' 2>/dev/null",
                   start="systemctl restart rspamd")
