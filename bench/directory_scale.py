#!/usr/bin/env python3
"""Directory size scaling (printed, never asserted).

    python3 bench/directory_scale.py [N]        (as root; default N = 50000)

Builds a copy of Đắk Nông's data with N people (addresses by the province's rule, clashes settled
by its letter rule) in a temporary data directory, then on one fresh lab host:
  1. validate the N-mailbox data file;
  2. deploy it (cold for the directory: N new mailboxes, N initial passwords);
  3. change one mailbox's quota and deploy again;
  4. deploy again with no change;
beside the no-change re-run of the shipped 50-odd-mailbox directory on the same host.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from govmail.cli.deploy import summary_line  # noqa: E402
from govmail.data import load_province  # noqa: E402
from govmail.data.naming import address_for  # noqa: E402
from govmail.targets import lab as lab_target  # noqa: E402

SUR = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý"]
MID = ["Văn", "Đức", "Minh", "Quang", "Hữu", "Công", "Thanh", "Xuân", "Thị", "Thu", "Ngọc", "Phương", "Hồng", "Kim"]
GIV = ["Hậu", "Hùng", "Dũng", "Tuấn", "Nam", "Long", "Sơn", "Thắng", "Cường", "Đạt", "Hải", "Phong", "Quân", "Khoa",
       "Hoa", "Lan", "Hương", "Hằng", "Trang", "Linh", "Ngân", "Thảo", "Yến", "Nhung", "Đào", "Hà", "Vân", "Oanh"]


def big_data(n: int, dest: Path) -> Path:
    shutil.copytree(ROOT / "group_data", dest)
    cfg = load_province("daknong")
    d = yaml.safe_load((dest / "daknong.yml").read_text())
    agencies = [a["id"] for a in d["directory"]["agencies"]]
    taken = {a.address for a in cfg.accounts} | set(cfg.aliases)
    people = d["directory"]["people"]
    names = itertools.cycle(f"{s} {m} {g}" for s in SUR for m in MID for g in GIV)
    while len(people) < n:
        name, agency = next(names), agencies[len(people) % len(agencies)]
        try:
            addr = address_for(name, agency, cfg.domain, cfg.policy.naming, taken)
        except Exception:
            continue
        taken.add(addr)
        people.append({"name": name, "address": addr, "agency": agency})
    (dest / "daknong.yml").write_text(yaml.safe_dump(d, allow_unicode=True, sort_keys=False))
    return dest / "daknong.yml"


def deploy(data_dir: Path | None) -> tuple[float, str]:
    env = dict(os.environ)
    if data_dir:
        env["GOVMAIL_DATA_DIR"] = str(data_dir)
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pyinfra", "-y", "inventories/daknong.py", "deploy.py"], cwd=ROOT,
                       env=env, capture_output=True, text=True)
    secs = time.monotonic() - t
    log = Path(tempfile.mktemp(suffix=".log"))
    log.write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        sys.exit(f"deploy failed, see {log}")
    return secs, summary_line(log)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    tmp = Path(tempfile.mkdtemp(prefix="govmail-bench-"))
    data = tmp / "group_data"
    f = big_data(n, data)
    env = dict(os.environ, GOVMAIL_DATA_DIR=str(data))
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "govmail.cli", "validate", "daknong"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    validate = time.monotonic() - t
    assert r.returncode == 0, r.stdout + r.stderr

    lab_target().up(["daknong"], fresh=True)
    small_cold, _ = deploy(None)
    small_rerun, small_sum = deploy(None)
    big_cold, big_sum = deploy(data)
    d = yaml.safe_load(f.read_text())
    d["directory"]["people"][n // 2]["quota_mb"] = 300
    f.write_text(yaml.safe_dump(d, allow_unicode=True, sort_keys=False))
    one, one_sum = deploy(data)
    rerun, rerun_sum = deploy(data)
    deploy(None)  # back to the shipped directory (the extra mailboxes stay, marked removed)
    shutil.rmtree(tmp)

    print(f"\ndirectory scaling on one lab host (Đắk Nông rules, {n:,} mailboxes)")
    print(f"  validate {n:,} mailboxes                    {validate:7.1f} s")
    print(f"  deploy {n:,} new mailboxes                  {big_cold:7.1f} s   ({big_sum})")
    print(f"  change one mailbox, re-deploy              {one:7.1f} s   ({one_sum})")
    print(f"  no-change re-run, {n:,} mailboxes            {rerun:7.1f} s   ({rerun_sum})")
    print(f"  no-change re-run, shipped directory        {small_rerun:7.1f} s   ({small_sum})")
    print(f"  -> {n:,}-mailbox re-run / shipped re-run    {rerun / small_rerun:7.2f} x   (floor: at most 1.5 x)")
    print(f"  (cold deploy of the shipped directory:     {small_cold:7.1f} s)")


if __name__ == "__main__":
    main()
