"""The policy sections of a province data file (`policy:`), each citing its article.

Part of the typed option set (govmail/data/schema.py re-exports every name here). Every field carries
its default and its description where it is defined; `govmail schema` prints them.
"""

from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..host import contract
from .text import ARTICLE_RE, DOMAIN_RE, LABEL_RE, LOCAL_RE, Address, Article, Calendar, DisplayText, Network  # noqa: F401 (re-exported: schema and data import them from here)

# The largest quota a mailbox may have, MiB: 16 TiB, well inside what the account store (SQLite
# integer) and Dovecot (64-bit byte counts) hold, and far above any regulation's figure.
QUOTA_MAX_MB = 16 * 1024 * 1024


class Strict(BaseModel):
    # strict: `yes` is not the number 1 and `"5"` is not 5; a value has the type the key says.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


def _article(description: str = "") -> object:
    return Field(
        description=(description + " " if description else "")
        + "Article the values come from, e.g. `DN Art. 5.2`, or `govmail default` with a reason.",
    )


class Cited(Strict):
    article: Article = _article()


# ---------------------------------------------------------------------------- policy sections


class QuotaPolicy(Cited):
    """Mailbox quota (DN Art. 5.2: at most 500 MB; TN Art. 3.7: at least 1 GB)."""

    default_mb: int = Field(1024, description="Quota of a mailbox that sets none, in MiB.", gt=0, le=QUOTA_MAX_MB)
    min_mb: Optional[int] = Field(None, description="Smallest quota a mailbox may be given, MiB (null: no lower bound).",
                                  gt=0, le=QUOTA_MAX_MB)
    max_mb: Optional[int] = Field(None, description="Largest quota a mailbox may be given, MiB (null: no upper bound).",
                                  gt=0, le=QUOTA_MAX_MB)
    warn_percent: list[int] = Field(
        [80, 95], description="Usage levels (percent, 1..99, ascending) at which the owner is mailed a quota warning.",
        max_length=10,
    )

    @field_validator("warn_percent")
    @classmethod
    def _levels(cls, v):
        if any(not 1 <= x <= 99 for x in v):
            raise ValueError("levels are percentages of the quota: each from 1 to 99")
        if v != sorted(set(v)):
            raise ValueError("levels must be ascending and each given once, e.g. [80, 95]")
        return v


class AttachmentPolicy(Cited):
    """Largest attachment one message may carry (DN Art. 5.2: 25 MB; TN Art. 3.7: 30 MB)."""

    max_mb: Optional[int] = Field(
        None,
        description="Largest attachment in MiB (1,048,576 bytes, as mail clients show sizes). The "
        "SMTP message size limit is derived from it: base64 grows an attachment by 4/3 plus line "
        "breaks, and 512 KiB is added for headers and text. Null: the regulation fixes none, "
        "`message_size_mb` applies.",
        gt=0,
        le=2000,
    )
    message_size_mb: int = Field(
        50, description="SMTP message size limit in MiB when `max_mb` is null.", gt=0, le=2000
    )


class PasswordPolicy(Cited):
    # The host's password rule assumes the same when its document lacks them (govmail/host/contract.py).
    min_length: int = Field(contract.POLICY_DEFAULTS["password_min_length"],
                            description="Shortest password a user may set.", ge=6, le=128)
    admin_min_length: int = Field(contract.POLICY_DEFAULTS["password_admin_min_length"],
                                  description="Shortest password an administrator may set.", ge=6, le=128)
    require: list[Literal["lower", "upper", "digit", "special"]] = Field(
        [], description="Character classes every password must contain."
    )
    change_at_first_login: bool = Field(False, description="New and reset accounts must change their password first.")
    user_max_age_days: Optional[int] = Field(None, description="A user's password expires after this many days (null: never).", gt=0)
    admin_max_age_days: Optional[int] = Field(None, description="An administrator's password expires after this many days.", gt=0)


