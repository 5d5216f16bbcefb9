"""The active probes of `govmail verify --active`: the mail host seen from the network.

The passive checks read the host's own configuration over SSH. These connect from the machine
running `verify` to the host's public ports, as another mail server or a mail client would: which
TLS versions each port accepts, whether authentication is offered before TLS, whether mail for a
domain the host does not serve is refused (no open relay), and whether a message sent to the
province's probe mailbox (`verify.probe_mailbox` in the data) is delivered. That one sends real
mail: a null sender (so no bounce can ever leave), found in the mailbox over SSH by its Message-ID,
then removed. Nothing is sent towards any other domain: the relay probe stops at RCPT, before a
message exists, and names a `.invalid` domain (RFC 2606), which no resolver answers.
"""

from __future__ import annotations

import imaplib
import poplib
import shlex
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ..host import contract
from .base import Probe, check

TIMEOUT = 20
HELO = "verify.govmail.invalid"  # what the probes say they are; never a name that could be someone's
# Port -> how TLS starts there: "tls" at once, or STARTTLS in the port's protocol.
TLS_PORTS = {25: "smtp", 587: "smtp", 465: "tls", 993: "tls", 995: "tls", 443: "tls", 143: "imap", 110: "pop3",
             contract.PORTS["managesieve"]: "sieve"}
OLD = (("TLS 1.0", ssl.TLSVersion.TLSv1), ("TLS 1.1", ssl.TLSVersion.TLSv1_1))


