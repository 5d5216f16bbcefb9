"""TLS certificate and key of the mail host, read by Postfix, Dovecot and the password service.

By default a self-signed certificate for the host name is generated on the host once and kept (a
deploy makes it again only when it no longer names the host or has fewer than RENEW_DAYS left). If the data file names a certificate and key (`tls.certificate`,
`tls.key`), those are installed instead. Services that serve TLS declare `reacts={"tls": ...}`: a
new certificate reloads (or restarts) them.
"""

from __future__ import annotations

import shlex

from ..data import tls_path
from ..host import contract
from ..publish.dns import web_names
from ..service import Ensure, File, Service

# A self-signed certificate with fewer days left than this is made again by the next deploy.
RENEW_DAYS = 30


def service(ctx) -> Service:
    cfg = ctx.cfg
    cert, key = tls_path(cfg, "certificate"), tls_path(cfg, "key")
    if cert and key:
        return Service(name="tls", files=[
            File(contract.PATHS["tls_cert"], cert.read_bytes(), mode=0o644, action="changed"),
            File(contract.PATHS["tls_key"], key.read_bytes(), mode=0o600, action="changed", secret=True),
        ])
    # The mail host's certificate names it (and what its web server answers on); an MX host apart
    # from it (several MX, issue 29) names itself, as senders' MTA-STS checks ask, and so does a
    # store apart (the proxy's STARTTLS to it).
    front = ctx.host_name == cfg.mail_host
    name = cfg.mail_host if front else ctx.host_name
    # openssl -subj: '/' and '=' separate its fields, so a backslash escapes them in a value.
    def field(v: str) -> str:
        return v.replace("\\", "\\\\").replace("/", "\\/").replace("=", "\\=").replace("+", "\\+")

    subj = shlex.quote(f"/O=govmail {field(cfg.model.name)}/CN={field(name)}")
    # The names the web server answers on (autoconfig., mta-sts. ...: govmail/publish/dns.py), and a merged
    # province's predecessors' mail names (govmail/data/predecessors.py).
    extra = [n for n in web_names(cfg) if n != name] if front else []
    san = shlex.quote("subjectAltName=" + ",".join(f"DNS:{n}" for n in dict.fromkeys(
        [name, *([cfg.domain] if front else []), *extra])))
    cert_q = shlex.quote(contract.PATHS["tls_cert"])
    # Made once, and again only when it expires within RENEW_DAYS (before the monitor's 21-day alert,
    # govmail/monitoring/alerts.py) or a name it must cover is missing (a certificate for another name
    # put in its place; a province that became a merged one): a redeploy never replaces a
    # certificate that covers the host's names and has time left.
    check = (f"test -e {cert_q} && openssl x509 -noout -in {cert_q} -checkend {RENEW_DAYS * 86400} >/dev/null"
             + "".join(
        f" && openssl x509 -noout -in {cert_q} -checkhost {shlex.quote(n)} | grep -q 'does match'"
        for n in [name, *extra]))
    return Service(name="tls", ensures=[Ensure(
        name=f"self-signed TLS certificate for {', '.join([name, *extra])} (made once)",
        check=check,
        fix=f"install -d -m 755 {contract.PATHS['etc']}/tls && "
        # -utf8: the subject is UTF-8 as given (without it openssl reads each byte as a character:
        # "Tiền Giang" became "Tiá»n Giang").
        "openssl req -x509 -utf8 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 "
        f"-subj {subj} -addext {san} "
        f"-keyout {contract.PATHS['tls_key']} -out {contract.PATHS['tls_cert']} 2>/dev/null && "
        f"chmod 600 {contract.PATHS['tls_key']} && chmod 644 {contract.PATHS['tls_cert']}",
        action="changed",
    )])
