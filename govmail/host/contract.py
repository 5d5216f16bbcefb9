"""The contract between the controller and the host tools: paths, ports, versions and the documents
both read.

Standard library only. The controller (the services, the engine, the checks: `from ..host import
contract`) and the host tools (this package, installed as /usr/local/lib/govmail/govmail_host/) read
the same definitions, so a path, a port or a key is written once. Every document the controller
writes for a host tool carries its version (`DOCUMENTS`); a host tool that finds one of another
version refuses it rather than guess (`check_version`).
"""

# Bumped when the directory document's shape changes in a way an older host tool cannot read.
VERSION = 4
# The version of each other document the controller writes for a host tool (key "version"),
# bumped the same way.
DOCUMENTS = {"report_settings": 1, "inspector_rules": 1, "sieve_guard": 1, "deployed_files": 1}

# Where things live on a mail host.
PATHS = {
    "etc": "/etc/govmail",
    "state": "/var/lib/govmail",
    "lib": "/usr/local/lib/govmail",
    "vmail": "/var/vmail",
    "tls_cert": "/etc/govmail/tls/fullchain.pem",
    "tls_key": "/etc/govmail/tls/privkey.pem",
    "store": "/var/lib/govmail/accounts.sqlite",
    # Where the host tools find an account store on PostgreSQL (a libpq connection string, root 0600;
    # absent: the store is the SQLite file above), and Dovecot's settings to reach it (root:dovecot 0640).
    "store_dsn": "/etc/govmail/store.dsn",
    "store_dovecot": "/etc/dovecot/govmail-store.conf.ext",
    # The db host's record of the store's two passwords (root 0600): what its setup gives the roles.
    "store_secrets": "/etc/govmail/store-secrets.json",
    "legacy_users": "/var/lib/govmail/dovecot-users",  # the passwd-file store of govmail before SQLite
    "directory": "/etc/govmail/directory.json",
    "initial_passwords": "/root/govmail-initial-passwords",
    "quota_warning": "/usr/local/lib/govmail/quota-warning",
    "postfix_maps": "/etc/postfix/govmail",
    "pending": "/var/lib/govmail/pending",
    # Each LMTP recipient the host's Dovecot accepted, one JSON line each (its stats process writes it:
    # dovecot.conf's event exporter), on a host that copies a store to its standby: the host tool
    # `standby delivered` copies those mailboxes at once (govmail/host/standby.py).
    "standby_deliveries": "/var/lib/govmail/deliveries/accepted.jsonl",
    # Every file the last deploy declared, with its SHA-1 as written (govmail/host/apply.py writes it;
    # `govmail verify` compares the live files with it): {"version", "files": {path: sha1}}.
    "deployed_files": "/var/lib/govmail/deployed-files.json",
    "backup_conf": "/etc/govmail/backup/backup.json",
    "backup_status": "/var/lib/govmail/backup-status.json",
    "backup_stage": "/var/backups/govmail",
    # Web mail (govmail/services/webmail.py) and what the web server serves (govmail/services/web.py).
    "www": "/var/lib/govmail/www",
    "webmail_key": "/etc/govmail/webmail/des_key",
    "webmail_socket": "/run/php/govmail-webmail.sock",
    "notice": "/var/lib/govmail/www/notice.json",
    # Roundcube's own database (Debian's dbconfig-common made it): users' settings, identities,
    # personal contacts. Backed up with the account store, put back by restore-host.
    "webmail_db": "/var/lib/dbconfig-common/sqlite3/roundcube/roundcube",
    # DKIM keys, readable by rspamd only: `<domain>.<selector>.key` and its DNS record `.txt`.
    "dkim": "/etc/govmail/dkim",
    # The documents the deploy writes for the host tools (versions: DOCUMENTS below).
    "report_settings": "/etc/govmail/report/report.json",
    "reports": "/var/lib/govmail/reports",  # the reports the host makes (CSV, HTML, JSON)
    "inspector_rules": "/etc/govmail/inspector/inspect.json",
    "sieve_guard": "/etc/govmail/sieve-guard.json",
    # govmail's facts for Prometheus (govmail/host/metrics.py), in node-exporter's textfile directory.
    "metrics": "/var/lib/prometheus/node-exporter/govmail.prom",
    # ... and the mailboxes' quota use, every 15 minutes (reading every mailbox's quota is too slow
    # for the 30-second facts on a host with tens of thousands).
    "metrics_quota": "/var/lib/prometheus/node-exporter/govmail-quota.prom",
}
# Parallel LMTP deliveries one MX host's Postfix makes to the store (its default
# default_destination_concurrency_limit, left as it is). Dovecot admits this many per user from each
# MX host (lmtp_user_concurrency_limit): a burst to one mailbox is never turned away to the retry queue.
POSTFIX_LMTP_CONCURRENCY = 20
# Ports of govmail's own daemons and of what they stand in front of.
PORTS = {
    "inspector": 11339,  # the attachment inspector, loopback only (rspamd asks it)
    "managesieve": 4190,  # ManageSieve as clients reach it: govmail's guard (RFC 5804's port)
    "managesieve_dovecot": 4191,  # Dovecot's own ManageSieve, loopback only, behind the guard
    # With MX hosts apart from the store (issue 29): the store's LMTP and quota-status on its private
    # address, for them only (Postfix on the mail host itself keeps Dovecot's sockets).
    "lmtp": 24,
    "quota_status": 12340,
    # ... and the store's host receives their mail log there (rsyslog over TCP: the reports count it).
    "mail_log": 5514,
    # Mail Dovecot sends for a user (Sieve redirect, vacation, quota warnings): the mail host's Postfix
    # on its loopback; with stores apart, on its private address too, for them only.
    "sieve_out": 10027,
    # ... and each store apart's doveadm server, for the mail host's doveadm (a command for one of its
    # mailboxes, run on the mail host, runs there: Dovecot's doveadm proxying).
    "doveadm": 24245,
    # What the monitor host scrapes on each host's private address (govmail/services/exporters.py),
    # and what it serves itself on its loopback (govmail/services/monitor.py, `govmail status`).
    "node_exporter": 9100,
    "dovecot_stats": 9900,
    "nginx_exporter": 9113,
    # nginx's stub_status and php-fpm's status page, on the mail host's loopback only (read by
    # prometheus-nginx-exporter and the metrics tool).
    "web_status": 8089,
    "prometheus": 9090,
    "alertmanager": 9093,
    "blackbox": 9115,
}
# The account store on PostgreSQL (`account_store.engine: postgresql`; govmail/services/db.py): Debian 13's
# cluster, its database, and its two login roles: the writer (the host tools: syncs, password changes,
# the daily job) and the reader (Postfix's maps, Dovecot's passdb/userdb: SELECT on the views only).
STORE_PG = {"version": 17, "cluster": "main", "port": 5432, "database": "govmail", "writer": "govmail",
            "reader": "govmail_read",
            # With two db hosts (Patroni): the standby's streaming login and pg_rewind's login.
            "replication": "govmail_replication", "rewind": "govmail_rewind"}
