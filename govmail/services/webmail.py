"""Web mail: Roundcube 1.6 (Debian 13) through php-fpm, behind the web server (govmail/services/web.py).

Web access is what BN Art. 4, DN Art. 2.1/2.3, LC Art. 3.1 and TN Art. 3.1/3.3 name; `web_access`
in the data cites it. Templates mirror their targets:

- templates/roundcube/config.inc.php.j2 -> /etc/roundcube/config.inc.php: Vietnamese by default,
  IMAP/SMTP/ManageSieve over TLS on the loopback, one identity per user whose address cannot be
  edited (the sender rule), Secure/HttpOnly/SameSite cookies, logins logged to the journal (the
  fail2ban jail `govmail-webmail` reads them), the published directory as a read-only address book
  (templates/roundcube/plugins/govmail/addressbook.php.j2);
- templates/roundcube/plugins/password/config.inc.php.j2: the password plugin, with the driver
  templates/roundcube/plugins/govmail/password_driver.php.j2 that goes through the host's own change
  path (the password service's API: Dovecot checks the current password, the province's rule the new
  one, with the same messages as `govmail set-password`);
- templates/roundcube/plugins/govmail/govmail.php.j2: govmail's plugin. A login refused because the
  password must change (issued, reset, expired) goes to a change form and nowhere else until it is
  changed; the outage notice (`govmail notice`) on the login page; a filter, forward or out-of-office
  that redirects outside the state domains is refused with the article (`policy.forwarding`);
- templates/roundcube/plugins/govmail/vi_VN.php: Vietnamese for the texts Roundcube has only in
  English (Forwarding, Out of Office, filters, the password form, common screens);
- templates/roundcube/plugins/managesieve/config.inc.php.j2: filters and out-of-office (ManageSieve);
- templates/php/govmail-webmail.conf.j2 -> /etc/php/8.4/fpm/pool.d/govmail-webmail.conf: the pool,
  sized for the host (2 cores: 12 workers at most).

Roundcube's session key is made once on the host (/etc/govmail/webmail/des_key) and kept: a redeploy
never logs anyone out, and the backup carries it (`restore-host` puts it back). Roundcube's installer
is never reachable: nginx serves only public_html. The files are validated on a copy of /etc
(`php-fpm8.4 -t`, `php -l`) before they are swapped in; php-fpm reloads gracefully.
"""

from __future__ import annotations

from ..data import validated_cache
from ..data.facts import password_api
from ..data.text import php
from ..host import contract
from ..publish import portal
from ..render import TEMPLATES, render
from ..service import Ensure, File, Service, Unit, Validator, made_once

PHP = contract.PHP  # Debian 13's PHP
POOL = f"/etc/php/{PHP}/fpm/pool.d/govmail-webmail.conf"
PLUGIN = "/etc/roundcube/plugins/govmail"


def directory_php(cfg) -> str:
    """The address book's data (addressbook.php reads it): the portal's entries (govmail/publish/portal.py),
    one group per unit, each entry [name, address, unit, department, position, group, folded text].
    Made once per validated data file (govmail/data: validated_cache.derived)."""
    return validated_cache.derived(cfg, "webmail-directory", _directory_php)


def _directory_php(cfg) -> str:
    items = portal.entries(cfg)
    groups: dict[str, str] = {}
    for e in items:
        groups.setdefault(e.unit, f"g{len(groups)}")
    out = ["<?php", "// Managed by govmail (govmail/services/webmail.py): the directory, rewritten by every deploy.",
           "return ['groups' => ["]
    out += [f"  '{gid}' => '{php(unit)}'," for unit, gid in groups.items()]
    out.append("], 'records' => [")
    for e in items:
        folded = portal.fold_words(e.name, e.address, e.unit, e.department, e.position)
        vals = (e.name, e.address, e.unit, e.department, e.position, groups[e.unit], folded)
        out.append("  [" + ", ".join(f"'{php(v)}'" for v in vals) + "],")
    out.append("]];")
    return "\n".join(out) + "\n"


