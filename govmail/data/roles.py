"""The roles a host of a province can have (`hosts[].roles` in the data file), and which layouts work.

    mx       receives the province's mail from the world and sends it out: Postfix, rspamd, ClamAV,
             the attachment inspector; it holds only its queue
    store    holds the mailboxes: Dovecot (IMAP, POP3, LMTP, ManageSieve, quota), the backups of
             the mail, the reports
    web      the web mail (Roundcube), nginx and the password service
    db       the account store the others read (SQLite on the mail host; PostgreSQL on one host, or on
             two under Patroni with etcd's third member on the monitor or backup host)
    proxy    Dovecot's proxy in front of several stores, on the mail host: it routes each login and each
             delivery to the store that holds the mailbox (its own, or a store apart), so clients,
             the web mail and the MX hosts keep one address
    backup   receives the backups (borg, append-only)
    monitor  Prometheus and Alertmanager: watches every host and alerts

`mail` stands for mx, store, web and db on one host: the one-host province, whose files are the same
byte for byte whether its data says `mail` or the four (tests/unit/test_roles.py). What each role
runs: govmail/services/__init__.py SERVICES.
"""

from __future__ import annotations

from typing import Optional

MAIL = ("mx", "store", "web", "db")
ROLES = ("mail", *MAIL, "proxy", "backup", "monitor")
# The mail host keeps mx, store and web together: it is the address officials reach (IMAP, submission,
# web mail). More hosts may carry `mx` alone (several MX, on PostgreSQL), or `store` alone (stores
# apart, behind the mail host's `proxy`: the agencies named in their `agencies` have their mailboxes
# there). The account store (`db`) may have hosts of its own on PostgreSQL: one, or two under Patroni
# with a third host for etcd's quorum.
SPLIT_LATER = ("the mail host keeps mx, store and web together (more hosts may have `mx` alone, or `store` alone "
               "behind the mail host's `proxy`): give mx, store and web to one host (or `mail`)")
MAX_DB_HOSTS = 2


def witness(hosts) -> Optional[str]:
    """The host that keeps etcd's third member when two hosts carry `db`: the monitor (role
    `monitor`, else the backup host), which watches the province from outside its mail hosts."""
    named = [h for h in hosts if "monitor" in h.roles] or [h for h in hosts if "backup" in h.roles]
    return named[0].name if named else None


def _db_problems(hosts, engine: str, front) -> list[tuple[tuple, str]]:
    db = [(i, h) for i, h in enumerate(hosts) if "db" in expand(h.roles)]
    if not db:
        return [(("hosts",), "no host has role 'db' (or `mail`): the account store needs a host")]
    if engine == "sqlite":
        apart = [(i, h) for i, h in db if h is not front]
        if apart or len(db) > 1:
            i = (apart or db)[0][0]
            return [(("hosts", i, "roles"), "with `account_store.engine: sqlite` the account store is a file on the "
                     "mail host: give `db` to the host with mx, store and web only, or set `account_store.engine: "
                     "postgresql`")]
        return []
    if len(db) > MAX_DB_HOSTS:
        return [(("hosts",), f"{len(db)} hosts have role 'db' ({', '.join(h.name for _, h in db)}); at most "
                 f"{MAX_DB_HOSTS}: a primary and its standby")]
    if len(db) == 2:
        w = witness(hosts)
        if w is None or w in (h.name for _, h in db):
            return [(("hosts",), "two hosts have role 'db': etcd, which elects the primary, needs a third member "
                     "on a host without `db`; give `monitor` (or `backup`) to a host without `db`")]
    return []


def expand(roles) -> list[str]:
    """The roles with `mail` replaced by its parts, each once, in their order."""
    out = []
    for role in roles:
        for r in (MAIL if role == "mail" else (role,)):
            if r not in out:
                out.append(r)
    return out


def compact(roles) -> list[str]:
    """The roles as the one-host province names them: `mail` for a host with all of its parts."""
    roles = expand(roles)
    if not all(r in roles for r in MAIL):
        return roles
    rest = [r for r in roles if r not in MAIL]
    return ["mail", *rest]


def has(roles, role: str) -> bool:
    """Whether a host with `roles` has `role` (one of mail's parts, or `mail`: all of them)."""
    got = expand(roles)
    return all(r in got for r in MAIL) if role == "mail" else role in got


