"""Typed text: what a string of the data file may hold, and how it is written into each syntax.

Two halves, both needed (a value is never trusted to be tame):

- **Types** for the data file (govmail/data/schema.py, govmail/data/policy.py). Every string field is one of
  `Identifier`, `LocalPart`, `Domain`, `HostName`, `Address`, `Article`, `DisplayText`, `RelPath`,
  `Calendar` or `Network`; none of them admits a control character, a line break or a bidirectional
  override, and each error says what is allowed. A unit test checks that no field is a bare `str`.
- **Filters**, one per syntax the templates write, registered in govmail/render.py: `comment`,
  `postconf`, `pcre`, `dovecot`, `ucl`, `lua`, `fail2ban`, `systemd`. Rendering refuses any string
  that reaches a template without one of them (`Escaped` marks a filter's output; `Trusted` marks
  govmail's own constants, such as paths). A value a syntax cannot carry (a line break in a
  main.cf value) stops the render with `UnsafeValue`: the deploy stops before touching a host.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

# Control characters (C0, DEL, C1), Unicode line/paragraph separators, zero-width characters, the
# byte-order mark and bidirectional overrides/isolates (text that displays other than it reads).
CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")

# `\Z`, not `$`: `$` also matches before a final line break.
LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")
LOCAL_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?\Z")
DOMAIN_RE = re.compile(r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}\Z")
# An article citation: the decision's key, "Art.", a number, then free words in (...) or after
# ",;:" - letters (any script), digits, spaces and . , ; : ( ) / ' + - – & §, nothing that is
# syntax in the files it reaches (quotes, backslash, $, %, {, }, <, >, #, `).
_CITE_TAIL = r"[\w .,;:()/'+\-–&§]*"
ARTICLE_RE = re.compile(
    rf"^((BN|DN|LC|TN|TN-QLVB|[A-Z]{{2,6}}) Art\. [0-9][0-9a-z.]*([ ,;(]{_CITE_TAIL})?|govmail default( {_CITE_TAIL})?)\Z"
)
ARTICLE_ALLOWED = ("'<KEY> Art. <n>[.<k>...]' (e.g. 'DN Art. 5.2') or 'govmail default (<reason>)', then words of "
                   "letters, digits, spaces and . , ; : ( ) / ' + - & only")
CALENDAR_RE = re.compile(r"^[0-9A-Za-z*:/,.~ -]+\Z")
MAX_LOCAL = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 253  # RFC 1035 (255 octets on the wire)
MAX_ADDRESS = 254  # RFC 5321 path (256) less the angle brackets


def _no_control(v: str) -> str:
    m = CONTROL_RE.search(v)
    if m:
        raise ValueError(f"contains the control character U+{ord(m.group()):04X} at position {m.start() + 1}; "
                         "text must be one line of printable characters")
    return v


def _identifier(v: str) -> str:
    _no_control(v)
    if not LABEL_RE.match(v) or len(v) > 63:
        raise ValueError("must be lower-case ASCII letters, digits or '-' (at most 63, not starting or ending "
                         "with '-')")
    return v


def _local(v: str) -> str:
    _no_control(v)
    if not LOCAL_RE.match(v) or ".." in v:
        raise ValueError("must be lower-case ASCII letters, digits, '.', '-' or '_' (no diacritics)")
    if len(v) > MAX_LOCAL:
        raise ValueError(f"is {len(v)} characters; a local part is at most {MAX_LOCAL} (RFC 5321)")
    return v


def domain_problem(v: str) -> str | None:
    if CONTROL_RE.search(v):
        return "contains a control character"
    if not DOMAIN_RE.match(v):
        return "must be a lower-case domain name such as daknong.gov.vn"
    if len(v) > MAX_DOMAIN or any(len(lab) > 63 for lab in v.split(".")):
        return f"is too long: at most {MAX_DOMAIN} characters, 63 per label (RFC 1035)"
    return None


def _checked(problem):
    """A pydantic validator from a `..._problem` function (None, or why the value is refused)."""
    def check(v: str) -> str:
        why = problem(v)
        if why:
            raise ValueError(why)
        return v

    return check


def address_problem(v: str) -> str | None:
    """Why `v` is not one lower-case mail address (or None). One address: no comma, space or
    second '@' (Postfix would read a stored `a@x, b@y` as two recipients)."""
    if CONTROL_RE.search(v):
        return "contains a control character"
    if v.count("@") != 1:
        return "must be one address, <local part>@<domain>"
    local, dom = v.split("@")
    if not LOCAL_RE.match(local) or ".." in local:
        return "local part must be lower-case ASCII letters, digits, '.', '-' or '_' (no diacritics, one address)"
    if len(local) > MAX_LOCAL:
        return f"local part is {len(local)} characters; at most {MAX_LOCAL} (RFC 5321)"
    why = domain_problem(dom)
    if why:
        return f"domain {why}"
    if len(v) > MAX_ADDRESS:
        return f"is {len(v)} characters; an address is at most {MAX_ADDRESS} (RFC 5321)"
    return None


def _article(v: str) -> str:
    _no_control(v)
    if not ARTICLE_RE.match(v):
        raise ValueError(f"must cite an article as {ARTICLE_ALLOWED}")
    return v


def _relpath(v: str) -> str:
    _no_control(v)
    parts = v.split("/")
    if v.startswith("/") or "\\" in v or any(p in ("", ".", "..") for p in parts) or not re.fullmatch(r"[\w./-]+", v):
        raise ValueError("must be a path relative to the data file's directory, inside it (no '..', no leading "
                         "'/'; letters, digits, '.', '_', '-' and '/')")
    return v


def _calendar(v: str) -> str:
    _no_control(v)
    if not CALENDAR_RE.match(v):
        raise ValueError("must be a systemd OnCalendar expression such as '*-*-* 02:30:00' or 'daily'")
    return v


def _network(v: str) -> str:
    _no_control(v)
    try:
        return str(ipaddress.ip_network(v, strict=False))
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address or network such as 203.0.113.7 or 198.51.100.0/24") from None


Identifier = Annotated[str, StringConstraints(max_length=63), AfterValidator(_identifier)]
LocalPart = Annotated[str, AfterValidator(_local)]
Domain = Annotated[str, AfterValidator(_checked(domain_problem))]
HostName = Annotated[str, AfterValidator(_checked(domain_problem))]
Address = Annotated[str, AfterValidator(_checked(address_problem))]
Article = Annotated[str, StringConstraints(max_length=300), AfterValidator(_article)]
DisplayText = Annotated[str, StringConstraints(max_length=200), AfterValidator(_no_control)]
RelPath = Annotated[str, StringConstraints(max_length=255), AfterValidator(_relpath)]
Calendar = Annotated[str, StringConstraints(max_length=100), AfterValidator(_calendar)]
Network = Annotated[str, StringConstraints(max_length=64), AfterValidator(_network)]
ISODate = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]  # Rust regex: $ is the very end

TEXT_TYPES = (Identifier, LocalPart, Domain, HostName, Address, Article, DisplayText, RelPath, Calendar, Network,
              ISODate)


# ---------------------------------------------------------------------------- filters


class UnsafeValue(ValueError):
    """A value that the target syntax cannot carry (the data validation should have refused it)."""


class Escaped(str):
    """A filter's output: written into a template as it is."""