def service(ctx) -> Service:
    cfg = ctx.cfg
    fw = cfg.policy.forwarding
    extra = dict(api=password_api(cfg), state_domains=fw.state_domains, refuse_outbound=fw.refuse_outbound,
                 upload_mb=cfg.message_size_mib, post_mb=cfg.web_request_mib)
    files = [
        File("/etc/roundcube/config.inc.php", render("roundcube/config.inc.php.j2", cfg, **extra),
             mode=0o640, group="www-data"),
        File("/etc/roundcube/plugins/password/config.inc.php",
             render("roundcube/plugins/password/config.inc.php.j2", cfg, **extra), mode=0o640, group="www-data"),
        File("/etc/roundcube/plugins/managesieve/config.inc.php",
             render("roundcube/plugins/managesieve/config.inc.php.j2", cfg, **extra), mode=0o640, group="www-data"),
        File(f"{PLUGIN}/govmail.php", render("roundcube/plugins/govmail/govmail.php.j2", cfg, **extra)),
        File(f"{PLUGIN}/addressbook.php", render("roundcube/plugins/govmail/addressbook.php.j2", cfg)),
        File(f"{PLUGIN}/directory.php", directory_php(cfg), action=None),
        # Vietnamese for what Roundcube's own Vietnamese leaves in English (static: no value of the data).
        File(f"{PLUGIN}/vi_VN.php", (TEMPLATES / "roundcube/plugins/govmail/vi_VN.php").read_bytes()),
        File(f"{PLUGIN}/password_driver.php", render("roundcube/plugins/govmail/password_driver.php.j2", cfg, **extra)),
        File(POOL, render("php/govmail-webmail.conf.j2", cfg, **extra)),
    ]
    key = contract.PATHS["webmail_key"]
    check = (f"sed -i 's#/etc/php/#{{dir}}/php/#g' {{dir}}/php/{PHP}/fpm/php-fpm.conf && "
             f"{{ out=$(php-fpm{PHP} -t -y {{dir}}/php/{PHP}/fpm/php-fpm.conf 2>&1) || {{ echo \"$out\"; exit 1; }}; }} && "
             "for f in {dir}/roundcube/config.inc.php {dir}/roundcube/plugins/*/*.php; do "
             "php -l \"$f\" >/dev/null || exit 1; done")
    return Service(
        name="webmail",
        # php-fpm first: Roundcube's `php` dependency is then met without Apache's module.
        # Roundcube's own database is SQLite (contract.PATHS["webmail_db"]) whatever else the host runs:
        # dbconfig-common would choose a local PostgreSQL (the account store's) on its own.
        debconf=("roundcube-core roundcube/database-type select sqlite3",),
        packages=(f"php{PHP}-fpm", "roundcube-core", "roundcube-sqlite3", "roundcube-plugins",
                  f"php{PHP}-zip"),  # zip: download all attachments at once (zipdownload)
        ensures=[
            made_once("Roundcube session key (made once, kept across deploys)", key,
                      f"install -d -m 750 -g www-data {contract.PATHS['etc']}/webmail && umask 027 && "
                      f"head -c 18 /dev/urandom | base64 > {key} && chgrp www-data {key}", action="reload"),
            # Roundcube loads plugins from /var/lib/roundcube/plugins; govmail's lives in /etc (validated there).
            Ensure("Roundcube finds govmail's plugin", f"[ \"$(readlink /var/lib/roundcube/plugins/govmail)\" = {PLUGIN} ]",
                   f"ln -sfn {PLUGIN} /var/lib/roundcube/plugins/govmail", after_files=True, action="reload"),
            Ensure("the password plugin finds govmail's driver",
                   f"[ \"$(readlink /usr/share/roundcube/plugins/password/drivers/govmail.php)\" = {PLUGIN}/password_driver.php ]",
                   f"ln -sfn {PLUGIN}/password_driver.php /usr/share/roundcube/plugins/password/drivers/govmail.php",
                   after_files=True, action="reload"),
            # Debian's default pool would run idle workers for nothing.
            Ensure("no default php-fpm pool", f"! test -e /etc/php/{PHP}/fpm/pool.d/www.conf",
                   f"rm -f /etc/php/{PHP}/fpm/pool.d/www.conf", action="reload"),
        ],
        files=files,
        validator=Validator("/etc", check),
        units=[Unit(f"php{PHP}-fpm", ready=f"test -S {contract.PATHS['webmail_socket']}", ready_timeout=30)],
        actions={"reload": f"systemctl reload php{PHP}-fpm"},
    )
