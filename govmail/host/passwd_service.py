#!/usr/bin/python3
"""govmail password service: users change their own mail password, no administrator needed.

Installed as /usr/local/lib/govmail/passwd-service and run by govmail-passwd.service. Python
standard library only. HTTPS with the mail host's certificate, TLS 1.2 or later.

  GET  /               redirects to the web mail, where users change their password (its login
                       leads a password that must change to the change form)
  POST /api/password   JSON {"user", "password", "new_password"} -> {"ok": true, ...} or
                       {"ok": false, "error": "..."}; used by `govmail passwd` and the web mail
  POST /api/status     JSON {"user", "password"} -> {"ok": true, "must_change": bool, "reason"}:
                       after a refused web login, whether a password change lifts the refusal
  POST /api/allowed    JSON {"user"} -> {"ok": true}, or 429 when the client may not try that
                       address now (the web mail asks before each login)
  GET  /api/admin      from the loopback only: nginx's `auth_request` for the monitor's published
                       pages (govmail/services/web.py). 200 for an HTTP Basic login of an active
                       administrator (its mail password), 401 asking again for a wrong one, 403 for
                       anyone else or a client throttled; a good login is remembered for ADMIN_TTL
                       seconds (a page loads many files), keyed by a hash, never the password
  GET  /healthz        "ok"

From the loopback (the web mail on this host), a request may name the real client (`"client"`),
which the throttle and the log then use; from anywhere else the connection's address counts.
The HTML form this service once served is retired: the web mail's forms replaced it.

The current password proves who the user is; Dovecot's own `doveadm pw` checks it and hashes the
new one. An issued password (first login: DN Art. 12.1, LC Art. 6.3/7.3, TN Art. 9.1) or an expired
one (LC Art. 4.2) is changed here; a cancelled, suspended or deleted mailbox is not. Wrong
passwords are logged (journal) without the password and throttled so that an attacker can neither
guess on and on nor lock the owner out (`Throttle`): what counts is the client (and the client for
that address); failures for one address from many clients block only the clients that failed.
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import password_change

WINDOW = 15 * 60  # seconds over which failures are counted
LIMITS = {
    "pair": 5,  # wrong current passwords for one address from one client
    "client": 20,  # from one client, whatever the addresses
    "account": 20,  # for one address from every client together: then each client that failed for it
    "attacker": 2,  # at least this often is refused, one that did not (the owner elsewhere) never is
}
FAIL_DELAY = 1.0
MAX_BODY = 16 * 1024


class Throttle:
    """Failures in a sliding window, per client, per (address, client) and per address. A client is
    refused for an address when it failed too often for it, or too often at all, or when the address
    is under attack from many clients and it is one of them. Failures from other clients never refuse
    a client that did not fail: nobody can lock an address's owner out by failing for it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.failures: dict[str, collections.deque] = {}

    def _count(self, key: str, now: float) -> int:
        q = self.failures.get(key)
        while q and now - q[0] > WINDOW:
            q.popleft()
        if q is not None and not q:
            del self.failures[key]
        return len(q) if q else 0

    def refused(self, user: str, client: str, now: float | None = None) -> bool:
        now = now or time.monotonic()
        with self.lock:
            pair = self._count(f"pair:{user}|{client}", now)
            return (pair >= LIMITS["pair"] or self._count(f"client:{client}", now) >= LIMITS["client"]
                    or (pair >= LIMITS["attacker"] and self._count(f"user:{user}", now) >= LIMITS["account"]))

    def fail(self, user: str, client: str, now: float | None = None) -> None:
        now = now or time.monotonic()
        with self.lock:
            if len(self.failures) > 100_000:  # many clients or addresses: drop what has aged out
                for key in list(self.failures):
                    self._count(key, now)
            for key in (f"pair:{user}|{client}", f"client:{client}", f"user:{user}"):
                self.failures.setdefault(key, collections.deque()).append(now)


THROTTLE = Throttle()
BAD_CREDENTIALS = "Wrong address or current password"
TOO_MANY = {"ok": False, "error": "Quá nhiều lần sai từ máy này, hãy thử lại sau 15 phút. "
                                 "Too many failed attempts from this computer: try again in 15 minutes."}


