"""The compliance checks that read what runs, not what govmail wrote: Postfix's effective settings
service by service (`postconf` with every master.cf override of `postconf -P`), whether each service
answers on its port, the certificate each TLS port serves, a line logged now reaching mail.log, and
fail2ban's live jails. A file dropped beside govmail's, a `postconf -e`, a master.cf `-o` override or
a replaced certificate changes what these read, whatever govmail's own files say.
"""

from __future__ import annotations

import hashlib
import inspect
import ipaddress
import json
import re
import shlex
import ssl
import time

from ..data import tls_path
from ..host import answers, contract
from .base import check

# ------------------------------------------------------------------ Postfix, service by service

SMTPD_KEYS = ("mynetworks", "smtpd_relay_restrictions", "smtpd_recipient_restrictions", "smtpd_sasl_auth_enable",
              "smtpd_tls_auth_only", "smtpd_tls_security_level", "smtpd_tls_wrappermode", "message_size_limit")


def postfix_smtpd(h) -> dict[str, dict[str, str]]:
    """Each smtpd service Postfix runs on a network port (`name/inet` from `postconf -M`), with the
    effective value of SMTPD_KEYS there: main.cf's (`postconf`), or the service's `-o` override. Read
    in one command, once a run (three checks use it)."""
    if "postfix_smtpd" in h.reports:
        return h.reports["postfix_smtpd"]
    sep = "@@govmail@@"
    main_out, master, overrides = h.ti.check_output(
        f"postconf {' '.join(SMTPD_KEYS)}; echo {sep}; postconf -M; echo {sep}; postconf -P").split(sep)
    main = {}
    for line in main_out.strip().splitlines():
        k, _, v = line.partition(" = ")
        main[k.strip()] = v.strip()
    services = {}
    for line in master.strip("\n").splitlines():
        f = line.split()
        if len(f) >= 8 and not line[:1].isspace() and f[1] == "inet" and f[7] == "smtpd":
            services[f"{f[0]}/inet"] = dict(main)
    for line in overrides.strip().splitlines():
        key, _, value = line.partition(" = ")
        name, _, param = key.strip().rpartition("/")
        if name in services and param in SMTPD_KEYS:
            services[name][param] = value.strip()
    h.reports["postfix_smtpd"] = services
    return services


LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def words(value: str) -> list[str]:
    return [w for w in re.split(r"[\s,]+", value) if w]


def foreign_networks(mynetworks: str) -> list[str]:
    """What `mynetworks` lets in besides the loopback: networks, or tables that could hold any."""
    out = []
    for w in words(mynetworks):
        try:
            net = ipaddress.ip_network(w.strip("[]").replace("]/", "/"), strict=False)
        except ValueError:
            out.append(f"{w} (a table or name, not a loopback network)")
            continue
        if not any(net.version == lo.version and net.subnet_of(lo) for lo in LOOPBACK):
            out.append(w)
    return out


SAFE_BEFORE_REJECT = {"permit_mynetworks", "permit_sasl_authenticated", "permit_auth_destination",
                      "reject_unauth_pipelining", "reject_unknown_recipient_domain", "reject_non_fqdn_recipient"}


def relay_gap(restrictions: str) -> str:
    """Why `restrictions` (smtpd_relay_restrictions) may let a client relay to any domain; '' when a
    refusal of foreign destinations comes before anything that could permit."""
    for w in words(restrictions):
        if w in ("reject_unauth_destination", "defer_unauth_destination", "reject", "defer"):
            return ""
        if w in SAFE_BEFORE_REJECT or (w.startswith("reject_") and ":" not in w):
            continue
        if w == "permit":
            return "`permit` comes before any refusal: every client may relay"
        return f"`{w}` comes before reject_unauth_destination and may permit a client to relay"
    return "nothing refuses foreign destinations (no reject_unauth_destination): every client may relay"


def port_of(service: str) -> str:
    name = service.split("/")[0]
    return {"smtp": "25", "submission": "587", "submissions": "465"}.get(name, name)


