#!/usr/bin/python3
"""ManageSieve as users reach it (port 4190): Dovecot's own, with every script checked before it is stored.

Mail clients and the web mail store their filters with ManageSieve (RFC 5804). This program listens
on the ManageSieve port in Dovecot's place: it answers the greeting and STARTTLS itself (the host's
certificate, TLS 1.2 or newer), then hands the session to Dovecot's ManageSieve on the loopback
(`backend`), telling it the client's address and that the client came over TLS (a PROXY protocol
v2 header, which Dovecot trusts from the loopback only), and passes every command through, one at
a time, except a PUTSCRIPT or CHECKSCRIPT whose script would send mail outside the state domains
(govmail/host/sieve_check.py): that one is answered NO here, with the article, in Vietnamese and
English, and never reaches Dovecot (`policy.forwarding`). Logins, quotas, script names and every
other rule stay Dovecot's.

    sieve-guard --config /etc/govmail/sieve-guard.json
    sieve-guard check FILE.sieve    (the check alone: prints the refusals, exit 1 when any)

Standard library only.
"""

import argparse
import json
import re
import socket
import ssl
import struct
import sys
import threading

from . import contract, sieve_check

MAX_LITERAL = 4 * 1024 * 1024  # Pigeonhole refuses scripts over 1 MiB itself
MAX_LINE = 64 * 1024
IDLE = 30 * 60
MAX_CLIENTS = 256
FINAL = re.compile(rb"^(OK|NO|BYE)\b", re.I)


def log(msg):
    print(f"govmail-sieve-guard: {msg}", file=sys.stderr, flush=True)


class Closed(Exception):
    pass


class Malformed(Exception):
    """Input the guard cannot read exactly as Dovecot would: the session ends."""


ATOM_STOP = b' \t\r\n"{()\x00'


