"""Bad data is refused before any host is touched, with file, line, key path, value and what is allowed."""

import shutil
from pathlib import Path

import pytest
import yaml

from govmail.data import DataError, available_provinces, load_province

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "group_data"


def copy_province(tmp_path, key, edit=None, text_edit=None, name=None):
    shutil.copy(DATA / "defaults.yml", tmp_path / "defaults.yml")
    text = (DATA / f"{key}.yml").read_text()
    if text_edit:
        text = text_edit(text)
    if edit:
        data = yaml.safe_load(text)
        edit(data)
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    dest = tmp_path / f"{name or key}.yml"
    dest.write_text(text)
    return dest


def problems(path):
    with pytest.raises(DataError) as e:
        load_province(path)
    return e.value.problems


@pytest.mark.parametrize("key", available_provinces())
def test_shipped_province_data_is_valid(key):
    cfg = load_province(key)
    assert cfg.accounts and cfg.domain.endswith(".gov.vn")


def test_unknown_key_is_refused_with_the_allowed_keys(tmp_path):
    f = copy_province(tmp_path, "daknong", text_edit=lambda t: t.replace("    max_mb: 500\n", "    max_mb: 500\n    maxx_mb: 3\n"))
    [p] = problems(f)
    assert p.path == "policy.quota.maxx_mb"
    assert "unknown key 'maxx_mb'" in p.message and "max_mb" in p.message and "default_mb" in p.message
    assert p.line == f.read_text().splitlines().index("    maxx_mb: 3") + 1
    assert str(p).startswith(f"{f}:{p.line}: policy.quota.maxx_mb:") or str(p).startswith(f"{f.name}")


def test_wrong_type_is_refused(tmp_path):
    f = copy_province(tmp_path, "daknong", text_edit=lambda t: t.replace("default_mb: 500", "default_mb: lots"))
    [p] = problems(f)
    assert p.path == "policy.quota.default_mb" and "'lots'" in p.message and "integer" in p.message


def test_dak_nong_mailbox_of_2_gb_is_refused_citing_art_5_2(tmp_path):
    def edit(d):
        d["directory"]["people"][3]["quota_mb"] = 2048

    [p] = problems(copy_province(tmp_path, "daknong", edit=edit))
    assert p.path == "directory.people[3].quota_mb"
    assert "2048 is above the province's maximum" in p.message and "DN Art. 5.2" in p.message
    assert "..500 MiB" in p.message


def test_thai_nguyen_mailbox_of_500_mb_is_refused_citing_art_3_7(tmp_path):
    def edit(d):
        d["directory"]["people"][5]["quota_mb"] = 500

    [p] = problems(copy_province(tmp_path, "thainguyen", edit=edit))
    assert p.path == "directory.people[5].quota_mb"
    assert "500 is below the province's minimum" in p.message and "TN Art. 3.7" in p.message


def test_duplicate_address_is_refused_naming_the_first_use(tmp_path):
    def edit(d):
        d["directory"]["people"][7]["address"] = d["directory"]["people"][4]["address"]

    [p] = problems(copy_province(tmp_path, "daknong", edit=edit))
    assert p.path == "directory.people[7].address"
    assert "duplicate address" in p.message and "directory.people[4].address" in p.message


def test_a_list_may_not_take_a_role_address_of_the_postmaster(tmp_path):
    def edit(d):
        d["directory"]["lists"][0]["address"] = "root@daknong.gov.vn"

    [p] = problems(copy_province(tmp_path, "daknong", edit=edit))
    assert p.path == "directory.lists[0].address"
    assert "role address" in p.message and "postmaster@, abuse@, root@" in p.message


def test_address_outside_the_domain_is_refused(tmp_path):
    def edit(d):
        d["directory"]["people"][1]["address"] = "haunv.stnmt@gmail.com"

    [p] = problems(copy_province(tmp_path, "daknong", edit=edit))
    assert p.path == "directory.people[1].address"
    assert "outside the province's domain" in p.message and "@daknong.gov.vn" in p.message


