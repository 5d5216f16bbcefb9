"""The DNS records a province publishes for its mail, from its data file.

`govmail dns PROVINCE` prints them in zone-file format for the province's DNS operator; the lab
resolver (govmail/lab/__init__.py) serves the same records for the lab zones, so lab hosts see what real
senders would see.

- MX and A: the mail host, or each host with role `mx` (equal preference: senders spread their
  mail and fall back to another when one does not answer); A addresses from `hosts[].address` (the
  mail host's: `govmail dns --address`, or the lab's);
- SPF `v=spf1 mx -all`: only the MX hosts send for the domain;
- DMARC `p=reject`, strict alignment, aggregate reports to postmaster@: a state domain is a prime
  target for forgery, and all of its mail leaves through the one mail host;
- TLS-RPT: reports of TLS failures to postmaster@;
- SRV (RFC 6186, RFC 8314): submission 465 (implicit TLS) and 587, IMAP 993, POP3 995, so mail
  clients configure themselves;
- DKIM: the record of the key the mail host generated (fetched by every deploy); before the first
  deploy there is no key and the zone says so;
- MTA-STS (RFC 8461): the TXT record and the policy to serve at
  https://mta-sts.<domain>/.well-known/mta-sts.txt; `mode: enforce` only with a certificate from a
  CA (`tls.certificate`), `testing` with the self-signed one (senders would otherwise refuse to deliver);
- autoconfig/autodiscover names for mail clients (the SRV records already configure most);
- the monitor host's A and SPF records: it mails the alerts as `govmail-monitor@<its name>`
  (govmail/services/monitor.py), and the domain's strict DMARC then needs its own SPF to pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Record:
    name: str  # relative to the domain; "@" for the domain itself
    type: str
    value: str
    comment: str = ""


def web_names(cfg) -> list[str]:
    """Every name the mail host serves HTTPS on (govmail/services/web.py), and so its certificate
    covers: its mail name first, each domain's autoconfig., autodiscover. and mta-sts. names (the
    CNAMEs below), a merged province's old mail names."""
    from ..data import predecessors as merger

    names = [cfg.mail_host]
    for d in cfg.domains:
        names += [f"autoconfig.{d}", f"autodiscover.{d}", f"mta-sts.{d}"]
    names += merger.mail_names(cfg)
    return list(dict.fromkeys(names))


def mta_sts_policy(cfg) -> str:
    import re

    from ..data.text import UnsafeValue

    for host in cfg.mx_hosts:
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
            raise UnsafeValue(f"{host[:60]!r} cannot be written into an MTA-STS policy (a host name)")
    mode = "enforce" if cfg.model.tls.certificate else "testing"
    return f"version: STSv1\nmode: {mode}\n" + "".join(f"mx: {h}\n" for h in cfg.mx_hosts) + "max_age: 604800\n"


def _keys(cfg, dkim) -> dict:
    """The DKIM records by domain: `dkim` is one record (the province's domain) or {domain: record}."""
    return dkim if isinstance(dkim, dict) else {cfg.domain: dkim}


def records(cfg, address: Optional[str] = None, dkim=None, domain: Optional[str] = None) -> list[Record]:
    """The records to publish for `domain` (default the province's; a predecessor's domain of a merged
    province is served by the same mail host). `address`: the mail host's IPv4 address; `dkim`: the
    DKIM record of its key, as the last deploy fetched it (None before the first deploy), or
    {domain: record}."""
    import hashlib

    d, mx = domain or cfg.domain, cfg.mail_host
    dkim = _keys(cfg, dkim).get(d)
    selector = dict(cfg.dkim_keys)[d]
    pm = f"postmaster@{d}"
    receivers = cfg.mx_hosts
    if receivers == [mx]:
        out = [Record("@", "MX", f"10 {mx}.", "the one mail host receives for the domain")]
    else:
        out = [Record("@", "MX", f"10 {h}.", f"one of {len(receivers)} MX hosts, equal preference") for h in receivers]
    given = {h.name: h.address for h in cfg.model.hosts}
    for h in dict.fromkeys([mx, *receivers]):
        if h.endswith("." + d):
            ip = (address if h == mx else None) or given.get(h)
            what = "the mail host" if h == mx else "this MX host"
            out.append(Record(h[: -len(d) - 1], "A", ip or f"<IPv4 address of {what}>", "also its PTR record"))
    out += [
        Record("@", "TXT", "v=spf1 mx -all", "SPF: only the mail host sends"),
        Record("_dmarc", "TXT", f"v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:{pm}",
               "DMARC: refuse forged mail, reports to postmaster@"),
        Record("_smtp._tls", "TXT", f"v=TLSRPTv1; rua=mailto:{pm}", "TLS-RPT: TLS failure reports"),
        Record("_mta-sts", "TXT", "v=STSv1; id=" + hashlib.sha256(mta_sts_policy(cfg).encode()).hexdigest()[:16],
               "MTA-STS: policy at https://mta-sts." + d + "/.well-known/mta-sts.txt (below)"),
        Record("_submissions._tcp", "SRV", f"0 1 465 {mx}.", "RFC 8314: submission over TLS"),
        Record("_submission._tcp", "SRV", f"10 1 587 {mx}.", "submission with STARTTLS"),
        Record("_imaps._tcp", "SRV", f"0 1 993 {mx}.", "IMAP over TLS"),
        Record("_pop3s._tcp", "SRV", f"10 1 995 {mx}.", "POP3 over TLS"),
        Record("_imap._tcp", "SRV", "0 0 0 .", "RFC 6186: no cleartext IMAP offered to clients"),
        Record("_pop3._tcp", "SRV", "0 0 0 .", "no cleartext POP3 offered to clients"),
    ]
    mon = cfg.monitor_host
    if d == cfg.domain and mon and mon.endswith("." + d):
        label, host = mon[: -len(d) - 1], next(h for h in cfg.model.hosts if h.name == mon)
        if host.address:
            out.append(Record(label, "A", host.address, "the monitor host (it mails the alerts as itself)"))
        out.append(Record(label, "TXT", "v=spf1 a -all", "SPF: the monitor host's alerts pass DMARC (needs its A "
                          "record)"))
    for name in ("mta-sts", "autoconfig", "autodiscover"):
        out.append(Record(name, "CNAME", f"{mx}.", "the mail host; served over HTTPS (443)"))
    if dkim:
        out.append(Record(f"{selector}._domainkey", "TXT", dkim, "DKIM: the mail host's signing key"))
    return out