class Stream:
    """ManageSieve's wire format over a socket (plain or TLS), read strictly: a command (or a
    response) is its arguments up to the line end outside strings; quoted strings hold no line break
    and escape only backslash and double quote; a literal {n} or {n+} is announced at the end of a
    line. Anything else is Malformed, never guessed at: the guard and Dovecot must see the same
    commands."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise Closed()
        self.buf += data

    def _line(self):
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_LINE:
                raise Malformed("line too long")
            self._fill()
        i = self.buf.index(b"\n") + 1
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _exactly(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def item(self):
        """(raw bytes, [arguments]) of one command or response line. Each argument starts the line or
        follows a space, and a space or the line end follows it."""
        raw, args = [], []
        line = self._line()
        raw.append(line)
        i, after_arg = 0, False
        while True:
            c = line[i:i + 1]
            if c in (b" ", b"\t", b"(", b")"):  # parentheses: a response code, OK (TAG "x") "..."
                i, after_arg = i + 1, False
                continue
            if c in (b"\r", b"\n"):
                if line[i:] not in (b"\r\n", b"\n"):
                    raise Malformed("a bare CR")
                return b"".join(raw), args
            if after_arg:
                raise Malformed(f"{c!r} right after an argument")
            if c == b'"':
                j, val = i + 1, bytearray()
                while True:
                    d = line[j:j + 1]
                    if d in (b"", b"\r", b"\n", b"\x00"):
                        raise Malformed("a quoted string without its end")
                    if d == b'"':
                        break
                    if d == b"\\":
                        j += 1
                        if line[j:j + 1] not in (b'"', b"\\"):
                            raise Malformed("an escape of another character than backslash or quote")
                    val += line[j:j + 1]
                    j += 1
                args.append(bytes(val))
                i = j + 1
            elif c == b"{":
                m = re.match(rb"\{(\d{1,10})\+?\}\r?\n\Z", line[i:])
                if not m:
                    raise Malformed("a literal not at the end of its line")
                n = int(m.group(1))
                if n > MAX_LITERAL:
                    raise Malformed("a literal too large")
                data = self._exactly(n)
                raw.append(data)
                args.append(data)
                line = self._line()
                raw.append(line)
                i = 0
            else:
                j = i
                while j < len(line) and line[j:j + 1] not in ATOM_STOP:
                    j += 1
                if j == i:
                    raise Malformed(f"unexpected {c!r}")
                args.append(line[i:j])
                i = j
            after_arg = True


def quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ") + '"'


GREETING: dict = {}  # Dovecot's capabilities, as its last greeting said them
PROXY_V2 = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_header(client, server):
    """PROXY protocol v2: the client's address, and that it connected over TLS (PP2_TYPE_SSL,
    PP2_CLIENT_SSL): Dovecot then takes the session as secured, as its own TLS would."""
    (cip, cport), (sip, sport) = client[:2], server[:2]
    v6 = ":" in cip or ":" in sip
    if v6:
        cip, sip = (a if ":" in a else "::ffff:" + a for a in (cip, sip))
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    addrs = socket.inet_pton(fam, cip) + socket.inet_pton(fam, sip) + struct.pack("!HH", cport, sport)
    tlv = struct.pack("!BHBI", 0x20, 5, 0x01, 0)
    body = addrs + tlv
    return PROXY_V2 + bytes([0x21, 0x21 if v6 else 0x11]) + struct.pack("!H", len(body)) + body


class Session:
    def __init__(self, conn, addr, cfg, tls):
        self.conn, self.addr, self.cfg, self.tls = conn, addr, cfg, tls
        self.local = conn.getsockname()  # the socket is handed to TLS later, and then detached
        self.client = Stream(conn)

    def send(self, data):
        self.client.sock.sendall(data)

    def backend_greeting(self, backend):
        lines = []
        while True:
            raw, _args = backend.item()
            lines.append(raw)
            if FINAL.match(raw):
                return lines

    def run(self):
        try:
            self._run()
        except Malformed as e:
            log(f"{self.addr[0]}: session ended: {e}")
            try:
                self.send(b'BYE "Malformed command."\r\n')
            except OSError:
                pass

    def _backend(self):
        sock = socket.create_connection(("127.0.0.1", self.cfg["backend_port"]), timeout=60)
        sock.sendall(proxy_header(self.addr, self.local))
        backend = Stream(sock)
        return backend, self.backend_greeting(backend)

    def _run(self):
        # Before TLS the client sees Dovecot's capabilities as they were at the last session (Dovecot
        # is asked only once a client has started TLS, so a port probe never reaches it).
        if GREETING.get("lines") is None:
            backend, greeting = self._backend()
            backend.sock.close()
            GREETING["lines"] = greeting
        self.send(self.before_tls(GREETING["lines"]))
        if not self.starttls():
            return
        backend, greeting = self._backend()
        try:
            GREETING["lines"] = greeting
            backend.sock.settimeout(IDLE)
            self.send(b"".join(greeting))  # after STARTTLS the server says its capabilities again
            self.relay(backend)
        finally:
            backend.sock.close()

    @staticmethod
    def before_tls(greeting):
        """Dovecot's capabilities as a client sees them before TLS: no login mechanism, STARTTLS."""
        out = []
        for item in greeting:
            if item.upper().startswith(b'"SASL"'):
                out.append(b'"SASL" ""\r\n')
            elif FINAL.match(item):
                out.append(b'"STARTTLS"\r\n')
                out.append(item)
            elif not item.upper().startswith(b'"STARTTLS"'):
                out.append(item)
        return b"".join(out)

    def starttls(self):
        while True:
            _raw, args = self.client.item()
            verb = (args or [b""])[0].upper()
            if verb == b"STARTTLS":
                self.send(b'OK "Begin TLS negotiation now."\r\n')
                tls = self.tls.wrap_socket(self.conn, server_side=True)
                self.client = Stream(tls)
                return True
            if verb == b"LOGOUT":
                self.send(b'OK "Logout completed."\r\n')
                return False
            if verb == b"NOOP":
                self.send(b'OK "NOOP completed."\r\n')
            elif verb == b"CAPABILITY":
                caps = self.before_tls(GREETING["lines"])
                self.send(caps[:caps.rindex(b"OK ")] + b'OK "Capability completed."\r\n')
            else:
                self.send('NO "Hãy dùng STARTTLS trước. Use STARTTLS first: nothing is accepted before TLS."\r\n'
                          .encode())

    def relay(self, backend):
        while True:
            item, args = self.client.item()
            verb = (args or [b""])[0].upper()
            refusal = self.judge(verb, args) if verb in (b"PUTSCRIPT", b"CHECKSCRIPT") else None
            if refusal:
                self.send(b"NO " + quote(refusal).encode() + b"\r\n")
                continue
            backend.sock.sendall(item)
            if verb == b"AUTHENTICATE":
                if not self.authenticate(backend):
                    return
                continue
            while True:
                answer, _args = backend.item()
                self.send(answer)
                if FINAL.match(answer):
                    if answer[:3].upper() == b"BYE" or verb == b"LOGOUT":
                        return
                    break

    def authenticate(self, backend):
        """SASL: the server's challenges and the client's answers pass through until the result."""
        while True:
            answer, _args = backend.item()
            self.send(answer)
            if FINAL.match(answer):
                return answer[:3].upper() != b"BYE"
            self.client.sock.settimeout(120)
            backend.sock.sendall(self.client.item()[0])
            self.client.sock.settimeout(IDLE)

    def judge(self, verb, args):
        """None when the script may be stored; else the refusal's words."""
        if not self.cfg.get("refuse_outbound", True):
            return None
        script = args[2] if verb == b"PUTSCRIPT" and len(args) > 2 else args[1] if len(args) > 1 else None
        if script is None:
            return None  # Dovecot answers a malformed command
        try:
            text = script.decode("utf-8")
            refused = sieve_check.check(text, self.cfg["state_domains"])
        except (UnicodeDecodeError, sieve_check.Unreadable, OSError, ValueError) as e:
            log(f"{self.addr[0]}: {verb.decode()} refused: the script could not be checked ({e})")
            return ("Không kiểm tra được bộ lọc này nên không lưu. This filter could not be checked, so it is "
                    "not stored: keep to redirect, notify and vacation with written addresses.")
        if not refused:
            return None
        what = ", ".join(f"{cmd} {target}".strip() + f" ({why})" for cmd, target, why in refused)
        log(f"{self.addr[0]}: {verb.decode()} refused: {what}")
        article = self.cfg.get("article") or "policy.forwarding"
        return (f"Không được tự động chuyển thư ra ngoài hệ thống thư công vụ ({article}): {what}. "
                f"Automatic forwarding outside the state mail system is refused ({article}).")


