"""A small ManageSieve client (RFC 5804) for the lab tests: the path a user's mail client takes to
install a Sieve filter (port 4190, STARTTLS, AUTHENTICATE PLAIN, PUTSCRIPT, SETACTIVE)."""

from __future__ import annotations

import base64
import socket
import ssl


class ManageSieveError(Exception):
    pass


class ManageSieve:
    def __init__(self, host: str, port: int = 4190, timeout: float = 30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self._response()  # greeting: capabilities, then OK
        self._command("STARTTLS")
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname=host)
        self.file = self.sock.makefile("rb")
        self._response()  # capabilities again, over TLS

    def _response(self) -> str:
        lines = []
        while True:
            line = self.file.readline().decode(errors="replace")
            if not line:
                raise ManageSieveError("connection closed: " + "".join(lines))
            lines.append(line)
            word = line.split(" ", 1)[0].strip().upper()
            if word == "OK":
                return "".join(lines)
            if word in ("NO", "BYE"):
                raise ManageSieveError("".join(lines).strip())

    def _command(self, text: str, literal: bytes | None = None) -> str:
        data = text.encode()
        if literal is not None:
            data += b" {%d+}\r\n" % len(literal) + literal
        self.sock.sendall(data + b"\r\n")
        return self._response()

    def login(self, user: str, password: str) -> None:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self._command(f'AUTHENTICATE "PLAIN" "{token}"')

    def put_active(self, name: str, script: str) -> None:
        self._command(f'PUTSCRIPT "{name}"', script.encode())
        self._command(f'SETACTIVE "{name}"')

    def check(self, script: str) -> None:
        self._command("CHECKSCRIPT", script.encode())

    def put_quoted(self, name: str, script: str) -> None:
        """PUTSCRIPT with the script as a quoted string, not a literal (clients may do either); a quoted
        string holds no line break, so they become spaces."""
        quoted = script.replace("\n", " ").replace("\\", "\\\\").replace('"', '\\"')
        self._command(f'PUTSCRIPT "{name}" "{quoted}"')

    def names(self) -> list[str]:
        return [line.split('"')[1] for line in self._command("LISTSCRIPTS").splitlines() if line.startswith('"')]

    def close(self) -> None:
        try:
            self._command("LOGOUT")
        except (ManageSieveError, OSError):
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