class InactivityPolicy(Cited):
    action: Literal["none", "revoke", "suspend"] = Field(
        "none", description="What happens to a mailbox nobody logged in to for `after_months`."
    )
    after_months: Optional[int] = Field(None, description="Months without login before `action`.", gt=0)
    delete_after_notice_months: Optional[int] = Field(
        None, description="Months after the suspension (and its notice) before the daily job deletes the "
        "mailbox and its mail (LC Art. 8.1: 12). Null: suspended mailboxes are kept until an operator acts.", gt=0
    )
    notify_agency: bool = Field(
        False, description="Mail the managing unit's mailbox (the person's department or agency) when one of "
        "its mailboxes is suspended or deleted (LC Art. 8.1)."
    )
    notify_superior: bool = Field(
        False, description="Also mail the managing unit's superior when a mailbox is deleted (LC Art. 8.1)."
    )
    superior: Optional[str] = Field(
        None, description="Address told as the superior of agencies and districts (usually the provincial "
        "People's Committee's mailbox); a department's superior is its agency. Must be in the directory.",
    )


class CancellationPolicy(Cited):
    """What becomes of a cancelled mailbox (retirement, transfer: BN Art. 6, DN Art. 7.2.b, LC Art. 8.2,
    TN Art. 8.2.b), and of one whose line left the data file, which is treated the same way."""

    keep_months: Optional[int] = Field(
        12, description="Months a cancelled mailbox's mail is kept (login refused, mail still received) before "
        "the daily job purges it. Null: kept until an operator acts.", gt=0, le=1200,
    )


class LogPolicy(Cited):
    """Mail logs (delivery, rejection, authentication, errors) in /var/log/mail.log, rotated monthly,
    compressed, kept `retention_months` (DN Art. 11.2.e: 12), and part of every backup."""

    retention_months: int = Field(12, description="Months the mail logs are kept (DN Art. 11.2.e: 12).", ge=1, le=120)


class SpamPolicy(Cited):
    """Spam scoring by rspamd at SMTP time (LC Art. 4.4, 4.5, 13.4; TN Art. 4.1-4.2; BN Art. 15.2; DN Art. 8.3;
    anti-spam decree 90/2008/NĐ-CP)."""

    reject_score: float = Field(15, description="Score at which a message is refused at SMTP time (above "
                                "`add_header_score`).", gt=0, le=1000)
    add_header_score: float = Field(6, description="Score at which a message is delivered marked as spam.", gt=0, le=1000)


class BruteForcePolicy(Cited):
    """fail2ban bans a client that keeps failing to log in (SMTP AUTH, IMAP, POP3, the password page)
    from the mail ports, with nftables. Protects the passwords the regulations make users keep secret."""

    maxretry: int = Field(5, description="Failed logins allowed within `findtime_minutes` before a ban.", ge=2, le=100)
    findtime_minutes: int = Field(10, description="Window in which failures are counted.", ge=1, le=1440)
    bantime_minutes: int = Field(60, description="How long a ban lasts.", ge=1, le=60 * 24 * 30)
    ignore: list[Network] = Field([], description="Addresses or networks never banned (an agency's NAT gateway, say).",
                                  max_length=100)


class BackupPolicy(Cited):
    """Backups of mailbox content and of everything a rebuild needs (BN Art. 13, DN Art. 11.2.b, LC Art.
    13.5, TN Art. 16.2): to the province's `backup` host, with borgbackup over SSH, encrypted,
    deduplicated and append-only (the mail host cannot delete its own history)."""

    schedule: Calendar = Field(
        "*-*-* 02:30:00", description="When the backup runs: a systemd OnCalendar expression (daily at 02:30)."
    )
    keep_daily: int = Field(7, description="Daily archives kept by the backup host's pruning.", ge=1, le=366)
    keep_weekly: int = Field(4, description="Weekly archives kept.", ge=0, le=520)
    keep_monthly: int = Field(12, description="Monthly archives kept.", ge=0, le=240)
    max_age_hours: int = Field(
        26, description="A last good backup older than this is late: the administrators are mailed (hourly check).",
        ge=1, le=24 * 14,
    )


