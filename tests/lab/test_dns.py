"""The lab resolver serves each province's published records, as `govmail dns` prints them."""

from __future__ import annotations

import subprocess
from email.message import EmailMessage

from govmail import lab
from govmail.publish import dnsquery

from .conftest import PROVINCES
from .mailing import offer


def txt_records(name: str, server: str = lab.GATEWAY) -> list[str]:
    """What the lab resolver (or `server`) answers for a TXT query of `name`."""
    return dnsquery.txt_records(name, server)


def test_the_lab_resolver_serves_spf_and_dmarc_as_govmail_dns_prints_them(lab_hosts):
    for p in PROVINCES:
        cfg = lab_hosts[p].cfg
        zone = subprocess.run(["govmail", "dns", p], capture_output=True, text=True, check=True).stdout
        assert txt_records(cfg.domain) == ["v=spf1 mx -all"] and '"v=spf1 mx -all"' in zone
        [dmarc] = txt_records("_dmarc." + cfg.domain)
        assert dmarc.startswith("v=DMARC1; p=reject") and dmarc in zone
    assert txt_records("gmail.com") == []  # nothing outside the lab zones


def test_mail_between_two_provinces_arrives_with_dkim_spf_and_dmarc_passing(lab_hosts):
    import re
    import time

    from .mailing import arrived, submission

    if len(PROVINCES) < 2:
        import pytest

        pytest.skip("needs two provinces in the lab (GOVMAIL_LAB_PROVINCES)")
    a = lab_hosts.get("bacninh") or lab_hosts[PROVINCES[0]]
    b = lab_hosts.get("daknong") if a is not lab_hosts.get("daknong") else None
    b = b or next(h for h in lab_hosts.values() if h is not a)
    sender = [x.address for x in a.cfg.accounts if x.kind == "person" and x.status == "active"][5]
    to = [x.address for x in b.cfg.accounts if x.kind == "person" and x.status == "active"][5]
    subject = f"Thư liên tỉnh {int(time.time())}"
    with submission(a, sender, a.set_password(sender)) as s:
        s.sendmail(sender, [to], (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
                                  "Content-Type: text/plain; charset=utf-8\r\n\r\nKính gửi Sở bạn.\r\n").encode())
    got = arrived(b, to, subject, timeout=60)
    assert got, f"not delivered from {a.name} to {b.name}"
    results = " ".join(re.findall(r"^Authentication-Results:.*(?:\n[ \t].*)*", got, re.M))
    for check in ("dkim=pass", "spf=pass", "dmarc=pass"):
        assert check in results, f"{check} missing: {results}"
    assert f"header.d={a.cfg.domain}" in results


def test_a_forged_sender_of_a_province_domain_is_refused_by_its_dmarc_policy(lab_hosts):

    h = lab_hosts[PROVINCES[0]]
    other = next((x for x in lab_hosts.values() if x is not h), h)
    to = [x.address for x in h.cfg.accounts if x.kind == "person" and x.status == "active"][5]
    forged = f"giamdoc@{other.cfg.domain}"  # sent from the lab controller, not from that domain's MX
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = forged, to, "Chuyển tiền gấp"
    m.set_content("Chuyển ngay.")
    assert offer(h, m)[0] == 554, "forged mail accepted"


def test_govmail_dns_prints_the_dkim_key_the_host_signs_with(lab_hosts):
    from govmail.data.facts import dkim_paths

    for p in PROVINCES:
        h = lab_hosts[p]
        want = h.run(f"cat {dkim_paths(h.cfg)[1]}").stdout.strip()
        zone = subprocess.run(["govmail", "dns", p], capture_output=True, text=True, check=True).stdout
        assert f"{h.cfg.model.dkim.selector}._domainkey" in zone and want[:200] in zone.replace('" "', "")
        assert txt_records(f"{h.cfg.model.dkim.selector}._domainkey.{h.cfg.domain}") == [want]