def ipv4_of(h, name: str) -> str:
    """`name` when it is an IPv4 address, else its address as the checked host resolves it."""
    try:
        return str(ipaddress.IPv4Address(name))
    except ValueError:
        out = h.ti.run(f"getent ahostsv4 {shlex.quote(name)}").stdout.split()
        return out[0] if out else name


@check
def no_open_relay(h, cfg, _):
    """Postfix's effective relay rules on every smtpd port: `mynetworks` (which permit_mynetworks
    trusts) holds the loopback only, and foreign destinations are refused before anything permits."""
    bad, said = [], []
    for name, s in postfix_smtpd(h).items():
        where = f"{name} (port {port_of(name)})"
        rules = s["smtpd_relay_restrictions"] or s["smtpd_recipient_restrictions"]
        gap = relay_gap(rules)
        if gap:
            bad.append(f"{where}: {gap} (smtpd_relay_restrictions = {rules})")
        # The listener for the stores apart's Dovecot (Sieve, vacation: state domains only) trusts them.
        stores = ({f"{ipv4_of(h, h.peers.get(n, n))}/32" for n in cfg.stores_apart}
                  if name.endswith(f":{contract.PORTS['sieve_out']}/inet") else set())
        foreign = [w for w in foreign_networks(s["mynetworks"]) if w not in stores]
        if "permit_mynetworks" in words(rules) and foreign:
            bad.append(f"{where}: mynetworks = {s['mynetworks']} lets {', '.join(foreign)} "
                       "relay without logging in (only 127.0.0.0/8 and ::1 are the host itself"
                       + (f", and here the stores apart {', '.join(sorted(stores))}" if stores else "") + ")")
        said.append(f"{port_of(name)}: {rules}")
    assert not bad, "; ".join(bad)
    return ("mynetworks is the loopback only" + (" (and the stores apart on their listener)" if cfg.stores_apart else "")
            + "; relay refused before any permit — " + "; ".join(said))


def auth_before_tls(s: dict) -> bool:
    return s["smtpd_sasl_auth_enable"] == "yes" and s["smtpd_tls_wrappermode"] != "yes" and \
        s["smtpd_tls_auth_only"] != "yes" and s["smtpd_tls_security_level"] != "encrypt"


def smtpd_cleartext(h) -> tuple[list[str], list[str]]:
    """(what is wrong, what was read) about password logins on Postfix's ports: AUTH only on
    submission (587, 465), and there only over TLS."""
    bad, said = [], []
    for name, s in postfix_smtpd(h).items():
        where = f"{name} (port {port_of(name)})"
        if s["smtpd_sasl_auth_enable"] != "yes":
            said.append(f"{port_of(name)}: no AUTH")
            continue
        if name.split("/")[0] not in ("submission", "submissions"):
            bad.append(f"{where}: offers AUTH (smtpd_sasl_auth_enable = yes); only 587 and 465 may")
        if auth_before_tls(s):
            bad.append(f"{where}: offers AUTH before TLS (smtpd_tls_auth_only = {s['smtpd_tls_auth_only']}, "
                       f"smtpd_tls_security_level = {s['smtpd_tls_security_level']})")
        said.append(f"{port_of(name)}: AUTH after TLS only")
    return bad, said


def smtpd_sizes(h) -> dict[str, int]:
    return {name: int(s["message_size_limit"] or 0) for name, s in postfix_smtpd(h).items()}


# ------------------------------------------------------------------ what answers on each port

