"""Lab fixtures: boot one container per province, deploy it, hand tests a handle on it.

Provinces: all data files, or those in GOVMAIL_LAB_PROVINCES (comma-separated). The lab is left
running after the tests (so an engineer can look at it); `govmail lab down` removes it, and
.ci/run does that itself. Without root the lab tests are skipped, unless GOVMAIL_REQUIRE_LAB=1
(set by .ci/run), where they fail: a skipped lab test proves nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from govmail import lab
from govmail.data import ProvinceConfig, available_provinces, load_province
from govmail.data.passwords import generate

ROOT = Path(__file__).resolve().parents[2]


def lab_provinces() -> list[str]:
    env = os.environ.get("GOVMAIL_LAB_PROVINCES")
    return [p.strip() for p in env.split(",") if p.strip()] if env else available_provinces()


PROVINCES = lab_provinces()


def _lab_possible() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root"
    if not shutil.which("systemd-nspawn"):
        return "systemd-nspawn is not installed"
    return None


def pytest_collection_modifyitems(config, items):
    # Every test here needs the lab: marked, so `pytest -m "not lab"` runs the unit tests alone.
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)
    # Tests that rebuild or re-deploy the hosts every other test shares run after all the others, in
    # the rank they give (`pytestmark = pytest.mark.after_the_others(N)`), whatever their file names;
    # a test run beside a rank (`beside(N, work)`, below) is reported last of it.
    items.sort(key=rank)  # stable: the others keep their order
    reason = _lab_possible()
    if reason is None:
        return
    if os.environ.get("GOVMAIL_REQUIRE_LAB") == "1":
        raise pytest.UsageError(f"GOVMAIL_REQUIRE_LAB=1 but {reason}")
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=reason))


def rank(item) -> tuple[int, bool]:
    b = item.get_closest_marker("beside")
    m = b or item.get_closest_marker("after_the_others")
    return (m.args[0] if m else 0, b is not None)


# ---------------------------------------------------------------- a test run beside others
#
# A test that mostly waits (test_monitoring's breaks: some 13 minutes of alerts firing and resolving
# on one province) runs beside the tests of a rank that touch other provinces only. Marked
# `beside(N, work)`, its `work` (a Beside) starts in a thread when the first test of rank N starts;
# the test itself, sorted last of rank N, waits for it and reports what it found. The provinces a
# test touches are its parameters' and its module's `TOUCHES`; when a test of rank N touches the
# work's province (a lab of fewer provinces), the work runs in its own turn instead, alone.


class Beside:
    """Work run in a thread beside other tests: `fn()` on `province`; `result()` waits for it and
    raises what it raised."""

    def __init__(self, province: str, fn):
        import threading

        self.province, self.fn, self.error = province, fn, None
        self.thread = threading.Thread(target=self._run, name=f"beside-{fn.__name__}", daemon=True)

    def _run(self) -> None:
        try:
            self.fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test that reports it
            self.error = e

    def start(self) -> None:
        if not self.thread.is_alive() and self.thread.ident is None:
            self.thread.start()

    def result(self, timeout: float) -> None:
        self.start()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"{self.fn.__name__} still running after {timeout:.0f} s")
        if self.error is not None:
            raise self.error


_BESIDE: dict[int, list[Beside]] = {}


def touches(item) -> set:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return {v for v in params.values() if isinstance(v, str)} | set(getattr(item.module, "TOUCHES", []))


def pytest_collection_finish(session):
    """The works of the tests selected to run beside a rank, but none beside a test of that rank that
    touches its province (it would meet the work's breaks)."""
    for item in session.items:
        m = item.get_closest_marker("beside")
        if m and not any(m.args[1].province in touches(other) for other in session.items
                         if rank(other) == (m.args[0], False)):
            _BESIDE.setdefault(m.args[0], []).append(m.args[1])


@pytest.hookimpl(trylast=True)
def pytest_runtest_setup(item):
    """The first test of a rank, its fixtures set up (the lab is up), starts the works beside it."""
    for work in _BESIDE.get(rank(item)[0], []):
        work.start()


@dataclass
class LabHost:
    province: str
    cfg: ProvinceConfig
    name: str
    ip: str

    def run(self, command: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(
            ["ssh", *lab.ssh_options(), f"root@{self.ip}", command], input=input, capture_output=True, text=True,
            timeout=600,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"{self.name}: `{command}` failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def store(self, sql: str, write: bool = False) -> list:
        """Rows of one statement on the host's account store, whatever its engine (`accounts sql`;
        `write`: in one audited transaction, for a test that changes a row by hand)."""
        import json
        import shlex

        r = self.run(f"/usr/local/lib/govmail/accounts sql {'--write ' if write else ''}{shlex.quote(sql)}")
        return json.loads(r.stdout)

    @property
    def backup_ip(self) -> str:
        return lab.load_state()["hosts"][self.cfg.backup_host]["ip"]

    def backup_run(self, command: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command on the province's backup host."""
        h = lab.load_state()["hosts"][self.cfg.backup_host]
        r = subprocess.run(["ssh", *lab.ssh_options(), f"root@{h['ip']}", command], capture_output=True, text=True,
                           timeout=600, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"{self.cfg.backup_host}: `{command}` failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def admin_reset(self, address: str) -> str:
        """An operator's reset through `govmail set-password`: returns the issued password."""
        acc = self.cfg.account(address)
        pw = generate(self.cfg.policy.password, admin=acc.role == "admin")
        r = subprocess.run(
            ["govmail", "set-password", "--from-env", address], env=dict(os.environ, GOVMAIL_PASSWORD=pw),
            capture_output=True, text=True,
        )
        assert r.returncode == 0, r.stderr
        return pw

    def set_password(self, address: str) -> str:
        """A usable password, the way a user gets one: the operator issues it, the user changes it on
        the host's password page (the first-login rule of DN/LC/TN). Returns the user's password."""
        issued = self.admin_reset(address)
        acc = self.cfg.account(address)
        own = generate(self.cfg.policy.password, admin=acc.role == "admin") + "-Doi"  # ASCII: smtplib.login
        status, result = self.change_own_password(address, issued, own)
        assert status == 200 and result["ok"], result
        return own

    @property
    def cafile(self) -> str:
        """The host's (self-signed) certificate, for clients that verify it. Fetched each time: a test
        may install another certificate."""
        path = lab.LAB_DIR / f"{self.name}.pem"
        path.write_text(self.run("cat /etc/govmail/tls/fullchain.pem").stdout)
        return str(path)

    def change_own_password(self, address: str, current: str, new: str) -> tuple[int, dict]:
        """POST to the host's password service, as `govmail passwd` and web mail do."""
        import json
        import ssl
        import urllib.error
        import urllib.request

        from govmail.data.facts import password_service_url

        req = urllib.request.Request(
            password_service_url(self.cfg) + "api/password", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"user": address, "password": current, "new_password": new}).encode(),
        )
        ctx = ssl.create_default_context(cafile=self.cafile)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


def on(name: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    """`command` as root on the lab host `name` (any host of a province, not only its mail host)."""
    ip = lab.load_state()["hosts"][name]["ip"]
    r = subprocess.run(["ssh", *lab.ssh_options(), f"root@{ip}", command], capture_output=True, text=True, timeout=300)
    assert not check or r.returncode == 0, f"{name}: `{command}` failed: {r.stderr.strip()}"
    return r


def deploy_log(province: str) -> Path:
    return lab.LAB_DIR / "logs" / f"deploy-{province}.log"


@pytest.fixture(scope="session")
def lab_hosts() -> dict[str, LabHost]:
    from govmail.cli.deploy import deploy
    from govmail.targets import lab as lab_target

    t = time.monotonic()
    state = lab_target().up(PROVINCES)
    rc = deploy(PROVINCES)
    if rc:
        # `govmail test` prints this after pytest's summary, where CI output is read.
        report = [f"== {deploy_log(p)} (last 60 lines)\n" + "\n".join(
            deploy_log(p).read_text(errors="replace").splitlines()[-60:]) for p in PROVINCES]
        lab.DEPLOY_FAILURE.write_text("\n".join(report) + "\n")
    assert rc == 0, "deploy failed: see " + ", ".join(str(deploy_log(p)) for p in PROVINCES)
    print(f"\nlab up and deployed in {time.monotonic() - t:.0f} s")
    hosts = {}
    for p in PROVINCES:
        cfg = load_province(p)
        h = state["hosts"][cfg.mail_host]
        hosts[p] = LabHost(p, cfg, cfg.mail_host, h["ip"])
    return hosts


@pytest.fixture(params=PROVINCES)
def host(request, lab_hosts) -> LabHost:
    return lab_hosts[request.param]


# ---------------------------------------------------------------- compliance summary

_CLAUSES: list[tuple[str, str, str]] = []


def pytest_runtest_logreport(report):
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    props = dict(report.user_properties)
    if "clause" in props:
        _CLAUSES.append((props["province"], props["clause"], report.outcome))


def pytest_terminal_summary(terminalreporter):
    if not _CLAUSES:
        return
    tr = terminalreporter
    tr.section("compliance: clauses checked on the lab hosts")
    marks = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}
    for province in sorted({c[0] for c in _CLAUSES}):
        rows = [c for c in _CLAUSES if c[0] == province]
        # A clause that cites a govmail default is not the province's own: its decision fixes no
        # value there. Counted and listed apart, so a decision that is silent does not look complete.
        own = [r for r in rows if not r[1].startswith("govmail default")]
        defaults = [r for r in rows if r[1].startswith("govmail default")]
        ok = sum(1 for r in own if r[2] == "passed")
        dok = sum(1 for r in defaults if r[2] == "passed")
        tr.write_line(f"{province}: {ok}/{len(own)} of the province's own clauses pass; "
                      f"{dok}/{len(defaults)} govmail defaults (no article of its decision) pass")
        for _, clause, outcome in own:
            tr.write_line(f"  {marks.get(outcome, outcome.upper())}  {clause}")
        if defaults:
            tr.write_line("  govmail defaults, where the province's decision fixes no value:")
            for _, clause, outcome in defaults:
                tr.write_line(f"  {marks.get(outcome, outcome.upper())}  {clause}")
