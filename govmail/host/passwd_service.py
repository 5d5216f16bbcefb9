#!/usr/bin/python3
"""govmail password service: users change their own mail password, no administrator needed.

Installed as /usr/local/lib/govmail/passwd-service and run by govmail-passwd.service. Python
standard library only. HTTPS with the mail host's certificate, TLS 1.2 or later.

  GET  /               the form, in Vietnamese and English, with the province's password rules
  POST /               the form's submission (address, current password, new password twice)
  POST /api/password   JSON {"user", "password", "new_password"} -> {"ok": true, ...} or
                       {"ok": false, "error": "..."}; used by `govmail passwd` (and web mail later)
  GET  /healthz        "ok"

The current password proves who the user is; Dovecot's own `doveadm pw` checks it and hashes the
new one. An issued password (first login: DN Art. 12.1, LC Art. 6.3/7.3, TN Art. 9.1) or an expired
one (LC Art. 4.2) is changed here; a cancelled, suspended or deleted mailbox is not. Wrong
passwords are throttled per address and per client, and logged (journal) without the password.
"""

from __future__ import annotations

import argparse
import collections
import html
import json
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import password_change, store

WINDOW = 15 * 60  # seconds over which failures are counted
LIMITS = {"user": 5, "client": 20}  # wrong current passwords allowed per window
FAIL_DELAY = 1.0
MAX_BODY = 16 * 1024


class Throttle:
    """Failures per key in a sliding window; a key over its limit is refused until they age out."""

    def __init__(self):
        self.lock = threading.Lock()
        self.failures: dict[str, collections.deque] = {}

    def blocked(self, key: str, limit: int, now: float | None = None) -> bool:
        now = now or time.monotonic()
        with self.lock:
            q = self.failures.get(key)
            while q and now - q[0] > WINDOW:
                q.popleft()
            return bool(q) and len(q) >= limit

    def fail(self, key: str, now: float | None = None) -> None:
        with self.lock:
            self.failures.setdefault(key, collections.deque()).append(now or time.monotonic())


THROTTLE = Throttle()
BAD_CREDENTIALS = "Wrong address or current password"


def policy_text() -> tuple[str, str]:
    """The province's rules, for the form: (Vietnamese, English)."""
    try:
        db = store.connect()
        m = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'password_%'"))
    except Exception:
        return "", ""
    vi_names = {"lower": "chữ thường", "upper": "chữ hoa", "digit": "chữ số", "special": "ký tự đặc biệt"}
    en_names = {"lower": "a lower-case letter", "upper": "an upper-case letter", "digit": "a digit",
                "special": "a special character"}
    req = [c for c in m.get("password_require", "").split(",") if c]
    n, na = m.get("password_min_length", "8"), m.get("password_admin_min_length", "8")
    vi = f"Ít nhất {n} ký tự (quản trị viên: {na})" + (", có " + ", ".join(vi_names[c] for c in req) if req else "")
    en = f"At least {n} characters ({na} for administrators)" + (
        ", with " + ", ".join(en_names[c] for c in req) if req else "")
    art = m.get("password_article", "")
    return vi + ".", en + (f" ({art})" if art else "") + "."


PAGE = """<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Đổi mật khẩu thư điện tử / Change mail password</title>
<style>body{{font-family:sans-serif;max-width:34em;margin:2em auto;padding:0 1em}}label{{display:block;margin:.8em 0 .2em}}
input{{width:100%;padding:.4em;box-sizing:border-box}}button{{margin-top:1em;padding:.5em 1.5em}}
.ok{{color:#064;border:1px solid #064;padding:.6em}}.err{{color:#900;border:1px solid #900;padding:.6em}}
small{{color:#555}}</style></head><body>
<h1>Đổi mật khẩu thư điện tử<br><small>Change your mail password</small></h1>
{message}
<p><small>{rule_vi}<br>{rule_en}</small></p>
<form method="post" action="/" autocomplete="off">
<label for="user">Địa chỉ thư / Mail address</label><input id="user" name="user" type="email" required value="{user}">
<label for="password">Mật khẩu hiện tại / Current password</label><input id="password" name="password" type="password" required>
<label for="new_password">Mật khẩu mới / New password</label><input id="new_password" name="new_password" type="password" required>
<label for="repeat">Nhập lại mật khẩu mới / New password again</label><input id="repeat" name="repeat" type="password" required>
<button type="submit">Đổi mật khẩu / Change password</button>
</form></body></html>
"""


def change(user: str, current: str, new: str, client: str) -> tuple[int, dict]:
    """Apply a change request: (HTTP status, JSON-able result)."""
    user = (user or "").strip().lower()
    if not user or not current or not new:
        return 400, {"ok": False, "error": "Thiếu thông tin. Give the address, the current and the new password."}
    if THROTTLE.blocked("user:" + user, LIMITS["user"]) or THROTTLE.blocked("client:" + client, LIMITS["client"]):
        log(f"password change refused for {user} from {client}: too many failures")
        return 429, {"ok": False, "error": "Quá nhiều lần sai, hãy thử lại sau 15 phút. "
                     "Too many failed attempts: try again in 15 minutes."}
    try:
        result = password_change.change_password(user, current, new, source=client)
    except password_change.ChangeRefused as e:
        msg = str(e)
        if BAD_CREDENTIALS in msg:
            THROTTLE.fail("user:" + user)
            THROTTLE.fail("client:" + client)
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

    def page(self, status: int, message: str = "", user: str = "") -> None:
        vi, en = policy_text()
        body = PAGE.format(message=message, user=html.escape(user), rule_vi=html.escape(vi), rule_en=html.escape(en))
        self.send(status, body.encode(), "text/html; charset=utf-8")

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
        elif self.path in ("/", "/index.html"):
            self.page(200)
        else:
            self.send(404, b"not found\n", "text/plain")

    def do_POST(self):
        raw = self.body()
        if raw is None:
            return
        client = self.client_address[0]
        if self.path == "/api/password":
            try:
                req = json.loads(raw.decode("utf-8"))
                if not isinstance(req, dict):
                    raise ValueError
            except ValueError:
                self.send(400, b'{"ok": false, "error": "expected a JSON object"}\n', "application/json")
                return
            status, result = change(str(req.get("user", "")), str(req.get("password", "")),
                                    str(req.get("new_password", "")), client)
            self.send(status, (json.dumps(result, ensure_ascii=False) + "\n").encode(), "application/json; charset=utf-8")
        elif self.path == "/":
            form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode("utf-8", "replace")).items()}
            user = form.get("user", "")
            if form.get("new_password") != form.get("repeat"):
                self.page(422, '<p class="err">Hai mật khẩu mới không khớp. The two new passwords differ.</p>', user)
                return
            status, result = change(user, form.get("password", ""), form.get("new_password", ""), client)
            if result["ok"]:
                msg = ('<p class="ok">Đã đổi mật khẩu. Hãy dùng mật khẩu mới trong chương trình thư. '
                       "Password changed: use the new one in your mail program.</p>")
            else:
                msg = f'<p class="err">{html.escape(result["error"])}</p>'
            self.page(status, msg, user)
        else:
            self.send(404, b"not found\n", "text/plain")


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
    a = ap.parse_args(argv)
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
