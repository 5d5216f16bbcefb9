"""The clauses of a province: what its hosts must show, each citing the article it comes from.

Built from the province's data file only, so a new province gets its clauses (and checks) without
code. A clause whose article is a govmail default ("govmail default (…)") is not the province's
own: its decision fixes no value there, and reports count it apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data import ProvinceConfig
from ..data.facts import password_url


# Where a clause is checked: the mail host (the store, the web mail, submission), every host that
# receives the province's mail (role `mx`: the mail host and each MX apart), every host that holds
# mailboxes (the mail host and each store apart), or every host of the province. A check runs once per host with that host's probe (govmail/compliance/verify.py) and
# reads the parts the host's roles run (`Probe.roles`).
def every_host(cfg: ProvinceConfig) -> list[str]:
    """Every host of the province, the mail host first, then the others in the data's order."""
    return [cfg.mail_host, *(h.name for h in cfg.model.hosts if h.name != cfg.mail_host)]


ON = {
    "mail": lambda cfg: [cfg.mail_host],
    "mx": lambda cfg: cfg.mx_hosts,
    "store": lambda cfg: [cfg.mail_host, *cfg.stores_apart],
    # the hosts that copy a store's mailboxes to its standby (hosts[].standby)
    "copier": lambda cfg: [n for n in [cfg.mail_host, *cfg.stores_apart]
                           if n in {cfg.standby_copier(s) for s in cfg.standbys}],
    "every": every_host,
}

# The checks of what a host that receives mail runs (Postfix, rspamd, ClamAV, the inspector, its
# certificate and mail log), and of what every host runs (the baseline: govmail/services/system.py,
# updates, sshd, the deploy's record); the others read the mail host.
ON_EVERY_MX = {"mail_domain", "directory_deliverable", "size_limit", "utf8", "services_running", "no_cleartext_auth",
               "no_open_relay", "tls_certificate", "mail_log", "mail_log_retention", "spam_filter", "attachment_rules",
               "archive_inspection", "antivirus", "forwarding_in", "no_content_sent_out"}
# ... and of the mailboxes each store holds (the mail host's, each store apart's: `hosts[].agencies`).
ON_EVERY_STORE = {"quota_max", "quota_min", "quota_per_mailbox", "backups"}
ON_COPIERS = {"mailbox_standby_current"}
ON_EVERY_HOST = {"timers_scheduled", "clock_synchronised", "security_updates", "files_as_deployed", "no_foreign_config",
                 "ssh_keys_only"}


@dataclass(frozen=True)
class Clause:
    check: str  # the check function's name (govmail/compliance/checks.py)
    arg: str  # its argument (an address), or ""
    article: str  # "DN Art. 5.2", or "govmail default (…)"
    text: str  # what the host must show
    on: str = "mail"  # where it is checked: ON above

    def hosts(self, cfg: ProvinceConfig) -> list[str]:
        """The hosts this clause is checked on, in the data's order (the mail host first)."""
        return ON[self.on](cfg)

    @property
    def own(self) -> bool:
        """True when the province's decision fixes it (not a govmail default)."""
        return not self.article.startswith("govmail default")

    @property
    def label(self) -> str:
        return f"{self.article} {self.text}"

    @property
    def key(self) -> str:
        return f"{self.check}:{self.arg}" if self.arg else self.check