def _standby_problems(hosts, holders, mail_host: str | None) -> list[tuple[tuple, str]]:
    """`standby`: only on a store apart, naming another host that holds mailboxes (a store apart or
    the mail host: `holders`). Not on the mail host: its Dovecot is the proxy every login and delivery
    goes through, so when it is lost no standby of its mailboxes could be reached."""
    out, names = [], [h.name for h in holders]
    for i, h in enumerate(hosts):
        if h.standby is None:
            continue
        if h.name == mail_host:
            out.append((("hosts", i, "standby"), "the mail host's own mailboxes have no standby: every login and "
                        "delivery of the province goes through its Dovecot proxy, so when it is lost nothing could "
                        "reach a standby (they come back from its backup); mailboxes that need a standby go on a "
                        "store apart (`agencies` of a host with roles [store]) that names one"))
        elif h.name not in names:
            out.append((("hosts", i, "standby"), "only a host that holds mailboxes (the mail host, or a store apart "
                        "behind its `proxy`) has a standby; " + ("the stores here: " + ", ".join(names) if names else
                        "this province keeps every mailbox on one host: a standby needs a store apart")))
        elif h.standby == h.name or h.standby not in names:
            out.append((("hosts", i, "standby"), f"{h.standby!r} is not another host that holds mailboxes; give one of: "
                        + ", ".join(n for n in names if n != h.name)))
    return out


def layout_problems(hosts, engine: str = "sqlite") -> list[tuple[tuple, str]]:
    """What is wrong with the hosts' roles, as (key path, message): every problem at once. `engine`:
    the account store's (`account_store.engine`)."""
    out = []
    for i, h in enumerate(hosts):
        seen = []
        for role in h.roles:
            parts = MAIL if role == "mail" else (role,)
            again = [p for p in parts if p in seen]
            if again:
                why = "already given by `mail`" if "mail" in h.roles and role != "mail" else "given twice"
                out.append((("hosts", i, "roles"), f"{role!r} is {why}; list each role once"))
            seen += parts
        got = expand(h.roles)
        if "store" in got and "backup" in got:
            out.append((("hosts", i, "roles"), "a host cannot back itself up: give `backup` to another host"))
        if any(r in got for r in MAIL) and "monitor" in got:
            out.append((("hosts", i, "roles"), "the mail host cannot watch itself (its alerts would stop with it): "
                        "give `monitor` to another host, or leave it to the backup host"))
    front = ("mx", "store", "web")
    owners = [(i, h) for i, h in enumerate(hosts) if any(r in expand(h.roles) for r in front)]
    # Several MX: hosts whose one role is `mx`, beside the host with the store and the web mail.
    # (The mail host keeps its own `mx` too: submission and Sieve's redirects go through its Postfix.)
    apart = [(i, h) for i, h in owners if h.roles == ["mx"]]
    stores = [(i, h) for i, h in owners if h.roles == ["store"]]
    rest = [o for o in owners if o not in apart and o not in stores]
    if (apart or stores) and len(rest) == 1 and all(r in expand(rest[0][1].roles) for r in front):
        owners = rest
        if engine != "postgresql":
            i, h = (apart or stores)[0]
            what = "an MX host" if h.roles == ["mx"] else "a store"
            out.append((("hosts", i, "roles"), f"{what} apart from the mail host reads the account store "
                        "over the network: set `account_store.engine: postgresql`"))
        if stores and "proxy" not in expand(rest[0][1].roles):
            out.append((("hosts", rest[0][0], "roles"), f"{stores[0][1].name} holds mailboxes apart: the mail host "
                        "routes logins and deliveries to it with Dovecot's proxy; add `proxy` to its roles"))
    for i, h in enumerate(hosts):
        got = expand(h.roles)
        if "proxy" not in got or (any(r in got for r in front) and not all(r in got for r in front)):
            pass  # none, or counted with the mail roles above
        elif not all(r in got for r in front):
            out.append((("hosts", i, "roles"), "'proxy' goes on the mail host (with mx, store and web, or `mail`), "
                        "the address clients reach"))
        elif not stores:
            out.append((("hosts", i, "roles"), "'proxy' routes to stores apart, and no host has `store` alone; "
                        "leave it out, or add a store host"))
        if h.agencies and h.roles != ["store"]:
            out.append((("hosts", i, "agencies"), "only a store apart (roles: [store]) holds agencies' mailboxes; "
                        "the mail host holds every other mailbox"))
    out += _standby_problems(hosts, [h for _, h in stores] + [h for _, h in rest[:1]] if stores else [],
                             rest[0][1].name if stores and rest else None)
    if not owners:
        out.append((("hosts",), "no host has role 'mail' (or its parts mx, store, web, db): the province's "
                    "mail needs a host"))
    elif len(owners) > 1:
        out.append((("hosts",), f"the mail roles are on {len(owners)} hosts "
                    f"({', '.join(h.name for _, h in owners)}); {SPLIT_LATER}"))
    else:
        i, h = owners[0]
        missing = [r for r in front if r not in expand(h.roles)]
        if missing:
            out.append((("hosts", i, "roles"), f"no host has {', '.join(map(repr, missing))}; {SPLIT_LATER}"))
    if len(owners) == 1:  # else the message above names what to do first
        out += _db_problems(hosts, engine, owners[0][1])
    for role in ("backup", "monitor"):
        n = sum(role in h.roles for h in hosts)
        if n > 1:
            out.append((("hosts",), f"{n} hosts have role {role!r}; at most one is supported"))
    return out
