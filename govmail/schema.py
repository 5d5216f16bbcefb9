"""The typed option set of a province data file.

One model per section. Every field carries its default and a description here, where it is
defined; `govmail schema` prints them as the data-file reference (docs/data-file.md is generated
from it). Policy sections carry the article of the regulation their values come from.

Cross-field rules (quota within the province's bounds, unique addresses, list members that
exist, ...) are checked in `govmail.data`, after these models accept the shapes and types.
"""

from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator  # noqa: F401 (re-exported)

from .policy import (  # noqa: F401 (the policy sections are part of the option set)
    ARTICLE_RE,
    DOMAIN_RE,
    LABEL_RE,
    LOCAL_RE,
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
    NamingPolicy,
    OutboundPolicy,
    PasswordPolicy,
    Policy,
    QuotaPolicy,
    SpamPolicy,
    Strict,
    _article,
)


class TLS(Strict):
    certificate: Optional[str] = Field(
        None,
        description="Path on the controller (relative to the data file) of a PEM certificate chain to "
        "install. Null: a self-signed certificate for the host names is generated on the host once.",
    )
    key: Optional[str] = Field(None, description="Path of the matching PEM private key (with `certificate`).")


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

    selector: str = Field("govmail", description="DKIM selector: the record is `<selector>._domainkey.<domain>`.")
    bits: Literal[2048, 3072, 4096] = Field(2048, description="RSA key size of a newly generated key.")

    @field_validator("selector")
    @classmethod
    def _selector(cls, v):
        if not LABEL_RE.match(v):
            raise ValueError("must be lower-case ASCII letters, digits or '-'")
        return v


class Host(Strict):
    name: str = Field(description="Fully qualified host name, e.g. mail.daknong.gov.vn.")
    address: Optional[str] = Field(
        None, description="Public IPv4 address, for the A record `govmail dns` prints (the lab uses its own)."
    )
    roles: list[Literal["mail", "backup"]] = Field(
        ["mail"], description="What the host does: `mail` (exactly one host), `backup` (at most one: receives "
        "the mail host's backups)."
    )

    @field_validator("address")
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

    @field_validator("name")
    @classmethod
    def _fqdn(cls, v):
        if not DOMAIN_RE.match(v):
            raise ValueError("must be a lower-case fully qualified host name")
        return v


# ---------------------------------------------------------------------------- directory


class Unit(Strict):
    id: str = Field(description="Abbreviation used in addresses (lower-case ASCII, no dots).")
    name: str = Field(description="Full Vietnamese name.")
    address: Optional[str] = Field(None, description="Override of the unit's mailbox address (default by the naming rule).")
    quota_mb: Optional[int] = Field(None, description="Quota of the unit's mailbox in MiB (default: the province's).", gt=0)

    @field_validator("id")
    @classmethod
    def _id(cls, v):
        if not LABEL_RE.match(v):
            raise ValueError("must be lower-case ASCII letters, digits or '-'")
        return v


class Agency(Unit):
    """A provincial agency (Sở, Ban, ...): mailbox `<id>@` (BN Art. 4.a, DN Art. 5.1.b, LC Art. 5.1.a)."""

    departments: list[Unit] = Field([], description="Departments: mailbox `<department>.<agency>@`.")


class District(Unit):
    """A district: mailbox `<id>@`; its communes `<commune>.<district>@`."""

    departments: list[Unit] = Field([], description="District departments: `<department>.<district>@`.")
    communes: list[Unit] = Field([], description="Communes, wards and towns: `<commune>.<district>@`.")


