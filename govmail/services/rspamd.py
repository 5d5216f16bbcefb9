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
  fetched to the controller for `govmail dns` (and published by the target: the lab resolver);
- SPF, DKIM, DMARC checks on received mail (rspamd's modules; DMARC reject honoured), shown to the
  recipient in Authentication-Results;
- the header `From:` of an authenticated submission names the login's own address, a list it may
  send for or an address delegated to it (`senders:`; `policy.sender`): GOVMAIL_FROM, from the same
  table Postfix binds the envelope sender with;
- forwards into the state system from outside (`policy.forwarding.refuse_inbound`, LC Art. 12.5):
  GOVMAIL_FORWARD_IN;
- nothing of a message leaves the state network (`policy.secrecy`): fuzzy_check, which would send
  hashes of each message's parts to rspamd.com's public servers, is off; greylisting too.

templates/rspamd/<dir>/<file>.j2 -> /etc/rspamd/<dir>/<file>. The new files are checked together
with `rspamadm configtest` on a copy of /etc/rspamd before they replace the live ones; rspamd
reloads only when a file changed. When rspamd does not answer, Postfix answers 4xx (no mail lost).
"""

from __future__ import annotations

import shlex

from ..data import predecessors as merger
from ..data.facts import dkim_paths
from ..data.roles import has
from ..host import contract
from ..render import render
from ..service import Fetch, File, Service, Unit, Validator, directory, made_once

VALIDATE = (
    "rspamadm --var=CONFDIR={dir} --var=LOCAL_CONFDIR={dir} configtest -c {dir}/rspamd.conf >/dev/null"
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
    "local.d/fuzzy_check.conf",
    "local.d/antivirus.conf",
    "local.d/force_actions.conf",
    "lua.local.d/govmail.lua",
]

MILTER_UP = "bash -c 'echo > /dev/tcp/127.0.0.1/11332' 2>/dev/null"
# rspamd 3.12 turns the public-suffix list (9,760 suffixes) into a Hyperscan database when it starts
# and keeps it in its cache directory (/var/lib/rspamd/<hash>.hsmp, keyed by the list's contents);
# made first by the daemon, this is 20 s on 2 cores between `systemctl start` and a milter that
# answers. rspamd's own Lua API makes the same database without a daemon or a configuration, so
# the engine makes it while apt installs the other packages. The file Debian's options.inc names:
TLD_FILE = "/usr/share/publicsuffix/effective_tld_names.dat"
WARM_TLD = ("rspamadm lua -e 'require(\"rspamd_util\").config_from_ucl("
            f"{{options = {{url_tld = \"{TLD_FILE}\"}}}}, \"INIT_LIBS,INIT_URL\")' >/dev/null")


def _probe(cfg, domain: str) -> str:
    return "dkim_record" if domain == cfg.domain else f"dkim_record {domain}"


def probes(cfg) -> dict[str, str]:
    return {_probe(cfg, d): f"cat {shlex.quote(dkim_paths(cfg, d)[1])}" for d, _ in cfg.dkim_keys}


def signs(ctx) -> bool:
    """Whether this host signs the province's mail with DKIM: the mail host, where submission is. An MX
    host apart (several MX) receives only: it makes no key of its own (the published record would flip
    between two hosts' keys) and signs nothing."""
    return has(ctx.roles, "store")


def _dkim(ctx) -> tuple[list, list, list]:
    """(ensures, fetches, warnings) for every DKIM key the host signs with."""
    out: tuple[list, list, list] = ([], [], [])
    if not signs(ctx):
        return out
    for domain, selector in ctx.cfg.dkim_keys:
        for acc, part in zip(out, _dkim_key(ctx, domain, selector), strict=True):
            acc.extend(part)
    return out


def _dkim_key(ctx, domain: str, selector: str) -> tuple[list, list, list]:
    cfg = ctx.cfg
    key, record = dkim_paths(cfg, domain)
    on_host = ctx.probes.get(_probe(cfg, domain), "").strip() or None
    published = ctx.published.dkim_record(cfg, domain) if ctx.published else None
    if on_host is None and published:
        # A rebuilt (or replaced) host: the province has published this selector's key, and only the
        # backup has its private half. A new key here would sign mail that fails against DNS and
        # overwrite the record `govmail dns` prints, so the host signs nothing until
        # `govmail backup restore-host` puts the key back (DMARC still passes on SPF meanwhile).
        return [], [], [
            f"no DKIM key for {domain} (selector {selector}) on the host, but its record is "
            f"published: mail leaves unsigned until `govmail backup restore-host {cfg.key}` brings the key back. "
            f"To start a new key instead, set a new selector in the data file, deploy, and publish the "
            f"record `govmail dns` prints."]
    bits = cfg.model.dkim.bits
    key, record = shlex.quote(key), shlex.quote(record)  # data-derived names: quoted for the shell
    # Generated once: a deploy never replaces the key the province has published.
    ensures = [made_once(
        f"DKIM key for {domain} (selector {selector}), generated once", dkim_paths(cfg, domain)[0],
        f"umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:{bits} -out {key}.new "
        f"2>/dev/null && chgrp _rspamd {key}.new && chmod 640 {key}.new && mv {key}.new {key} && "
        f"printf 'v=DKIM1; k=rsa; p=%s\\n' \"$(openssl pkey -in {key} -pubout -outform DER | base64 -w0)\" "
        f"> {record}.new && chmod 644 {record}.new && mv {record}.new {record}",
        action="reload")]
    fetches = []
    if ctx.published and (on_host is None or on_host != published):
        fetches.append(Fetch(f"DKIM record of {domain} to the controller (for `govmail dns`)", f"cat {record}",
                             lambda text: ctx.published.set_dkim_record(cfg, text, domain)))
    return ensures, fetches, []


def former_senders(cfg) -> list[tuple[str, list[str], int | None]]:
    """(old address, who may send as it, end of its transition) for GOVMAIL_FROM: during the
    transition an old address is sent as by whoever may send as the new one (govmail/data/predecessors.py)."""
    out, mailboxes = [], {a.address for a in cfg.accounts}
    for old, new, ends, _ in merger.former_rows(cfg):
        logins = ([new] if new in mailboxes else []) + cfg.senders.get(new, [])
        if logins:
            out.append((old, logins, ends))
    return out


def service(ctx) -> Service:
    cfg = ctx.cfg
    ensures, fetches, warnings = _dkim(ctx)
    keys = [(d, sel, dkim_paths(cfg, d)[0]) for d, sel in cfg.dkim_keys] if signs(ctx) else []
    extra = dict(dkim_keys=keys, state_domains=cfg.policy.forwarding.state_domains, senders=cfg.senders,
                 former_senders=former_senders(cfg))
    return Service(
        name="rspamd",
        packages=("rspamd", "redis-server"),
        ensures=[directory(contract.PATHS["dkim"], 0o750, "root", "_rspamd"), *ensures],
        files=[File(f"/etc/rspamd/{f}", render(f"rspamd/{f}.j2", cfg, **extra)) for f in FILES],
        validator=Validator("/etc/rspamd", VALIDATE),
        units=[
            Unit("redis-server"),
            # A first start compiles rspamd's regular expressions: up to minutes on a busy host. The
            # longest part, the public-suffix list made into one pattern set (about 20 s on 2 cores),
            # is cached in /var/lib/rspamd and made during the install (WARM_TLD).
            Unit("rspamd", ready=MILTER_UP, ready_timeout=180, slow=True,
                 warm=WARM_TLD, warm_after=("rspamd", "publicsuffix")),
        ],
        actions={"reload": "systemctl reload-or-restart rspamd"},
        fetches=fetches,
        warnings=warnings,
    )
