"""`govmail`: the project's command line.

    govmail validate [PROVINCE ...]        check data files (all by default); touches no host
    govmail lab up PROVINCE ... [--fresh]  boot lab containers (one per province host)
    govmail lab down [PROVINCE ...]        stop them and remove everything the lab made
    govmail lab status                     what runs in the lab
    govmail lab ssh HOST [COMMAND]         a shell (or a command) on a lab host
    govmail lab rebuild HOST               destroy a lab host, boot a bare one in its place (DR drill)
    govmail deploy PROVINCE ... [--dry-run]
                                           pyinfra inventories/<p>.py deploy.py, provinces in parallel
    govmail up PROVINCE ...                lab up + deploy: a running mail host per province
    govmail address PROVINCE NAME [--agency A] [--department D]
                                           the address the province's naming rule gives
    govmail import PROVINCE FILE.csv       people (name, agency, role[, department]) -> directory entries
    govmail hash-password                  prompt for a password, print its {BLF-CRYPT} hash
    govmail set-password ADDRESS           administrator's reset: prompt, check the province's policy,
                                           store on its host (the user changes it at first login)
    govmail hand-over ADDRESS --to NAME    a unit's mailbox to its new head (DN Art. 13.2, TN Art. 10.2)
    govmail passwd ADDRESS                 a user changes their own password (the host's password
                                           service, HTTPS); no administrator needed
    govmail restore ADDRESS                lift a mailbox's suspension for inactivity (LC Art. 8.3),
                                           or re-create a deleted one
    govmail backup run PROVINCE            back the mail host up now (the timer does it daily)
    govmail backup status [PROVINCE ...]   age and size of the last good backup, per mail host
    govmail backup list PROVINCE           the archives
    govmail backup restore-mailbox ADDRESS [--at TIME] [--folder NAME]
                                           one mailbox (or folder) as it was, merged into the live one
    govmail backup restore-host PROVINCE [--at TIME]
                                           after a rebuild: store, passwords, TLS, logs, all mail
    govmail move-mailbox ADDRESS ... | --agency ID --province P [--to STORE] [--dry-run]
                                           mailboxes to another store of their province while in use
    govmail failover STORE [--recover | --forget | --dry-run]
                                           a lost store's mailboxes served from their standby copy
    govmail reboot PROVINCE [--host H] [--dry-run]
                                           reboot the hosts one at a time, each once the others
                                           are healthy (the monitor's view)
    govmail dns PROVINCE                   the DNS records to publish (zone-file format)
    govmail directory PROVINCE             the directory for the portal (HTML, CSV, vCard)
    govmail notice PROVINCE TEXT --until T the outage notice on the web mail, mailed to everyone
    govmail verify PROVINCE ... [--out D]  the compliance checks on the province's hosts, read-only;
                                           HTML, Markdown, JUnit reports; exit 1 when a clause fails
    govmail coverage [--markdown]          every article of the five decisions: checked, not yet, not technical
    govmail status PROVINCE ...            one screen per host from the province's monitor; exit 1
                                           while an alert fires
    govmail alerts [--markdown]            the alert rules, their clauses and runbooks (docs/alerts.md)
    govmail report PROVINCE monthly|annual [--period P] [--mail]
                                           the operations / usage report, made on the host now
    govmail schema                         print the data-file reference (docs/data-file.md)
    govmail test [PYTEST ARGS]             unit tests, then the lab tests (boots the lab)

Each module here registers its own commands (`register(sub)`): data.py, deploy.py, lab.py,
admin.py, move.py, failover.py, reboot.py, merger.py, publish.py, verify.py, monitor.py; args.py holds the argument types. The top layer.

May import: every layer.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..data import ROOT, DataError
from ..targets import TargetError
from . import admin, data, deploy, failover, lab, merger, monitor, move, publish, reboot, verify
from .args import err

# Each module registers its own commands (`register(sub)`), in the order `govmail --help` lists them.
COMMANDS = (data, deploy, lab, admin, move, failover, reboot, merger, publish, verify, monitor)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="govmail", description="Provincial mail servers as code.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for module in COMMANDS:
        module.register(sub)

    args = ap.parse_args(argv)
    if args.cmd in ("deploy", "up"):
        os.chdir(ROOT)
    try:
        return args.fn(args)
    except TargetError as e:
        err(str(e))
        return 2
    except DataError as e:
        err(str(e))
        return 2
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except OSError as e:
        err(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")
        return 1
    except Exception as e:  # a bug of govmail, not of the input: one line, the traceback on request
        if os.environ.get("GOVMAIL_DEBUG"):
            raise
        err(f"internal error: {type(e).__name__}: {e} (GOVMAIL_DEBUG=1 shows where)")
        return 70


if __name__ == "__main__":
    sys.exit(main())