def _txt_strings(value: str) -> list[str]:
    """A TXT value as DNS carries it: strings of at most 255 bytes each (long DKIM keys are split)."""
    raw = value.encode()
    return [raw[i:i + 255].decode() for i in range(0, len(raw), 255)] or [""]


def _quote_txt(value: str) -> str:
    """A TXT value in zone-file syntax: each string quoted, `"` and `\\` escaped, any other byte
    outside printable ASCII written `\\DDD` (RFC 1035 5.1)."""
    def esc(part: str) -> str:
        out = []
        for b in part.encode():
            c = chr(b)
            out.append("\\" + c if c in '"\\' else c if 0x20 <= b < 0x7F else f"\\{b:03d}")
        return '"' + "".join(out) + '"'

    return " ".join(esc(p) for p in _txt_strings(value))


def _zone_names(cfg) -> None:
    """Every name a zone line is made of is a domain name (a hostile one would be zone syntax)."""
    from ..data.text import UnsafeValue, domain_problem

    names = [("domain", cfg.domain), ("mail host", cfg.mail_host)]
    names += [("DKIM selector", f"{sel}.x.vn") for _, sel in cfg.dkim_keys]
    names += [("predecessor domain", p.domain) for p in cfg.model.predecessors]
    for what, name in names:
        if domain_problem(name):
            raise UnsafeValue(f"{name[:60]!r}: the {what} is not a domain name; it cannot be written into a zone")


def zone_text(cfg, address: Optional[str] = None, dkim=None) -> str:
    """The zone lines of the province's domain and, for a merged province, of each predecessor's
    domain (served by the merged host once the zone is published: the runbook's DNS switch)."""
    from ..data.text import comment

    _zone_names(cfg)
    if address is not None:
        import ipaddress

        ipaddress.IPv4Address(address)  # a ValueError for anything else
    keys = _keys(cfg, dkim)
    out = []
    for d, selector in cfg.dkim_keys:
        pred = next((p for p in cfg.model.predecessors if p.domain == d), None)
        lines = [
            f"; DNS records for {d} ({comment(pred.name if pred else cfg.model.name)}), from group_data/{cfg.key}.yml",
            f"; Mail host: {cfg.mail_host}. Made by `govmail dns {cfg.key}`; publish them in the {d} zone.",
        ]
        if pred:
            lines.append(f"; {comment(pred.name)} is merged into {comment(cfg.model.name)}: publish this zone when the "
                         f"merged host takes the domain's mail (the runbook's DNS switch); transition until "
                         f"{pred.transition_until}.")
        lines.append(f"$ORIGIN {d}.")
        for r in records(cfg, address, keys, d):
            value = _quote_txt(r.value) if r.type == "TXT" else r.value
            lines.append(f"{r.name:<20} 3600 IN {r.type:<5} {value}" + (f"  ; {r.comment}" if r.comment else ""))
        if not keys.get(d):
            lines.append(f"; DKIM ({selector}._domainkey): no key known yet. The mail host generates it "
                         f"on the first deploy; run `govmail dns {cfg.key}` again after it.")
        lines.append(f"; MTA-STS policy, to serve as https://mta-sts.{d}/.well-known/mta-sts.txt:")
        lines += [f";   {line}" for line in mta_sts_policy(cfg).splitlines()]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def dnsmasq_lines(cfg, dkim=None, elsewhere: frozenset = frozenset()) -> list[str]:
    """The TXT, SRV and CNAME records for the lab resolver (A and PTR come from the lab's own state,
    and so does the MX of the province's domain). A predecessor's domain gets its MX here, unless it
    is in `elsewhere` (its old host still takes its mail): then only the merged host's DKIM key is
    served for it, beside the old host's own records."""
    from ..data.text import CONTROL_RE, UnsafeValue

    keys = _keys(cfg, dkim)
    out = []
    for d, selector in cfg.dkim_keys:
        for r in records(cfg, dkim=keys, domain=d):
            fqdn = d if r.name == "@" else f"{r.name}.{d}"
            if d in elsewhere and r.name != f"{selector}._domainkey":
                continue
            if r.type == "TXT":
                if CONTROL_RE.search(r.value) or '"' in r.value or "\\" in r.value:
                    raise UnsafeValue(f"{r.value[:60]!r}: not a TXT value dnsmasq's configuration can carry")
                out.append(f"txt-record={fqdn}," + ",".join(f'"{c}"' for c in _txt_strings(r.value)))
            elif r.type == "MX" and d != cfg.domain:
                prio, target = r.value.split()
                out.append(f"mx-host={fqdn},{target.rstrip('.')},{prio}")
            elif r.type == "CNAME":
                out.append(f"cname={fqdn},{r.value.rstrip('.')}")
            elif r.type == "SRV":
                prio, weight, port, target = r.value.split()
                if target == ".":
                    out.append(f"srv-host={fqdn}")  # "no such service"
                else:
                    out.append(f"srv-host={fqdn},{target.rstrip('.')},{port},{prio},{weight}")
    return out
