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
deploy warns and the compliance report shows the clause as off.
"""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.operations import server, systemd

from . import base
from ..ops import CommandSucceeds, config_file, ensure_running, reload_when

# EICAR's standard anti-virus test file (68 bytes): MD5 and size, as a ClamAV hash signature.
EICAR_SIGNATURE = "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n"
SOCKET = "/run/clamav/clamd.ctl"
SOCKET_UP = f"sh -c 'until [ -S {SOCKET} ]; do sleep 0.5; done'"

DROP_IN = """# Managed by govmail (govmail/services/clamav.py); edits here are overwritten by the next deploy.
# Debian starts clamd only once freshclam has downloaded the main database. govmail's local
# signature file is enough to start, so mail is scanned from the first minute.
[Unit]
ConditionPathExistsGlob=
"""


def freshclam(cfg) -> bool:
    return cfg.policy.antivirus.freshclam and not host.data.get("lab_controller")


def install(cfg) -> None:
    if not cfg.policy.antivirus.enabled:
        logger.warning(f"{cfg.mail_host}: virus scanning is OFF (policy.antivirus.enabled: false, "
                       f"{cfg.policy.antivirus.article})")
        return
    base.packages("Install ClamAV (clamd, freshclam)", ["clamav-daemon", "clamav-freshclam"])


def stream_max_mb(cfg) -> int:
    """clamd's largest scannable stream: the biggest message the host accepts (Debian's 25 MB would
    make every larger attachment wait with 4xx, unscanned)."""
    return -(-cfg.message_size_limit // 2**20) + 1


def configure(cfg) -> dict:
    """The operations activate() acts on, by name: limit (clamd restart), signature (reload), unit."""
    if not cfg.policy.antivirus.enabled:
        return {}
    conf, want = "/etc/clamav/clamd.conf", f"StreamMaxLength {stream_max_mb(cfg)}M"
    # Re-applied by every deploy (a package upgrade may rewrite clamd.conf from debconf).
    set_already = host.get_fact(CommandSucceeds, check=f"grep -qx '{want}' {conf}")
    limit = server.shell(
        name=f"clamd scans streams up to {stream_max_mb(cfg)} MiB (the message size limit)",
        commands=[f"if grep -q '^StreamMaxLength' {conf}; then sed -i 's/^StreamMaxLength .*/{want}/' {conf}; "
                  f"else echo '{want}' >> {conf}; fi"],
        _if=lambda: not set_already,
    )
    return {
        "limit": limit,
        "signature": config_file(name="ClamAV: govmail's local test signature (EICAR)",
                                 dest="/var/lib/clamav/govmail-test.hdb", content=EICAR_SIGNATURE, user="clamav",
                                 group="clamav", pending="clamav"),
        "unit": config_file(name="clamd starts without a downloaded database",
                            dest="/etc/systemd/system/clamav-daemon.service.d/govmail.conf", content=DROP_IN,
                            pending="clamav-units"),
    }


def activate(cfg, ops: dict) -> None:
    if not cfg.policy.antivirus.enabled:
        return
    reload_when("systemd picks up clamd's drop-in", "systemctl daemon-reload", "clamav-units", [ops["unit"]])
    on = freshclam(cfg)
    systemd.service(name=f"freshclam {'enabled' if on else 'off (no signature mirror)'}",
                    service="clamav-freshclam", running=on, enabled=on)
    systemd.service(name="clamd enabled and running", service="clamav-daemon", running=True, enabled=True)
    reload_when("clamd reloads its signatures", "systemctl reload-or-restart clamav-daemon", "clamav", [ops["signature"]])
    server.shell(name="clamd restarts for its new stream limit", _if=ops["limit"].did_change,
                 commands=[f"systemctl restart clamav-daemon && timeout 180 {SOCKET_UP}"])
    ensure_running(name=f"clamd answers on {SOCKET}", check=f"timeout 2 {SOCKET_UP}",
                   start=f"systemctl start clamav-daemon && timeout 180 {SOCKET_UP}")