class Person(Strict):
    name: str = Field(description="Full Vietnamese name, e.g. Nguyễn Văn Hậu.")
    address: str = Field(description="Full address in the province's domain.")
    agency: Optional[str] = Field(None, description="Id of the agency or district the person works for.")
    department: Optional[str] = Field(
        None, description="Id of the person's department in that agency or district (DN Art. 5.1.d: staff of a "
        "district department are `<name>.<department>.<district>@`)."
    )
    role: Literal["user", "admin"] = Field("user", description="`admin` accounts follow the administrator password rules.")
    quota_mb: Optional[int] = Field(None, description="Quota override in MiB, within the province's bounds.", gt=0)
    password_hash: Optional[str] = Field(
        None,
        description="Initial password hash (`{SHA512-CRYPT}$6$...` or `{BLF-CRYPT}$2y$...`, from "
        "`govmail hash-password`). Used only when the mailbox is created; a password the user changed "
        "on the host is never overwritten. Null: a random initial password is generated and left "
        "for the operator in /root/govmail-initial-passwords on the host.",
    )
    status: Literal["active", "cancelled"] = Field("active", description="`cancelled`: login refused, mail kept.")

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, v):
        if v is None:
            return v
        if not re.match(r"^\{(SHA512-CRYPT|SHA256-CRYPT|BLF-CRYPT|ARGON2ID)\}\$\S+$", v):
            raise ValueError("must be a hash such as '{SHA512-CRYPT}$6$...' made by `govmail hash-password`")
        return v


class MailingList(Strict):
    address: str = Field(description="Full address of the list.")
    name: str = Field("", description="What the list is for.")
    article: Optional[str] = Field(None, description="Article that asks for this list, e.g. `DN Art. 5.1.e`.")
    members: list[str] = Field([], description="Addresses of members (mailboxes or other lists of the directory).")
    include_all_people: bool = Field(False, description="Every active person of the province (DN `internal@`).")
    include_agency_people: Optional[str] = Field(None, description="Every active person of this agency (DN `internal.<agency>@`).")
    senders: list[str] = Field(
        [], description="Mailboxes whose users may send *as* the list (authenticated submission); nobody else "
        "may use the list's address as sender.",
    )


class Mailbox(Strict):
    """A functional mailbox not tied to a person or unit (TN `hotro@`)."""

    address: str = Field(description="The mailbox's full address, in the province's domain.")
    name: str = Field("", description="What it is for, shown to recipients.")
    article: Optional[str] = Field(None, description="The article that asks for this mailbox, if one does.")
    quota_mb: Optional[int] = Field(None, gt=0, description="Its quota in MiB (default: the province's).")
    password_hash: Optional[str] = Field(None, description="Initial password as a Dovecot hash (`govmail hash-password`); "
                                         "default: a random one, handed out on the host.")


class Directory(Strict):
    agencies: list[Agency] = Field([], description="Provincial agencies (departments, committees); each may have a unit mailbox.")
    districts: list[District] = Field([], description="Districts (or, after the 2025 reform, communes) and their departments.")
    people: list[Person] = Field([], description="Officials with a personal mailbox, addressed by the province's naming rule.")
    mailboxes: list[Mailbox] = Field([], description="Functional mailboxes not tied to a person or unit (e.g. TN `hotro@`).")
    lists: list[MailingList] = Field([], description="Distribution lists: one address that reaches its members.")


class Regulation(Strict):
    key: str = Field(description="Short key used in citations, e.g. `DN`.")
    decision: str = Field(description="The decision, e.g. `Quyết định 12/2012/QĐ-UBND`.")
    date: str = Field(description="Date of the decision, ISO format.")


class Province(Strict):
    """Top level of `group_data/<province>.yml`."""

    province: str = Field(description="Key of the province (file name without .yml), e.g. `daknong`.")
    name: str = Field(description="Vietnamese name, e.g. Đắk Nông.")
    regulations: list[Regulation] = Field(description="Decisions this province's values cite.")
    domain: str = Field(description="Mail domain, e.g. daknong.gov.vn.")
    domain_article: str = Field(description="Article that fixes the domain.")
    hosts: list[Host] = Field(description="Hosts of the province; exactly one with role `mail` for now.")
    postmaster: Optional[str] = Field(None, description="Address that receives postmaster@/abuse@/root@ mail, the host's own system mail included (default: first admin).")
    tls: TLS = Field(TLS(), description="The certificate of the mail services (self-signed unless given).")
    password_change: PasswordChange = Field(PasswordChange(), description="Where users change their password.")
    dkim: DKIM = Field(DKIM(), description="DKIM signing of outgoing mail.")
    policy: Policy = Field(description="What the province's regulation demands, each section with its article.")
    directory: Directory = Field(description="Who has a mailbox: agencies, districts, people, functional mailboxes, lists.")

    @field_validator("domain")
    @classmethod
    def _domain(cls, v):
        if not DOMAIN_RE.match(v):
            raise ValueError("must be a lower-case domain name such as daknong.gov.vn")
        return v
