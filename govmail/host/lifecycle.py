"""The daily life-cycle job of the account store (govmail-daily.timer).

Mails a warning 14 days before a password expires (LC Art. 4.2), once per password; suspends
mailboxes without login for the province's period and notifies the managing agency (DN Art. 7.3,
LC Art. 8.1); deletes suspended mailboxes the province's period after the notice and notifies the
agency and its superior (LC Art. 8.1); purges cancelled mailboxes after the province's retention;
lifts a suspension on request (LC Art. 8.3). The periods are the province's, from the store's
`meta` (the directory document's policy). Standard library only.
"""

import datetime
import json
import os
import shutil
import sys
import time

from . import contract, mail, store, store_sql

HOMES = contract.PATHS["vmail"]
STAMP = contract.LAST_LOGIN_STAMP
MONTH = 30.44 * 86400
WARN_DAYS = 14


def daily(now=None, dry_run=False, db_path=None, held_by=None, domain=None):
    """The daily job: warn by mail before a password expires (LC Art. 4.2). Idempotent: one
    warning per password. `now` (unix time) lets tests move the clock. On a store apart
    (`held_by`: its name; `domain`: the province's), only the inactivity and deletion rules, for the
    mailboxes it holds (their last logins are on its disk); the mail host warns of expiries."""
    now = int(now or time.time())
    db = store.connect(db_path)
    domain = domain or store.read_directory()["domain"]
    here = HERE if not held_by else "store = '" + held_by.replace("'", "''") + "'"
    if held_by:
        actions = inactivity(db, domain, now, dry_run, here) + lifecycle(db, domain, now, dry_run, here)
        _summary(actions, domain, now, dry_run)
        return
    due = db.execute(
        "SELECT a.address, a.password_set + l.max_age AS expires FROM accounts a "
        "JOIN password_limits l ON l.address = a.address "
        "WHERE a.status = 'active' AND a.password_set IS NOT NULL AND l.max_age > 0 "
        "AND ? >= a.password_set + l.max_age - ? AND ? < a.password_set + l.max_age "
        "AND NOT EXISTS (SELECT 1 FROM notices n WHERE n.address = a.address AND n.kind = 'expiry' "
        "                AND n.key = CAST(a.password_set AS TEXT))",
        (now, WARN_DAYS * 86400, now),
    ).fetchall()
    actions = []
    for address, expires in due:
        day = datetime.datetime.fromtimestamp(expires).strftime("%d/%m/%Y")
        actions.append({"action": "warn-expiry", "address": address, "expires": day})
        if dry_run:
            continue
        mail.send_mail(
            address,
            f"Mật khẩu hộp thư sắp hết hạn ({day}) / Your mail password expires on {day}",
            f"Mật khẩu của hộp thư {address} sẽ hết hạn ngày {day}. Hãy đổi mật khẩu trước ngày đó; "
            "sau ngày đó việc đăng nhập sẽ bị từ chối.\n\n"
            f"The password of {address} expires on {day}. Change it before then; after that day, "
            "login is refused.\n\n"
            f"Đổi mật khẩu / Change it at: {store.meta_value(db, 'password_url', 'govmail passwd')}\n",
            f"postmaster@{domain}",
        )
        db.execute("INSERT INTO notices VALUES (?, 'expiry', ?, ?)",
                   (address, str(db.execute("SELECT password_set FROM accounts WHERE address=?",
                                            (address,)).fetchone()[0]), now))
        store.audit(db, "warn-expiry", address, f"password expires {day}")  # real time: when it was sent
    actions += inactivity(db, domain, now, dry_run)
    actions += lifecycle(db, domain, now, dry_run)
    _summary(actions, domain, now, dry_run)