def change(user: str, current: str, new: str, client: str) -> tuple[int, dict]:
    """Apply a change request: (HTTP status, JSON-able result)."""
    user = (user or "").strip().lower()
    if not user or not current or not new:
        return 400, {"ok": False, "error": "Thiếu thông tin. Give the address, the current and the new password."}
    if THROTTLE.refused(user, client):
        log(f"password change refused for {user} from {client}: too many failures")
        return 429, dict(TOO_MANY)
    try:
        result = password_change.change_password(user, current, new, source=client)
    except password_change.ChangeRefused as e:
        msg = str(e)
        if BAD_CREDENTIALS in msg:
            THROTTLE.fail(user, client)
            time.sleep(FAIL_DELAY)
            log(f"password change refused for {user} from {client}: authentication failed")
            return 403, {"ok": False, "error": msg}
        log(f"password change refused for {user} from {client}: {msg[:80]}")
        return 422, {"ok": False, "error": msg}
    except Exception as e:  # the store or doveadm failed: say so, keep serving
        log(f"password change failed for {user} from {client}: {e!r}")
        return 500, {"ok": False, "error": "Lỗi máy chủ, hãy báo quản trị viên. Server error: tell the administrator."}
    log(f"password changed for {user} from {client} (was {result['was']})")
    return 200, {"ok": True, **result}


def must_change(user: str, current: str, client: str) -> tuple[int, dict]:
    """Whether the right password of `user` must change before a login (web mail asks)."""
    user = (user or "").strip().lower()
    if not user or not current:
        return 400, {"ok": False, "error": "Thiếu thông tin. Give the address and the password."}
    if THROTTLE.refused(user, client):
        log(f"password status refused for {user} from {client}: too many failures")
        return 429, dict(TOO_MANY)
    try:
        result = password_change.login_status(user, current)
    except password_change.ChangeRefused as e:
        THROTTLE.fail(user, client)
        log(f"password status refused for {user} from {client}: authentication failed")
        return 403, {"ok": False, "error": str(e)}
    except Exception as e:
        log(f"password status failed for {user} from {client}: {e!r}")
        return 500, {"ok": False, "error": "Lỗi máy chủ, hãy báo quản trị viên. Server error: tell the administrator."}
    return 200, {"ok": True, **result}


def allowed(user: str, client: str) -> tuple[int, dict]:
    """Whether `client` may try a password for `user` now (the web mail asks before a login)."""
    user = (user or "").strip().lower()
    if user and THROTTLE.refused(user, client):
        log(f"web login refused for {user} from {client}: too many failures")
        return 429, dict(TOO_MANY)
    return 200, {"ok": True}


ADMIN_TTL = 60
ADMIN_REALM = 'Basic realm="govmail: administrators", charset="UTF-8"'


class AdminLogins:
    """Administrators' good logins for the monitor's pages, remembered ADMIN_TTL seconds each, by a
    salted hash of the address and password (the password itself is never kept)."""

    def __init__(self):
        import os

        self.lock = threading.Lock()
        self.salt = os.urandom(16)
        self.until: dict[bytes, float] = {}

    def key(self, user: str, password: str) -> bytes:
        import hashlib

        return hashlib.sha256(self.salt + user.encode() + b"\0" + password.encode()).digest()

    def known(self, key: bytes, now: float) -> bool:
        with self.lock:
            return self.until.get(key, 0.0) > now

    def remember(self, key: bytes, now: float) -> None:
        with self.lock:
            for k in [k for k, t in self.until.items() if t <= now]:
                del self.until[k]
            self.until[key] = now + ADMIN_TTL


