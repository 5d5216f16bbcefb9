"""What each province's templates render: the values the regulation asks for reach the config."""

from email.message import EmailMessage
from pathlib import Path

import pytest

from govmail.data import MiB, available_provinces, load_province
from govmail.data.docs import data_file_reference
from govmail.render import render

ROOT = Path(__file__).resolve().parents[2]
PROVINCES = available_provinces()


def message_with_attachment(mib: int) -> bytes:
    m = EmailMessage()
    m["From"] = "a@daknong.gov.vn"
    m["To"] = "b@daknong.gov.vn"
    m["Subject"] = "Tệp đính kèm"
    m.set_content("Kính gửi, xin gửi tệp đính kèm.")
    m.add_attachment(b"\0" * (mib * MiB), maintype="application", subtype="pdf", filename="baocao.pdf")
    return m.as_bytes().replace(b"\n", b"\r\n")


def test_all_four_provinces_are_shipped():
    assert set(PROVINCES) >= {"bacninh", "daknong", "laichau", "thainguyen"}


@pytest.mark.parametrize("key", PROVINCES)
def test_postfix_main_cf_carries_domain_size_limit_and_tls_only_auth(key):
    cfg = load_province(key)
    main = render("postfix/main.cf.j2", cfg)
    assert f"virtual_mailbox_domains = {cfg.domain}\n" in main
    assert f"message_size_limit = {cfg.message_size_limit}\n" in main
    assert "smtputf8_enable = yes" in main and "smtpd_tls_auth_only = yes" in main
    assert "check_policy_service unix:private/quota-status" in main
    assert f"virtual_mailbox_maps = proxy:{'pgsql' if cfg.store_engine == 'postgresql' else 'sqlite'}:" in main
    master = render("postfix/master.cf.j2", cfg)
    assert "submission inet" in master and "smtpd_tls_wrappermode=yes" in master


@pytest.mark.parametrize("key", PROVINCES)
def test_dovecot_conf_carries_the_default_quota_and_refuses_cleartext(key):
    cfg = load_province(key)
    conf = render("dovecot/dovecot.conf.j2", cfg)
    assert f"quota_storage_size = {cfg.policy.quota.default_mb}M" in conf
    assert "auth_allow_cleartext = no" in conf and "ssl = required" in conf
    for pct in cfg.policy.quota.warn_percent:
        assert f"quota_storage_percentage = {pct}" in conf


@pytest.mark.parametrize("key", PROVINCES)
def test_the_directory_sent_to_the_host_carries_every_list_and_the_role_addresses(key):
    from govmail.services.accounts import directory_document

    cfg = load_province(key)
    doc = directory_document(cfg)
    for address, members in cfg.aliases.items():
        assert doc["lists"][address] == members
    assert doc["lists"][f"postmaster@{cfg.domain}"] == [cfg.postmaster]
    assert doc["lists"][f"abuse@{cfg.domain}"] == [cfg.postmaster]
    assert [a["address"] for a in doc["accounts"]] == [a.address for a in cfg.accounts]


def test_dak_nong_internal_list_reaches_every_active_person():
    cfg = load_province("daknong")
    people = {a.address for a in cfg.accounts if a.kind == "person" and a.status == "active"}
    assert set(cfg.aliases["internal@daknong.gov.vn"]) == people


@pytest.mark.parametrize("key", [p for p in PROVINCES if load_province(p).policy.attachment.max_mb])
def test_size_limit_admits_the_attachment_limit_and_refuses_one_mib_more(key):
    cfg = load_province(key)
    n = cfg.policy.attachment.max_mb
    assert len(message_with_attachment(n)) <= cfg.message_size_limit
    assert len(message_with_attachment(n + 1)) > cfg.message_size_limit


@pytest.mark.parametrize("key", PROVINCES)
def test_every_layer_that_counts_in_mib_takes_a_whole_message_postfix_takes(key):
    """One size rule (cfg.message_size_mib): clamd scans, PHP uploads and Roundcube sends at least
    what Postfix accepts, and nginx and PHP take a web request carrying it."""
    import re

    from govmail.service import Context
    from govmail.services import clamav, web, webmail

    cfg = load_province(key)
    ctx = Context(cfg, cfg.mail_host, ("mail",), {})

    def files(mod) -> str:
        return "\n".join(f.content.decode() for f in mod.service(ctx).files if isinstance(f.content, bytes))

    def mib(pattern: str, text: str) -> int:
        return int(re.search(pattern, text).group(1))

    php_rc = files(webmail)
    upload, post = mib(r"upload_max_filesize\] = (\d+)M", php_rc), mib(r"post_max_size\] = (\d+)M", php_rc)
    sent = mib(r"max_message_size'\] = '(\d+)M'", php_rc)
    body = mib(r"client_max_body_size (\d+)m;", files(web))
    assert upload * MiB >= cfg.message_size_limit and sent == upload == clamav.stream_max_mb(cfg)
    assert body == post >= upload + 8


def test_data_file_reference_is_current():
    assert (ROOT / "docs" / "data-file.md").read_text() == data_file_reference(), (
        "docs/data-file.md is stale: run `govmail schema > docs/data-file.md`"
    )


def test_every_key_of_the_data_file_reference_is_described():
    rows = [line.split("|") for line in data_file_reference().splitlines() if line.startswith("| `")]
    bare = [cols[1].strip() for cols in rows if not cols[4].strip()]
    assert rows and not bare, f"keys without a description in govmail/data/schema.py: {bare}"


def test_fail2ban_never_bans_the_lab_controller_but_bans_everyone_else_on_real_hosts():
    from govmail.service import Context
    from govmail.services import fail2ban
    from govmail.targets import LabTarget, RealHosts

    cfg = load_province("daknong")

    def jail(target) -> str:
        ctx = Context(cfg, cfg.mail_host, ("mail",), {}, trusted_clients=target.trusted_clients)
        [f] = [f for f in fail2ban.service(ctx).files if f.dest.endswith("jail.d/govmail.local")]
        return f.content.decode()

    lab, real = jail(LabTarget()), jail(RealHosts())
    assert "ignoreip = 127.0.0.1/8 ::1 10.77.0.1\n" in lab and "ignoreip = 127.0.0.1/8 ::1\n" in real
    assert "maxretry = 5" in real and "bantime = 60m" in real and "ssh" not in real.split("[DEFAULT]")[1]


def test_every_host_gets_sshd_keys_only_in_a_drop_in_that_wins_over_those_beside_it():
    from govmail.service import Context
    from govmail.services import SERVICES, for_roles, system

    cfg = load_province("laichau")
    assert all(for_roles((role,))[0] == "system" for role in ["mail", *SERVICES])  # first on every host, whatever its role
    svc = system.service(Context(cfg, cfg.mail_host, ("mail",), {}))
    [f] = svc.files
    text = f.content.decode()
    # sshd keeps the first value it reads, drop-ins in name order: 00- comes before any other.
    assert f.dest == "/etc/ssh/sshd_config.d/00-govmail.conf"
    for line in ("PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
                 "AuthenticationMethods publickey"):
        assert f"\n{line}\n" in text
    assert "sshd -t" in svc.validator.command and svc.actions["reload"] == "systemctl reload ssh"
