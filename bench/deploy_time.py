#!/usr/bin/env python3
"""Deploy-time figures for one province (printed, never asserted).

    sudo python3 bench/deploy_time.py [PROVINCE]      (default daknong)

1. floor: a fresh lab container, `apt-get update && apt-get install` of the same package set;
2. cold deploy: another fresh container, `pyinfra inventories/<p>.py deploy.py`;
3. no-change re-run of the same deploy.
Each fresh container is booted from the cached image; the boot itself is not counted.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import timed  # noqa: E402
from govmail import lab  # noqa: E402
from govmail.targets import lab as lab_target  # noqa: E402
from govmail.runner import summary_line  # noqa: E402
from govmail.data import load_province  # noqa: E402
from govmail.services.base import PACKAGES  # noqa: E402


def main() -> None:
    province = sys.argv[1] if len(sys.argv) > 1 else "daknong"
    cfg = load_province(province)
    pyinfra = [sys.executable, "-m", "pyinfra", "-y", f"inventories/{province}.py", "deploy.py"]

    state = lab_target().up([province], fresh=True)
    ip = state["hosts"][cfg.mail_host]["ip"]
    ssh = ["ssh", *lab.ssh_options(), f"root@{ip}"]
    floor, _ = timed(ssh + ["DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive "
                            f"apt-get install -y -q --no-install-recommends {' '.join(PACKAGES)}"])

    lab_target().up([province], fresh=True)
    cold, r1 = timed(pyinfra, cwd=ROOT)
    rerun, r2 = timed(pyinfra, cwd=ROOT)
    log = Path("/tmp/govmail-bench-rerun.log")
    log.write_text(r2.stdout + r2.stderr)

    print(f"\n{province} ({cfg.mail_host}), {len(cfg.accounts)} mailboxes, {len(cfg.aliases)} lists")
    print(f"  floor: apt-get install of the package set   {floor:6.1f} s")
    print(f"  cold deploy (bare container -> serving)     {cold:6.1f} s   ({cold - floor:+.1f} s over the floor)")
    print(f"  no-change re-run                            {rerun:6.1f} s   ({summary_line(log)})")


if __name__ == "__main__":
    main()
