"""The directory on the host and the account store Dovecot authenticates against.

The account tool (govmail/host/accounts.py) and the directory (JSON) go to the host; initial
passwords (passlib, bcrypt) are made for mailboxes the store has never seen; `accounts sync` runs
on the host, in one transaction, whenever one of them changed. Passwords already in the store are
never touched. The daily job (govmail-daily.timer) applies the life-cycle rules.
"""

from __future__ import annotations

import base64
import gzip
import json
import shlex

from ..data import ROLE_LOCAL_PARTS, passwords, validated_cache
from ..data import predecessors as merger
from ..data.facts import operator, password_api, password_service_url, password_url  # noqa: F401 (used here)
from ..data.text import Trusted
from ..host import contract
from ..render import render
from ..service import Ensure, File, Refused, Service, Unit, json_bytes

NEW_PASSWORDS = contract.PATHS["state"] + "/new-passwords.json"


def directory_document(cfg) -> dict:
    return {
        "version": contract.VERSION,
        "province": cfg.key,
        "domain": cfg.domain,
        "accounts": accounts(cfg),
        # Password age limits the store enforces at login (LC Art. 4.2); null: no limit.
        "policy": {
            "user_max_age_days": cfg.policy.password.user_max_age_days,
            "admin_max_age_days": cfg.policy.password.admin_max_age_days,
            # Inactivity rule the daily job applies (DN Art. 7.3, LC Art. 8.1).
            "inactivity_action": cfg.policy.inactivity.action,
            "inactivity_after_months": cfg.policy.inactivity.after_months,
            "inactivity_notify_agency": 1 if cfg.policy.inactivity.notify_agency else 0,
            "inactivity_notify_superior": 1 if cfg.policy.inactivity.notify_superior else 0,
            "inactivity_delete_after_months": cfg.policy.inactivity.delete_after_notice_months,
            "inactivity_article": cfg.policy.inactivity.article,
            # Purge of cancelled (and dropped) mailboxes after the retention.
            "cancelled_keep_months": cfg.policy.cancellation.keep_months,
            "cancelled_article": cfg.policy.cancellation.article,
            # First login and the user's own change (DN Art. 12.1, LC Art. 4.1/6.3/7.3, TN Art. 9.1).
            "change_at_first_login": 1 if cfg.policy.password.change_at_first_login else 0,
            "password_min_length": cfg.policy.password.min_length,
            "password_admin_min_length": cfg.policy.password.admin_min_length,
            "password_require": ",".join(cfg.policy.password.require),
            "password_article": cfg.policy.password.article,
            "password_url": password_url(cfg),
            # With stores apart: the host the daily job runs on, whose mailboxes it may suspend and
            # delete (it reads their last logins and removes their mail on this host's disk).
            **({"mail_host": cfg.mail_host} if cfg.stores_apart else {}),
        },
        # Role addresses reach the postmaster; root@ too, so the host's own system mail (`sendmail
        # root` is qualified with the province domain) is read rather than bounced.
        # The predecessors' domains keep their role addresses too (RFC 2142: every domain that takes mail).
        "lists": {**{f"{role}@{d}": [cfg.postmaster] for d in cfg.domains for role in ROLE_LOCAL_PARTS},
                  **cfg.aliases},
        # Who may send as a list or a delegated address (Postfix smtpd_sender_login_maps); a mailbox
        # sends as itself. The same table rspamd checks the header From: against (GOVMAIL_FROM).
        "senders": cfg.senders,
        # Old addresses of a merged province or a readdressing, and when their phases end
        # (govmail/data/predecessors.py); the store's views apply them.
        "former": merger.former_rows(cfg),
    }


def accounts(cfg) -> list[dict]:
    """Each mailbox as the host's sync reads it; with stores apart, the host that holds it (`store`:
    the store's name; the account store keeps it from the mailbox's creation, Dovecot's proxy reads it)."""
    if not cfg.stores_apart:
        return [a.as_dict() for a in cfg.accounts]
    held = cfg.held_agencies()
    return [{**a.as_dict(), "store": cfg.store_of(a, held)} for a in cfg.accounts]


