"""The web server (nginx): web mail, mail-client setup and the published directory over HTTPS.

templates/nginx/conf.d/govmail.conf.j2 -> /etc/nginx/conf.d/govmail.conf. On every name the mail
host answers to (its mail name, each domain's autoconfig., autodiscover. and mta-sts. names, and a
merged province's old mail names), `http://` is redirected to `https://` (web access: BN Art. 4,
DN Art. 2.1, LC Art. 3.1, TN Art. 3.1 name an http:// address), which serves with the host's
certificate, TLS 1.2+, HSTS:

- `/`: web mail (govmail/services/webmail.py, Roundcube through php-fpm);
- `/mail/config-v1.1.xml`, `/.well-known/autoconfig/mail/config-v1.1.xml`: Thunderbird's autoconfig
  (templates/www/mail/config-v1.1.xml.j2);
- `/autodiscover/autodiscover.xml`: Outlook's (templates/www/autodiscover.xml.j2), GET or POST;
- `/.well-known/mta-sts.txt`: the MTA-STS policy whose record `govmail dns` publishes;
- `/directory/`: the directory for the provincial portal (govmail/publish/portal.py);
- `/monitor/prometheus/`, `/monitor/alertmanager/`: Prometheus's pages and Alertmanager's API (for
  amtool: Debian's Alertmanager has no pages), proxied to the monitor host,
  when the data publishes them (`policy.monitoring.web_ui`), for the administrators only (the
  password service checks each request's login: govmail/host/passwd_service.py).

The files it serves live in /var/lib/govmail/www. `nginx -t` checks a copy of /etc/nginx before a
change is swapped in; nginx reloads (a reload never drops a request in flight).
"""

from __future__ import annotations

from ..host import contract
from ..publish import portal
from ..publish.dns import mta_sts_policy, web_names
from ..render import render
from ..service import Ensure, File, Service, Unit, Validator, directory, restarted_after_crash
from . import monitor

WWW = contract.PATHS["www"]
CONF = "/etc/nginx/conf.d/govmail.conf"


def webmail_url(cfg) -> str:
    return f"https://{cfg.mail_host}/"


def service(ctx) -> Service:
    cfg = ctx.cfg
    files = [
        File(CONF, render("nginx/conf.d/govmail.conf.j2", cfg, names=web_names(cfg),
                          body_limit=cfg.web_request_mib, pages=monitor.pages(cfg, ctx.addresses))),
        File(f"{WWW}/mail/config-v1.1.xml", render("www/mail/config-v1.1.xml.j2", cfg, webmail=webmail_url(cfg)),
             action=None),
        File(f"{WWW}/autodiscover.xml", render("www/autodiscover.xml.j2", cfg), action=None),
        File(f"{WWW}/mta-sts.txt", mta_sts_policy(cfg), action=None),
        restarted_after_crash("nginx", "no web mail, no password page, no MTA-STS policy"),
    ]
    files += [File(f"{WWW}/directory/{name}", content, action=None) for name, content in portal.files(cfg).items()]
    # Validated on a copy of /etc/nginx: nginx.conf's includes are pointed at the copy.
    check = (r"sed -i 's#/etc/nginx/#{dir}/#g' {dir}/nginx.conf && "
             "nginx -t -q -c {dir}/nginx.conf 2>&1")
    return Service(
        name="web",
        packages=("nginx",),
        ensures=[
            directory(WWW, 0o755),
            directory(f"{WWW}/directory", 0o755),
            # Debian's welcome page would answer for every other name.
            Ensure("no default nginx site", "! test -e /etc/nginx/sites-enabled/default",
                   "rm -f /etc/nginx/sites-enabled/default", action="reload"),
        ],
        files=files,
        validator=Validator("/etc/nginx", check),
        units=[Unit("nginx", ready="bash -c 'echo > /dev/tcp/127.0.0.1/443' 2>/dev/null", ready_timeout=30)],
        actions={"reload": "systemctl reload nginx"},
        reacts={"tls": "reload"},
    )
