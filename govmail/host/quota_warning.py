#!/usr/bin/python3
"""Quota warning for the owner of a mailbox (installed as /usr/local/lib/govmail/quota-warning).

Dovecot's quota plugin runs it (service quota-warning) with `<percent> <address>` when a mailbox
crosses a warning level. It delivers a short bilingual notice into that mailbox with dovecot-lda,
quota not enforced for this one message, so a full mailbox still gets told it is full.
Python standard library only.
"""

import subprocess
import sys

from . import mail

LDA = "/usr/lib/dovecot/dovecot-lda"


def main(argv):
    if len(argv) != 2:
        print("usage: quota-warning PERCENT ADDRESS", file=sys.stderr)
        return 2
    pct, user = argv
    domain = user.rpartition("@")[2]
    body = (
        f"Hộp thư {user} đã sử dụng {pct}% dung lượng được cấp.\n"
        "Vui lòng xóa bớt thư cũ hoặc thư có tệp đính kèm lớn; khi hộp thư đầy, thư gửi đến sẽ bị từ chối.\n\n"
        f"Your mailbox {user} has used {pct}% of its quota.\n"
        "Please delete old or large messages; when it is full, incoming mail is refused.\n"
    )
    # Delivered by Dovecot's LDA with the quota off: the warning reaches an almost full mailbox.
    msg = mail.message(user, f"Cảnh báo: hộp thư đã dùng {pct}% dung lượng / Mailbox {pct}% full", body,
                       f"postmaster@{domain}")
    r = subprocess.run([LDA, "-d", user, "-o", "quota_enforce=no"], input=msg, capture_output=True)
    if r.returncode != 0:
        print(r.stderr.decode(errors="replace"), file=sys.stderr)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