def serve(cfg):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg["cert"], cfg["key"])
    family = socket.AF_INET6 if ":" in cfg.get("listen", "0.0.0.0") else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((cfg.get("listen", "0.0.0.0"), cfg["port"]))
    srv.listen(64)
    slots = threading.BoundedSemaphore(MAX_CLIENTS)
    log(f"listening on {cfg.get('listen', '0.0.0.0')}:{cfg['port']}, Dovecot's ManageSieve on 127.0.0.1:"
        f"{cfg['backend_port']}")

    def one(conn, addr):
        try:
            conn.settimeout(IDLE)
            Session(conn, addr, cfg, ctx).run()
        except (Closed, OSError, ssl.SSLError):
            pass
        except Exception as e:  # one session's fault never stops the others
            log(f"{addr[0]}: session ended by {e!r}")
        finally:
            conn.close()
            slots.release()

    while True:
        conn, addr = srv.accept()
        if not slots.acquire(blocking=False):
            try:
                conn.sendall(b'BYE "Too many connections, try again later."\r\n')
            finally:
                conn.close()
            continue
        threading.Thread(target=one, args=(conn, addr), daemon=True).start()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"] and len(argv) == 3:
        with open(argv[2], encoding="utf-8") as f:
            cfg = json.load(f)
        with open(argv[1], encoding="utf-8") as f:
            refused = sieve_check.check(f.read(), cfg["state_domains"])
        for cmd, target, why in refused:
            print(f"{cmd} {target}: {why}")
        return 1 if refused else 0
    ap = argparse.ArgumentParser(description="ManageSieve with every script checked before it is stored")
    ap.add_argument("--config", required=True)
    a = ap.parse_args(argv)
    with open(a.config, encoding="utf-8") as f:
        cfg = contract.check_version(json.load(f), "sieve_guard")
    serve(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