def context(version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context that does not verify the certificate (the passive checks look at it); with
    `version`, it offers that version only, with every cipher OpenSSL still has for it."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if version is not None:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def handshake(probe: Probe, port: int, ctx: ssl.SSLContext) -> str:
    """The TLS version and cipher the host agrees to on `port` with `ctx`; 'closed' when nothing
    listens there; raises ssl.SSLError when the host refuses the handshake."""
    host, name = probe.address, probe.name
    how = TLS_PORTS[port]
    try:
        raw = socket.create_connection((host, port), timeout=TIMEOUT)
    except ConnectionRefusedError:
        return "closed"
    with raw:
        f = raw.makefile("rb")
        if how == "smtp":
            f.readline()
            raw.sendall(f"EHLO {HELO}\r\n".encode())
            while f.readline()[3:4] == b"-":
                pass
            raw.sendall(b"STARTTLS\r\n")
            reply = f.readline()
            if not reply.startswith(b"220"):
                raise ssl.SSLError(f"STARTTLS refused: {reply[:80]!r}")
        elif how == "imap":
            f.readline()
            raw.sendall(b"a STARTTLS\r\n")
            f.readline()
        elif how == "pop3":
            f.readline()
            raw.sendall(b"STLS\r\n")
            f.readline()
        elif how == "sieve":  # ManageSieve: capabilities up to OK, then STARTTLS
            while True:
                line = f.readline()
                if not line or line.upper().startswith((b"OK", b"NO", b"BYE")):
                    break
            raw.sendall(b"STARTTLS\r\n")
            reply = f.readline()
            if not reply.upper().startswith(b"OK"):
                raise ssl.SSLError(f"STARTTLS refused: {reply[:80]!r}")
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            return f"{s.version()} {s.cipher()[0]}"


@check
def probe_tls_versions(probe: Probe, cfg, _):
    """Every TLS port refuses TLS 1.0 and 1.1 and agrees to 1.2 or newer, from the network."""
    found, bad = [], []
    for port in TLS_PORTS:
        try:
            now = handshake(probe, port, context())
        except (OSError, ssl.SSLError) as e:
            bad.append(f"{port}: no TLS 1.2+ handshake ({short(e)})")
            continue
        if now == "closed":
            if port in (25, 465, 587, 993, 995, 443):
                bad.append(f"{port}: closed")
            continue
        old = []
        for label, version in OLD:
            try:
                got = handshake(probe, port, context(version))
            except ssl.SSLError as e:
                if "NO_PROTOCOLS_AVAILABLE" in str(e) or "no protocols available" in str(e):
                    bad.append(f"{port}: this machine's OpenSSL cannot offer {label}, so its refusal is not proven")
                continue  # refused: as it should be
            except OSError:
                continue  # the host closed the connection: refused
            old.append(f"{label} accepted ({got})")
        if old:
            bad.append(f"{port}: " + ", ".join(old))
        found.append(f"{port}: {now}" + (", " + ", ".join(old) if old else ", 1.0/1.1 refused"))
    assert not bad, "; ".join(bad) + " | " + "; ".join(found)
    return "; ".join(found)


def smtp(probe: Probe, port: int) -> smtplib.SMTP:
    s = smtplib.SMTP(probe.address, port, local_hostname=HELO, timeout=TIMEOUT)
    s.ehlo()
    return s


def starttls(s: smtplib.SMTP) -> str:
    s.starttls(context=context())
    s.ehlo()
    return s.sock.version()


@check
def probe_no_cleartext_auth(probe: Probe, cfg, _):
    """No port offers a password login before TLS: submission (587) advertises AUTH only after
    STARTTLS, port 25 never; IMAP (143) and POP3 (110), when open, refuse plain logins."""
    seen, bad = [], []
    with smtp(probe, 587) as s:
        before = s.esmtp_features.get("auth")
        version = starttls(s)
        after = s.esmtp_features.get("auth")
        seen.append(f"587: AUTH before STARTTLS {before!r}, after ({version}) {after!r}")
        if before is not None:
            bad.append(f"587 offers AUTH {before} before TLS")
    with smtp(probe, 25) as s:
        plain = s.esmtp_features.get("auth")
        starttls(s)
        tls = s.esmtp_features.get("auth")
        seen.append(f"25: AUTH {plain!r}, after STARTTLS {tls!r}")
        if plain is not None or tls is not None:
            bad.append(f"25 offers AUTH {plain or tls}")
    try:
        with imaplib.IMAP4(probe.address, 143, timeout=TIMEOUT) as i:
            caps = i.capabilities
            seen.append("143: " + " ".join(caps))
            if "LOGINDISABLED" not in caps or any(c.startswith("AUTH=") for c in caps):
                bad.append("143 allows a login before STARTTLS: " + " ".join(caps))
    except ConnectionRefusedError:
        seen.append("143: closed")
    try:
        p = poplib.POP3(probe.address, 110, timeout=TIMEOUT)
        try:
            caps = p.capa()  # {"SASL": [mechanisms...], ...}; an empty SASL line offers nothing
            shown = " ".join(" ".join([k, *v]) for k, v in caps.items())
            seen.append("110: " + shown)
            if "USER" in caps or caps.get("SASL"):
                bad.append("110 allows a login before STLS: " + shown)
        finally:
            p.quit()
    except ConnectionRefusedError:
        seen.append("110: closed")
    assert not bad, "; ".join(bad) + " | " + "; ".join(seen)
    return "; ".join(seen)


@check
def probe_relay_refused(probe: Probe, cfg, _):
    """Mail for a domain the host does not serve is refused to a client that has not logged in."""
    rcpt = "relay-probe@relay-test.invalid"
    with smtp(probe, 25) as s:
        version = starttls(s) if s.has_extn("starttls") else "no TLS"
        code, reply = s.mail("")
        assert code == 250, f"MAIL FROM:<> answered {code} {reply.decode(errors='replace')}"
        code, reply = s.rcpt(rcpt)
        s.rset()
    text = reply.decode(errors="replace")
    assert 500 <= code < 600, f"open relay: RCPT TO:<{rcpt}> answered {code} {text} (over {version})"
    return f"RCPT TO:<{rcpt}> from {HELO}, not logged in, over {version}: {code} {text}"


@check
def probe_delivery(probe: Probe, cfg, mailbox: str):
    """A message from outside to the probe mailbox is accepted on port 25 and delivered; found by
    its Message-ID over SSH, then removed."""
    mid = make_msgid("govmail-verify", domain=HELO)
    m = EmailMessage()
    m["From"], m["To"] = f"govmail verify <probe@{HELO}>", mailbox
    m["Subject"] = f"govmail verify --active: thư kiểm tra {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC"
    m["Date"], m["Message-ID"] = formatdate(), mid
    m.set_content("Thư kiểm tra tự động của govmail verify --active; thư được xóa ngay sau khi nhận.\n"
                  "An automatic probe of govmail verify --active; removed once received.\n")
    t = time.monotonic()
    with smtp(probe, 25) as s:
        version = starttls(s) if s.has_extn("starttls") else "no TLS"
        code, reply = s.mail("")
        assert code == 250, f"MAIL FROM:<> answered {code} {reply.decode(errors='replace')}"
        code, reply = s.rcpt(mailbox)
        assert code == 250, f"RCPT TO:<{mailbox}> answered {code} {reply.decode(errors='replace')}"
        code, reply = s.data(m.as_bytes())
        assert code == 250, f"the message was refused: {code} {reply.decode(errors='replace')}"
    queued = reply.decode(errors="replace")
    user, query = shlex.quote(mailbox), f"mailbox '*' header Message-ID {shlex.quote(mid.strip('<>'))}"
    folders: list[str] = []
    for _ in range(60):
        r = probe.ti.run(f"doveadm -f tab fetch -u {user} mailbox {query}")
        folders = r.stdout.splitlines()[1:] if r.rc == 0 else []
        if folders:
            break
        time.sleep(1)
    delay = time.monotonic() - t
    assert folders, f"accepted over {version} ({queued}) but not in {mailbox} after {delay:.0f} s"
    probe.ti.run(f"doveadm expunge -u {user} {query}")
    left = probe.ti.run(f"doveadm -f tab fetch -u {user} uid {query}").stdout.splitlines()[1:]
    return (f"{mid} accepted over {version} ({queued}), delivered to {mailbox} ({', '.join(folders)}) in "
            f"{delay:.1f} s; " + ("then removed" if not left else "could not be removed"))


def short(e: Exception) -> str:
    return " ".join(str(e).split())[:160] or type(e).__name__