class ContentPolicy(Cited):
    blocked_extensions: list[str] = Field(
        ["exe", "com", "bat", "cmd", "scr", "pif", "dll", "vbs", "js", "jar", "msi", "ps1"],
        description="File name extensions refused as attachments (lower case, without the dot).",
    )
    allowed_extensions: Optional[list[str]] = Field(
        None, description="If set, only these attachment formats are accepted (BN Art. 11 allow-list)."
    )

    encrypted_archives: Literal["allow", "flag", "refuse"] = Field(
        "flag", description="A password-protected archive (.zip, .rar, .7z), whose content cannot be checked: "
        "`allow`, `flag` (delivered with the header X-Govmail-Encrypted-Archive and spam score 3) or `refuse`."
    )
    inspect_archives: bool = Field(
        True, description="Look inside archives (.zip, .gz, .bz2, .xz, .tar, .7z; names in .rar): the extension "
        "rules and the program check apply to the files inside, and to archives inside those, `archive_depth` deep."
    )
    archive_depth: int = Field(
        3, description="How many archives deep the attachment inspector looks (an archive inside an archive inside "
        "the attachment is 3).", ge=1, le=10,
    )
    too_deep: Literal["refuse", "flag"] = Field(
        "refuse", description="An archive nested deeper than `archive_depth`, whose content is not checked: `refuse`, "
        "or `flag` (delivered with the header X-Govmail-Attachment and spam score 3)."
    )
    unreadable_archives: Literal["allow", "flag", "refuse"] = Field(
        "flag", description="An archive that cannot be opened here (.rar, corrupt, or unpacking past 256 MiB or "
        "10,000 files): `allow`, `flag` or `refuse`."
    )
    office_macros: Literal["allow", "flag", "refuse"] = Field(
        "refuse", description="An Office document with macros (programs inside .docm/.xlsm/.doc/.xls...): `refuse`, "
        "`flag` or `allow`."
    )

    @field_validator("blocked_extensions", "allowed_extensions")
    @classmethod
    def _exts(cls, v):
        if v is None:
            return v
        for e in v:
            if not re.fullmatch(r"[a-z0-9]{1,10}", e):
                raise ValueError(f"extension {e!r} must be lower-case letters/digits without a dot")
        return v


class AntivirusPolicy(Cited):
    """Virus scanning with ClamAV (clamd), asked by rspamd for every message (LC Art. 4.4, 4.5, 13.4;
    TN Art. 4.1-4.2; BN Art. 15.2; DN Art. 8.3)."""

    enabled: bool = Field(
        True, description="Scan every message; an infected one is refused at SMTP time. `false`: no scanner is "
        "installed, and the deploy and the compliance report say so."
    )
    freshclam: bool = Field(
        True, description="Update the signatures from ClamAV's mirror (freshclam). The lab has no such access "
        "and always uses govmail's local test signature only."
    )


class OutboundPolicy(Cited):
    """Limits on what one authenticated user may send, so that a stolen password cannot turn the
    host into a spam source (rspamd ratelimit, counted in Redis)."""

    messages_per_hour: int = Field(
        100, description="Messages one authenticated user may submit per hour (sustained rate).", ge=1, le=100000
    )
    burst: int = Field(
        100, description="Messages one user may submit at once before the hourly rate applies.", ge=1, le=100000
    )


class AlertRelay(Strict):
    host: str = Field(description="Host name of the SMTP relay (a neighbouring province's MX, the IT centre's relay).")
    port: int = Field(25, description="Its SMTP port (STARTTLS is required).", ge=1, le=65535)

    @field_validator("host")
    @classmethod
    def _host(cls, v):
        if not DOMAIN_RE.match(v) or len(v) > 253:
            raise ValueError("must be a host name such as mail.thainguyen.gov.vn (lower case)")
        return v


# A webhook address: http(s), a host name or IPv4 address, an optional port and a plain path; nothing
# that could end the YAML string it is written into or carry credentials.
WEBHOOK_RE = re.compile(r"^https?://([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?(:[0-9]{1,5})?"
                        r"(/[A-Za-z0-9._~%/-]*)?\Z")


