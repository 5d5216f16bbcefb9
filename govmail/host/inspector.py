"""What is inside an attachment, at any depth, by content as well as by name.

Installed as /usr/local/lib/govmail/inspector and run by govmail-inspect.service on 127.0.0.1:11339
(loopback only); rspamd's GOVMAIL_ATTACHMENT rule (templates/rspamd/lua.local.d/govmail.lua.j2)
sends it each attachment of a message:

    POST /inspect    X-Filename-B64: <base64 of the UTF-8 name>    body: the attachment's bytes
    -> 200 {"verdict": "ok" | "refuse" | "flag", "reason": "...", "path": "a.zip/b.zip/setup.txt"}

The province's rules come from /etc/govmail/inspect.json (written by the deploy from
`policy.content`, govmail/services/attachments.py): blocked extensions, the allow-list, how deep
to look into archives in archives (`depth`), and what to do with an archive too deep to look
into, one that cannot be read (rar, a corrupt file, a zip bomb past the bounds), one that is password-protected, and Office documents with macros.

Recognised by content, whatever the name says: Windows programs (MZ), Linux programs (ELF),
macOS programs (Mach-O), Java classes, scripts with a `#!` line, Office documents with macros
(OOXML `vbaProject.bin`; OLE2 with a VBA project). Opened: zip (and OOXML), gzip, bzip2, xz, tar, 7z.
Bounded: at most `max_bytes` unpacked in all and `max_members` files; beyond, "unreadable".
Python standard library only, and Debian's `7z` (package 7zip) for 7z archives; RAR, whose unpacker
is not free software, is not opened ("unreadable"; its names are still rspamd's to check).
"""

import base64
import bz2
import gzip
import io
import json
import lzma
import sys
import tarfile
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import contract

CONFIG = contract.PATHS["inspector_rules"]
DEFAULTS = {"blocked": [], "allowed": None, "depth": 3, "too_deep": "refuse", "unreadable": "flag",
            "encrypted": "flag", "macros": "refuse", "max_bytes": 256 * 1024 * 1024, "max_members": 10000,
            "archives": True}
OFFICE_ZIP = ("docx", "docm", "xlsx", "xlsm", "xlsb", "pptx", "pptm", "dotm", "xltm", "potm", "ppsm")


class Unreadable(Exception):
    pass


def program(data: bytes):
    """What kind of program `data` is, or None."""
    if data[:2] == b"MZ":
        return "a Windows program (MZ/PE)"
    if data[:4] == b"\x7fELF":
        return "a Linux program (ELF)"
    if data[:4] in (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe"):
        return "a macOS program (Mach-O)"
    if data[:4] == b"\xca\xfe\xba\xbe":
        return "a program (Mach-O universal or Java class)"
    if data[:2] == b"#!":
        return "a script (#!)"
    return None


def ole_macros(data: bytes) -> bool:
    """An OLE2 document (.doc, .xls, .ppt) that carries a VBA project."""
    return data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" and (
        "_VBA_PROJECT".encode("utf-16-le") in data or "VBA".encode("utf-16-le") + b"\0\0" in data)


