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