def directory_json(cfg) -> bytes:
    """The directory document as the host reads it; made once per validated data file (50,000
    mailboxes: a third of a second; govmail/data: validated_cache.derived)."""
    return json_bytes(directory_document(cfg))


def probes(cfg) -> dict[str, str]:
    """Addresses that have a password in the host's account store, and deleted ones (no initial
    password to issue): `accounts stored`; a host of govmail 0.1 answers `accounts list` (JSON);
    the passwd-file store of earlier versions, which the next sync migrates, is read as it is. A
    store that exists but does not answer (PostgreSQL down, a damaged file) stops the deploy."""
    tool, q = f"{contract.PATHS['lib']}/accounts", shlex.quote(contract.PATHS["store"])
    dsn = shlex.quote(contract.PATHS["store_dsn"])
    legacy = shlex.quote(contract.PATHS["legacy_users"])
    # Compressed to one line: 50,000 addresses are 1.4 MB, a second of a no-change deploy to read.
    return {"store_engine": f"test -s {dsn} && echo postgresql || echo sqlite",
            # Where the mailboxes are (a host leaving the data must hold none): `accounts places`.
            "mail_places": f"{{ [ -s {dsn} ] || [ -f {q} ]; }} && {tool} places 2>/dev/null || true",
            "stored_accounts": (
        f"{{ if [ -s {dsn} ] || [ -f {q} ]; then {tool} stored 2>/dev/null || {tool} list 2>/dev/null "
        f"|| echo {UNREADABLE}; elif [ -f {legacy} ]; then cut -d: -f1 {legacy} | grep -v '^#'; fi; }} "
        "| gzip -1 | base64 -w0; echo"
    )}


# What the probe says when the store exists but cannot be read.
UNREADABLE = "!store-unreadable"


def stored_addresses(answer: str) -> set[str]:
    try:
        answer = gzip.decompress(base64.b64decode(answer.strip())).decode() if answer.strip() else ""
    except (ValueError, OSError, EOFError) as e:  # binascii.Error is a ValueError
        raise Refused(f"the host's list of stored accounts came back unreadable ({e})") from None
    if answer.strip() == UNREADABLE:
        raise Refused("the host's account store exists but did not answer (`accounts stored` failed: its "
                      "database down, or its file damaged): run `/usr/local/lib/govmail/accounts stored` on the "
                      "host to see why")
    if answer.lstrip().startswith("{"):  # `accounts list` of govmail 0.1
        return {a for a, row in json.loads(answer).items() if row.get("has_password") or row.get("status") == "deleted"}
    return set(answer.split())


def stranded(cfg, answer: str) -> None:
    """Refuse a data file without a host that still holds mailboxes, or that mail is being moved to
    (the account store's `store` and `moving`): they would be served empty by the mail host, their
    mail left on a host nobody deploys."""
    try:
        places = json.loads(answer) if answer.strip() else {}
    except ValueError:
        return  # a host tool of an earlier version: nothing to compare
    stores = {cfg.mail_host, *cfg.stores_apart}
    for key, column, what in (("stores", "store", "hold"), ("moving", "moving", "are being moved to"),
                              ("moved_from", "moved_from", "were just moved from")):
        for host, n in sorted((places.get(key) or {}).items()):
            if host and host not in stores:  # "": no host named (a one-host store: the mail host)
                raise Refused(
                    f"{n} mailboxes {what} {host} (the account store's `{column}`), "
                    f"which {cfg.file.name} no longer has as a store: put it back in hosts[] with roles [store], give "
                    "its agencies to another store (hosts[].agencies), deploy, `govmail move-mailbox --agency ID "
                    f"--province {cfg.key}`, and only then remove it")