def test_address_with_diacritics_is_refused(tmp_path):
    def edit(d):
        d["directory"]["people"][1]["address"] = "hậunv.stnmt@daknong.gov.vn"

    [p] = problems(copy_province(tmp_path, "daknong", edit=edit))
    assert "no diacritics" in p.message


def test_list_member_that_does_not_exist_is_refused(tmp_path):
    def edit(d):
        d["directory"]["lists"][0]["members"] = ["nobody.stnmt@daknong.gov.vn"]

    [p] = problems(copy_province(tmp_path, "thainguyen" if False else "daknong", edit=edit))
    assert p.path == "directory.lists[0].members[0]"
    assert "'nobody.stnmt@daknong.gov.vn' is not a mailbox or list" in p.message


def test_person_of_an_unknown_agency_is_refused(tmp_path):
    def edit(d):
        d["directory"]["people"][2]["agency"] = "sxyz"

    [p] = problems(copy_province(tmp_path, "daknong", edit=edit))
    assert p.path == "directory.people[2].agency" and "stnmt" in p.message


def test_malformed_yaml_reports_its_line(tmp_path):
    f = copy_province(tmp_path, "daknong", text_edit=lambda t: t.replace("  quota:\n", "  quota: [\n", 1))
    [p] = problems(f)
    assert "malformed YAML" in p.message and p.line is not None
    assert abs(p.line - f.read_text().splitlines().index("  quota: [") - 1) <= 6


def test_duplicate_yaml_key_is_refused(tmp_path):
    f = copy_province(tmp_path, "daknong", text_edit=lambda t: t.replace("    max_mb: 500\n", "    max_mb: 500\n    max_mb: 5000\n"))
    [p] = problems(f)
    assert "duplicate key" in p.message and p.path == "policy.quota.max_mb"


def test_policy_value_without_an_article_is_refused(tmp_path):
    def edit(d):
        d["policy"]["attachment"]["article"] = "because"

    [p] = problems(copy_province(tmp_path, "daknong", edit=edit))
    assert p.path == "policy.attachment.article" and "DN Art. 5.2" in p.message


def test_all_problems_are_reported_at_once(tmp_path):
    def edit(d):
        people = d["directory"]["people"]
        people[3]["quota_mb"] = 2048
        people[7]["address"] = people[4]["address"]
        people[1]["address"] = "x@gmail.com"
        d["directory"]["lists"][0]["members"] = ["ghost@daknong.gov.vn"]
        d["policy"]["quota"]["maxx_mb"] = 3

    found = problems(copy_province(tmp_path, "daknong", edit=edit))
    assert {p.path for p in found} >= {
        "policy.quota.maxx_mb",
        "directory.people[3].quota_mb", "directory.people[7].address", "directory.people[1].address",
        "directory.lists[0].members[0]",
    }


def test_type_errors_are_all_reported_at_once(tmp_path):
    def edit(d):
        d["policy"]["quota"]["default_mb"] = "lots"
        d["directory"]["people"][0]["role"] = "boss"
        d["surprise"] = 1

    found = problems(copy_province(tmp_path, "daknong", edit=edit))
    paths = {p.path for p in found}
    assert {"policy.quota.default_mb", "directory.people[0].role", "surprise"} <= paths
    role = next(p for p in found if p.path == "directory.people[0].role")
    assert "'user'" in role.message and "'admin'" in role.message


def test_a_fifth_province_needs_only_a_data_file(tmp_path):
    def edit(d):
        d["province"] = "quangnam"
        d["name"] = "Quảng Nam"
        d["domain"] = "quangnam.gov.vn"
        d["hosts"] = [{"name": "mail.quangnam.gov.vn", "roles": ["mail"]}]
        text = yaml.safe_dump(d["directory"], allow_unicode=True)
        d["directory"] = yaml.safe_load(text.replace("daknong.gov.vn", "quangnam.gov.vn"))

    f = copy_province(tmp_path, "daknong", edit=edit, name="quangnam")
    cfg = load_province(f)
    assert cfg.mail_host == "mail.quangnam.gov.vn" and cfg.policy.quota.max_mb == 500
    from govmail.render import render

    assert "virtual_mailbox_domains = quangnam.gov.vn" in render("postfix/main.cf.j2", cfg)