class Trusted(str):
    """govmail's own text (paths, the managed-file banner): needs no escaping."""


def _refuse_control(v: str, syntax: str) -> str:
    m = CONTROL_RE.search(v)
    if m:
        raise UnsafeValue(f"{v[:60]!r}: U+{ord(m.group()):04X} cannot be written into {syntax}")
    return v


def comment(v) -> Escaped:
    """Text in a comment (`#`, `--`, `;`): any control character or line break becomes a space."""
    return Escaped(CONTROL_RE.sub(" ", str(v)))


def _one_word(s: str, syntax: str) -> str:
    if re.search(r"[\s,]", s):
        raise UnsafeValue(f"{s[:60]!r}: a space or comma would split this {syntax} value into several")
    return s


def postconf(v, word: bool = False) -> Escaped:
    """A Postfix main.cf/master.cf value, or a table's result text: one line; `$` is written `$$`
    (Postfix expands `$name`). `word=True`: one item of a list-valued parameter (a domain, a host
    name), where a space or comma would start another item."""
    s = _refuse_control(str(v), "a Postfix setting")
    if word:
        _one_word(s, "Postfix")
    return Escaped(s.replace("$", "$$"))


def pcre(v) -> Escaped:
    """A literal inside a Postfix PCRE pattern `/.../`: every character that is regex syntax, and
    the delimiter, escaped."""
    return Escaped(re.sub(r"([^A-Za-z0-9_-])", r"\\\1", _refuse_control(str(v), "a PCRE pattern")))


def dovecot(v) -> Escaped:
    """The inside of a double-quoted Dovecot 2.4 value (`key = "{{ v | dovecot }}"`); `%` (its
    variable syntax) is refused."""
    s = _refuse_control(str(v), "a Dovecot setting")
    if "%" in s:
        raise UnsafeValue(f"{s[:60]!r}: '%' cannot be written into a Dovecot setting")
    return Escaped(s.replace("\\", "\\\\").replace('"', '\\"'))


def ucl(v) -> Escaped:
    """The inside of a double-quoted UCL (rspamd) string (`key = "{{ v | ucl }}";`); `$` (its
    variable syntax) is refused."""
    s = _refuse_control(str(v), "an rspamd (UCL) string")
    if "$" in s:
        raise UnsafeValue(f"{s[:60]!r}: '$' cannot be written into an rspamd (UCL) string")
    return Escaped(json.dumps(s, ensure_ascii=False)[1:-1])


