"""The DNS records a province publishes, and the lab resolver's copy of them."""

from govmail.data import load_province
from govmail.publish.dns import _quote_txt, dnsmasq_lines, records, zone_text
from govmail.targets import RealHosts


def test_the_zone_names_the_mail_host_and_refuses_forgery():
    z = zone_text(load_province("daknong"), "203.0.113.25")
    assert "$ORIGIN daknong.gov.vn." in z
    assert "@                    3600 IN MX    10 mail.daknong.gov.vn." in z
    assert "mail                 3600 IN A     203.0.113.25" in z
    assert '"v=spf1 mx -all"' in z
    assert '_dmarc               3600 IN TXT   "v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:postmaster@daknong.gov.vn"' in z
    assert "_submissions._tcp    3600 IN SRV   0 1 465 mail.daknong.gov.vn." in z


def test_without_an_address_the_zone_says_what_to_fill_in():
    assert "<IPv4 address of the mail host>" in zone_text(load_province("thainguyen"))


def test_long_txt_values_are_split_into_255_byte_strings():
    assert _quote_txt("a" * 300) == '"' + "a" * 255 + '" "' + "a" * 45 + '"'


def test_the_lab_resolver_serves_the_same_txt_and_srv_records():
    lines = dnsmasq_lines(load_province("laichau"))
    assert 'txt-record=laichau.gov.vn,"v=spf1 mx -all"' in lines
    assert "srv-host=_imaps._tcp.laichau.gov.vn,mail.laichau.gov.vn,993,0,1" in lines
    assert "srv-host=_imap._tcp.laichau.gov.vn" in lines


def test_the_dkim_record_the_deploy_fetched_is_published_split_for_the_lab_resolver(tmp_path, monkeypatch):
    monkeypatch.setenv("GOVMAIL_SECRETS", str(tmp_path))
    published = RealHosts().published  # where the controller keeps it: the province's secrets directory
    cfg = load_province("bacninh")
    assert published.dkim_record(cfg) is None and "no key known yet" in zone_text(cfg)
    value = "v=DKIM1; k=rsa; p=" + "A" * 392
    assert published.set_dkim_record(cfg, value + "\n") is True
    assert (tmp_path / "bacninh" / "dkim" / "bacninh.gov.vn.govmail.txt").read_text() == value + "\n"
    assert published.set_dkim_record(cfg, value) is False  # unchanged: nothing to publish
    z = zone_text(cfg, dkim=published.dkim_record(cfg))
    assert "govmail._domainkey   3600 IN TXT   " + _quote_txt(value) in z and "no key known yet" not in z
    [line] = [x for x in dnsmasq_lines(cfg, published.dkim_record(cfg)) if x.startswith("txt-record=govmail._domainkey.")]
    assert line == f'txt-record=govmail._domainkey.bacninh.gov.vn,"{value[:255]}","{value[255:]}"'


def test_mta_sts_is_only_enforced_with_a_certificate_from_a_ca():
    z = zone_text(load_province("daknong"))
    assert "_mta-sts             3600 IN TXT   \"v=STSv1; id=" in z and ";   mode: testing" in z


def test_the_zone_file_parses_and_hostile_text_never_becomes_a_record():
    """Checked with a real zone-file parser (dnspython): a DKIM record as a compromised host might
    answer it (quotes, a line break, a record after it) stays one TXT value, byte for byte; a
    province name with a line break stays a comment; a domain that is not a name refuses."""
    import dns.rdatatype
    import dns.zone
    import pytest

    from govmail.data.text import UnsafeValue

    cfg = load_province("daknong")
    dkim = 'v=DKIM1; k=rsa; p=AB"CD\n@ 3600 IN MX 0 evil.example.\n\\'

    def parse(text):
        z = dns.zone.from_text(text, origin=cfg.domain + ".", check_origin=False)
        return {(str(n), dns.rdatatype.to_text(r.rdtype)): r for n, r in z.iterate_rdatasets()}

    clean = parse(zone_text(cfg, "203.0.113.25", "v=DKIM1; k=rsa; p=ABCD"))
    named = cfg.model.model_copy(update={"name": "Đắk Nông\n@ 3600 IN MX 0 evil.example."})
    bad_cfg = type(cfg)(**{**cfg.__dict__, "model": named})
    hostile = parse(zone_text(bad_cfg, "203.0.113.25", dkim))
    assert set(hostile) == set(clean)
    assert [str(x.exchange) for x in hostile[("@", "MX")]] == ["mail"]  # mail.daknong.gov.vn., relative
    txt = hostile[("govmail._domainkey", "TXT")]
    assert b"".join(next(iter(txt)).strings).decode() == dkim
    evil = cfg.model.model_copy(update={"domain": "daknong.gov.vn. IN NS evil.example"})
    with pytest.raises(UnsafeValue):
        zone_text(type(cfg)(**{**cfg.__dict__, "model": evil}))


def test_every_mx_host_is_published_with_equal_preference_and_named_in_the_mta_sts_policy():
    """A province with a second MX host (role `mx`): both MX records at preference 10, each host's A
    record (its `hosts[].address`, else what to fill in), SPF's `mx` covering both, and the MTA-STS
    policy naming both, the mail host first."""
    import dataclasses

    from govmail.data.schema import Host
    from govmail.publish.dns import mta_sts_policy

    cfg = load_province("bacninh")
    hosts = [*cfg.model.hosts, Host(name="mx2.bacninh.gov.vn", roles=["mx"], address="203.0.113.27")]
    cfg = dataclasses.replace(cfg, model=cfg.model.model_copy(update={"hosts": hosts}))
    assert cfg.mx_hosts == ["mail.bacninh.gov.vn", "mx2.bacninh.gov.vn"]
    recs = records(cfg, "203.0.113.25")
    assert [r.value for r in recs if r.type == "MX"] == ["10 mail.bacninh.gov.vn.", "10 mx2.bacninh.gov.vn."]
    assert {(r.name, r.value) for r in recs if r.type == "A"} >= {("mail", "203.0.113.25"), ("mx2", "203.0.113.27")}
    assert [r.value for r in recs if r.name == "@" and r.type == "TXT"] == ["v=spf1 mx -all"]
    assert "mx: mail.bacninh.gov.vn\nmx: mx2.bacninh.gov.vn\nmax_age" in mta_sts_policy(cfg)
    one = load_province("bacninh")
    assert [r.value for r in records(one, "203.0.113.25") if r.type == "MX"] == ["10 mail.bacninh.gov.vn."]