def test_tls_certificate_without_key_or_missing_file_is_refused(tmp_path):
    def edit(d):
        d["tls"] = {"certificate": "certs/mail.pem", "key": None}

    found = problems(copy_province(tmp_path, "daknong", edit=edit))
    msgs = " | ".join(f"{p.path}: {p.message}" for p in found)
    assert "give both `certificate` and `key`" in msgs and "certs/mail.pem': no such file" in msgs


def make_certificate(directory: Path, names, days=30, other_key=False):
    """A self-signed certificate and its key as PEM files in `directory` (cert.pem, key.pem)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key, wrong = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=days)) if days > 0 else (
        now - datetime.timedelta(days=60), now + datetime.timedelta(days=days))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes((wrong if other_key else key).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def test_provided_tls_certificate_is_accepted_when_it_parses_matches_its_key_and_covers_the_host(tmp_path):
    make_certificate(tmp_path / "certs", ["mail.daknong.gov.vn"])
    (tmp_path / "certs" / "cert.pem").rename(tmp_path / "certs" / "mail.pem")
    (tmp_path / "certs" / "key.pem").rename(tmp_path / "certs" / "mail.key")

    def edit(d):
        d["tls"] = {"certificate": "certs/mail.pem", "key": "certs/mail.key"}

    from govmail.data import tls_path

    cfg = load_province(copy_province(tmp_path, "daknong", edit=edit))
    assert tls_path(cfg, "certificate") == tmp_path / "certs" / "mail.pem"


def test_a_host_cannot_back_itself_up_and_there_is_at_most_one_backup_host(tmp_path):
    def edit(d):
        d["hosts"][0]["roles"] = ["mail", "backup"]
        d["hosts"].append({"name": "backup2.daknong.gov.vn", "roles": ["backup"]})

    found = {(p.path, p.message) for p in problems(copy_province(tmp_path, "daknong", edit))}
    assert ("hosts", "3 hosts have role 'backup'; at most one is supported") in found
    assert ("hosts[0].roles", "a host cannot back itself up: give `backup` to another host") in found


def test_a_backup_schedule_must_be_a_systemd_calendar_expression(tmp_path):
    def edit(d):
        d["policy"]["backup"]["schedule"] = "02:30; rm -rf /"

    [p] = problems(copy_province(tmp_path, "daknong", edit))
    assert p.path == "policy.backup.schedule" and "OnCalendar" in p.message


def test_the_superior_told_of_deletions_must_be_in_the_directory(tmp_path):
    def edit(d):
        d["policy"]["inactivity"]["superior"] = "nobody@laichau.gov.vn"

    [p] = problems(copy_province(tmp_path, "laichau", edit))
    assert p.path == "policy.inactivity.superior" and "not a mailbox or list" in p.message


def test_managers_and_superiors_follow_the_directory():
    cfg = load_province("laichau")
    person = cfg.account("haunv.stnmt@laichau.gov.vn")
    assert (person.manager, person.superior) == ("stnmt@laichau.gov.vn", "ubnd@laichau.gov.vn")
    dept = cfg.account("ttqt.stnmt@laichau.gov.vn")
    assert (dept.manager, dept.superior) == ("stnmt@laichau.gov.vn", "ubnd@laichau.gov.vn")
    agency = cfg.account("stnmt@laichau.gov.vn")
    assert (agency.manager, agency.superior) == ("ubnd@laichau.gov.vn", None)


def test_a_list_member_outside_the_state_domains_is_refused_with_the_forwarding_article(tmp_path):
    def edit(d):
        d["directory"]["lists"][0]["members"].append("canbo@gmail.com")

    [p] = problems(copy_province(tmp_path, "laichau", edit=edit))
    assert p.path.startswith("directory.lists[0].members[")
    assert "'canbo@gmail.com' is not in a state domain" in p.message and "LC Art. 12.5" in p.message


def test_a_list_member_in_another_state_domain_is_a_forward_that_is_allowed(tmp_path):
    def edit(d):
        d["directory"]["lists"][0]["members"].append("vanphong@bacninh.gov.vn")

    cfg = load_province(copy_province(tmp_path, "laichau", edit=edit))
    assert "vanphong@bacninh.gov.vn" in cfg.aliases[cfg.model.directory.lists[0].address]


def test_state_domains_accept_exact_names_and_wildcards_only(tmp_path):
    def edit(d):
        d["policy"]["forwarding"]["state_domains"] = ["*.gov.vn", "Gmail.com"]

    [p] = problems(copy_province(tmp_path, "laichau", edit=edit))
    assert p.path == "policy.forwarding.state_domains" and "lower-case domain" in p.message


def test_a_yaml_merge_brings_in_keys_and_keys_beside_it_override_them(tmp_path):
    """`<<: *base` then a key is valid YAML (the key overrides the merged one), not a duplicate key."""
    logs = "  logs:\n    article: DN Art. 11.2.e\n    retention_months: 12\n"

    def text_edit(t):
        assert logs in t
        return t.replace(logs, "  logs:\n    <<: *twice\n    retention_months: 12\n").replace(
            "policy:\n", "policy:\n  cancellation: &twice\n    article: DN Art. 11.2.e\n    keep_months: 24\n", 1)

    f = copy_province(tmp_path, "daknong", text_edit=text_edit)
    found = [f"{p.path}: {p.message}" for p in problems(f)]
    # The merge brought `keep_months` into logs, where it is not a key: reported at the merging line.
    assert found == ["policy.logs.keep_months: unknown key 'keep_months'; allowed here: article, retention_months"]
    f.write_text(f.read_text().replace("    keep_months: 24\n", "", 1))
    cfg = load_province(f, cache=False)
    assert cfg.policy.logs.article == "DN Art. 11.2.e" and cfg.policy.logs.retention_months == 12


@pytest.mark.parametrize("fault,expect", [
    (dict(other_key=True), "tls.key: does not match the certificate"),
    (dict(days=-1), "tls.certificate: expired on"),
    (dict(names=["mail.elsewhere.gov.vn"]), "tls.certificate: does not cover the mail host mail.daknong.gov.vn"),
])
def test_a_tls_certificate_that_does_not_fit_the_host_is_refused(tmp_path, fault, expect):
    names = fault.pop("names", ["mail.daknong.gov.vn"])
    make_certificate(tmp_path / "certs", names, **fault)

    def edit(d):
        d["tls"] = {"certificate": "certs/cert.pem", "key": "certs/key.pem"}

    found = [f"{p.path}: {p.message}" for p in problems(copy_province(tmp_path, "daknong", edit=edit))]
    assert len(found) == 1 and found[0].startswith(expect), found


def test_a_merged_provinces_certificate_must_cover_the_old_mail_names_too(tmp_path):
    """Lâm Đồng's users of Đắk Nông and Bình Thuận keep mail.daknong.gov.vn in their clients: a
    certificate for the merged host alone would fail them all once the old names point here."""
    make_certificate(tmp_path / "certs", ["mail.lamdong.gov.vn"])

    def edit(d):
        d["tls"] = {"certificate": "certs/cert.pem", "key": "certs/key.pem"}

    found = [f"{p.path}: {p.message}" for p in problems(copy_province(tmp_path, "lamdong", edit=edit))]
    assert len(found) == 2 and found[0].startswith(
        "tls.certificate: does not cover mail.daknong.gov.vn, daknong.gov.vn, mail.binhthuan.gov.vn, binhthuan.gov.vn, "
        "the predecessors' mail names"), found
    assert found[1].startswith("tls.certificate: does not cover the MX host mx2.lamdong.gov.vn"), found
    make_certificate(tmp_path / "certs", ["mail.lamdong.gov.vn", "mail.daknong.gov.vn", "daknong.gov.vn",
                                          "*.binhthuan.gov.vn", "binhthuan.gov.vn", "mx2.lamdong.gov.vn"])
    assert load_province(copy_province(tmp_path, "lamdong", edit=edit)).model.tls.certificate


def test_a_certificate_given_in_the_data_must_name_each_mx_host_apart(tmp_path):
    """The one certificate of the data is installed on every host: a second MX whose certificate names
    only the mail host fails every sending server that checks MTA-STS (enforce)."""
    old = ["mail.daknong.gov.vn", "daknong.gov.vn", "mail.binhthuan.gov.vn", "binhthuan.gov.vn"]
    make_certificate(tmp_path / "certs", ["mail.lamdong.gov.vn", *old])

    def edit(d):
        d["tls"] = {"certificate": "certs/cert.pem", "key": "certs/key.pem"}

    found = [f"{p.path}: {p.message}" for p in problems(copy_province(tmp_path, "lamdong", edit=edit))]
    assert found == [
        "tls.certificate: does not cover the MX host mx2.lamdong.gov.vn (the same certificate serves every host of the "
        "province, and other mail servers check an MX's name under MTA-STS); allowed: a certificate whose "
        "subjectAltName also holds mx2.lamdong.gov.vn or a wildcard for it (its names: mail.lamdong.gov.vn, "
        + ", ".join(old) + ")"], found
    make_certificate(tmp_path / "certs", ["*.lamdong.gov.vn", *old])  # a wildcard covers it (and the mail host)
    assert load_province(copy_province(tmp_path, "lamdong", edit=edit)).model.tls.certificate


def schema_defaults_repeated(model, data: dict, path: str = "") -> list[str]:
    """Keys of `data` that give the value the schema's own default already gives."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    out = []
    for key, value in data.items():
        field = model.model_fields[key]
        sub = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
        if sub is not None and isinstance(value, dict):
            out += schema_defaults_repeated(sub, value, f"{path}{key}.")
        elif field.default_factory is not None and value == field.default_factory():
            out.append(f"{path}{key}")
        elif field.default is not PydanticUndefined and value == field.default:
            out.append(f"{path}{key}")
    return out


