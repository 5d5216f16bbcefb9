"""Running pyinfra for provinces: what `govmail deploy`, `govmail up`, the lab tests and the benches use.

`deploy(provinces)` runs `pyinfra inventories/<p>.py deploy.py` for each province in parallel, one
log each (in the target's log directory), and prints one line per province. A dry run is pyinfra's
`--dry --diff`: it prints what each host would do and a unified diff of every configuration file
that would change (secrets excepted), and changes nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..data import ROOT, DataError, load_province
from ..targets import current


def pyinfra_command(province: str, dry: bool = False) -> list[str]:
    flags = ["--dry", "--diff"] if dry else ["-y"]
    return [sys.executable, "-m", "pyinfra", *flags, f"inventories/{province}.py", "deploy.py"]


def deploy_one(province: str, dry: bool, log_dir: Path) -> tuple[str, int, float, Path]:
    """One pyinfra run for the province, its output in deploy-<province>.log. A second run of the
    same province from this controller waits for the first (its hosts would make it wait anyway),
    so the log and its summary are one run's."""
    import fcntl

    log = log_dir / f"deploy-{province}.log"
    with open(log_dir / f".deploy-{province}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"govmail: another deploy of {province} is running from this controller; waiting for it to end",
                  file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        t = time.monotonic()
        with open(log, "w") as f:
            r = subprocess.run(pyinfra_command(province, dry), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
        return province, r.returncode, time.monotonic() - t, log


READY = re.compile(r"\]\s+Ready: ")


def planned(log: Path) -> list[str]:
    """What a dry run says each host would do, with the diffs: pyinfra's lines between loading the
    deploy and its table of detected changes (its own Loading/Ready lines left out)."""
    lines = log.read_text(errors="replace").splitlines()
    out, inside = [], False
    for line in lines:
        if "--> Preparing operation files" in line:
            inside = True
            continue
        if inside and line.startswith("--> "):
            break
        if inside and line.strip() and not line.strip().startswith("Loading:") and not READY.search(line):
            out.append(line)
    return out


def summary_line(log: Path) -> str:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if "Grand total" in line:
            parts = line.split()
            # Grand total <ops> <success> <error> <nochange>
            return f"{parts[2]} operations: {parts[3]} changed, {parts[4]} failed, {parts[5]} unchanged"
    return "no summary (see log)"


def deploy(provinces: list[str], dry: bool = False) -> int:
    for p in provinces:
        try:
            load_province(p)
        except DataError as e:
            print(f"govmail: {e}", file=sys.stderr)
            return 2
    log_dir = current().log_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"govmail: {'dry run of ' if dry else ''}deploying {', '.join(provinces)} (logs in {log_dir})", flush=True)
    rc = 0
    with ThreadPoolExecutor(max_workers=len(provinces)) as ex:
        for province, code, secs, log in ex.map(lambda p: deploy_one(p, dry, log_dir), provinces):
            mark = "✓" if code == 0 else "✗"
            if dry and code == 0:
                print(f"{mark} {province}: dry run, nothing changed; what a deploy would do:", flush=True)
                for line in planned(log):
                    print("  " + line)
                continue
            print(f"{mark} {province}: {secs:.0f} s, {summary_line(log)}", flush=True)
            if code:
                rc = 1
                tail = log.read_text(errors="replace").splitlines()[-25:]
                print("\n".join("    " + t for t in tail))
    return rc


def cmd_deploy(args) -> int:
    return deploy(args.provinces, args.dry_run)


def register(sub) -> None:
    from .args import province_key

    p = sub.add_parser("deploy", help="deploy provinces (pyinfra), in parallel")
    p.add_argument("provinces", nargs="+", type=province_key)
    p.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    p.set_defaults(fn=cmd_deploy)
