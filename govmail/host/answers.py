"""What each service of the mail host answers when a client connects, asked on the host itself.

`govmail verify` sends this file's source to the host and runs it with Debian's python3 (standard
library only): a service counts as running when it answers, not when systemd says `active` (after an
interrupted deploy, every smtpd died at start on a bad main.cf while `systemctl is-active postfix`
said active). For each port it connects to 127.0.0.1, starts TLS the way the port's clients do, and
reads what a client reads first: an SMTP, IMAP, POP3 or ManageSieve greeting, an HTTP status line.
On a TLS port it also keeps the certificate served (SHA-256 of its DER form).

    python3 answers.py '<json: [[port, how, request], ...]>' SERVER_NAME
    -> one JSON object: {"<port>": {"answer": "...", "tls": "TLSv1.3", "cert": "<sha256>"} or
       {"error": "..."} or {"closed": true}}

`how`: "smtp", "imap", "pop3", "sieve" (STARTTLS in that protocol: the answer is the greeting
before it), "tls" (TLS at once), "plain" (no TLS). `request`: what to send once connected (TLS
started) before reading the answer's first line, "" to read a greeting.
"""

import hashlib
import json
import socket
import ssl
import sys

TIMEOUT = 10


def _line(f) -> bytes:
    return f.readline(512).rstrip(b"\r\n")


def _starttls(raw, f, how: str) -> bytes:
    """Start TLS as the port's clients do; the server's greeting (its last line for ManageSieve)."""
    greeting = b""
    if how == "smtp":
        greeting = _line(f)
        raw.sendall(b"EHLO verify.govmail.invalid\r\n")
        while _line(f)[3:4] == b"-":
            pass
        raw.sendall(b"STARTTLS\r\n")
        reply = _line(f)
        ok = reply.startswith(b"220")
    elif how == "imap":
        greeting = _line(f)
        raw.sendall(b"a STARTTLS\r\n")
        reply = _line(f)
        ok = reply.upper().startswith(b"A OK")
    elif how == "pop3":
        greeting = _line(f)
        raw.sendall(b"STLS\r\n")
        reply = _line(f)
        ok = reply.startswith(b"+OK")
    else:  # ManageSieve: capabilities up to OK, then STARTTLS
        while True:
            greeting = _line(f)
            if not greeting or greeting.upper().startswith((b"OK", b"NO", b"BYE")):
                break
        raw.sendall(b"STARTTLS\r\n")
        reply = _line(f)
        ok = reply.upper().startswith(b"OK")
    if not ok:
        said = reply.decode("utf-8", "replace")[:100] or "nothing (connection closed)"
        raise OSError(f"greeted {greeting.decode('utf-8', 'replace')[:60]!r}, then STARTTLS answered {said!r}")
    return greeting


def ask(port: int, how: str, request: str, name: str) -> dict:
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    except ConnectionRefusedError:
        return {"closed": True}
    except OSError as e:
        return {"error": str(e) or type(e).__name__}
    out: dict = {}
    try:
        conn, greeting = raw, None
        if how != "plain":
            if how != "tls":
                greeting = _starttls(raw, raw.makefile("rb"), how)
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            conn = ctx.wrap_socket(raw, server_hostname=name)
            out["tls"] = conn.version()
            out["cert"] = hashlib.sha256(conn.getpeercert(binary_form=True) or b"").hexdigest()
        if greeting is None:  # TLS at once or none: the greeting, or the answer to the request
            if request:
                conn.sendall(request.encode())
            greeting = _line(conn.makefile("rb"))
        out["answer"] = greeting.decode("utf-8", "replace")
    except (OSError, ssl.SSLError) as e:
        out["error"] = " ".join(str(e).split())[:200] or type(e).__name__
    finally:
        raw.close()
    return out


def main(argv) -> int:
    ports, name = json.loads(argv[1]), argv[2]
    print(json.dumps({str(p): ask(p, how, request, name) for p, how, request in ports}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
