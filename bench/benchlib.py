"""What the bench scripts share (they print figures; nothing here asserts)."""

from __future__ import annotations

import subprocess
import sys
import time


def timed(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    """Run `cmd`; (seconds, result). A failure ends the bench with the command's output."""
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return time.monotonic() - t, r


def lab_mail_host(province: str):
    """(config, address, ssh command) of the province's lab mail host, brought up and deployed
    first if the lab does not run it."""
    from govmail import lab
    from govmail.data import load_province
    from govmail.targets import lab as lab_target

    cfg = load_province(province)
    state = lab.load_state()
    if cfg.mail_host not in state.get("hosts", {}):
        from govmail.cli.deploy import deploy

        lab_target().up([province])
        if deploy([province]):
            sys.exit("deploy failed")
        state = lab.load_state()
    ip = state["hosts"][cfg.mail_host]["ip"]
    return cfg, ip, ["ssh", *lab.ssh_options(), f"root@{ip}"]
