"""ClamAV: the virus scanner rspamd asks about every message (`policy.antivirus`).

clamd from Debian listens on /run/clamav/clamd.ctl; rspamd's antivirus module
(templates/rspamd/local.d/antivirus.conf.j2) sends it each attachment and refuses an infected
message at SMTP time. Signatures:

- production: freshclam keeps ClamAV's databases current (`policy.antivirus.freshclam`);
- always: govmail's local signature file, the EICAR test file's MD5 (`govmail-test.hdb`), so that
  clamd starts on a host that has no downloaded database yet and anyone can check the whole chain
  with the EICAR file. The lab has no access to ClamAV's mirror: there freshclam is off and this
  is the only signature.

With `policy.antivirus.enabled: false` nothing is installed, rspamd's antivirus file says so, the
deploy warns and the compliance report shows the clause as off. freshclam runs only where the
target reaches ClamAV's mirror (`ctx.signature_mirror`; not in the lab).
"""

from __future__ import annotations

from ..service import Ensure, File, Service, Unit, restarted_after_crash

# EICAR's standard anti-virus test file (68 bytes): MD5 and size, as a ClamAV hash signature.
EICAR_SIGNATURE = "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n"
SOCKET = "/run/clamav/clamd.ctl"

DROP_IN = """# Managed by govmail (govmail/services/clamav.py); edits here are overwritten by the next deploy.
# Debian starts clamd only once freshclam has downloaded the main database. govmail's local
# signature file is enough to start, so mail is scanned from the first minute.
[Unit]
ConditionPathExistsGlob=
"""


def stream_max_mb(cfg) -> int:
    """clamd's largest scannable stream: the biggest message the host accepts (Debian's 25 MB would
    make every larger attachment wait with 4xx, unscanned); the one size rule, cfg.message_size_mib."""
    return cfg.message_size_mib


def service(ctx) -> Service:
    cfg = ctx.cfg
    av = cfg.policy.antivirus
    if not av.enabled:
        return Service(name="clamav", warnings=[
            f"virus scanning is OFF (policy.antivirus.enabled: false, {av.article})"])
    conf, want = "/etc/clamav/clamd.conf", f"StreamMaxLength {stream_max_mb(cfg)}M"
    freshclam = av.freshclam and ctx.signature_mirror
    return Service(
        name="clamav",
        packages=("clamav-daemon", "clamav-freshclam"),
        ensures=[
            # Re-applied by every deploy (a package upgrade may rewrite clamd.conf from debconf).
            Ensure(f"clamd scans streams up to {stream_max_mb(cfg)} MiB (the message size limit)",
                   f"grep -qx '{want}' {conf}",
                   f"if grep -q '^StreamMaxLength' {conf}; then sed -i 's/^StreamMaxLength .*/{want}/' {conf}; "
                   f"else echo '{want}' >> {conf}; fi", action="restart"),
        ],
        files=[
            File("/var/lib/clamav/govmail-test.hdb", EICAR_SIGNATURE, user="clamav", group="clamav"),
            File("/etc/systemd/system/clamav-daemon.service.d/govmail.conf", DROP_IN, action=None),
            # clamd holds its signatures in memory (about 1 GiB): the first the kernel kills when memory runs out.
            restarted_after_crash("clamav-daemon", "every message waits (4xx) rather than pass unscanned", seconds=10),
        ],
        units=[
            Unit("clamav-freshclam", running=freshclam),
            # Debian's daily one-shot alternative to that daemon: off (the daemon does it where there
            # is a mirror; without one it would fail every day). Its service is also enabled for every
            # boot (WantedBy=multi-user.target): off too, or each boot runs freshclam beside the daemon,
            # or waits 40 s for a mirror it cannot reach before the host counts as booted.
            Unit("clamav-freshclam-once.timer", running=False),
            Unit("clamav-freshclam-once", running=False),
            # A first start loads the signatures; it may take minutes on a busy host.
            Unit("clamav-daemon", ready=f"test -S {SOCKET}", ready_timeout=180, slow=True),
        ],
        actions={"reload": "systemctl reload-or-restart clamav-daemon", "restart": "systemctl restart clamav-daemon"},
    )
