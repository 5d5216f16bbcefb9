"""`govmail readdress` on a lab host: Lai Châu's Thành phố Lai Châu abolished (2025 reform), its wards
directly under the province. The next deploy renames each readdressed mailbox in place: the user's
password, the mail and the audit trail stay; nothing is re-created, no password is reset. Then the
same tool takes the data back, and the host renames them back."""

from __future__ import annotations

import imaplib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from govmail.data import data_dir

from ..unit.test_readdress import after_reform
from .conftest import PROVINCES
from .mailing import INSECURE, delivered, send_25

pytestmark = pytest.mark.skipif("laichau" not in PROVINCES, reason="Lai Châu's data has the district to abolish")
ROOT = Path(__file__).resolve().parents[2]
OLD, NEW = "dathq.tplc@laichau.gov.vn", "dathq.tanphong@laichau.gov.vn"


def govmail(*args, data):
    return subprocess.run(["govmail", *args], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, GOVMAIL_DATA_DIR=str(data)))


def deploy(data):
    r = subprocess.run([sys.executable, "-m", "pyinfra", "-y", "inventories/laichau.py", "deploy.py"], cwd=ROOT,
                       capture_output=True, text=True, timeout=900, env=dict(os.environ, GOVMAIL_DATA_DIR=str(data)))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]


def imap_login(h, user, pw) -> bool:
    with imaplib.IMAP4_SSL(h.ip, 993, ssl_context=INSECURE) as m:
        try:
            m.login(user, pw)
            return True
        except imaplib.IMAP4.error:
            return False


def test_a_readdressed_mailbox_is_renamed_in_place_with_its_password_and_mail_and_renamed_back(lab_hosts, tmp_path):
    h = lab_hosts["laichau"]
    pw = h.set_password(OLD)
    msgid = send_25(h, OLD, f"Trước khi đổi địa chỉ {int(time.time())}")
    assert delivered(h, OLD, msgid) == 1

    reformed, back = tmp_path / "reformed", tmp_path / "back"
    for d in (reformed, back):
        shutil.copytree(data_dir(), d)
    shutil.copy(data_dir() / "laichau.yml", tmp_path / "before.yml")
    (reformed / "laichau.yml").write_text(after_reform((data_dir() / "laichau.yml").read_text()))
    r = govmail("readdress", "laichau", "--from", str(tmp_path / "before.yml"), "--apply", data=reformed)
    # Written; exit 1 all the same: the district's own mailbox (tplc@) has no unit any more, for a decision.
    assert f"{OLD} -> {NEW}" in r.stdout and "laichau.yml written" in r.stderr, r.stdout + r.stderr
    try:
        deploy(reformed)
        # The same mailbox under its new address: the user's own password, the mail that was there.
        assert imap_login(h, NEW, pw), "the readdressed mailbox lost its password"
        assert delivered(h, NEW, msgid, timeout=5) == 1, "the mail did not move with the mailbox"
        assert h.run("test -d /var/vmail/laichau.gov.vn/dathq.tplc", check=False).returncode != 0
        audit = h.run("/usr/local/lib/govmail/accounts audit --limit 50").stdout
        assert f"renamed\t{NEW}" in audit and f"was {OLD} (readdressed; mail kept)" in audit, audit
        # Mail to the old address reaches the renamed mailbox.
        again = send_25(h, OLD, f"Đến địa chỉ cũ {int(time.time())}")
        assert delivered(h, NEW, again) == 1
        assert "password-reset" not in h.run(f"/usr/local/lib/govmail/accounts audit --limit 50 | grep {NEW}",
                                              check=False).stdout
    finally:
        # Back: the tool writes the units' way back; a person's old address it cannot know (it follows the
        # rule again), so their `former:` is written as an operator would.
        shutil.copy(data_dir() / "laichau.yml", back / "laichau.yml")
        r = govmail("readdress", "laichau", "--from", str(reformed / "laichau.yml"), "--apply", data=back)
        assert "tanphong@laichau.gov.vn -> tanphong.tplc@laichau.gov.vn" in r.stdout, r.stdout + r.stderr
        text = (back / "laichau.yml").read_text()
        for person in ("dathq", "hoavt"):
            text = text.replace(f"address: {person}.tplc@laichau.gov.vn, agency: tplc}}",
                                f"address: {person}.tplc@laichau.gov.vn, agency: tplc, "
                                f"former: [{person}.tanphong@laichau.gov.vn]}}")
        (back / "laichau.yml").write_text(text)
        deploy(back)
        deploy(data_dir())
    assert imap_login(h, OLD, pw) and delivered(h, OLD, msgid, timeout=5) == 1
