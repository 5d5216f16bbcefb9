"""The typed option set of a province data file.

One model per section. Every field carries its default and a description here, where it is
defined; `govmail schema` prints them as the data-file reference (docs/data-file.md is generated
from it). Policy sections carry the article of the regulation their values come from.

Cross-field rules (quota within the province's bounds, unique addresses, list members that
exist, ...) are checked in `govmail.data`, after these models accept the shapes and types.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator  # noqa: F401 (re-exported)

from ..host import contract
from .hashes import hash_problem
from .policy import (  # noqa: F401 (the policy sections are part of the option set)
    ARTICLE_RE,
    DOMAIN_RE,
    LABEL_RE,
    LOCAL_RE,
    QUOTA_MAX_MB,
    AlertRelay,
    AntivirusPolicy,
    AttachmentPolicy,
    BackupPolicy,
    BruteForcePolicy,
    CancellationPolicy,
    Cited,
    Clause,
    ContentPolicy,
    ForwardingPolicy,
    InactivityPolicy,
    LogPolicy,
    MonitoringPolicy,
    NamingPolicy,
    OutboundPolicy,
    PasswordPolicy,
    Policy,
    QuotaPolicy,
    SpamPolicy,
    Strict,
    _article,
)
from .roles import ROLES
from .text import Address, Article, DisplayText, Domain, HostName, Identifier, ISODate, RelPath  # noqa: F401


class TLS(Strict):
    certificate: Optional[RelPath] = Field(
        None,
        description="Path on the controller, relative to the data file's directory and inside it, of a PEM "
        "certificate chain to install: parsed, matching `key`, covering the mail host's name, not expired. Null: a self-signed certificate for the host names is generated on the host once.",
    )
    key: Optional[RelPath] = Field(None, description="Path of the matching PEM private key (with `certificate`), "
                                   "inside the data file's directory too.")


class PasswordChange(Strict):
    """The password service on the mail host: users change their own password there (first login:
    DN Art. 12.1, LC Art. 6.3/7.3, TN Art. 9.1; expiry: LC Art. 4.2), over HTTPS, in a browser or with
    `govmail passwd`. Login refusals point to it."""

    port: int = Field(8443, description="HTTPS port of the password page (`https://<mail host>:<port>/`).",
                      ge=1, le=65535)


class DKIM(Strict):
    """DKIM signing of every message sent from the province's domain (rspamd). The key is generated on
    the mail host once (/etc/govmail/dkim/), kept across deploys and restored by `govmail backup
    restore-host`; `govmail dns` prints the record to publish."""

    selector: Identifier = Field("govmail", description="DKIM selector: the record is `<selector>._domainkey.<domain>`.")
    bits: Literal[2048, 3072, 4096] = Field(2048, description="RSA key size of a newly generated key.")



def _checked_hash(v):
    if v is not None:
        why = hash_problem(v)
        if why:
            raise ValueError(why)
    return v


class Host(Strict):
    name: HostName = Field(description="Fully qualified host name, e.g. mail.daknong.gov.vn.")
    address: Optional[str] = Field(  # checked below: an IPv4 address
        None, description="Public IPv4 address, for the A record `govmail dns` prints (the lab uses its own)."
    )
    private_address: Optional[str] = Field(  # checked below: an IPv4 address
        None, description="Address the province's other hosts reach it on (the monitor scrapes its metrics there; "
        "the exporters listen only there). Null: `address`, else the host name as the controller resolves it "
        "(the lab uses its own)."
    )
    roles: list[Literal[ROLES]] = Field(
        ["mail"], description="What the host does (govmail/data/roles.py): `mail` (the province's mail on this "
        "host: `mx`, `store`, `web` and `db` together), or those parts (`mx`: Postfix, rspamd, ClamAV; `store`: "
        "Dovecot and the mailboxes; `web`: the web mail and the password page; `db`: the account store; "
        "mx, store and web on one host, the mail host, and more hosts may have `mx` alone, on PostgreSQL: several MX "
        "at equal preference; or `store` alone: stores apart, holding the mailboxes of the agencies in their "
        "`agencies`, reached through the mail host's `proxy`; `db` with them, or on PostgreSQL on one or two hosts of its own: two run "
        "under Patroni, with etcd on both and on the monitor or backup host), `backup` (at most one, never the host of the mailboxes: receives its backups), "
        "`monitor` (at most one, never a mail host: Prometheus and Alertmanager; when no host has it, the backup "
        "host watches the province)."
    )
    agencies: list[Identifier] = Field(
        [], description="On a store apart (`roles: [store]`, behind the mail host's `proxy`): the agencies and "
        "districts (`directory` ids) whose mailboxes it holds: their people's, their own and their departments' "
        "and communes'. Every other mailbox is on the mail host. Read when a mailbox is created: an agency named "
        "here later keeps the mailboxes it already has where their mail is (moving them: issue 30)."
    )
    standby: Optional[HostName] = Field(
        None, description="On a store apart (`roles: [store]`): another host that holds mailboxes (the mail host, "
        "or another store apart) that keeps a copy of its mailboxes, brought up to date after each delivery and every minute "
        "(`doveadm backup`, one way); `govmail failover HOST` hands its mailboxes to that copy when this host is "
        "lost, and the mail it took after the last copy is brought back from it once it returns (`--recover`). The recovery point: the README, "
        "measured. Null: no standby (a lost store is rebuilt from its backup). Not on the mail host: every login and "
        "delivery goes through its Dovecot proxy, so with it lost no standby could be reached."
    )
    local_files: list[str] = Field(
        [], description="Files of the province's own that the host keeps beside govmail's in a directory govmail "
        "owns (e.g. `/etc/fail2ban/jail.d/office.local`); any other file there that is not a Debian package's "
        "is reported by `govmail verify` and moved to /var/lib/govmail/quarantine/ by the next deploy. Allowed "
        "directories: " + ", ".join(f"`{d}`" for d in contract.OWNED_DIRS) + ".",
    )

    @field_validator("local_files")
    @classmethod
    def _local_files(cls, v):
        import re

        for path in v:
            directory, _, name = path.rpartition("/")
            if directory not in contract.OWNED_DIRS or not re.fullmatch(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,99}", name):
                raise ValueError(f"{path!r}: must be a file directly in one of "
                                 f"{', '.join(contract.OWNED_DIRS)}, its name of letters, digits and . _ + -")
        return v

    @field_validator("address", "private_address")
    @classmethod
    def _ipv4(cls, v):
        if v is None:
            return v
        import ipaddress

        try:
            ipaddress.IPv4Address(v)
        except ValueError:
            raise ValueError("must be an IPv4 address such as 203.0.113.25") from None
        return v



# ---------------------------------------------------------------------------- directory


class Unit(Strict):
    id: Identifier = Field(description="Abbreviation used in addresses (lower-case ASCII, no dots).")
    name: DisplayText = Field(description="Full Vietnamese name.")
    address: Optional[Address] = Field(None, description="Override of the unit's mailbox address (default by the naming rule).")
    quota_mb: Optional[int] = Field(None, description="Quota of the unit's mailbox in MiB (default: the province's).", gt=0,
                                    le=QUOTA_MAX_MB)
    senders: list[Address] = Field(
        [], description="Mailboxes whose users may send as the unit's mailbox (its head's or clerk's, say): in the "
        "envelope and in the header `From:` of authenticated submissions.", max_length=100,
    )
    former: list[Address] = Field(
        [], description="Addresses this entry had before: in a predecessor province's domain (`predecessors`), or in "
        "this domain before a readdressing (`govmail readdress`). Each reaches this entry one to one (never a catch-all); "
        "see `predecessors[]` for how long.", max_length=20,
    )



class Agency(Unit):
    """A provincial agency (Sở, Ban, ...): mailbox `<id>@` (BN Art. 4.a, DN Art. 5.1.b, LC Art. 5.1.a)."""

    departments: list[Unit] = Field([], description="Departments: mailbox `<department>.<agency>@`.")


class District(Unit):
    """A district: mailbox `<id>@`; its communes `<commune>.<district>@`."""

    departments: list[Unit] = Field([], description="District departments: `<department>.<district>@`.")
    communes: list[Unit] = Field([], description="Communes, wards and towns: `<commune>.<district>@`.")


class Commune(Unit):
    """A commune or ward directly under the province (from 1 July 2025 the district level no longer
    exists): mailbox `<id>@`; its units `<unit>.<commune>@` (`policy.naming.unit_order`), its staff
    `<name>.<commune>@`, or `<name>.<unit>.<commune>@` in one of its units."""

    departments: list[Unit] = Field([], description="Its units (Văn phòng HĐND-UBND, phòng Kinh tế, ...): "
                                    "`<unit>.<commune>@`.")


class Person(Strict):
    name: DisplayText = Field(description="Full Vietnamese name, e.g. Nguyễn Văn Hậu.")
    address: Address = Field(description="Full address in the province's domain.")
    agency: Optional[Identifier] = Field(None, description="Id of the agency or district the person works for.")
    department: Optional[Identifier] = Field(
        None, description="Id of the person's department in that agency or district (DN Art. 5.1.d: staff of a "
        "district department are `<name>.<department>.<district>@`)."
    )
    position: Optional[DisplayText] = Field(None, description="Position (chức vụ), published in the directory beside "
                                            "the name and unit (`govmail directory`, the web mail address book).")
    role: Literal["user", "admin"] = Field("user", description="`admin` accounts follow the administrator password rules.")
    quota_mb: Optional[int] = Field(None, description="Quota override in MiB, within the province's bounds.", gt=0,
                                    le=QUOTA_MAX_MB)
    password_hash: Optional[str] = Field(  # checked by govmail.passwords.hash_problem
        None,
        description="Initial password hash, in a strong scheme Dovecot verifies: `{BLF-CRYPT}$2y$...` (bcrypt, cost "
        "10 or more; `govmail hash-password` makes one), `{ARGON2ID}$argon2id$...` or `{SHA512-CRYPT}$6$rounds=N$...` "
        "(N 5000 or more). Never `{PLAIN}`, `{CLEAR}`, MD5 or SHA1. Used only when the mailbox is created; a password the user changed "
        "on the host is never overwritten. Null: a random initial password is generated and left "
        "for the operator in /root/govmail-initial-passwords on the host.",
    )
    status: Literal["active", "cancelled"] = Field("active", description="`cancelled`: login refused, mail kept.")
    former: list[Address] = Field(
        [], description="Addresses this entry had before: in a predecessor province's domain (`predecessors`), or in "
        "this domain before a readdressing (`govmail readdress`). Each reaches this entry one to one (never a catch-all); "
        "see `predecessors[]` for how long.", max_length=20,
    )

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, v):
        return _checked_hash(v)


class MailingList(Strict):
    address: Address = Field(description="Full address of the list.")
    name: DisplayText = Field("", description="What the list is for.")
    article: Optional[Article] = Field(None, description="Article that asks for this list, e.g. `DN Art. 5.1.e`.")
    members: list[Address] = Field([], description="Addresses of members, one address each (mailboxes or other lists of the "
                                   "directory, or mailboxes of other state domains).", max_length=100000)
    include_all_people: bool = Field(False, description="Every active person of the province (DN `internal@`).")
    include_agency_people: Optional[Identifier] = Field(None, description="Every active person of this agency (DN `internal.<agency>@`).")
    senders: list[Address] = Field(
        [], description="Mailboxes whose users may send *as* the list (authenticated submission); nobody else "
        "may use the list's address as sender.",
    )
    former: list[Address] = Field(
        [], description="Addresses this entry had before: in a predecessor province's domain (`predecessors`), or in "
        "this domain before a readdressing (`govmail readdress`). Each reaches this entry one to one (never a catch-all); "
        "see `predecessors[]` for how long.", max_length=20,
    )


class Mailbox(Strict):
    """A functional mailbox not tied to a person or unit (TN `hotro@`)."""

    address: Address = Field(description="The mailbox's full address, in the province's domain.")
    name: DisplayText = Field("", description="What it is for, shown to recipients.")
    article: Optional[Article] = Field(None, description="The article that asks for this mailbox, if one does.")
    quota_mb: Optional[int] = Field(None, gt=0, le=QUOTA_MAX_MB, description="Its quota in MiB (default: the province's).")
    password_hash: Optional[str] = Field(None, description="Initial password as a Dovecot hash, in a strong scheme "
                                         "(see `directory.people[].password_hash`); default: a random one, handed out "
                                         "on the host.")
    senders: list[Address] = Field([], description="Mailboxes whose users may send as this mailbox (envelope and "
                                   "header `From:`).", max_length=100)
    former: list[Address] = Field(
        [], description="Addresses this entry had before: in a predecessor province's domain (`predecessors`), or in "
        "this domain before a readdressing (`govmail readdress`). Each reaches this entry one to one (never a catch-all); "
        "see `predecessors[]` for how long.", max_length=20,
    )

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, v):
        return _checked_hash(v)


class Directory(Strict):
    agencies: list[Agency] = Field([], description="Provincial agencies (departments, committees); each may have a unit mailbox.")
    districts: list[District] = Field([], description="Districts and their departments and communes (before the 2025 "
                                      "reform; `communes` below after it).")
    communes: list[Commune] = Field([], description="Communes and wards directly under the province (2025 reform) and "
                                    "the units under them.")
    people: list[Person] = Field([], description="Officials with a personal mailbox, addressed by the province's naming rule.")
    mailboxes: list[Mailbox] = Field([], description="Functional mailboxes not tied to a person or unit (e.g. TN `hotro@`).")
    lists: list[MailingList] = Field([], description="Distribution lists: one address that reaches its members.")


class Regulation(Strict):
    key: str = Field(description="Short key used in citations, e.g. `DN`.", pattern=r"^[A-Z]{2,6}(-[A-Z]{2,6})?$")
    decision: DisplayText = Field(description="The decision, e.g. `Quyết định 12/2012/QĐ-UBND`.")
    date: ISODate = Field(description="Date of the decision, ISO format (quoted: `\"2012-08-17\"`).")


class Predecessor(Strict):
    """A province merged into this one (Resolution 202/2025/QH15; Notice 318/TB-VPCP asks for one shared
    system): its domain stays in service. Each old address named in a `former:` list reaches its owner's
    new address one to one. Until `transition_until` the owner also logs in and sends with it (mail from
    the old domain is signed with the old domain's DKIM key made on this host); after it, mail to an old
    address is refused with `550 5.1.6` naming the new address, or forwarded until `forward_until`."""

    key: Identifier = Field(description="The old province's key, e.g. `daknong` (its data file, when it ran govmail, is "
                            "`group_data/<key>.yml`: what `govmail migrate` reads).")
    name: DisplayText = Field(description="Its Vietnamese name, e.g. Đắk Nông.")
    domain: Domain = Field(description="Its mail domain, e.g. daknong.gov.vn: published by `govmail dns` for the merged "
                           "host, and accepted there.")
    regulations: list[Regulation] = Field([], description="The decisions that governed its mail system. The merged "
                                          "province's `policy` may cite them until the new province issues its own.")
    mail_host: Optional[HostName] = Field(None, description="Its mail server's name: put on the merged host's certificate "
                                          "(clients set up with it keep working once the name points there) and the "
                                          "host `govmail migrate` copies from.")
    transition_until: ISODate = Field(description="First day after the transition (00:00, Vietnam time, UTC+7), e.g. "
                                      "`\"2026-07-01\"`: before it the old addresses receive, log in and send.")
    forward_until: Optional[ISODate] = Field(None, description="After the transition, mail to an old address is still "
                                             "forwarded to the new one until this day, then refused `5.1.6`; null: "
                                             "refused from the end of the transition.")
    dkim_selector: Optional[Identifier] = Field(None, description="Selector the merged host signs the old domain's mail "
                                                "with (default: the merged province's key, so it never collides with "
                                                "the old host's own key while both run).")


class Verify(Strict):
    """What `govmail verify --active` may do: its probes reach the mail host over the network from the
    machine running it, as another mail server or a client would, and one of them sends real mail."""

    probe_mailbox: Optional[Address] = Field(
        None, description="An active mailbox of the directory (best a functional one, e.g. `kiemtra@`) that "
        "`govmail verify --active` sends one probe message to, from outside over port 25 with a null sender (no "
        "bounce can leave). The check finds it by its Message-ID and removes it; nothing else in the mailbox is "
        "touched. Null: `--active` is refused.")


class AccountStore(Strict):
    """Where the account store lives: the one database of mailboxes, passwords and statuses that Postfix,
    Dovecot, the password page and the daily job read and write (govmail/host/store.py)."""

    engine: Literal["sqlite", "postgresql"] = Field(
        "sqlite", description="`sqlite`: one file on the mail host (the default, for a province on one host). "
        "`postgresql`: Debian's PostgreSQL 17 on the host with role `db` (the mail host itself when its role is "
        "`mail`), which Postfix, Dovecot and the host tools reach over libpq; what several hosts need. Changing "
        "`sqlite` to `postgresql` on a running province moves every account, password, status and audit line "
        "at the next deploy (the SQLite file is kept, renamed `.moved-to-postgresql`); the way back is refused. "
        "Two hosts with role `db`: a primary and a streaming standby under Patroni (Debian's patroni and etcd-server; "
        "etcd's third member on the monitor, else the backup host), which promotes the standby when the primary is "
        "lost; commits wait for the standby while it runs (synchronous mode). A one-host store that gets a second db "
        "host is taken over by Patroni with its data.")


class Province(Strict):
    """Top level of `group_data/<province>.yml`."""

    province: Identifier = Field(description="Key of the province (file name without .yml), e.g. `daknong`.")
    name: DisplayText = Field(description="Vietnamese name, e.g. Đắk Nông.")
    regulations: list[Regulation] = Field(description="Decisions this province's values cite.")
    domain: Domain = Field(description="Mail domain, e.g. daknong.gov.vn.")
    domain_article: Article = Field(description="Article that fixes the domain.")
    hosts: list[Host] = Field(description="Hosts of the province: one with the mail roles (`mail`), "
                             "the backup host, and the account store's own hosts if any (`db`), more MX hosts "
                             "if any (`mx`).")
    postmaster: Optional[Address] = Field(None, description="Address that receives postmaster@/abuse@/root@ mail, the host's own system mail included (default: first admin).")
    tls: TLS = Field(TLS(), description="The certificate of the mail services (self-signed unless given).")
    password_change: PasswordChange = Field(PasswordChange(), description="Where users change their password.")
    dkim: DKIM = Field(DKIM(), description="DKIM signing of outgoing mail.")
    predecessors: list[Predecessor] = Field([], description="Provinces merged into this one (2025 reform): their domains "
                                            "and the end of their transition.", max_length=5)
    policy: Policy = Field(description="What the province's regulation demands, each section with its article.")
    verify: Verify = Field(Verify(), description="What `govmail verify --active` may send to the host.")
    account_store: AccountStore = Field(AccountStore(), description="Which database engine keeps the accounts.")
    directory: Directory = Field(description="Who has a mailbox: agencies, districts, people, functional mailboxes, lists.")
