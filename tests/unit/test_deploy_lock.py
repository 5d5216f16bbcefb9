"""govmail/host/deploy_lock.py on a scratch tree: one deploy at a time, a dead one's leftovers cleaned,
a deploy planned from an older host refused, a step of a deploy that lost the host refused."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from govmail.host import deploy_lock as dl


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "LOCK", str(tmp_path / "lock"))
    monkeypatch.setattr(dl, "LEASE", str(tmp_path / "lease.json"))
    monkeypatch.setattr(dl, "STAGE", str(tmp_path / "stage"))
    conf = tmp_path / "main.cf"
    conf.write_text("a = 1\n")
    return tmp_path, conf


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def lease() -> dict:
    with open(dl.LEASE) as f:
        return json.load(f)


def test_one_deploy_holds_the_host_and_a_second_is_told_who(scratch, capsys):
    tmp, conf = scratch
    files = [(str(conf), sha("a = 1\n"), sha("a = 2\n"))]
    assert dl.acquire("run-a", "ops@laptop", 0, files) == 0
    assert lease()["run"] == "run-a" and lease()["who"] == "ops@laptop"
    t = time.monotonic()
    assert dl.acquire("run-b", "ci@runner", 1, files) == dl.EX_TEMPFAIL
    assert 1 <= time.monotonic() - t < 5
    err = capsys.readouterr().err
    assert "is being deployed: deploy run-a by ops@laptop from this host, since" in err
    assert dl.guard("run-b", ["true"]) == dl.EX_TEMPFAIL  # a step of a deploy that does not hold the host
    assert "this deploy (run-b) no longer holds the host" in capsys.readouterr().err


def test_a_dead_deploy_is_taken_over_and_what_it_left_is_cleaned(scratch, capsys):
    tmp, conf = scratch
    files = [(str(conf), sha("a = 1\n"), sha("a = 2\n"))]
    assert dl.acquire("run-a", "ops@laptop", 0, files) == 0
    (tmp / "stage" / "run-a" / "bundle").mkdir(parents=True)
    (tmp / "main.cf.govmail-new").write_text("half swapped\n")
    stale = lease()
    stale["seen"] = time.time() - dl.IDLE - 1  # no step for longer than IDLE: gone
    (tmp / "lease.json").write_text(json.dumps(stale))
    assert dl.acquire("run-b", "ci@runner", 0, files) == 0
    assert "taking over from deploy run-a by ops@laptop" in capsys.readouterr().err
    assert not (tmp / "stage" / "run-a").exists() and not (tmp / "main.cf.govmail-new").exists()
    assert dl.guard("run-a", ["true"]) == dl.EX_TEMPFAIL  # the dead one's late step does nothing
    assert dl.guard("run-b", ["sh", "-c", "exit 3"]) == 3
    (tmp / "stage" / "run-b").mkdir()
    assert dl.release("run-b") == 0
    assert not (tmp / "lease.json").exists() and not (tmp / "stage" / "run-b").exists()


def test_a_deploy_planned_from_an_older_host_changes_nothing(scratch, capsys):
    tmp, conf = scratch
    # Read when main.cf said `a = 0`; another deploy has since written `a = 1`; this one wants `a = 2`.
    assert dl.acquire("run-b", "ci@runner", 0, [(str(conf), sha("a = 0\n"), sha("a = 2\n"))]) == 1
    err = capsys.readouterr().err
    assert f"{conf}: changed on the host since this deploy read it" in err and "run it again" in err
    assert not (tmp / "lease.json").exists()
    # What it wants is already there (the other deploy had the same data): nothing stops it.
    assert dl.acquire("run-b", "ci@runner", 0, [(str(conf), sha("a = 0\n"), sha("a = 1\n"))]) == 0


def test_the_program_refuses_a_run_id_that_could_name_another_path(scratch, capsys):
    assert dl.main(["release", "../../etc"]) == 2
    assert "not a deploy run id" in capsys.readouterr().err


def test_two_deploys_of_one_province_from_one_controller_run_one_after_the_other(tmp_path, monkeypatch, capsys):
    # A hurried operator starts a second deploy while one runs: the second waits (its hosts would make
    # it wait anyway) and the log, and the summary read from it, are each one run's.
    import threading

    from govmail.cli import deploy as cli

    monkeypatch.setattr(cli, "pyinfra_command",
                        lambda p, dry: ["sh", "-c", f"echo start $$ >> {tmp_path}/trace; sleep 0.4; echo end $$ >> {tmp_path}/trace"])
    results = []
    runs = [threading.Thread(target=lambda: results.append(cli.deploy_one("lamdong", False, tmp_path))) for _ in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    trace = [line.split()[0] for line in (tmp_path / "trace").read_text().splitlines()]
    assert trace == ["start", "end", "start", "end"]
    assert [r[1] for r in results] == [0, 0]
    assert "another deploy of lamdong is running from this controller" in capsys.readouterr().err