# port -> (how TLS starts, what to send, what the answer starts with, who answers)
ANSWERS = {
    25: ("smtp", "", "220 ", "Postfix (SMTP)"),
    587: ("smtp", "", "220 ", "Postfix (submission)"),
    465: ("tls", "", "220 ", "Postfix (submissions)"),
    993: ("tls", "", "* OK", "Dovecot (IMAP)"),
    995: ("tls", "", "+OK", "Dovecot (POP3)"),
    143: ("imap", "", "* OK", "Dovecot (IMAP, STARTTLS)"),
    110: ("pop3", "", "+OK", "Dovecot (POP3, STLS)"),
    443: ("tls", "GET / HTTP/1.0\r\nHost: {name}\r\n\r\n", "HTTP/1.1 200", "nginx and Roundcube"),
    contract.PORTS["managesieve"]: ("sieve", "", "OK", "ManageSieve (govmail's guard)"),
    11333: ("plain", "GET /ping HTTP/1.0\r\n\r\n", "HTTP/1.", "rspamd"),
    contract.PORTS["inspector"]: ("plain", "POST /inspect HTTP/1.0\r\nContent-Length: 0\r\n\r\n", "HTTP/1.0 200",
                                  "the attachment inspector"),
}
MAY_BE_CLOSED = (143, 110)  # Dovecot's STARTTLS ports: a province may close them
# The role whose host answers on each port (an MX apart: SMTP on 25, rspamd, the inspector; the
# submission ports are the mail host's Postfix, beside the store).
PORT_ROLE = {25: "mx", 11333: "mx", contract.PORTS["inspector"]: "mx", 443: "web",
             **{p: "store" for p in (587, 465, 993, 995, 143, 110, contract.PORTS["managesieve"])}}


def ports(h) -> list[int]:
    """The ports of ANSWERS the probe's host serves, by its roles."""
    return [p for p in ANSWERS if h.runs(PORT_ROLE[p])]


def answered(h, cfg) -> dict[str, dict]:
    """What each port the host serves answers (govmail/host/answers.py, run there), once a run."""
    if "answers" not in h.reports:
        spec = [[p, how, request.format(name=h.name)] for p, (how, request, _, _) in ANSWERS.items() if p in ports(h)]
        src = inspect.getsource(answers)
        out = h.ti.run(f"python3 -c {shlex.quote(src)} {shlex.quote(json.dumps(spec))} {shlex.quote(h.name)}")
        assert out.rc == 0, f"asking the ports on the host: {(out.stderr or out.stdout).strip()[-300:]}"
        h.reports["answers"] = json.loads(out.stdout)
    return h.reports["answers"]


@check
def services_running(h, cfg, _):
    """Every service answers on its port as a client sees it: SMTP greetings on 25, 587 and 465, IMAP
    and POP3 greetings, the web mail page, ManageSieve, rspamd and the attachment inspector."""
    got = answered(h, cfg)
    bad, said = [], []
    for port in ports(h):
        _, _, want, who = ANSWERS[port]
        a = got[str(port)]
        if a.get("closed") and port in MAY_BE_CLOSED:
            said.append(f"{port}: closed")
            continue
        answer = a.get("answer", "")
        if a.get("closed") or a.get("error") or not answer.startswith(want):
            found = "nothing listens" if a.get("closed") else a.get("error") or f"answered {answer[:80]!r}"
            bad.append(f"{port} ({who}): {found}, expected {want.strip()!r}")
        else:
            said.append(f"{port}: {answer[:48]}")
    assert not bad, "; ".join(bad)
    return "; ".join(said)


def pem_sha256(pem: str) -> str:
    first = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S)
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first.group(0))).hexdigest() if first else ""


