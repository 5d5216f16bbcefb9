"""Stores apart behind the mail host's Dovecot proxy (issue 29), as the files say it: the mail host
routes each mailbox of a store apart there (logins, deliveries, doveadm), the store answers the proxy
only and sends its mail through the mail host; a one-host province has none of it. The lab proves
they work (tests/lab/test_several_stores.py)."""

from __future__ import annotations

from govmail.data import load_province
from govmail.host import contract
from govmail.secrets import province_secrets
from govmail.service import Context
from govmail.services import dovecot, postfix, private_ports

MAIL, STORE2 = "mail.lamdong.gov.vn", "store2.lamdong.gov.vn"


def ctx_of(cfg, host, tmp_path):
    addresses = {h.name: f"10.9.0.{i + 2}" for i, h in enumerate(cfg.model.hosts)}
    return Context(cfg, host, tuple(cfg.roles(host)), {}, addresses=addresses,
                   secrets=province_secrets(cfg, tmp_path / "secrets")), addresses


def text(svc, dest) -> str:
    return next(f.content.decode() for f in svc.files if f.dest == dest)


def test_the_mail_host_routes_the_mailboxes_of_a_store_apart_there_and_serves_the_others(tmp_path):
    cfg = load_province("lamdong")
    assert cfg.stores_apart == [STORE2] and cfg.mail_host == MAIL
    ctx, at = ctx_of(cfg, MAIL, tmp_path)
    conf = text(dovecot.service(ctx), "/etc/dovecot/dovecot.conf")
    passdb = next(line for line in conf.splitlines() if "FROM dovecot_passdb" in line)
    # deliveries and doveadm go where the mail is; a login during a move's hold where it is moving to
    where = "CASE WHEN '%{protocol}' IN ('lmtp', 'doveadm') THEN store ELSE login_store END"
    held = "'%{protocol}' = 'lmtp' AND delay_until IS NOT NULL"
    assert f"THEN CASE WHEN {held} THEN '127.0.0.1' ELSE CASE {where} WHEN '{STORE2}' THEN '{at[STORE2]}' END END END AS host" \
        in passdb
    # a refused login is never proxied (it would become a referral naming the store); a delivery during
    # a move's hold is "proxied" to a closed port (LMTP answers 451: it waits in the MX queue)
    assert f"WHEN ({held}) OR ((nologin IS NULL OR '%{{protocol}}' IN ('lmtp', 'doveadm')) AND {where} IN ('{STORE2}')) " \
           "THEN 'y' END AS proxy" in passdb
    assert f"CASE WHEN {held} THEN 9 ELSE CASE '%{{protocol}}' WHEN 'lmtp'" in passdb
    # ... and waits while its mailbox is in a move's last copy (never a delivery: Postfix defers those)
    assert "CASE WHEN '%{protocol}' NOT IN ('lmtp', 'doveadm') THEN delay_until END AS delay_until" in passdb
    assert "pass = %{password}" in conf  # the user's own password goes on; the store checks it again
    # its userdb: its own mailboxes, those being moved here, and those just moved away (the catch-up)
    # ... and, as store2's standby (hosts[].standby), store2's mailboxes too (its copies, a failover)
    assert (f"AND ((store IS NULL OR store = '{MAIL}') OR moving = '{MAIL}' OR moved_from = '{MAIL}' "
            f"OR failed_from = '{MAIL}' OR store = '{STORE2}')") in conf
    assert "lmtp_proxy = yes" in conf and f"doveadm_port = {contract.PORTS['doveadm']}" in conf
    ext = text(dovecot.service(ctx), contract.PATHS["store_dovecot"])
    assert 'doveadm_password = "' in ext  # the secret, in the file only root and Dovecot read
    master = text(postfix.service(ctx), "/etc/postfix/master.cf")
    assert f"{at[MAIL]}:{contract.PORTS['sieve_out']} inet" in master and f"mynetworks = {at[STORE2]}/32" in master
    assert ([contract.PORTS["sieve_out"], contract.PORTS["mail_log"]], [at[STORE2]]) in \
        private_ports.rules(cfg, MAIL, at)


def test_a_store_apart_answers_the_proxy_only_and_holds_only_its_agencies_mailboxes(tmp_path):
    cfg = load_province("lamdong")
    ctx, at = ctx_of(cfg, STORE2, tmp_path)
    conf = text(dovecot.service(ctx), "/etc/dovecot/dovecot.conf")
    assert f"login_trusted_networks = {at[MAIL]}/32" in conf
    assert (f"iterate_query = SELECT \"user\" FROM dovecot_users WHERE (store = '{STORE2}' OR moving = '{STORE2}' "
            f"OR moved_from = '{STORE2}' OR failed_from = '{STORE2}')") in conf
    assert "/var/spool/postfix" not in conf and "service quota-status" not in conf  # no Postfix here
    assert "lmtp_rcpt_check_quota = yes" in conf  # a full mailbox refused at RCPT, through the proxy
    assert f"submission_host = {at[MAIL]}:{contract.PORTS['sieve_out']}" in conf
    # IMAP and POP3 on its private address only, no implicit TLS ports
    imap = conf[conf.index("service imap-login {"):conf.index("service pop3-login {")]
    assert f"listen = {at[STORE2]}" in imap and "port = 0" in imap
    rules = private_ports.rules(cfg, STORE2, at)
    assert rules == [([143, 110, contract.PORTS["lmtp"], contract.PORTS["managesieve"], contract.PORTS["doveadm"]],
                      [at[MAIL]])]


def test_a_province_without_a_store_apart_has_no_proxy(tmp_path):
    cfg = load_province("daknong")
    ctx, _ = ctx_of(cfg, cfg.mail_host, tmp_path)
    conf = text(dovecot.service(ctx), "/etc/dovecot/dovecot.conf")
    assert "proxy" not in conf.replace("haproxy", "") and "store =" not in conf and "doveadm_port" not in conf
    assert "doveadm" not in province_secrets(cfg, tmp_path / "secrets")


def test_a_store_apart_backs_up_into_a_repository_of_its_own_with_a_key_of_its_own(tmp_path):
    import json

    from govmail.services import backup, backup_host

    cfg = load_province("lamdong")
    ctx, _ = ctx_of(cfg, STORE2, tmp_path)
    settings = json.loads(text(backup.service(ctx), "/etc/govmail/backup/backup.json"))
    assert settings["repo"].endswith(f"/srv/govmail-backup/{STORE2}") and settings["store"] == STORE2
    mine = text(backup.service(ctx), "/etc/govmail/backup/id_ed25519")
    mail_ctx, _ = ctx_of(cfg, MAIL, tmp_path)
    assert mine != text(backup.service(mail_ctx), "/etc/govmail/backup/id_ed25519")
    assert "store" not in json.loads(text(backup.service(mail_ctx), "/etc/govmail/backup/backup.json"))
    bh_ctx, _ = ctx_of(cfg, cfg.backup_host, tmp_path)
    keys = text(backup_host.service(bh_ctx), "/srv/govmail-backup/.ssh/authorized_keys").splitlines()
    assert [k.split("--restrict-to-repository ")[1].split('"')[0] for k in keys] == [
        f"/srv/govmail-backup/{MAIL}", f"/srv/govmail-backup/{STORE2}"]
    assert all(k.startswith('command="borg serve --append-only ') and ",restrict ssh-ed25519 " in k for k in keys)
    prune = text(backup_host.service(bh_ctx), "/etc/systemd/system/govmail-prune.service")
    assert prune.count("ExecStart=/usr/bin/borg prune") == 2