# Two db hosts: Debian's Patroni runs the cluster (its scope is Debian's "<version>-<cluster>", which
# its pg_createcluster/pg_clonecluster scripts read), etcd (three members) keeps its leader key.
PATRONI = {"scope": f"{STORE_PG['version']}-{STORE_PG['cluster']}", "namespace": "/service/",
           "config": f"/etc/patroni/{STORE_PG['version']}-{STORE_PG['cluster']}.yml",
           "unit": f"patroni@{STORE_PG['version']}-{STORE_PG['cluster']}", "api_port": 8008, "api_user": "govmail",
           "etcd_client_port": 2379, "etcd_peer_port": 2380, "etcd_config": "/etc/default/etcd"}


# With two db hosts, how every client of the store notices a primary (or standby) that vanished with
# its host or network: a query on its connection fails within seconds instead of the minutes of TCP's
# own retries, and the client goes on with the other host (libpq settings: host tools, Dovecot, Postfix).
STORE_FAILFAST = {"keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2, "tcp_user_timeout": 5000}


def store_dsn(host: str | list[str], role: str, password: str) -> str:
    """The libpq connection string of the store's `role` (writer | reader) at `host`: what the deploy
    writes for the host tools and what the db host's own check logs in with. Several hosts (two db
    hosts under Patroni): libpq tries them in turn and keeps the one that takes writes."""
    hosts = [host] if isinstance(host, str) else list(host)
    many = len(hosts) > 1
    return (f"host={','.join(hosts)} port={','.join([str(STORE_PG['port'])] * len(hosts))} "
            f"dbname={STORE_PG['database']} user={STORE_PG[role]} password={password} connect_timeout=5"
            # A primary that vanishes fails a write within seconds; libpq then finds the promoted standby.
            + (" target_session_attrs=read-write" + "".join(f" {k}={v}" for k, v in STORE_FAILFAST.items())
               if many else ""))


# Debian 13's PHP: its php-fpm unit (php8.4-fpm) and its configuration under /etc/php/8.4/.
PHP = "8.4"
# The host tools' package directory and its name on the host.
PACKAGE = "govmail_host"
VMAIL_UID = 5000
# bcrypt's cost for every password a person chooses or an administrator sets (the controller's
# passlib and the host's `doveadm pw` both use it); the store counts 10 or more as strong.
BCRYPT_COST = 11
# Each mailbox's last IMAP/POP3 login is the modification time of this file in its home
# (written by the post-login script, read by the daily job and the backup).
LAST_LOGIN_STAMP = ".govmail-last-login"

# The directory document (PATHS["directory"]): top-level keys the controller writes.
DIRECTORY_KEYS = ("version", "province", "domain", "accounts", "policy", "lists", "senders", "former")
# `former`: [old address, new address, end of its transition, end of its forwarding] (unix seconds or
# null): govmail/data/predecessors.py.
# Its `policy` keys, with the value a host tool assumes when a key is absent. The account store
# keeps them in its `meta` table; null removes a key (no limit).
POLICY_DEFAULTS = {
    "user_max_age_days": None,  # password age limits (LC Art. 4.2)
    "admin_max_age_days": None,
    "inactivity_action": "none",  # none | revoke | suspend (DN Art. 7.3, LC Art. 8.1)
    "inactivity_after_months": None,
    "inactivity_notify_agency": 0,
    "inactivity_notify_superior": 0,
    "inactivity_delete_after_months": None,
    "inactivity_article": "",
    "cancelled_keep_months": None,  # purge of cancelled and dropped mailboxes
    "cancelled_article": "",
    "mail_host": None,  # with stores apart: the host whose mailboxes the daily job suspends and deletes
    "change_at_first_login": 0,  # DN Art. 12.1, LC Art. 4.1/6.3/7.3, TN Art. 9.1
    "password_min_length": 8,  # also the data file's defaults (govmail/data/policy.py)
    "password_admin_min_length": 10,
    "password_require": "",
    "password_article": "",
    "password_url": None,
}
# Each account of the document's `accounts` list: keys and defaults.
ACCOUNT_DEFAULTS = {
    "address": None, "name": "", "kind": "person", "quota_mb": None, "role": "user", "status": "active",
    "owner": None, "password_hash": None, "manager": None, "superior": None,
    "store": None,  # with stores apart: the host that holds the mailbox (None: the mail host)
}


class ContractError(Exception):
    pass


# The timers a host should run but does not: enabled, not active, and not skipped by their own
# condition (e.g. ConditionVirtualization=!container). Debian enables a packaged timer at install
# but govmail's install guard (policy-rc.d) refuses its start, so until a reboot logrotate.timer,
# phpsessionclean.timer or roundcube-gc.timer would have no next run. Printed one per line; the
# deploy starts them (govmail/services/base.py) and verify fails while any is listed.
IDLE_TIMERS_COMMAND = (
    # An enabled timer is loaded (timers.target wants it): the loaded, inactive ones are read
    # (`systemctl list-unit-files` took a quarter of a second), then whether each is enabled.
    "for t in $(systemctl list-units --type=timer --all --state=inactive --no-legend --plain | awk '{print $1}'); do "
    "case $t in *@*) continue;; esac; [ \"$(systemctl is-enabled \"$t\" 2>/dev/null)\" = enabled ] || continue; "
    "[ \"$(systemctl show -P ConditionResult \"$t\")\" = no ] && "
    "[ -n \"$(systemctl show -P ConditionTimestampMonotonic \"$t\" | grep -vx 0)\" ] && continue; "
    "echo \"$t\"; done"
)

# The directories govmail configures whose every file is govmail's, a Debian package's, or one the
# data file lists as the host's own (hosts[].local_files): another file dropped there (an rspamd
# override turning DKIM off, a jail.d file widening ignoreip, `mail.* stop` in rsyslog.d, a second
# sshd drop-in) is reported by `govmail verify` (no_foreign_config) and moved by the next deploy to
# QUARANTINE/<time>/<its path>, never deleted. Directory -> the govmail service that reads it.
OWNED_DIRS = {
    "/etc/rspamd/local.d": "rspamd", "/etc/rspamd/override.d": "rspamd", "/etc/rspamd/lua.local.d": "rspamd",
    "/etc/fail2ban/jail.d": "fail2ban", "/etc/rsyslog.d": "base", "/etc/logrotate.d": "logs",
    "/etc/nginx/conf.d": "web", "/etc/nginx/sites-enabled": "web", f"/etc/php/{PHP}/fpm/pool.d": "webmail",
    "/etc/ssh/sshd_config.d": "system",
    # Dovecot reads dovecot.conf alone: Debian's conf.d examples, unread, are moved away (a note stays).
    "/etc/dovecot": "dovecot", "/etc/dovecot/conf.d": "dovecot",
}
QUARANTINE = "/var/lib/govmail/quarantine"


def foreign_files_command(directories, keep) -> str:
    """A shell command printing the files of `directories` (a path or several; not below them) that
    are neither in `keep` nor a Debian package's (shipped by it: in dpkg's file lists; or named by
    its install script: clamav's logrotate files are written by its postinst), one per line. Two
    greps over dpkg's own files for them all (`dpkg-query -S` took half a second)."""
    import shlex

    dirs = [directories] if isinstance(directories, str) else list(directories)
    known = " ".join(shlex.quote(k) for k in sorted(keep)) or "''"
    globs = " ".join(f"{shlex.quote(d)}/* {shlex.quote(d)}/.[!.]*" for d in dirs)
    return ("( t=$(mktemp); for f in " + globs + "; do { [ -f \"$f\" ] || [ -L \"$f\" ]; } || continue; "
            f"for k in {known}; do [ \"$f\" = \"$k\" ] && continue 2; done; "
            "case \"$f\" in *.govmail-new) continue;; esac; printf '%s\\n' \"$f\"; done > \"$t\"; "
            "[ -s \"$t\" ] || { rm -f \"$t\"; exit 0; }; "
            "{ grep -hxF -f \"$t\" /var/lib/dpkg/info/*.list; grep -ohsF -f \"$t\" /var/lib/dpkg/info/*.postinst; } "
            "| sort -u > \"$t.known\"; grep -vxF -f \"$t.known\" \"$t\"; rm -f \"$t\" \"$t.known\"; true )")


# Dovecot's quota as the host reports it (`doveadm -f tab quota get -A`, or `-u ADDRESS`), read by
# the host's report and migration and by the compliance checks: one reader, columns by their header.
QUOTA_COMMAND = "doveadm -f tab quota get -A"


def quota_table(text: str, user: str = "") -> dict:
    """address -> (used KiB, limit KiB or None for no limit) of each mailbox's STORAGE quota, from the
    tab output of QUOTA_COMMAND (`user`: the address, for the output of `quota get -u` that has no
    Username column). Rows it cannot read are left out."""
    lines = text.splitlines()
    if not lines:
        return {}
    head = lines[0].split("\t")
    out = {}
    for row in lines[1:]:
        r = dict(zip(head, row.split("\t"), strict=False))  # a short row reads as missing columns
        who = r.get("Username") or user
        if r.get("Type") != "STORAGE" or not who or not (r.get("Value") or "").isdigit():
            continue
        limit = r.get("Limit") or ""
        out[who] = (int(r["Value"]), int(limit) if limit.isdigit() else None)
    return out


def check_version(doc: dict, kind: str) -> dict:
    """A document of DOCUMENTS as a host tool reads it: refused when its version is not this tool's."""
    want, have = DOCUMENTS[kind], doc.get("version")
    if have != want:
        raise ContractError(f"{PATHS[kind]}: version {have}, this tool reads version {want}: deploy again so the "
                            "host's tools and its documents match")
    return doc


def check_directory(doc: dict) -> dict:
    """The directory document as the host tools read it: its version checked, absent policy keys
    given their defaults. Raises ContractError for a document this tool cannot read."""
    version = doc.get("version", 2)
    if version > VERSION:
        raise ContractError(f"directory document version {version} is newer than this tool's ({VERSION}): "
                            "deploy again so the host gets the tools that read it")
    unknown = sorted(set(doc) - set(DIRECTORY_KEYS))
    if unknown:
        raise ContractError(f"directory document has unknown keys {unknown}")
    policy = dict(POLICY_DEFAULTS)
    policy.update(doc.get("policy") or {})
    accounts = [dict(ACCOUNT_DEFAULTS, **a) for a in doc.get("accounts", [])]
    return dict(doc, policy=policy, accounts=accounts, lists=doc.get("lists", {}), senders=doc.get("senders", {}),
                former=doc.get("former", []))
