"""A deploy cut short, or two at once, never leaves a file that is not the planned one, and mail flows.

Once, a deploy killed during its transfer and run again at once wrote Roundcube's configuration over
/etc/postfix/main.cf (two runs in one staging directory): every smtpd died while `postfix` still
said active. Here a deploy that changes the attachment limit (main.cf, clamd, rspamd, nginx, PHP and
Roundcube change) is killed at several moments and run again once; two deploys meet; a running
deploy is named to the one that waits for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from govmail import lab as lab_env
from govmail.data import data_dir, load_province
from govmail.host import deploy_lock

from .mailing import delivered, send_25

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab(lab_hosts, tmp_path_factory):
    """The host, its data as shipped and the same data with an attachment limit 1 MiB lower."""
    province = "daknong" if "daknong" in lab_hosts else next(iter(lab_hosts))
    h = lab_hosts[province]
    changed = tmp_path_factory.mktemp("interrupted") / "group_data"
    shutil.copytree(data_dir(), changed)
    path = changed / f"{province}.yml"
    d = yaml.safe_load(path.read_text())
    d["policy"]["attachment"]["max_mb"] = h.cfg.policy.attachment.max_mb - 1
    path.write_text(yaml.safe_dump(d, allow_unicode=True, sort_keys=False))
    state = {"data": data_dir()}
    yield province, h, {"shipped": data_dir(), "changed": changed}, state
    r = deploy(province, data_dir())
    assert r.returncode == 0, r.stdout[-3000:]


def command(province: str) -> list[str]:
    return [sys.executable, "-m", "pyinfra", "-y", f"inventories/{province}.py", "deploy.py"]


def deploy(province: str, data: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(command(province), cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, GOVMAIL_DATA_DIR=str(data), **env), timeout=900)


def killed_at(province: str, data: Path, marker: str, delay: float, sig=signal.SIGKILL) -> str:
    """Start a deploy, kill it (its whole process group) `delay` s after pyinfra prints `marker`."""
    p = subprocess.Popen(command(province), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=dict(os.environ, GOVMAIL_DATA_DIR=str(data)), start_new_session=True)
    out = []
    try:
        for line in p.stdout:
            out.append(line)
            if marker in line:
                time.sleep(delay)
                os.killpg(p.pid, sig)
                break
        else:
            pytest.fail(f"the deploy ended before {marker!r}:\n{''.join(out)[-3000:]}")
    finally:
        p.wait(timeout=60)
    return "".join(out)


def changes(r: subprocess.CompletedProcess) -> str:
    return next((line for line in (r.stdout + r.stderr).splitlines() if "Grand total" in line), "")


def assert_converged(province, h, data: Path) -> None:
    """Every file as planned (a further deploy changes nothing), nothing left behind, mail flows."""
    r = deploy(province, data)
    assert r.returncode == 0, r.stdout[-3000:]
    out = r.stdout + r.stderr
    plans = [line for line in out[out.find("Loading: deploy.py"):].splitlines() if f"[{h.name}]" in line]
    assert plans and "up to date" in plans[0], f"the re-run did not converge: {plans[:1]}\n{r.stdout[-2000:]}"
    assert h.run("ls -A /var/lib/govmail-stage").stdout.strip() == "", "a staging directory was left"
    assert h.run("find /etc -name '*.govmail-new'").stdout.strip() == "", "a half-swapped file was left"
    assert h.run("test -e /run/govmail-deploy.json", check=False).returncode != 0, "the deploy lease was kept"
    assert h.run("postfix check 2>&1").stdout.strip() == ""
    assert h.run("head -c 5 /etc/postfix/main.cf").stdout != "<?php"
    assert int(h.run("postconf -h message_size_limit").stdout) == load_province(data / f"{province}.yml").message_size_limit
    to = next(a.address for a in h.cfg.accounts if a.kind == "person" and a.status == "active")
    msgid = send_25(h, to, "sau khi triển khai bị ngắt / after an interrupted deploy")
    assert delivered(h, to, msgid) == 1


MOMENTS = [
    ("before the transfer", "Starting operation: Prepare", 0.2, signal.SIGKILL),
    ("during the transfer", "Starting operation: Configuration files", 0.1, signal.SIGKILL),
    ("right after the transfer", "Starting operation: Activate", 0.0, signal.SIGINT),
    ("during the activation", "Starting operation: Activate", 1.0, signal.SIGKILL),
]


@pytest.mark.parametrize("moment,marker,delay,sig", MOMENTS, ids=[m[0].replace(" ", "-") for m in MOMENTS])
def test_a_deploy_killed_at_any_moment_is_finished_by_the_next_run(lab, moment, marker, delay, sig):
    province, h, data, state = lab
    # Each round deploys the data the host does not have, so every round changes files.
    target = "changed" if state["data"] == data["shipped"] else "shipped"
    killed_at(province, data[target], marker, delay, sig)
    r = deploy(province, data[target])  # at once, as an operator would
    assert r.returncode == 0, f"killed {moment}, the next run failed:\n{r.stdout[-3000:]}"
    assert "Traceback" not in r.stdout + r.stderr
    state["data"] = data[target]
    assert_converged(province, h, data[target])


def together(province: str, first_data: Path, second_data: Path, delay: float):
    """Two deploys, the second started `delay` s after the first: (first's exit and output, second's result)."""
    with subprocess.Popen(command(province), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, GOVMAIL_DATA_DIR=str(first_data))) as first:
        time.sleep(delay)
        second = deploy(province, second_data)
        out_first = first.communicate(timeout=900)[0]
    return first.returncode, out_first, second


def test_two_deploys_at_once_both_end_cleanly(lab):
    province, h, data, state = lab
    target = "changed" if state["data"] == data["shipped"] else "shipped"
    # The same data twice (an operator and a CI job): both succeed, one after the other.
    rc, out_first, second = together(province, data[target], data[target], 0.5)
    assert rc == 0, out_first[-3000:]
    assert second.returncode == 0, second.stdout[-3000:]
    state["data"] = data[target]
    # Other data, 1.5 s apart: the second was planned from the host before the first changed it;
    # it either finds its plan still holds, or stops with one line before touching anything.
    other = "changed" if target == "shipped" else "shipped"
    rc, out_first, second = together(province, data[other], data[target], 1.5)
    assert rc == 0, out_first[-3000:]
    both = out_first + second.stdout + second.stderr
    assert "Traceback" not in both and "FileNotFoundError" not in both
    if second.returncode == 0:
        winner = target
    else:
        assert "nothing done: this deploy was planned from an older state of the host; run it again" in both
        winner = other
    state["data"] = data[winner]
    assert_converged(province, h, data[winner])


def test_a_deploy_waits_for_a_running_one_names_it_and_takes_over_when_it_dies(lab):
    province, h, data, state = lab
    target = "changed" if state["data"] == data["shipped"] else "shipped"
    program = Path(deploy_lock.__file__).read_text()
    # Another deploy holds the host: its SSH session stays open (as a deploy's does while it runs), on a
    # connection of its own (ssh takes an option's first value: not the lab's shared connection, which
    # outlives this session and would keep the lease alive; a deploy's pyinfra has its own too).
    holder = subprocess.Popen(
        ["ssh", "-o", "ControlPath=none", *lab_env.ssh_options(), f"root@{h.ip}",
         f"python3 - acquire 20261205T010203Z-elsewhere ops@laptop-so 0 <<'EOF'\n{program}\nEOF\nsleep 300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 30
        while "elsewhere" not in h.run("cat /run/govmail-deploy.json", check=False).stdout:
            assert time.monotonic() < end and holder.poll() is None, "the holder did not take the host"
            time.sleep(0.3)
        t = time.monotonic()
        r = deploy(province, data[target], GOVMAIL_LOCK_WAIT="4")
        assert r.returncode != 0
        assert time.monotonic() - t < 60
        out = r.stdout + r.stderr
        assert (f"{h.name} is being deployed: deploy 20261205T010203Z-elsewhere by ops@laptop-so from 10.77.0.1, "
                "since ") in out and "waited 4 s: run this deploy again when it has ended" in out, out[-3000:]
        assert "Traceback" not in out
    finally:
        holder.kill()
        holder.wait()
    # Its controller is gone (the SSH session ended): the next deploy takes over, cleans, converges.
    r = deploy(province, data[target], GOVMAIL_LOCK_WAIT="30")
    assert r.returncode == 0, r.stdout[-3000:]
    state["data"] = data[target]
    assert_converged(province, h, data[target])


def test_a_bad_lock_wait_is_refused_before_any_host_is_touched(lab):
    province, h, data, state = lab
    target = "changed" if state["data"] == data["shipped"] else "shipped"
    before = h.run("sha1sum /etc/postfix/main.cf").stdout
    r = deploy(province, data[target], GOVMAIL_LOCK_WAIT="ten")
    assert r.returncode == 2
    assert "GOVMAIL_LOCK_WAIT='ten': allowed: the seconds to wait for another deploy, 0..86400" in r.stdout + r.stderr
    assert h.run("sha1sum /etc/postfix/main.cf").stdout == before