@check
def tls_certificate(h, cfg, _):
    """Every TLS port serves the deployed certificate (the data's, when it gives one), which names the
    host (the mail host; an MX apart its own name) and has not expired."""
    ti, path = h.ti, contract.PATHS["tls_cert"]
    f = ti.file(path)
    assert f.exists, f"{path} missing"
    deployed = pem_sha256(f.content_string)
    given = tls_path(cfg, "certificate")
    if given:
        want = pem_sha256(given.read_text())
        assert deployed == want, f"{path} is not the data's certificate ({given.name}): sha256 {deployed[:16]}…, " \
                                 f"the data's {want[:16]}…"
    q = shlex.quote(path)
    names = ti.run(f"openssl x509 -in {q} -noout -checkhost {shlex.quote(h.name)}").stdout
    assert "does match" in names, f"{path} does not name {h.name}: " + \
        " ".join(ti.run(f"openssl x509 -in {q} -noout -subject -ext subjectAltName").stdout.split())[:200]
    end = ti.check_output(f"openssl x509 -in {q} -noout -enddate").strip().partition("=")[2]
    left = (ssl.cert_time_to_seconds(end) - time.time()) / 86400
    assert left > 0, f"{path} expired on {end}"
    other = []
    tls_ports = [p for p, (how, *_r) in ANSWERS.items() if how != "plain"]
    for port, a in answered(h, cfg).items():
        if int(port) in tls_ports and a.get("cert") and a["cert"] != deployed:
            other.append(f"{port} ({a['cert'][:16]}…)")
    assert not other, f"not the deployed certificate ({deployed[:16]}…) on: {', '.join(other)}"
    served = sorted(int(p) for p, a in answered(h, cfg).items() if a.get("cert"))
    return (f"{path} (sha256 {deployed[:16]}…) names {h.name}, valid {left:.0f} more days; "
            f"served on {', '.join(map(str, served))}")


# ------------------------------------------------------------------ a line logged now reaches mail.log

@check
def mail_log(h, cfg, _):
    """A line logged now with the mail facility reaches /var/log/mail.log (an rsyslog.d file that stops
    mail.* would leave mail flowing and the log frozen), and the log holds Postfix's lines."""
    ti = h.ti
    mark = f"govmail-verify-{time.time_ns()}"
    ti.check_output(f"logger -p mail.info -t govmail-verify {mark}")
    for _ in range(20):
        if ti.run(f"grep -qF {mark} /var/log/mail.log").rc == 0:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"a line logged with `logger -p mail.info` ({mark}) did not reach /var/log/mail.log "
                             "in 10 s")
    log = ti.file("/var/log/mail.log")
    assert log.contains("postfix/"), "/var/log/mail.log holds no Postfix line"
    return f"a line logged now reached /var/log/mail.log; {log.size} bytes, Postfix lines present"


# ------------------------------------------------------------------ fail2ban as it runs

def ignored(text: str) -> set[str]:
    """The addresses of `fail2ban-client get JAIL ignoreip` ('|- 127.0.0.0/8' lines), or of an
    `ignoreip =` line."""
    listed = re.findall(r"^\s*[|`]-\s*(\S+)", text, re.M)
    return set(listed if listed else text.split())


def jail_ignoreip(ti) -> tuple[str, set[str]]:
    """govmail's ignoreip ([DEFAULT] of jail.d/govmail.local, as deployed)."""
    conf = ti.file("/etc/fail2ban/jail.d/govmail.local").content_string
    line = next((x for x in conf.splitlines() if x.startswith("ignoreip")), "ignoreip =")
    return line, ignored(line.partition("=")[2])


def configured_ignoreip(dump: str) -> dict[str, list[str]]:
    """jail -> the ignoreip entries of fail2ban's configuration as it reads it (`fail2ban-client -d`:
    "['set', 'sshd', 'addignoreip', '127.0.0.1/8', '0.0.0.0/0']")."""
    import ast

    out: dict[str, list[str]] = {}
    for line in dump.splitlines():
        if "'addignoreip'" in line:
            try:
                cmd = ast.literal_eval(line.strip())
            except (ValueError, SyntaxError):
                continue
            out.setdefault(cmd[1], []).extend(cmd[3:])
    return out


def networks(addresses) -> set[str]:
    """Addresses as networks (127.0.0.1/8 and 127.0.0.0/8 are one), or as written when not one."""
    import ipaddress

    out = set()
    for a in addresses:
        try:
            out.add(str(ipaddress.ip_network(a, strict=False)))
        except ValueError:
            out.add(a)
    return out
