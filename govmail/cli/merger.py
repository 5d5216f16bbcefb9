"""A merged province's commands: `readdress` (addresses under a new unit structure) and `migrate`
(mailboxes from the predecessors' hosts); the work is in govmail/merger/."""

from __future__ import annotations

from .args import imap_endpoint, mail_address, province_key


def cmd_readdress(args) -> int:
    from ..merger import readdress

    return readdress.cmd(args)


def cmd_migrate(args) -> int:
    from ..merger import migrate

    return migrate.cmd(args)


def register(sub) -> None:
    p = sub.add_parser("readdress", help="addresses that change under a new unit structure (old -> new); --apply "
                       "writes them, old addresses kept as `former:`")
    p.add_argument("province", type=province_key)
    p.add_argument("--from", dest="old", metavar="OLD.yml", help="the data file before the restructuring (units' "
                   "old addresses): e.g. `git show HEAD:group_data/<province>.yml > old.yml`")
    p.add_argument("--apply", action="store_true", help="write the data file (validated first)")
    p.set_defaults(fn=cmd_readdress)

    p = sub.add_parser("migrate", help="copy a merged province's mailboxes from a predecessor's host (incremental)")
    p.add_argument("province", type=province_key)
    p.add_argument("--from", dest="source", required=True, type=province_key, help="the predecessor's key")
    p.add_argument("--imap", metavar="HOST[:PORT]", type=imap_endpoint, help="copy from this IMAP server instead (993: TLS)")
    p.add_argument("--master-user", help="IMAP master login (its password in GOVMAIL_IMAP_PASSWORD)")
    p.add_argument("--passwords", metavar="FILE.csv", help="IMAP: each user's own password (old address,password)")
    p.add_argument("--insecure", action="store_true", help="IMAP: do not verify the server's certificate")
    p.add_argument("--dry-run", action="store_true", help="list the mailboxes and their sizes; change nothing")
    p.add_argument("--final", action="store_true", help="the catch-up after the DNS switch; then revoke access")
    p.add_argument("--keep-access", action="store_true", help="with --final: leave the key on the old host")
    p.add_argument("--only", metavar="OLD_ADDRESS", action="append", type=mail_address,
                   help="copy only this old mailbox (repeat for more); the others are not touched")
    p.add_argument("--leave-unmapped", action="store_true",
                   help="with --final: end the migration although old mailboxes with mail are not mapped")
    p.set_defaults(fn=cmd_migrate)