def lua(v) -> Escaped:
    """The inside of a double-quoted Lua string (`"{{ v | lua }}"`): quotes, backslashes and every
    control byte escaped; any text fits."""
    out = []
    for ch in str(v):
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\{o:03d}")
        elif CONTROL_RE.match(ch):
            out.extend(f"\\{b:03d}" for b in ch.encode())
        else:
            out.append(ch)
    return Escaped("".join(out))


def fail2ban(v, word: bool = False) -> Escaped:
    """A fail2ban .conf/.local value (Python configparser with interpolation): one line, `%` as
    `%%`; a value that would continue on the next line cannot exist. `word=True`: one item of a
    list (`ignoreip`), where a space or comma would start another."""
    s = _refuse_control(str(v), "a fail2ban setting")
    if word:
        _one_word(s, "fail2ban")
    return Escaped(s.replace("%", "%%"))


def systemd(v) -> Escaped:
    """A systemd unit value: one line, `%` specifiers written `%%`; a backslash (an escape, or at
    the end of a line a continuation) is refused."""
    s = _refuse_control(str(v), "a systemd unit")
    if "\\" in s:
        raise UnsafeValue(f"{s[:60]!r}: a backslash cannot be written into a systemd unit")
    return Escaped(s.replace("%", "%%"))


def php(v) -> Escaped:
    """The inside of a single-quoted PHP string (`'{{ v | php }}'`): backslashes and quotes escaped
    (the only escapes such a string has); control characters refused."""
    s = _refuse_control(str(v), "a PHP string")
    return Escaped(s.replace("\\", "\\\\").replace("'", "\\'"))


def nginx(v) -> Escaped:
    """The inside of a double-quoted nginx value (`"{{ v | nginx }}"`): `$` (its variables), `{`,
    `}` and `;` are refused outright; quotes and backslashes escaped."""
    s = _refuse_control(str(v), "an nginx setting")
    bad = sorted(set(s) & set("${};"))
    if bad:
        raise UnsafeValue(f"{s[:60]!r}: {''.join(bad)!r} cannot be written into an nginx setting")
    return Escaped(s.replace("\\", "\\\\").replace('"', '\\"'))


def xml(v) -> Escaped:
    """XML character data or an attribute value in double quotes: & < > " ' as entities; control
    characters XML 1.0 cannot carry are refused."""
    s = _refuse_control(str(v), "an XML document")
    return Escaped(s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                   .replace('"', "&quot;").replace("'", "&apos;"))


def postgresql(v, word: bool = False) -> Escaped:
    """The inside of a single-quoted postgresql.conf string (`'{{ v | postgresql }}'`): quotes doubled,
    backslashes escaped. `word=True`: one field of pg_hba.conf, or one item of a list setting: a
    space, comma, quote or `#` (which would start another field, item or a comment) is refused."""
    s = _refuse_control(str(v), "a PostgreSQL setting")
    if word:
        bad = sorted(set(s) & set(" \t,'\"#\\"))
        if bad:
            raise UnsafeValue(f"{s[:60]!r}: {''.join(bad)!r} cannot be written into one PostgreSQL field")
        return Escaped(s)
    return Escaped(s.replace("\\", "\\\\").replace("'", "''"))


def authorized_keys_command(v) -> Escaped:
    """The inside of an OpenSSH authorized_keys `command="..."` option: one line, no double quote
    or backslash (the file has no other escaping)."""
    s = _refuse_control(str(v), "an authorized_keys line")
    if '"' in s or "\\" in s:
        raise UnsafeValue(f"{s[:60]!r}: a double quote or backslash cannot be written into an authorized_keys option")
    return Escaped(s)


FILTERS = {f.__name__: f for f in (comment, postconf, pcre, dovecot, ucl, lua, fail2ban, systemd, php, nginx, xml,
                                   postgresql)}


def finalize(value):
    """Jinja's `finalize`: what may reach a template's output. Numbers, a filter's output and
    govmail's own constants; a string from anywhere else stops the render."""
    if isinstance(value, (Escaped, Trusted)) or value is None:
        return value if value is not None else ""
    if isinstance(value, bool):
        raise UnsafeValue(f"{value!r}: a boolean reached a template without a filter; write it as text explicitly")
    if isinstance(value, (int, float)):
        return value
    raise UnsafeValue(f"{str(value)[:60]!r}: a value reached a template without an escaping filter "
                      f"({', '.join(FILTERS)})")


def host_address(value: str) -> Trusted:
    """A host's address as the configuration files take it: an IPv4 address, or a host name."""
    try:
        return Trusted(str(ipaddress.IPv4Address(value)))
    except ValueError:
        if not DOMAIN_RE.match(value):
            raise UnsafeValue(f"{value[:60]!r}: not an IPv4 address or a host name") from None
        return Trusted(value)
