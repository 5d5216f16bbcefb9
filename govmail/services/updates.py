"""Security updates on every govmail host (mail and backup), applied each night by Debian's
unattended-upgrades from the security suite only:

- **the security suite in apt's sources**: added beside the host's main Debian source (same mirror,
  `<mirror>/debian-security`, `<codename>-security`) when no source names it yet; a host installed
  from Debian's installer has it already, a debootstrap-made one does not;
- templates/updates/52govmail-unattended-upgrades.j2 -> /etc/apt/apt.conf.d/52govmail-unattended-upgrades:
  the lists refreshed and the security updates applied daily (apt-daily.timer,
  apt-daily-upgrade.timer), no automatic reboot; checked by `apt-config` before it replaces the
  live file (a broken apt.conf file stops every apt run);
- a reboot an update needs is surfaced, not made: `govmail verify` fails `security_updates` naming
  the packages in /run/reboot-required.pkgs.
"""

from __future__ import annotations

from ..render import render
from ..service import Ensure, File, Service, Validator

CONF = "/etc/apt/apt.conf.d/52govmail-unattended-upgrades"
SOURCE = "/etc/apt/sources.list.d/govmail-security.sources"
# The security suite named by any apt source of the host (one-line or deb822 form).
HAS_SECURITY = ("grep -rqsE \"^[^#]*$(. /etc/os-release && echo \"$VERSION_CODENAME\")-security\" "
                "/etc/apt/sources.list /etc/apt/sources.list.d/")
# The main Debian source's mirror (`http://deb.debian.org/debian/` -> `http://deb.debian.org`).
ADD_SECURITY = (
    "m=$(apt-get indextargets --format '$(REPO_URI)' | grep -m1 -E '/debian/?$' | sed -E 's|/debian/?$||'); "
    "c=$(. /etc/os-release && echo \"$VERSION_CODENAME\"); "
    "[ -n \"$m\" ] && [ -n \"$c\" ] || { echo 'govmail: no Debian source to take the mirror from' >&2; exit 1; }; "
    f"printf 'Types: deb\\nURIs: %s/debian-security\\nSuites: %s-security\\nComponents: main\\n"
    f"Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n' \"$m\" \"$c\" > {SOURCE} && "
    "apt-get update -q >/dev/null"
)


def service(ctx) -> Service:
    return Service(
        name="updates",
        packages=("unattended-upgrades",),
        ensures=[Ensure("the security suite is in apt's sources", HAS_SECURITY, ADD_SECURITY)],
        files=[File(CONF, render("updates/52govmail-unattended-upgrades.j2", ctx.cfg), action=None)],
        validator=Validator("/etc/apt/apt.conf.d", "apt-config -c {dir}/52govmail-unattended-upgrades dump >/dev/null"),
    )
