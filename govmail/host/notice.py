"""The maintenance and outage notice (BN Art. 13, centre duty 2; TN Art. 16.5): what is wrong and
when service is expected back, shown on the web mail's login page and mailed to every mailbox.

    accounts notice set --until-ts UNIX --until TEXT --sender ADDRESS   (the text on stdin)
    accounts notice clear

The notice is /var/lib/govmail/www/notice.json ({"text", "until", "until_ts", "set"}), written
whole and renamed into place; govmail's Roundcube plugin shows it until `until_ts` or until it is
cleared. The mail goes from postmaster@ to every active mailbox, in batches of undisclosed
recipients. Standard library only.
"""

import json
import os
import time

from . import contract, mail, store

BATCH = 200


def _write(doc):
    path = contract.PATHS["notice"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, ensure_ascii=False)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def recipients(db):
    return [r[0] for r in db.execute("SELECT address FROM accounts WHERE status = 'active' ORDER BY address")]


def set_notice(text, until_ts, until_text, sender):
    db = store.connect()
    _write({"text": text, "until": until_text, "until_ts": int(until_ts), "set": int(time.time())})
    to = recipients(db)
    body = (f"{text}\n\nDự kiến khôi phục / Expected recovery: {until_text}\n\n"
            f"-- \nQuản trị hệ thống thư điện tử / Mail system administrators, {sender}\n")
    sent = 0
    for i in range(0, len(to), BATCH):
        part = to[i:i + BATCH]
        mail.send(mail.message("undisclosed-recipients:;", f"Thông báo / Notice: {text[:60]}", body, sender),
                  sender, part)
        sent += len(part)
    store.audit(db, "notice-set", None, f"until {until_text}; mailed to {sent} mailboxes: {text[:120]}")
    return sent


def clear_notice():
    path = contract.PATHS["notice"]
    existed = os.path.exists(path)
    if existed:
        os.remove(path)
    db = store.connect()
    store.audit(db, "notice-cleared", None, "")
    return existed