def archive_kind(data: bytes):
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if data[:2] == b"\x1f\x8b":
        return "gzip"
    if data[:3] == b"BZh":
        return "bzip2"
    if data[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if len(data) > 262 and data[257:262] == b"ustar":
        return "tar"
    if data[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if data[:6] == b"Rar!\x1a\x07":
        return "rar"
    return None


def shown(name: str) -> str:
    """A file name from the mail, as the verdict (and so the SMTP reply) may carry it: one line of
    at most 200 characters, no control character, quote or backslash."""
    return "".join("?" if ord(c) < 32 or c in '"\\\x7f' or 0x80 <= ord(c) < 0xA0 else c for c in name)[:200]


def ext_of(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


class Inspector:
    def __init__(self, conf: dict):
        self.c = dict(DEFAULTS, **conf)
        self.unpacked = 0
        self.members = 0

    def _take(self, n: int):
        self.unpacked += n
        self.members += 1
        if self.unpacked > self.c["max_bytes"] or self.members > self.c["max_members"]:
            raise Unreadable(f"unpacks to more than {self.c['max_bytes']:,} bytes or {self.c['max_members']:,} files")

    def _read(self, stream, name) -> bytes:
        room = self.c["max_bytes"] - self.unpacked
        data = stream.read(room + 1)
        if len(data) > room:
            raise Unreadable(f"{name} unpacks to more than {self.c['max_bytes']:,} bytes")
        self._take(len(data))
        return data

    def members_of(self, kind: str, data: bytes, name: str):
        """[(member name, bytes, encrypted)] of one archive."""
        if kind == "zip":
            try:
                z = zipfile.ZipFile(io.BytesIO(data))
                out = []
                for info in z.infolist():
                    if info.is_dir():
                        continue
                    if info.flag_bits & 1:
                        out.append((info.filename, b"", True))
                        continue
                    with z.open(info) as f:
                        out.append((info.filename, self._read(f, info.filename), False))
                return out
            except (zipfile.BadZipFile, NotImplementedError, EOFError, OSError, RuntimeError, ValueError) as e:
                raise Unreadable(f"{name}: not a readable zip ({e})") from None
        if kind in ("gzip", "bzip2", "xz"):
            opener = {"gzip": lambda f: gzip.GzipFile(fileobj=f), "bzip2": bz2.BZ2File, "xz": lzma.LZMAFile}[kind]
            inner = name.rsplit("/", 1)[-1]
            inner = inner[: -len(ext_of(inner)) - 1] if ext_of(inner) in ("gz", "tgz", "bz2", "xz", "txz") else inner
            if ext_of(name) in ("tgz", "txz"):
                inner += ".tar"
            try:
                with opener(io.BytesIO(data)) as f:
                    return [(inner or "data", self._read(f, name), False)]
            except (OSError, EOFError, lzma.LZMAError, ValueError) as e:
                raise Unreadable(f"{name}: not readable {kind} data ({e})") from None
        if kind == "tar":
            try:
                out = []
                with tarfile.open(fileobj=io.BytesIO(data)) as t:
                    for m in t:
                        if m.isfile():
                            f = t.extractfile(m)
                            out.append((m.name, self._read(f, m.name) if f else b"", False))
                return out
            except (tarfile.TarError, OSError, EOFError) as e:
                raise Unreadable(f"{name}: not a readable tar ({e})") from None
        if kind == "7z":
            return self._seven_zip(data, name)
        raise Unreadable(f"{name}: a {kind} archive, which cannot be opened here")

    def _seven_zip(self, data: bytes, name: str):
        """Members of a 7z archive, through Debian's 7zip (`7z`): listed, then each extracted to a
        pipe; never a password prompt (stdin closed, empty password), every call time-bounded."""
        import os
        import subprocess
        import tempfile

        def run(*args, timeout=30):
            try:
                return subprocess.run(["7z", *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
            except FileNotFoundError:
                raise Unreadable(f"{name}: a 7z archive, and 7z is not installed here") from None
            except subprocess.TimeoutExpired:
                raise Unreadable(f"{name}: a 7z archive that takes too long to read") from None

        with tempfile.TemporaryDirectory() as d:
            arc = os.path.join(d, "attachment.7z")
            with open(arc, "wb") as f:
                f.write(data)
            listing = run("l", "-slt", "-ba", "-p", arc)
            if listing.returncode != 0:
                raise Unreadable(f"{name}: not a readable 7z archive")
            out = []
            for block in listing.stdout.decode("utf-8", "replace").split("\n\n"):
                e = dict(line.split(" = ", 1) for line in block.splitlines() if " = " in line)
                if "Path" not in e or e.get("Folder") == "+" or e.get("Attributes", "").startswith("D"):
                    continue
                if e.get("Encrypted") == "+":
                    out.append((e["Path"], b"", True))
                    continue
                size = int(e.get("Size") or 0)
                if self.unpacked + size > self.c["max_bytes"]:
                    raise Unreadable(f"{name} unpacks to more than {self.c['max_bytes']:,} bytes")
                x = run("e", "-so", "-p", arc, "--", e["Path"], timeout=60)
                if x.returncode != 0:
                    raise Unreadable(f"{name}: {e['Path']} cannot be extracted")
                self._take(len(x.stdout))
                out.append((e["Path"], x.stdout, False))
            return out

    def name_problem(self, path: str, top: bool):
        ext = ext_of(path)
        if ext and ext in self.c["blocked"]:
            return f".{ext} files are not accepted"
        if top and self.c["allowed"] is not None and ext not in self.c["allowed"]:
            return f"only these formats are accepted: {' '.join(self.c['allowed'])}"
        return None

    def inspect(self, name: str, data: bytes) -> dict:
        """The verdict on one attachment (its decoded bytes)."""
        flags = []
        stack = [(name, data, 1)]  # (path, bytes, depth: 1 for the attachment itself)
        try:
            while stack:
                path, blob, depth = stack.pop()
                top = depth == 1
                why = self.name_problem(path, top)
                if why and not top:  # the attachment's own name is rspamd's to judge (it knows the MIME part)
                    return {"verdict": "refuse", "reason": f'"{path}": {why}', "path": path}
                kind_prog = program(blob)
                if kind_prog:
                    return {"verdict": "refuse", "reason": f'"{path}" is {kind_prog} whatever its name says',
                            "path": path}
                kind = archive_kind(blob)
                macros = ole_macros(blob)
                if kind == "zip":
                    office, macros = self._ooxml(blob, path)
                    if office and not macros:
                        continue  # an Office document: a zip of XML parts, not an archive of files
                if macros and self.c["macros"] != "allow":
                    why = f'"{path}" is an Office document with macros (programs)'
                    if self.c["macros"] == "refuse":
                        return {"verdict": "refuse", "reason": why, "path": path}
                    flags.append(why)
                    continue
                if not kind or not self.c["archives"]:
                    continue
                if depth > self.c["depth"]:
                    why = f'"{path}" is an archive nested deeper than {self.c["depth"]} levels'
                    if self.c["too_deep"] == "refuse":
                        return {"verdict": "refuse", "reason": why + ", which is not inspected", "path": path}
                    flags.append(why)
                    continue
                try:
                    members = self.members_of(kind, blob, path)
                except Unreadable as e:
                    if self.c["unreadable"] == "refuse":
                        return {"verdict": "refuse", "reason": f"{e}; its content cannot be checked", "path": path}
                    if self.c["unreadable"] == "flag":
                        flags.append(str(e))
                    continue
                for mname, mdata, encrypted in members:
                    mpath = f"{path}/{shown(mname)}"
                    if encrypted:
                        # The attachment's own archive is rspamd's to judge (GOVMAIL_ENCRYPTED_ARCHIVE):
                        # only a password-protected file deeper down is the inspector's.
                        why = f'"{mpath}" is password-protected; its content cannot be checked'
                        if self.c["encrypted"] == "refuse" and depth > 1:
                            return {"verdict": "refuse", "reason": why, "path": mpath}
                        if self.c["encrypted"] == "flag" and depth > 1:
                            flags.append(why)
                        why = self.name_problem(mpath, False)
                        if why:
                            return {"verdict": "refuse", "reason": f'"{mpath}": {why}', "path": mpath}
                        continue
                    stack.append((mpath, mdata, depth + 1))
        except Unreadable as e:
            if self.c["unreadable"] == "refuse":
                return {"verdict": "refuse", "reason": f"{e}; its content cannot be checked", "path": name}
            flags.append(str(e))
        if flags:
            return {"verdict": "flag", "reason": "; ".join(flags[:5]), "path": name}
        return {"verdict": "ok", "reason": "", "path": name}

    @staticmethod
    def _ooxml(blob: bytes, path: str) -> tuple:
        """(an Office Open XML document?, with a VBA project?) of a zip."""
        try:
            names = zipfile.ZipFile(io.BytesIO(blob)).namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return False, False
        office = "[Content_Types].xml" in names or ext_of(path) in OFFICE_ZIP
        return office, office and any(n.lower().endswith("vbaproject.bin") for n in names)


def load_config(path=CONFIG) -> dict:
    """The province's rules as the deploy wrote them (its version checked); none yet: the defaults."""
    try:
        with open(path, encoding="utf-8") as f:
            conf = json.load(f)
    except FileNotFoundError:
        return {}
    contract.check_version(conf, "inspector_rules")
    return {k: v for k, v in conf.items() if k != "version"}


class Handler(BaseHTTPRequestHandler):
    conf: dict = {}
    server_version = "govmail-inspect"

    def do_POST(self):
        if self.path != "/inspect":
            self.send_error(404)
            return
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            n = -1
        limit = Handler.conf.get("max_bytes", DEFAULTS["max_bytes"])
        if n < 0 or n > limit:
            self.send_error(413)
            return
        data = self.rfile.read(n)
        try:
            name = base64.b64decode(self.headers.get("X-Filename-B64", "")).decode("utf-8", "replace")[:255]
        except ValueError:
            name = ""
        name = shown(name) or "attachment"
        verdict = Inspector(Handler.conf).inspect(name, data)
        body = json.dumps(verdict, ensure_ascii=False).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # one line per refusal only, in the journal
        pass


def main(argv):
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("usage: inspector [--port N] | inspector check [FILE] | inspector file PATH")
        return 0
    port = contract.PORTS["inspector"]
    if "--port" in argv:
        try:
            port = int(argv[argv.index("--port") + 1])
        except (IndexError, ValueError):
            print("inspector: --port needs a number", file=sys.stderr)
            return 2
    if argv and argv[0] == "check":  # govmail/services/attachments.py validates its settings with this
        try:
            conf = load_config(argv[1] if len(argv) > 1 else CONFIG)
        except contract.ContractError as e:
            print(e, file=sys.stderr)
            return 1
        unknown = set(conf) - set(DEFAULTS)
        if unknown:
            print(f"unknown settings: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 1
        return 0
    if argv and argv[0] == "file":  # inspect a file by hand: inspect file PATH
        with open(argv[1], "rb") as f:
            print(json.dumps(Inspector(load_config()).inspect(shown(argv[1].rsplit("/", 1)[-1]), f.read()),
                             ensure_ascii=False))
        return 0
    import signal

    Handler.conf = load_config()
    signal.signal(signal.SIGHUP, lambda *_: setattr(Handler, "conf", load_config()))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
