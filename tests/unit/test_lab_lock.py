"""The lab's lock: a second lab command waits for the first and says which one it waits for."""

from __future__ import annotations

import os
import threading
import time

import pytest

from govmail import lab
from govmail.lab import state as labstate

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab (and its lock) needs root")


def test_a_second_lab_command_waits_for_the_first_and_names_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(labstate, "LAB_DIR", tmp_path)  # the lock lives in the lab's state module
    order = []

    def second():
        with lab.lab_lock("lab down"):
            order.append("second")

    with lab.lab_lock("lab up"):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.5)
        assert order == []  # still waiting
        order.append("first")
    t.join(5)
    assert order == ["first", "second"]
    assert f"waiting for another lab command: lab up (pid {os.getpid()})" in capsys.readouterr().err
    assert (tmp_path / "lab.lock").read_text() == ""  # released


def test_two_hosts_of_one_deploy_refreshing_the_resolver_at_once_both_get_the_lock(tmp_path):
    """pyinfra runs each host in a gevent greenlet of one process: the second greenlet waits for the
    lock without stopping the first, which holds it and yields (a blocking flock there hung the deploy
    for good). Run in a child process, so that a hang fails the test instead of stopping it."""
    import subprocess
    import sys

    script = f"""
import gevent
from govmail import lab
from govmail.lab import state
state.LAB_DIR = __import__("pathlib").Path({str(tmp_path)!r})
order = []
def holder():
    with lab.lab_lock("refreshing the lab resolver"):
        order.append("first in"); gevent.sleep(0.3); order.append("first out")
def waiter():
    gevent.sleep(0.05)
    with lab.lab_lock("refreshing the lab resolver"):
        order.append("second in")
gevent.joinall([gevent.spawn(holder), gevent.spawn(waiter)])
print(order)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert r.stdout.strip() == "['first in', 'first out', 'second in']", r.stdout + r.stderr
