"""rspamd: every message through Postfix's milter (rspamd's proxy on localhost:11332), with Redis.

What it does for the province, each with its data key and article:
- spam scores: refuse / mark (`policy.spam`), GTUBE refused;
- attachment formats (`policy.content`): our Lua rule GOVMAIL_ATTACHMENT (lua.local.d/govmail.lua)
  refuses blocked extensions, programs whatever their name, files inside .zip/.rar/.7z/.gz, formats
  outside an allow-list, and password-protected archives as the data says; the reply names the
  file and the article;
- viruses (`policy.antivirus`): clamd (govmail/services/clamav.py) asked for every message;
- outbound limit per authenticated user (`policy.outbound`): the ratelimit module, counters in Redis;
- DKIM signing for the domain (`dkim`), the key generated on the host once in /etc/govmail/dkim
  (backed up with /etc/govmail, restored by `govmail backup restore-host`); its DNS record is
  fetched to the controller for `govmail dns`;
- SPF, DKIM, DMARC checks on received mail (rspamd's modules; DMARC reject honoured), shown to the
  recipient in Authentication-Results;
- forwards into the state system from outside (`policy.forwarding.refuse_inbound`, LC Art. 12.5):
  GOVMAIL_FORWARD_IN.

templates/rspamd/<dir>/<file>.j2 -> /etc/rspamd/<dir>/<file>. Each file is checked with
`rspamadm configtest` on a copy of the configuration before it replaces the live one; rspamd
reloads only when a file changed. When rspamd does not answer, Postfix answers 4xx (no mail lost).
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host, logger
from pyinfra.operations import files, python, server, systemd

from . import base
from ..ops import config_file, ensure_running, file_exists, reload_when
from ..render import render

VALIDATE = (
    "sh -c 'd=$(mktemp -d) && cp -a /etc/rspamd/. \"$d\"/ && mkdir -p \"$d/$(dirname \"$2\")\" && "
    "cp \"$1\" \"$d/$2\" && "
    "rspamadm --var=CONFDIR=\"$d\" --var=LOCAL_CONFDIR=\"$d\" configtest -c \"$d/rspamd.conf\" >/dev/null; "
    "rc=$?; rm -rf \"$d\"; exit $rc' _ {new} "
)

FILES = [
    "override.d/options.inc",
    "local.d/redis.conf",
    "local.d/actions.conf",
    "local.d/milter_headers.conf",
    "local.d/dkim_signing.conf",
    "local.d/dmarc.conf",
    "local.d/ratelimit.conf",
    "local.d/greylist.conf",
    "local.d/antivirus.conf",
    "local.d/force_actions.conf",
    "lua.local.d/govmail.lua",
]

DKIM_DIR = "/etc/govmail/dkim"


def dkim_paths(cfg) -> tuple[str, str]:
    """(private key, DNS record) of the domain's DKIM key on the mail host."""
    stem = f"{DKIM_DIR}/{cfg.domain}.{cfg.model.dkim.selector}"
    return stem + ".key", stem + ".txt"


def dkim_record_on_controller(cfg) -> Path:
    """Where a deploy leaves the host's DKIM record for `govmail dns` (not secret: it is published)."""
    from ..secrets import secrets_dir

    return secrets_dir(cfg.key) / "dkim" / f"{cfg.domain}.{cfg.model.dkim.selector}.txt"


def install(cfg) -> None:
    base.packages("Install rspamd and Redis", ["rspamd", "redis-server"])


def configure(cfg) -> list:
    key, record = dkim_paths(cfg)
    files.directory(name="DKIM keys (readable by rspamd only)", path=DKIM_DIR, user="root", group="_rspamd",
                    mode="750")
    published = dkim_record_on_controller(cfg)
    if published.exists() and not file_exists(key):
        # A rebuilt (or replaced) host: the province has published this selector's key, and only the
        # backup has its private half. A new key here would sign mail that fails against DNS and
        # overwrite the record `govmail dns` prints, so the host signs nothing until
        # `govmail backup restore-host` puts the key back (DMARC still passes on SPF meanwhile).
        logger.warning(
            f"{cfg.mail_host}: no DKIM key for {cfg.domain} (selector {cfg.model.dkim.selector}) on the host, "
            f"but its record is published ({published}): mail leaves unsigned until "
            f"`govmail backup restore-host {cfg.key}` brings the key back. To start a new key instead, "
            f"set a new `dkim.selector` in the data file, deploy, and publish the record `govmail dns` prints."
        )
    else:
        # Generated once: a deploy never replaces the key the province has published.
        bits = cfg.model.dkim.bits
        server.shell(
            name=f"DKIM key for {cfg.domain} (selector {cfg.model.dkim.selector}), generated once",
            commands=[
                f"umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:{bits} -out {key}.new "
                f"2>/dev/null && chgrp _rspamd {key}.new && chmod 640 {key}.new && mv {key}.new {key}",
                f"printf 'v=DKIM1; k=rsa; p=%s\\n' \"$(openssl pkey -in {key} -pubout -outform DER | base64 -w0)\" "
                f"> {record}.new && chmod 644 {record}.new && mv {record}.new {record}",
            ],
            _if=lambda: not file_exists(key),
        )
        fetched = files.get(name="DKIM record to the controller (for `govmail dns`)", src=record,
                            dest=str(published), create_local_dir=True)
        if host.data.get("lab_controller"):
            # The lab resolver publishes what `govmail dns` prints, so lab hosts verify each other's DKIM.
            python.call(name="Lab resolver publishes the DKIM record", function=_refresh_lab_dns,
                        _if=fetched.did_change)

    ctx = dict(dkim_key=key, state_domains=cfg.policy.forwarding.state_domains)
    return [
        config_file(name=f"/etc/rspamd/{f}", dest=f"/etc/rspamd/{f}",
                    content=render(f"rspamd/{f}.j2", cfg, **ctx), validate=VALIDATE + f, pending="rspamd")
        for f in FILES
    ]


def _refresh_lab_dns() -> None:
    from .. import lab

    lab.refresh_dns()


def activate(cfg, changed: list) -> None:
    systemd.service(name="Redis enabled and running", service="redis-server", running=True, enabled=True)
    started = systemd.service(name="rspamd enabled and running", service="rspamd", running=True, enabled=True)
    # Just started (first deploy): it read the new files already; a reload would redo its start-up.
    reload_when("Reload rspamd (its configuration changed)", "systemctl reload-or-restart rspamd", "rspamd", changed,
                started=started)
    # The check is quick (it also runs when the deploy is prepared); a first start compiles rspamd's
    # regular expressions and may take a minute on a busy host: the start waits up to 3 minutes.
    milter_up = "bash -c 'until echo > /dev/tcp/127.0.0.1/11332; do sleep 0.5; done' 2>/dev/null"
    ensure_running(name="rspamd's milter answers on localhost:11332", check=f"timeout 5 {milter_up}",
                   start=f"systemctl start rspamd && timeout 180 {milter_up}")