class MonitoringPolicy(Cited):
    """The province watched (TN Art. 3.2: 24 hours a day; DN Art. 4: continuous operation; LC Art. 13.2:
    incidents fixed promptly; BN Art. 13, operator duty 3: high availability): Prometheus and
    Alertmanager on the monitor host (the host with role `monitor`, else the backup host) scrape every
    host of the province over its private address, and the alert rules (docs/alerts.md, each citing
    this article) mail the administrators and post to a webhook, with a heartbeat so that silence is
    noticed too."""

    alert_to: list[Address] = Field(
        [], description="Who receives the alerts by mail. Empty: the directory's administrators.", max_length=20)
    relay: Optional[AlertRelay] = Field(
        None, description="An SMTP relay that does not depend on the province's own mail host, which then accepts "
        "the monitor host's mail for `alert_to`. Null: the alerts go through the province's mail host and stop "
        "with it (the webhook still works).")
    webhook: Optional[str] = Field(
        None, description="An http(s) URL Alertmanager posts every alert and its resolution to as JSON (a chat "
        "bridge). Null: none.", max_length=300)
    heartbeat_hours: int = Field(24, description="A heartbeat is mailed (and posted) this often; its absence says "
                                 "the monitor itself is down.", ge=1, le=168)
    retention_days: int = Field(400, description="Days of metrics Prometheus keeps (the monthly and annual reports "
                                "read availability from them).", ge=31, le=3660)
    web_ui: bool = Field(False, description="Publish the monitor through the mail host's nginx, for the "
                         "administrators only (a directory account with `role: admin`, active, its mail password; "
                         "others are refused): Prometheus's pages at `https://mail.<domain>/monitor/` (Debian's "
                         "classic ones) and Alertmanager's API at `/monitor/alertmanager/`, for `amtool` (Debian's "
                         "Alertmanager has no web pages). False: they stay on the monitor's private address, read "
                         "by `govmail status`.")

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, v):
        if v is not None and not WEBHOOK_RE.match(v):
            raise ValueError("must be an http:// or https:// URL: lower-case host name or IPv4 address, optional "
                             "port, a path of letters, digits and . _ ~ % / - (no query, no credentials)")
        return v


class ForwardingPolicy(Cited):
    """Automatic forwarding out of, and into, the state mail system (LC Art. 12.5)."""

    state_domains: list[str] = Field(  # each checked below: a domain, or *.domain
        ["*.gov.vn", "gov.vn"], description="Domains of mailboxes issued by state agencies: exact names, or "
        "`*.suffix` for every subdomain. Forwards between them keep working."
    )
    refuse_outbound: bool = Field(
        True, description="Refuse an automatic forward (Sieve redirect, list member) from a mailbox here to a "
        "domain that is not a state domain."
    )
    refuse_inbound: bool = Field(
        False, description="Refuse mail automatically forwarded into this domain from a mailbox outside the "
        "state domains (recognised by its forwarding headers and SRS envelope)."
    )

    @field_validator("state_domains")
    @classmethod
    def _domains(cls, v):
        from .text import domain_problem

        for d in v:
            if domain_problem(d.removeprefix("*.")):
                raise ValueError(f"{d!r} must be a lower-case domain such as gov.vn, or *.gov.vn")
        return v

    def is_state(self, domain: str) -> bool:
        domain = domain.lower()
        for d in self.state_domains:
            if d.startswith("*.") and domain.endswith(d[1:]) or domain == d:
                return True
        return False


