"""Re-deploying: nothing changes, nothing is lost. It runs last (marker `after_the_others`): what every
other test changed on the hosts must survive it, and the disaster recovery's rebuilt host too."""

from __future__ import annotations

import imaplib
import ssl

import pytest

from govmail.cli.deploy import deploy, summary_line
from govmail.host.contract import PATHS

from .conftest import deploy_log

pytestmark = pytest.mark.after_the_others(2)


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