def _summary(actions, domain, now, dry_run):
    if actions and not dry_run:
        lines = "\n".join(f"{a['action']}\t{a['address']}" for a in actions)
        mail.send_mail(f"postmaster@{domain}", f"govmail: {len(actions)} account actions today / hôm nay",
                  f"Việc đã làm / Done by the daily account job:\n\n{lines}\n\n"
                  "Nhật ký / Audit log: /usr/local/lib/govmail/accounts audit\n", f"postmaster@{domain}")
    print(json.dumps({"dry_run": dry_run, "now": now, "actions": actions}, ensure_ascii=False))



# The daily job suspends and deletes only the mailboxes on this host's disk (store_sql.HERE): a
# mailbox of a store apart, whose last login this host cannot see, is never suspended for want of
# one; that store's own daily job (`accounts daily --held-by`) keeps it.
HERE = store_sql.HERE


def last_login(address, created):
    """Unix time of the mailbox's last IMAP/POP3 login (its post-login stamp), or its creation."""
    local, _, dom = address.partition("@")
    try:
        return max(created, int(os.stat(os.path.join(HOMES, dom, local, STAMP)).st_mtime))
    except FileNotFoundError:
        return created



def notify(to, subject, body, domain):
    for addr in dict.fromkeys(a for a in to if a):  # each once, in order
        mail.send_mail(addr, subject, body, f"postmaster@{domain}")



def inactivity(db, domain, now, dry_run, here=HERE):
    """Suspend mailboxes without login for the province's period (DN Art. 7.3, LC Art. 8.1) and
    notify the managing unit (LC Art. 8.1)."""
    meta = dict(db.execute("SELECT key, value FROM meta"))
    action, months = meta.get("inactivity_action", "none"), meta.get("inactivity_after_months")
    if action == "none" or not months:
        return []
    article = meta.get("inactivity_article", "")
    verb = {"revoke": ("thu hồi", "revoked"), "suspend": ("tạm khóa", "suspended")}.get(action, ("tạm khóa", "suspended"))
    limit = float(months) * MONTH
    out = []
    rows = db.execute(f"SELECT address, manager, created FROM accounts WHERE status = 'active' AND {here}").fetchall()
    for address, manager, created in rows:
        last = last_login(address, created)
        if now - last <= limit:
            continue
        since = datetime.datetime.fromtimestamp(last).strftime("%d/%m/%Y")
        item = {"action": action, "address": address, "last_login": since}
        if manager and manager != address and meta.get("inactivity_notify_agency") == "1":
            item["notify"] = [manager]
        out.append(item)
        if dry_run:
            continue
        db.execute("UPDATE accounts SET status = 'suspended', status_since = ?, updated = ? WHERE address = ?",
                   (now, int(time.time()), address))
        store.audit(db, "suspended", address, f"{verb[1]}: no login since {since} ({months} months: {article})")
        if item.get("notify"):
            later = meta.get("inactivity_delete_after_months")
            notify(
                item["notify"],
                f"Thông báo {verb[0]} hộp thư {address} / Mailbox {address} {verb[1]}",
                f"Hộp thư {address} không được đăng nhập từ ngày {since} (quá {months} tháng) nên đã bị {verb[0]} "
                f"theo {article or 'quy chế'}. Thư vẫn được lưu giữ"
                + (f"; sau {later} tháng kể từ thông báo này, hộp thư sẽ bị xóa" if later else "")
                + ". Cơ quan có thể đề nghị khôi phục hộp thư.\n\n"
                f"The mailbox {address} has had no login since {since} (over {months} months) and is {verb[1]} "
                f"under {article or 'the regulation'}. Its mail is kept"
                + (f"; {later} months after this notice the mailbox is deleted" if later else "")
                + ". The agency may ask for it to be restored.\n",
                domain,
            )
            store.audit(db, "notice-sent", address, f"{verb[1]} notice to {', '.join(item['notify'])}")
    return out



def home_of(address):
    local, _, dom = address.partition("@")
    if not local or not dom or "/" in address or local.startswith("."):
        raise ValueError(f"unsafe address {address!r}")
    return os.path.join(HOMES, dom, local)



