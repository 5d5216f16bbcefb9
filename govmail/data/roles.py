"""The roles a host of a province can have (`hosts[].roles` in the data file), and which layouts work.

    mx       receives the province's mail from the world and sends it out: Postfix, rspamd, ClamAV,
             the attachment inspector; it holds only its queue
    store    holds the mailboxes: Dovecot (IMAP, POP3, LMTP, ManageSieve, quota), the backups of
             the mail, the reports
    web      the web mail (Roundcube), nginx and the password service
    db       the account store the others read (SQLite on one host)
    proxy    Dovecot's proxy in front of several stores (not deployable yet: issue 29)
    backup   receives the backups (borg, append-only)
    monitor  Prometheus and Alertmanager: watches every host and alerts

`mail` stands for mx, store, web and db on one host: the one-host province, whose files are the same
byte for byte whether its data says `mail` or the four (tests/unit/test_roles.py). What each role
runs: govmail/services/__init__.py SERVICES.
"""

from __future__ import annotations

MAIL = ("mx", "store", "web", "db")
ROLES = ("mail", *MAIL, "proxy", "backup", "monitor")
# The province's mail roles stay on one host until the account store, the MX and the proxy work
# apart (issue 29): a layout that splits them is refused with this.
SPLIT_LATER = "govmail does not deploy the mail roles apart yet: give mx, store, web and db to one host (or `mail`)"


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


def layout_problems(hosts) -> list[tuple[tuple, str]]:
    """What is wrong with the hosts' roles, as (key path, message): every problem at once."""
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
        if "proxy" in got:
            out.append((("hosts", i, "roles"), "'proxy': Dovecot's proxy comes with several stores, which govmail "
                        "does not deploy yet; leave it out"))
        if "store" in got and "backup" in got:
            out.append((("hosts", i, "roles"), "a host cannot back itself up: give `backup` to another host"))
        if any(r in got for r in MAIL) and "monitor" in got:
            out.append((("hosts", i, "roles"), "the mail host cannot watch itself (its alerts would stop with it): "
                        "give `monitor` to another host, or leave it to the backup host"))
    owners = [(i, h) for i, h in enumerate(hosts) if any(r in expand(h.roles) for r in MAIL)]
    if not owners:
        out.append((("hosts",), "no host has role 'mail' (or its parts mx, store, web, db): the province's "
                    "mail needs a host"))
    elif len(owners) > 1:
        out.append((("hosts",), f"the mail roles are on {len(owners)} hosts "
                    f"({', '.join(h.name for _, h in owners)}); {SPLIT_LATER}"))
    else:
        i, h = owners[0]
        missing = [r for r in MAIL if r not in expand(h.roles)]
        if missing:
            out.append((("hosts", i, "roles"), f"no host has {', '.join(map(repr, missing))}; {SPLIT_LATER}"))
    for role in ("backup", "monitor"):
        n = sum(role in h.roles for h in hosts)
        if n > 1:
            out.append((("hosts",), f"{n} hosts have role {role!r}; at most one is supported"))
    return out
