"""Re-deploying: nothing changes, nothing is lost. Runs after the other lab tests (file order)."""

from __future__ import annotations

import imaplib
import ssl

from govmail.cli.deploy import deploy, summary_line
from govmail.host.contract import PATHS

from .conftest import deploy_log


def test_second_deploy_reports_no_changes_and_keeps_a_changed_password(lab_hosts):
    # A user's password changed on the host (as `govmail set-password` does) before the re-run.
    keep = {}
    for p, h in lab_hosts.items():
        a = next(a for a in h.cfg.accounts if a.kind == "person")
        keep[p] = (a.address, h.set_password(a.address))
    assert deploy(list(lab_hosts)) == 0
    for p, h in lab_hosts.items():
        line = summary_line(deploy_log(p))
        assert " 0 changed," in line or " - changed," in line, f"{p}: second deploy changed something: {line}"
        pem = h.run(f"cat {PATHS['tls_cert']}").stdout
        with imaplib.IMAP4_SSL(h.name, 993, ssl_context=ssl.create_default_context(cadata=pem)) as m:
            assert m.login(*keep[p])[0] == "OK"
