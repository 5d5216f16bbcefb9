#!/bin/sh
# govmail post-login script (installed as /usr/local/lib/govmail/postlogin). Dovecot runs it as vmail
# after every successful IMAP or POP3 login, then the session itself. It stamps the mailbox's last
# login, which the daily life-cycle job reads (inactivity rules: DN Art. 7.3, LC Art. 8.1).
case "$USER" in
  *@*)
    home="/var/vmail/${USER#*@}/${USER%@*}"
    mkdir -p "$home" 2>/dev/null && touch "$home/.govmail-last-login" 2>/dev/null
    ;;
esac
exec "$@"
