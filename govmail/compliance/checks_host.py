"""The compliance checks of the host baseline (govmail/services/system.py): every timer the host
needs has a next run, the clock is kept, SSH takes keys only, security updates applied, the files as
the deploy wrote them and nobody else's beside them. Each reads the effective state (what systemd and
sshd say now), and each runs on every host of the province (govmail/compliance/clauses.py
ON_EVERY_HOST), reading the host of its probe."""

from __future__ import annotations

import json
import shlex

from ..host import contract
from .base import check


@check
def timers_scheduled(h, cfg, _):
    """No enabled timer without a next run."""
    ti = h.ti
    idle = ti.check_output(contract.IDLE_TIMERS_COMMAND).split()
    assert not idle, f"enabled but never started, no next run: {', '.join(idle)}"
    n = len(ti.check_output("systemctl list-timers --no-legend --state=active").strip().splitlines())
    return f"{n} timers scheduled"


@check
def clock_synchronised(h, cfg, _):
    """systemd-timesyncd keeps the clock, and says it is synchronised; in a container the clock is the
    machine's (the unit skips itself there), which is said."""
    ti = h.ti
    virt = ti.run("systemd-detect-virt --container").stdout.strip()
    if ti.run("systemctl is-active -q systemd-timesyncd").rc != 0:
        skipped = ti.check_output("systemctl show -P ConditionResult systemd-timesyncd").strip() == "no"
        assert skipped and virt not in ("", "none"), "systemd-timesyncd is not running"
        return f"a {virt} container, its clock is the machine's"
    sync = ti.check_output("timedatectl show -P NTPSynchronized").strip()
    assert sync == "yes", f"systemd-timesyncd runs but the clock is not synchronised (NTPSynchronized={sync})"
    return "synchronised by systemd-timesyncd"


SSHD_WANT = {"passwordauthentication": "no", "kbdinteractiveauthentication": "no", "permitemptypasswords": "no",
             "permitrootlogin": "without-password", "authenticationmethods": "publickey"}


@check
def ssh_keys_only(h, cfg, _):
    """sshd's effective settings (`sshd -T`, every drop-in applied): keys only, root by key only."""
    ti = h.ti
    got = dict(line.split(" ", 1) for line in ti.check_output("sshd -T").splitlines() if " " in line)
    bad = {k: got.get(k) for k, v in SSHD_WANT.items() if got.get(k) != v}
    assert not bad, f"sshd has {', '.join(f'{k} {v}' for k, v in bad.items())} (wanted " + \
        ", ".join(f"{k} {SSHD_WANT[k]}" for k in bad) + ")"
    return ", ".join(f"{k} {got[k]}" for k in ("passwordauthentication", "permitrootlogin"))


@check
def files_as_deployed(h, cfg, _):
    """Every file the last deploy wrote is as it wrote it (contract.PATHS["deployed_files"], written by
    the host when it installs a deploy's files): a hand edit of main.cf, jail.d or a template's output
    is named."""
    ti = h.ti
    record = ti.file(contract.PATHS["deployed_files"])
    assert record.exists, f"no record of what the last deploy wrote ({contract.PATHS['deployed_files']}): deploy"
    doc = json.loads(record.content_string)
    assert doc.get("version") == contract.DOCUMENTS["deployed_files"], f"record version {doc.get('version')}"
    files = doc["files"]
    out = ti.run("sha1sum -- " + " ".join(shlex.quote(p) for p in files)).stdout
    live = {line[42:]: line[:40] for line in out.splitlines() if len(line) > 42}
    changed = [p for p, sha in files.items() if p in live and live[p] != sha]
    missing = [p for p in files if p not in live]
    assert not changed and not missing, "; ".join(
        x for x in (f"changed since the deploy: {', '.join(changed[:12])}" if changed else "",
                    f"missing: {', '.join(missing[:12])}" if missing else "") if x)
    return f"{len(files)} files as deployed"


@check
def no_foreign_config(h, cfg, _):
    """In every directory govmail owns on a host (the last deploy's record, contract.OWNED_DIRS) no
    file that is not govmail's, a Debian package's or in the data's hosts[].local_files: such a file
    can turn off what the other checks read in govmail's own (DKIM in an rspamd override, a wider
    ignoreip in jail.d, `mail.* stop` in rsyslog.d)."""
    ti = h.ti
    record = ti.file(contract.PATHS["deployed_files"])
    assert record.exists, "no record of what the last deploy wrote: deploy"
    doc = json.loads(record.content_string)
    own = next((list(x.local_files) for x in cfg.model.hosts if x.name == h.name), [])
    found = ti.run(contract.foreign_files_command(doc.get("directories", []), [*doc["files"], *own])
                   ).stdout.splitlines() if doc.get("directories") else []
    assert not found, (f"not govmail's, not a package's, not in hosts[].local_files: {', '.join(found[:12])} "
                       "(the next deploy moves them to " + contract.QUARANTINE + ")")
    return f"{len(doc.get('directories', []))} directories hold only govmail's, Debian's and the data's own files"


SEP = "@@govmail@@"
UPDATES = "; ".join([
    "dpkg-query -W -f '${Status}' unattended-upgrades 2>/dev/null",
    "apt-config dump APT::Periodic::Unattended-Upgrade Unattended-Upgrade::Origins-Pattern",
    "apt-cache policy | grep -c -- -security",
    "systemctl show -P NextElapseUSecRealtime apt-daily-upgrade.timer",
    "tail -n 1 /var/log/unattended-upgrades/unattended-upgrades.log 2>/dev/null",
    "[ -e /run/reboot-required ] && { date -u -r /run/reboot-required '+%Y-%m-%d %H:%M UTC'; "
    "sort -u /run/reboot-required.pkgs 2>/dev/null; }; true",
]).replace("; ", f"; echo {SEP}; ", 5)


@check
def security_updates(h, cfg, _):
    """Security updates are applied by themselves: unattended-upgrades installed and on, taking the
    security suite, which apt's sources carry, its timer scheduled; and no reboot an update asked
    for is waiting (then the packages are named: the operator chooses the hour)."""
    ti = h.ti
    status, conf, suites, timer, last, reboot = (x.strip() for x in ti.check_output(UPDATES).split(SEP))
    assert status == "install ok installed", f"unattended-upgrades is not installed ({status or 'absent'})"
    assert 'APT::Periodic::Unattended-Upgrade "1"' in conf, f"unattended-upgrades is off " \
        f"({' '.join(conf.split())[:160] or 'APT::Periodic::Unattended-Upgrade unset'})"
    assert "security" in conf.lower(), "unattended-upgrades takes no security origin"
    assert suites.isdigit() and int(suites) > 0, "no security suite in apt's sources (apt-cache policy)"
    assert timer not in ("", "0"), "apt-daily-upgrade.timer has no next run"
    assert not reboot, f"a reboot is needed since {reboot.splitlines()[0]}, for " + \
        (", ".join(reboot.splitlines()[1:]) or "an update")
    return "security suite on, applied nightly" + (f"; last run: {last[:100]}" if last else "")
