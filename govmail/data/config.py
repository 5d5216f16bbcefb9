"""A province as the deploy sees it: its validated data (`model`) and what is derived from it.

`ProvinceConfig` is what govmail/data/__init__.py's `load_province` returns: the typed data file
(govmail/data/schema.py), the mailboxes as the host will hold them (`Account`), the lists, and the
problems found (`Problem`, `DataError`: file, line, key path, what is allowed).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

from . import roles, schema

ROOT = Path(__file__).resolve().parents[2]  # the checkout: govmail/data/config.py -> ../../..
MiB = 1024 * 1024
# Addresses that reach the postmaster on every province domain (RFC 2142 roles, and root@ for the
# host's own system mail); no mailbox or list may take them.
ROLE_LOCAL_PARTS = ("postmaster", "abuse", "root")


@dataclass
class Problem:
    file: str
    line: Optional[int]
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '(top level)'}: {self.message}"


class DataError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        n = len(problems)
        super().__init__(
            f"{n} problem{'s' if n != 1 else ''} in the data:\n" + "\n".join(f"  {p}" for p in problems)
        )


def fmt_path(path: tuple) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


@dataclass
class Account:
    """A mailbox as the host sees it."""

    address: str
    name: str
    kind: str  # person | agency | department | district | commune | mailbox
    quota_mb: int
    role: str = "user"
    status: str = "active"
    owner: Optional[str] = None  # agency/district id
    password_hash: Optional[str] = None
    # Mailboxes told of a suspension (manager: the managing unit) and of a deletion (manager and
    # its superior), LC Art. 8.1. Resolved after the directory is read.
    manager: Optional[str] = None
    superior: Optional[str] = None
    unit: Optional[tuple] = None  # (agency/district id, department/commune id or None): where it sits

    def __reduce__(self):
        # Pickled by position (the controller's validated cache): twice as fast to load as a dict.
        return (Account, tuple(getattr(self, f.name) for f in fields(Account)))

    def as_dict(self) -> dict:
        return {
            "address": self.address,
            "name": self.name,
            "kind": self.kind,
            "quota_mb": self.quota_mb,
            "role": self.role,
            "status": self.status,
            "owner": self.owner,
            "password_hash": self.password_hash,
            "manager": self.manager,
            "superior": self.superior,
        }


@dataclass
class ProvinceConfig:
    model: schema.Province
    file: Path
    accounts: list[Account] = field(default_factory=list)
    aliases: dict[str, list[str]] = field(default_factory=dict)
    # Lists -> the mailboxes that may send as them (authenticated submission).
    list_senders: dict[str, list[str]] = field(default_factory=dict)
    # Old addresses (a predecessor's, or given up in a readdressing) -> the address they reach now.
    former: dict[str, str] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)

    # Shortcuts used by templates and tests.
    @property
    def key(self) -> str:
        return self.model.province

    @property
    def domain(self) -> str:
        return self.model.domain

    @property
    def policy(self) -> schema.Policy:
        return self.model.policy

    @property
    def domains(self) -> list[str]:
        """The province's domain, then its predecessors' (all accepted by the mail host)."""
        return [self.domain, *(p.domain for p in self.model.predecessors)]

    @property
    def dkim_keys(self) -> list[tuple[str, str]]:
        """(domain, selector) of every DKIM key the mail host signs with: the province's, then one per
        predecessor domain (selector: `predecessors[].dkim_selector`, default the province's key)."""
        return [(self.domain, self.model.dkim.selector),
                *((p.domain, p.dkim_selector or self.key) for p in self.model.predecessors)]

    @property
    def mail_host(self) -> str:
        """The host officials reach (`mail.<domain>`: IMAP, submission, web mail): the one that holds
        the mailboxes (role `store`, part of `mail`)."""
        hosts = self.model.hosts
        return next((h.name for h in hosts if roles.has(h.roles, "store") and roles.has(h.roles, "web")),
                    next(h.name for h in hosts if roles.has(h.roles, "store")))

    def store_of(self, account: Account, held: Optional[dict] = None) -> str:
        """The host that holds `account`'s mailbox in the data: the store apart whose `agencies` name
        its agency or district (`hosts[].agencies`), else the mail host. `held`: the stores' agencies
        (`held_agencies()`), when asked for many accounts."""
        held = self.held_agencies() if held is None else held
        return held.get(self.agency_of(account), self.mail_host)

    @staticmethod
    def agency_of(account: Account) -> str:
        """The agency or district id a mailbox belongs to (what `hosts[].agencies` name)."""
        return account.unit[0] if account.unit else account.owner

    def held_agencies(self) -> dict[str, str]:
        """Agency or district id -> the store apart that holds its mailboxes."""
        return {uid: h.name for h in self.model.hosts if h.roles == ["store"] for uid in h.agencies}

    @property
    def standbys(self) -> dict[str, str]:
        """Store -> the host that keeps the standby copy of its mailboxes (`hosts[].standby`)."""
        return {h.name: h.standby for h in self.model.hosts if h.standby}

    def standby_copier(self, store: str) -> str:
        """The host that copies `store`'s mailboxes to its standby: the mail host when it is one end (its
        doveadm server would proxy a mailbox sent to it back to the store), else the store."""
        return self.mail_host if self.mail_host in (store, self.standbys[store]) else store

    @property
    def stores_apart(self) -> list[str]:
        """The stores apart from the mail host (role `store` alone), behind its proxy, in the data's order."""
        return [h.name for h in self.model.hosts if h.roles == ["store"]]


    @property
    def store_engine(self) -> str:
        """The account store's engine: `sqlite` (a file on the mail host) or `postgresql` (on the db host)."""
        return self.model.account_store.engine

    @property
    def db_host(self) -> str:
        """The host that keeps the account store (role `db`, part of `mail`)."""
        return self.hosts_with("db")[0]

    @property
    def db_hosts(self) -> list[str]:
        """The hosts of the account store's PostgreSQL: one, or two (Patroni's primary and standby)."""
        return self.hosts_with("db")

    @property
    def store_cluster(self) -> bool:
        """Whether the account store runs on two hosts under Patroni (etcd on them and the witness)."""
        return self.store_engine == "postgresql" and len(self.db_hosts) > 1

    @property
    def etcd_members(self) -> list[str]:
        """etcd's members when the store runs under Patroni: the db hosts and the witness
        (govmail/data/roles.py: the monitor, else the backup host); none otherwise."""
        return [*self.db_hosts, roles.witness(self.model.hosts)] if self.store_cluster else []

    @property
    def mx_hosts(self) -> list[str]:
        """The hosts that receive the domain's mail (role `mx`, part of `mail`), with equal MX
        preference: the mail host first when it is one of them, then the others in the data's order."""
        mx = self.hosts_with("mx")
        return sorted(mx, key=lambda h: h != self.mail_host)

    def hosts_with(self, role: str) -> list[str]:
        """The hosts that have `role` (`mail`: all of its parts), in the data's order."""
        return [h.name for h in self.model.hosts if roles.has(self.roles(h.name), role)]

    @property
    def backup_host(self) -> Optional[str]:
        return next((h.name for h in self.model.hosts if "backup" in h.roles), None)

    @property
    def monitor_host(self) -> Optional[str]:
        """The host that watches the province: the one with role `monitor`, else the backup host."""
        return next((h.name for h in self.model.hosts if "monitor" in h.roles), None) or self.backup_host

    def roles(self, host_name: str) -> list[str]:
        """A host's roles as deployed: its own, and `monitor` for the host that watches the province;
        `mail` for a host with all of its parts (govmail/data/roles.py)."""
        h = next(h for h in self.model.hosts if h.name == host_name)
        return roles.compact([*h.roles, *(["monitor"] if host_name == self.monitor_host else [])])

    @property
    def alert_to(self) -> list[str]:
        """Who the alerts are mailed to: `policy.monitoring.alert_to`, else the administrators."""
        admins = [a.address for a in self.accounts if a.role == "admin" and a.kind == "person"]
        return list(self.policy.monitoring.alert_to) or admins or [self.postmaster]

    @property
    def message_size_limit(self) -> int:
        """SMTP message size limit in bytes.

        An attachment of N MiB travels base64-encoded: 4 bytes per 3, plus CRLF after every 76
        characters (78/76). 512 KiB of headroom covers headers and text. Anything larger than a
        (N+1) MiB attachment is refused: see tests/unit/test_render.py.
        """
        att = self.policy.attachment
        if att.max_mb is None:
            return att.message_size_mb * MiB
        return int(att.max_mb * MiB * 4 / 3 * 78 / 76) + 512 * 1024

    @property
    def message_size_mib(self) -> int:
        """The size rule of every layer that counts in whole MiB: the message size limit rounded up,
        plus 1 MiB, so that a message Postfix takes is never refused by the web mail or left
        unscanned. clamd's StreamMaxLength, PHP's upload_max_filesize and Roundcube's
        max_message_size are this."""
        return -(-self.message_size_limit // MiB) + 1

    @property
    def web_request_mib(self) -> int:
        """A web-mail request that carries a message of `message_size_mib` (the form and its
        multipart encoding around it, 8 MiB): nginx's client_max_body_size and PHP's post_max_size."""
        return self.message_size_mib + 8

    @property
    def postmaster(self) -> str:
        if self.model.postmaster:
            return self.model.postmaster
        admins = [a.address for a in self.accounts if a.role == "admin" and a.kind == "person"]
        return admins[0] if admins else self.accounts[0].address

    @property
    def senders(self) -> dict[str, list[str]]:
        """Who, besides an address's own user, may send as it (envelope: Postfix's
        smtpd_sender_login_maps; header From:, rspamd's GOVMAIL_FROM): the postmaster for the role
        addresses, a list's `senders`, a unit's or functional mailbox's `senders`."""
        pm = self.postmaster
        return {f"postmaster@{self.domain}": [pm], f"abuse@{self.domain}": [pm], **self.list_senders}

    def account(self, address: str) -> Account:
        return next(a for a in self.accounts if a.address == address)

    def cite(self, section: str) -> str:
        return getattr(self.policy, section).article


def tls_path(cfg: ProvinceConfig, which: str) -> Optional[Path]:
    v = getattr(cfg.model.tls, which)
    return (cfg.file.parent / v) if v else None