class NamingPolicy(Cited):
    """How a person's address is formed from their name (BN Art. 4.b, DN Art. 5.1, LC Art. 5.2, TN Art. 3.5)."""

    unit_suffix: bool = Field(
        True,
        description="Addresses end with the person's unit: `.<agency>` (or `.<department>.<district>` for "
        "staff of a district department). False: `<given><initials>@` only (TN Art. 3.5).",
    )
    clash: Literal["letter", "characters", "manual"] = Field(
        "manual",
        description="When the address is taken: `letter` appends a, b, c ... to the name part (DN Art. 5.1.a); "
        "`characters` appends one or two characters, 1 to 99 (TN Art. 3.5); `manual` reports it for a "
        "decision (BN Art. 4.b, LC Art. 5.2.b).",
    )
    check: Literal["error", "warning", "off"] = Field(
        "warning", description="How `govmail validate` treats a person's address that does not follow the rule."
    )
    unit_order: Literal["child_first", "parent_first"] = Field(
        "child_first",
        description="Order of a two-part unit in an address: `child_first` writes `<department>.<district>@` "
        "(and `<name>.<department>.<district>@`), as the seed decisions do; `parent_first` writes "
        "`<district>.<department>@`, as some provinces do. Applies to departments of agencies, districts "
        "and communes. Changing it re-addresses units: `govmail readdress` lists and applies that.",
    )


class Clause(Cited):
    """A requirement with no value to set: only its article, which the compliance check cites."""


class Policy(Strict):
    unicode: Clause = Field(description="UTF-8 (TCVN 6909:2001) content travels intact: SMTPUTF8 on.")
    clients: Clause = Field(description="Desktop clients over IMAP, POP3 and SMTP submission, with TLS.")
    web_access: Clause = Field(description="Web mail at `https://mail.<domain>/` (Roundcube), `http://` redirected to "
                               "it; mail clients set up from the address alone (autoconfig, autodiscover).")
    published_directory: Clause = Field(description="The directory of addresses (name, unit, position, address) "
                                        "published for the provincial portal and kept current: "
                                        "`https://mail.<domain>/directory/`, `govmail directory`.")
    operation: Clause = Field(description="Continuous operation: services enabled and running.")
    operations_report: Clause = Field(description="A monthly operations report (availability, incidents, mail in "
                                      "and out, refusals by reason, bans, backups, disk and quota headroom) made "
                                      "on the host and mailed to the administrators: `govmail report P monthly`.")
    usage_report: Clause = Field(description="An annual usage report per agency (mailboxes, active and inactive, "
                                 "mail sent and received, quota use) made on the host and mailed to the "
                                 "administrators: `govmail report P annual`.")
    misuse_report: Clause = Field(description="Mailboxes used against the rules (their own mail refused as spam, "
                                  "virus or program, over the sending limit, sent as another, forwarded out of the "
                                  "state domains) listed per account in the monthly report, each with a proposed "
                                  "measure, for the operator to report up.")
    secrecy: Clause = Field(description="Passwords and mailboxes protected: no authentication without TLS.")
    sender: Clause = Field(description="A message says truly who sent it: an authenticated user sends only as their own "
                           "address, a list they may send for, or an address delegated to them (`senders:`), in the "
                           "envelope and in the header `From:`.")
    naming: NamingPolicy = Field(description="The address rule for people, and what to do on a clash.")
    quota: QuotaPolicy = Field(description="Mailbox sizes: the province's default, bounds, and when owners are warned.")
    attachment: AttachmentPolicy = Field(description="Largest attachment (and so the message size limit).")
    password: PasswordPolicy = Field(description="Password rule, first-login change and rotation.")
    inactivity: InactivityPolicy = Field(description="What happens to a mailbox nobody logs in to.")
    cancellation: CancellationPolicy = Field(description="How long a cancelled mailbox's mail is kept.")
    logs: LogPolicy = Field(description="How long the mail logs are kept.")
    backup: BackupPolicy = Field(description="Schedule and retention of the backups.")
    bruteforce: BruteForcePolicy = Field(description="Bans of clients that keep failing to log in.")
    spam: SpamPolicy = Field(description="Spam scores: refuse, or deliver marked.")
    content: ContentPolicy = Field(description="Attachment rules: blocked and allowed formats, archives.")
    antivirus: AntivirusPolicy = Field(description="Virus scanning with ClamAV.")
    outbound: OutboundPolicy = Field(description="Sending limits per authenticated user.")
    forwarding: ForwardingPolicy = Field(description="Automatic forwarding out of and into the state mail system.")
    monitoring: MonitoringPolicy = Field(description="Metrics, alerts to the administrators, the heartbeat.")


# ---------------------------------------------------------------------------- hosts and TLS
