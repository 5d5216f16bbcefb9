"""govmail backup tool on a mail host (/usr/local/lib/govmail/backup): the command line over
govmail/host/backup.py (making backups, status) and govmail/host/restore.py (restores).

Commands:
  run                          make a backup now (govmail-backup.timer runs this); a failure is
                               mailed to postmaster@
  check                        mail postmaster@ when the last good backup is older than allowed
                               (govmail-backup-check.timer, hourly; once a day at most)
  status                       JSON: last good backup (time, age, sizes), last error, archives
  list                         the archives in the repository
  restore-mailbox ADDRESS [--at TIME] [--folder NAME]
                               bring back one mailbox (or one folder) as it was at TIME (default:
                               the last archive), merged into the live one: nothing newer is lost,
                               nothing is duplicated, other mailboxes are untouched
  restore-host [--at TIME]     after a rebuild: account store, last logins, TLS, logs and every
                               mailbox from the archive, merged with mail that arrived meanwhile
"""

from __future__ import annotations

import sys

from . import backup, restore


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, args = argv[0], argv[1:]

    def opt(flag):
        return args[args.index(flag) + 1] if flag in args else None

    try:
        if cmd == "run":
            return backup.run()
        if cmd == "check":
            return backup.check(float(opt("--now")) if opt("--now") else None)
        if cmd == "status":
            return backup.status()
        if cmd == "list":
            for a in backup.archives(backup.conf()):
                print(f"{a['start']}\t{a['name']}")
            return 0
        if cmd == "restore-mailbox" and args and not args[0].startswith("-"):
            return restore.restore_mailbox(args[0].lower(), opt("--at"), opt("--folder"))
        if cmd == "restore-host":
            return restore.restore_host(opt("--at"))
    except RuntimeError as e:
        print(f"backup: {e}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