ADMINS = AdminLogins()


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(address, password) of an HTTP Basic Authorization header, or None when it is not one."""
    import base64
    import binascii

    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() != "basic" or not value or len(value) > 4096:
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user = user.strip().lower()
    return (user, password) if sep and user and password else None


def admin(authorization: str, client: str) -> int:
    """nginx's question for each request to the monitor's pages: may this login see them?"""
    creds = basic_credentials(authorization)
    if creds is None:
        return 401
    user, password = creds
    now = time.monotonic()
    key = ADMINS.key(user, password)
    if ADMINS.known(key, now):
        return 200
    if THROTTLE.refused(user, client):
        log(f"monitor pages refused for {user} from {client}: too many failures")
        return 403
    try:
        address = password_change.admin_login(user, password)
    except password_change.ChangeRefused:
        THROTTLE.fail(user, client)
        time.sleep(FAIL_DELAY)
        log(f"monitor pages refused for {user} from {client}: authentication failed")
        return 401
    except password_change.NotAllowed as e:
        log(f"monitor pages refused from {client}: {e}")
        return 403
    except Exception as e:
        log(f"monitor pages: login check failed for {user} from {client}: {e!r}")
        return 500
    ADMINS.remember(key, now)
    log(f"monitor pages opened by {address} from {client}")
    return 200


LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def effective_client(remote: str, named: str) -> str:
    """The client a request counts for: the one the web mail names when it comes from the loopback
    (an IP address, nothing else), otherwise the connection's own address."""
    import ipaddress

    if remote in LOOPBACK and named:
        try:
            return str(ipaddress.ip_address(named))
        except ValueError:
            return remote
    return remote
WEBMAIL = ""  # set by main(): where GET / sends a browser


def log(line: str) -> None:
    print(f"govmail-passwd: {line}", file=sys.stderr, flush=True)


class Handler(BaseHTTPRequestHandler):
    server_version = "govmail-passwd"
    sys_version = ""
    timeout = 30

    def log_message(self, fmt, *args):  # one short line per request, never a body
        log(f"{self.client_address[0]} {fmt % args}")

    def send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Strict-Transport-Security", "max-age=31536000")
        self.end_headers()
        self.wfile.write(body)

    def body(self) -> bytes | None:
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            self.send(413, b"request too large\n", "text/plain")
            return None
        return self.rfile.read(n)

    def do_GET(self):
        if self.path == "/healthz":
            self.send(200, b"ok\n", "text/plain")
        elif self.path == "/api/admin" and self.client_address[0] in LOOPBACK:
            status = admin(self.headers.get("Authorization", ""),
                           effective_client(self.client_address[0], self.headers.get("X-Govmail-Client", "")))
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", ADMIN_REALM)
            self.send_header("Content-Length", "0")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
        elif self.path in ("/", "/index.html") and WEBMAIL:
            self.send_response(303)
            self.send_header("Location", WEBMAIL)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send(404, b"not found\n", "text/plain")

    def do_POST(self):
        raw = self.body()
        if raw is None:
            return
        client = self.client_address[0]
        if self.path not in ("/api/password", "/api/status", "/api/allowed"):
            self.send(404, b"not found\n", "text/plain")
            return
        try:
            req = json.loads(raw.decode("utf-8"))
            if not isinstance(req, dict):
                raise ValueError
        except ValueError:
            self.send(400, b'{"ok": false, "error": "expected a JSON object"}\n', "application/json")
            return
        client = effective_client(client, str(req.get("client", "")))
        if self.path == "/api/password":
            status, result = change(str(req.get("user", "")), str(req.get("password", "")),
                                    str(req.get("new_password", "")), client)
        elif self.path == "/api/allowed":
            status, result = allowed(str(req.get("user", "")), client)
        else:
            status, result = must_change(str(req.get("user", "")), str(req.get("password", "")), client)
        self.send(status, (json.dumps(result, ensure_ascii=False) + "\n").encode(), "application/json; charset=utf-8")


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, addr, context: ssl.SSLContext):
        self.context = context
        super().__init__(addr, Handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the request's own thread, so a slow client blocks no one.
        request.settimeout(Handler.timeout)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="govmail password service")
    ap.add_argument("--listen", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8443)
    ap.add_argument("--cert", default="/etc/govmail/tls/fullchain.pem")
    ap.add_argument("--key", default="/etc/govmail/tls/privkey.pem")
    ap.add_argument("--webmail", default="", help="where GET / redirects a browser (the web mail)")
    a = ap.parse_args(argv)
    global WEBMAIL
    WEBMAIL = a.webmail
    family = socket.AF_INET6 if ":" in a.listen else socket.AF_INET
    TLSServer.address_family = family
    server = TLSServer((a.listen, a.port), tls_context(a.cert, a.key))
    log(f"listening on https://{a.listen}:{a.port}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