def clauses(cfg: ProvinceConfig, active: bool = False) -> list[Clause]:
    """The province's clauses; with `active`, also the probes of `govmail verify --active`, which
    connect to the host's ports from the network (govmail/compliance/active.py)."""
    out: list[Clause] = []

    apart = len(cfg.mx_hosts) > 1

    def add(check: str, article: str, text: str, arg: str = "") -> None:
        on = ("every" if check in ON_EVERY_HOST else "mx" if check in ON_EVERY_MX
              else "store" if check in ON_EVERY_STORE else "copier" if check in ON_COPIERS else "mail")
        if on == "mx" and apart:
            text += ", on every MX host"
        if on == "store" and cfg.stores_apart:
            text += ", on every store"
        out.append(Clause(check, arg, article, text, on))

    p = cfg.policy
    q = p.quota
    add("mail_domain", cfg.model.domain_article, f"mail domain is {cfg.domain}, served by {cfg.mail_host}")
    add("directory_deliverable", cfg.model.domain_article,
        f"every directory address ({len(cfg.accounts)} mailboxes) is a mailbox on the host")
    if q.max_mb:
        add("quota_max", q.article, f"mailbox quota ≤ {q.max_mb} MB")
    if q.min_mb:
        add("quota_min", q.article, f"mailbox quota ≥ {q.min_mb} MB")
    add("quota_per_mailbox", q.article, f"each mailbox has its quota from the data (default {q.default_mb} MB)")
    if p.attachment.max_mb:
        add("size_limit", p.attachment.article,
            f"attachments up to {p.attachment.max_mb} MB: message size limit {cfg.message_size_limit:,} bytes")
    else:
        add("size_limit", p.attachment.article, f"message size limit {p.attachment.message_size_mb} MB")
    add("utf8", p.unicode.article, "UTF-8 mail carried intact (SMTPUTF8 on)")
    add("client_ports", p.clients.article, "IMAP 993, POP3 995, submission 587/465 listening with TLS")
    add("web_access", p.web_access.article, f"web mail at https://{cfg.mail_host}/ (Roundcube, in Vietnamese), "
        "http:// redirected to it; client setup (autoconfig, autodiscover) served")
    listed = len([a for a in cfg.accounts if a.status == "active"])
    add("published_directory", p.published_directory.article,
        f"the directory of {listed} addresses published at https://{cfg.mail_host}/directory/, current with the data")
    add("accounts_as_data", p.operation.article, "the account store holds each mailbox's quota, status and roles, "
        "the lists and the policy as the data says")
    add("services_running", p.operation.article, "every service answers on its port: SMTP on 25, 587, 465; IMAP, "
        "POP3, the web mail, ManageSieve, rspamd and the attachment inspector")
    add("timers_scheduled", p.operation.article, "every enabled timer has a next run (log rotation, backups, "
        "reports, Debian's own), on every host")
    add("clock_synchronised", p.operation.article, "the clock is kept (systemd-timesyncd), on every host")
    if cfg.standbys:
        add("mailbox_standby_current", p.operation.article, "each store's mailboxes copied to its standby after "
            "each delivery and every minute, none over ten minutes old (" + ", ".join(
                f"{s} -> {b}" for s, b in cfg.standbys.items()) + ")")
    if cfg.store_cluster:
        add("store_standby_streaming", p.operation.article, "the account store has a primary and a synchronous "
            f"standby streaming from it ({' and '.join(cfg.db_hosts)}, Patroni)")
    add("security_updates", p.operation.article, "security updates applied every night from Debian's security "
        "suite (unattended-upgrades), no reboot waiting, on every host")
    add("files_as_deployed", p.operation.article, "every configuration file govmail wrote is as the last deploy "
        "wrote it (no hand edit), on every host")
    add("no_foreign_config", p.operation.article, "no file beside govmail's in the directories it owns (rspamd "
        "local.d/override.d, jail.d, rsyslog.d, logrotate.d, nginx, PHP pools, sshd_config.d) unless Debian's or "
        "listed in hosts[].local_files, on every host")
    add("operations_report", p.operations_report.article, "a monthly operations report (availability, incidents, "
        "mail in and out, refusals by reason, bans, backups, headroom) made on the host and mailed to the administrators")
    add("usage_report", p.usage_report.article, "an annual usage report per agency (mailboxes, active and inactive, "
        "mail sent and received, quota use) made on the host and mailed to the administrators")
    add("misuse_report", p.misuse_report.article, "the monthly report lists each mailbox used against the rules "
        "(its mail refused as spam, virus, program, over the sending limit, as another, forwarded out), with a "
        "proposed measure")
    add("no_cleartext_auth", p.secrecy.article, "no authentication without TLS; TLS 1.2 or newer")
    add("ssh_keys_only", p.secrecy.article, "SSH takes keys only, root by key only (sshd's effective settings), "
        "on every host")
    add("no_open_relay", p.secrecy.article, "Postfix relays only for logged-in users on every port (its "
        "effective settings, master.cf overrides included): mynetworks is the host itself")
    add("no_content_sent_out", p.secrecy.article, "no hash or copy of a message leaves the state network: "
        "rspamd's fuzzy_check (rspamd.com's public servers) is off")
    add("tls_certificate", p.secrecy.article, f"every TLS port serves the deployed certificate, which names "
        f"{cfg.mail_host} and has not expired")
    add("account_store_private", p.secrecy.article, "password hashes readable by root, Dovecot auth and Postfix only")
    add("password_hashes_strong", p.secrecy.article, "every password is stored as a strong hash (bcrypt cost 10 "
        "or more, Argon2, SHA-512 crypt); the owner of a weaker one must change it at the next login")
    add("mail_log", p.logs.article, "mail log written to /var/log/mail.log (a line logged now reaches it)")
    add("mail_log_retention", p.logs.article,
        f"mail logs rotated monthly, compressed, kept {p.logs.retention_months} months")
    sp = p.spam
    add("spam_filter", sp.article,
        f"every message scored by rspamd; refused at {sp.reject_score:g}, marked at {sp.add_header_score:g}")
    c = p.content
    text = "attachments refused: " + " ".join("." + e for e in c.blocked_extensions)
    if c.allowed_extensions is not None:
        text += "; only " + " ".join("." + e for e in c.allowed_extensions) + " accepted"
    if c.inspect_archives:
        text += "; also inside .zip/.rar/.7z/.gz"
    add("attachment_rules", c.article, text + f"; password-protected archives: {c.encrypted_archives}")
    if c.inspect_archives:
        add("archive_inspection", c.article, f"archives opened {c.archive_depth} deep, programs found by content "
            f"(a program renamed .pdf in a zip in a zip is refused); deeper: {c.too_deep}, "
            f"Office macros: {c.office_macros}")
    add("sender_bound", p.sender.article, "an authenticated user sends only as their own address or one "
        "delegated to them, in the envelope and in the header From:")
    av = p.antivirus
    add("antivirus", av.article, "every message scanned by ClamAV, infected ones refused" if av.enabled
        else "virus scanning is OFF in the data (policy.antivirus.enabled)")
    ob = p.outbound
    add("outbound_limit", ob.article,
        f"one authenticated user sends at most {ob.burst} messages at once, {ob.messages_per_hour} an hour")
    add("dkim_signing", sp.article, f"mail from {cfg.domain} DKIM-signed (selector {cfg.model.dkim.selector}), "
        "the record published; SPF, DKIM, DMARC checked on received mail")
    fw = p.forwarding
    if fw.refuse_outbound:
        add("forwarding_out", fw.article,
            "automatic forwards (Sieve redirect and notify, refused when saved; lists) only to "
            + ", ".join(fw.state_domains))
    if fw.refuse_inbound:
        add("forwarding_in", fw.article, "mail forwarded automatically from outside the state domains refused")
    bf = p.bruteforce
    add("bruteforce", bf.article, f"{bf.maxretry} failed logins in {bf.findtime_minutes} min (SMTP AUTH, IMAP, "
        f"POP3, password service, web mail) ban the client for {bf.bantime_minutes} min")
    if cfg.backup_host:
        b = p.backup
        add("backups", b.article, f"mailboxes and account store backed up ({b.schedule}) to {cfg.backup_host}, "
            f"encrypted, append-only; kept {b.keep_daily} daily, {b.keep_weekly} weekly, {b.keep_monthly} monthly")
    mon = p.monitoring
    relay = f"{mon.relay.host}:{mon.relay.port}" if mon.relay else f"{cfg.mail_host} (no relay named)"
    add("watched", mon.article, f"watched by {cfg.monitor_host or 'no host'}: every host scraped, the alert rules "
        f"loaded, alerts mailed to {', '.join(cfg.alert_to)} through {relay}"
        + (" and posted to the webhook" if mon.webhook else "") + f", a heartbeat every {mon.heartbeat_hours} h"
        + ("; its pages published at /monitor/ for the administrators only" if mon.web_ui else ""))
    pw = p.password
    if pw.user_max_age_days or pw.admin_max_age_days:
        add("password_rotation", pw.article, f"passwords expire after {pw.user_max_age_days} days "
            f"(administrators {pw.admin_max_age_days}); daily warning job enabled")
    if pw.change_at_first_login:
        add("first_login_change", pw.article, "issued and reset passwords must be changed by the user before "
            f"first use: the web mail at {password_url(cfg)} leads them to the change form")
    ina = p.inactivity
    if ina.action != "none":
        done = {"suspend": "suspended", "revoke": "revoked"}.get(ina.action, ina.action + "d")
        text = f"mailboxes without login for {ina.after_months} months are {done}"
        if ina.delete_after_notice_months:
            text += f", deleted {ina.delete_after_notice_months} months later"
        add("inactivity_rule", ina.article, text + " (daily job enabled)")
    if p.cancellation.keep_months:
        add("cancelled_retention", p.cancellation.article,
            f"cancelled mailboxes' mail kept {p.cancellation.keep_months} months, then purged")
    for ml in cfg.model.directory.lists:
        if ml.article:
            add("list_members", ml.article, f"{ml.address} reaches its {len(cfg.aliases[ml.address])} members",
                ml.address)
    for mb in cfg.model.directory.mailboxes:
        if mb.article:
            add("mailbox_exists", mb.article, f"mailbox {mb.address} exists", mb.address)
    if active:
        add("probe_tls_versions", p.secrecy.article, "seen from the network: every TLS port refuses TLS 1.0 and 1.1 "
            "and agrees to TLS 1.2 or newer")
        add("probe_no_cleartext_auth", p.secrecy.article, "seen from the network: no port offers a password login "
            "before TLS (587 after STARTTLS only, 25 never, 143/110 refuse plain logins)")
        add("probe_relay_refused", p.secrecy.article, "seen from the network: mail for a domain the host does not "
            "serve is refused to a client that has not logged in (no open relay)")
        probe = cfg.model.verify.probe_mailbox
        if probe:
            add("probe_delivery", cfg.model.domain_article, f"a probe message from outside to {probe} is accepted "
                "on port 25 and delivered (then removed)", probe)
    return out
