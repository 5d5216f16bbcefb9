#!/usr/bin/env python3
"""Deploy-time figures for one province, each beside its floor (printed, never asserted).

    sudo python3 bench/deploy_time.py [PROVINCE] [RUNS]      (default daknong, 5 runs)

1. apt floor: a fresh lab container, `apt-get update && apt-get install --no-install-recommends`
   of every package the province's mail host gets (the services' declarations), in one run;
2. cold deploy: other fresh containers, `pyinfra inventories/<p>.py deploy.py` until the host
   serves (mail and backup hosts, deployed in parallel);
3. no-change re-run of the same deploy (median of RUNS), beside
4. `pyinfra inventories/<p>.py exec -- true` on the same hosts (median of RUNS): the cost of
   pyinfra itself reaching them.
Each fresh container is booted from the cached image; the boot itself is not counted.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import timed  # noqa: E402

from govmail import lab  # noqa: E402
from govmail.cli.deploy import summary_line  # noqa: E402
from govmail.data import load_province  # noqa: E402
from govmail.engine import declared_packages  # noqa: E402
from govmail.targets import lab as lab_target  # noqa: E402

COLD_FLOOR = 1.3  # the floors: cold deploy <= 1.3 x apt, re-run <= 3 x pyinfra's own round trip
RERUN_FLOOR = 3.0


def main() -> None:
    province = sys.argv[1] if len(sys.argv) > 1 else "daknong"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    cfg = load_province(province)
    packages = declared_packages(cfg, "mail")
    pyinfra = [sys.executable, "-m", "pyinfra", "-y", f"inventories/{province}.py"]

    state = lab_target().up([province], fresh=True)
    ip = state["hosts"][cfg.mail_host]["ip"]
    ssh = ["ssh", *lab.ssh_options(), f"root@{ip}"]
    floor, _ = timed(ssh + ["export DEBIAN_FRONTEND=noninteractive && apt-get update -q && "
                            f"apt-get install -y -q --no-install-recommends {' '.join(packages)}"])

    lab_target().up([province], fresh=True)
    cold, _ = timed(pyinfra + ["deploy.py"], cwd=ROOT)
    reruns, last = [], None
    for _ in range(runs):
        secs, last = timed(pyinfra + ["deploy.py"], cwd=ROOT)
        reruns.append(secs)
    bare = [timed(pyinfra + ["exec", "--", "true"], cwd=ROOT)[0] for _ in range(runs)]
    log = Path("/tmp/govmail-bench-rerun.log")
    log.write_text(last.stdout + last.stderr)
    rerun, true = statistics.median(reruns), statistics.median(bare)

    print(f"\n{province} ({cfg.mail_host}), {len(cfg.accounts)} mailboxes, {len(cfg.aliases)} lists, "
          f"{len(packages)} packages")
    print(f"  apt floor: apt-get update + install of the package set   {floor:6.1f} s")
    print(f"  cold deploy (bare containers -> serving)                  {cold:6.1f} s   "
          f"= {cold / floor:.2f} x the apt floor (at most {COLD_FLOOR} x)")
    print(f"  pyinfra exec -- true (median of {runs})                        {true:6.1f} s")
    print(f"  no-change re-run (median of {runs})                           {rerun:6.1f} s   "
          f"= {rerun / true:.2f} x pyinfra's own (at most {RERUN_FLOOR} x); {summary_line(log)}")


if __name__ == "__main__":
    main()