def service(ctx) -> Service | None:
    cfg = ctx.cfg
    # A store apart: the mail host syncs the account store; the store runs the inactivity and
    # deletion rules for its own mailboxes (their last logins are on its disk).
    if ctx.host_name in cfg.stores_apart:
        daily = Trusted(f"--held-by {ctx.host_name} --domain {cfg.domain}")
        return Service(name="accounts", files=[
            File("/etc/systemd/system/govmail-daily.service", render("systemd/govmail-daily.service.j2", cfg,
                                                                     daily_args=daily), action=None),
            File("/etc/systemd/system/govmail-daily.timer", render("systemd/govmail-daily.timer.j2", cfg), action=None),
        ], units=[Unit("govmail-daily.timer")])
    if ctx.probes.get("store_engine", "").strip() == "postgresql" and cfg.store_engine == "sqlite":
        # The host tools would go on writing PostgreSQL while Dovecot and Postfix read the SQLite
        # file left behind by the move: two stores, diverging.
        raise Refused("its account store is on PostgreSQL (/etc/govmail/store.dsn) and the data file says "
                      "`account_store.engine: sqlite`: moving a store back is not supported; set it to "
                      "`postgresql` again")
    stranded(cfg, ctx.probes.get("mail_places", ""))
    stored = stored_addresses(ctx.probes.get("stored_accounts", ""))
    new = [a for a in cfg.accounts if a.address not in stored and not a.password_hash]
    sync = f"GOVMAIL_ACTOR={shlex.quote(operator())} {contract.PATHS['lib']}/accounts sync"
    # The SQLite file, or (PostgreSQL) the store's tables, made by a first sync.
    exists = (f"{contract.PATHS['lib']}/accounts sql 'SELECT 1 FROM meta LIMIT 1' >/dev/null 2>&1"
              if cfg.store_engine == "postgresql" else f"test -f {contract.PATHS['store']}")
    files = [
        File(contract.PATHS["directory"], validated_cache.derived(cfg, "directory-json", directory_json), mode=0o640,
             action="sync"),
        File("/etc/systemd/system/govmail-daily.service", render("systemd/govmail-daily.service.j2", cfg), action=None),
        File("/etc/systemd/system/govmail-daily.timer", render("systemd/govmail-daily.timer.j2", cfg), action=None),
    ]
    if new:
        # Initial passwords for mailboxes the store has never seen: random, so hashed at bcrypt's
        # minimum cost; the sync stores them, hands them out in contract.PATHS["initial_passwords"] and
        # removes this file.
        made = {}
        for a in new:
            pw = passwords.generate(cfg.policy.password, admin=a.role == "admin")
            made[a.address] = {"hash": passwords.hash_password(pw, rounds=passwords.INITIAL_ROUNDS), "password": pw}
        files.append(File(NEW_PASSWORDS, json_bytes(made), mode=0o600, action="sync", secret=True, consumed=True))
        # The host rehashes them at the full cost in the background, at the lowest priority.
        sync += (f" --new-passwords {NEW_PASSWORDS} && {{ systemd-run --quiet --no-block --collect --nice=19 "
                 f"--unit=govmail-strengthen {contract.PATHS['lib']}/accounts strengthen || true; }}")
    return Service(
        name="accounts",
        ensures=[Ensure("the account store exists", exists, "true", action="sync"),
                 # A row changed by hand (a quota set to 0, a status, a list) is put back by a sync.
                 Ensure("the account store agrees with the data (quotas, statuses, lists)",
                        f"! {{ {exists}; }} || {contract.PATHS['lib']}/accounts check >/dev/null",
                        "true", action="sync")],
        files=files,
        units=[Unit("govmail-daily.timer")],
        # One transaction; passwords already in the store are never touched.
        actions={"sync": sync},
        # New host tools (the store's code among them) sync again: a new view or column is applied.
        reacts={"host_tools": "sync"},
    )