def delete_mail(db, address, now, why):
    """Remove the mailbox's mail and mark it deleted; the row stays, so the audit log and a later
    re-creation know it existed."""
    home = home_of(address)
    store.kick(address)
    if os.path.isdir(home):
        shutil.rmtree(home)
    db.execute("UPDATE accounts SET status = 'deleted', status_since = ?, password = NULL, password_set = NULL, "
               "updated = ? WHERE address = ?", (now, int(time.time()), address))
    store.audit(db, "deleted", address, why)



def lifecycle(db, domain, now, dry_run, here=HERE):
    """Delete what the province's periods say may go: suspended mailboxes the set number of months
    after the notice (LC Art. 8.1, with the agency and its superior notified; DN Art. 7.3), and
    cancelled or dropped mailboxes after the retention of cancelled mail (policy.cancellation)."""
    meta = dict(db.execute("SELECT key, value FROM meta"))
    out = []
    rules = []
    if meta.get("inactivity_delete_after_months"):
        rules.append(("suspended", float(meta["inactivity_delete_after_months"]), meta.get("inactivity_article", "")))
    if meta.get("cancelled_keep_months"):
        keep = float(meta["cancelled_keep_months"])
        rules += [("cancelled", keep, meta.get("cancelled_article", "")), ("removed", keep, meta.get("cancelled_article", ""))]
    for status, months, article in rules:
        rows = db.execute("SELECT address, manager, superior, COALESCE(status_since, updated) FROM accounts "
                          f"WHERE status = ? AND ? - COALESCE(status_since, updated) > ? AND {here}",
                          (status, now, months * MONTH)).fetchall()
        for address, manager, superior, since_ts in rows:
            since = datetime.datetime.fromtimestamp(since_ts).strftime("%d/%m/%Y")
            item = {"action": "delete", "address": address, "was": status, "since": since}
            to = []
            if status == "suspended":
                if meta.get("inactivity_notify_agency") == "1" and manager and manager != address:
                    to.append(manager)
                if meta.get("inactivity_notify_superior") == "1" and superior and superior != address:
                    to.append(superior)
            if to:
                item["notify"] = to
            out.append(item)
            if dry_run:
                continue
            delete_mail(db, address, now, f"{status} since {since}, kept {months:g} months ({article})")
            if to:
                notify(
                    to,
                    f"Thông báo xóa hộp thư {address} / Mailbox {address} deleted",
                    f"Hộp thư {address} đã bị tạm khóa từ ngày {since} do lâu không sử dụng và sau {months:g} "
                    f"tháng kể từ thông báo đã bị xóa khỏi hệ thống theo {article or 'quy chế'}.\n\n"
                    f"The mailbox {address}, suspended on {since} for lack of use, has been deleted "
                    f"{months:g} months after the notice, under {article or 'the regulation'}.\n",
                    domain,
                )
                store.audit(db, "notice-sent", address, f"deletion notice to {', '.join(to)}")
    return out



def restore(address, db_path=None):
    """Lift a suspension (LC Art. 8.3): login works again; the last-login clock starts from now.
    A deleted mailbox is re-created, empty and without a password (set one, or the next deploy
    issues one)."""
    db = store.connect(db_path)
    now = int(time.time())
    row = db.execute("SELECT status FROM accounts WHERE address = ?", (address,)).fetchone()
    if row is None or row[0] not in ("suspended", "deleted"):
        sys.exit(f"accounts: {address} is {'not in the account store' if not row else row[0] + ', not suspended or deleted'}")
    db.execute("UPDATE accounts SET status = 'active', status_since = NULL, created = CASE WHEN created > ? THEN created "
               "ELSE ? END, updated = ? WHERE address = ?", (now, now, now, address))
    store.audit(db, "restored" if row[0] == "suspended" else "re-created", address,
          "suspension lifted" if row[0] == "suspended" else "re-created empty after deletion")
    print(json.dumps({"address": address, "status": "active", "was": row[0]}))