def test_each_default_is_defined_once_in_the_schema_and_defaults_yml_only_cites_it():
    """defaults.yml gives the article a default stands on; a value equal to the schema's default there
    would be a second definition that drifts (it once said 10 for an administrator's password while
    the reference said 8)."""
    from govmail.data import schema

    assert schema_defaults_repeated(schema.Province, yaml.safe_load((DATA / "defaults.yml").read_text())) == []
    # ... and the check finds one.
    assert schema_defaults_repeated(schema.Province, {"policy": {"password": {"min_length": 8}}}) == [
        "policy.password.min_length"]


def test_a_hosts_local_files_are_files_directly_in_a_directory_govmail_owns(tmp_path):
    def edit(d):
        d["hosts"][0]["local_files"] = ["/etc/fail2ban/jail.d/office.local", "/etc/fail2ban/jail.d/../../shadow"]

    [p] = problems(copy_province(tmp_path, "laichau", edit=edit))
    assert p.path == "hosts[0].local_files", p.path
    assert "'/etc/fail2ban/jail.d/../../shadow'" in p.message and "/etc/rspamd/override.d" in p.message

    def good(d):
        d["hosts"][0]["local_files"] = ["/etc/fail2ban/jail.d/office.local"]

    cfg = load_province(copy_province(tmp_path, "laichau", edit=good, name="laichau"), cache=False)
    assert cfg.model.hosts[0].local_files == ["/etc/fail2ban/jail.d/office.local"]
