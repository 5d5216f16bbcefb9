"""What a Sieve script would send, and where: the check a script passes before it is stored.

A script may make the server send mail: `redirect` (with or without :copy), `notify` with a mailto:
method (enotify), `report` (vnd.dovecot.report), a program (`pipe`, `execute`, `filter`). Before a
script is stored (govmail/host/sieve_guard.py, in front of Dovecot's ManageSieve, which the web
mail uses too), every such action must name, as a constant, an address in the state domains
(`policy.forwarding`); a computed address (from variables), a program, or an address outside is
refused with the article.

Two readings must agree: Pigeonhole compiles the script (`sievec`) and lists its operations
(`sieve-dump`), the authority on what runs; govmail's own reading of the source (RFC 5228's lexical
rules) gives each string whole (the dump cuts long strings). Each sending operation of the dump is
matched, in order, with the command of the source; a count or a value that differs is refused as
unreadable. Standard library only.
"""

import os
import re
import subprocess
import tempfile
import urllib.parse

SENDING = {"redirect", "notify", "report", "pipe", "execute", "filter"}
PROGRAMS = {"pipe", "execute", "filter"}


class Unreadable(Exception):
    """The script could not be read with certainty: it is not stored."""


# ---------------------------------------------------------------------------- the source (RFC 5228 section 8)

TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<hash>\#[^\n]*(\n|\Z))
  | (?P<bracket>/\*.*?\*/)
  | (?P<text>text:[ \t]*(\#[^\n]*)?\r?\n)
  | (?P<quoted>"(?:[^"\\]|\\.)*")
  | (?P<tag>:[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[0-9]+[KkMmGg]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[;,{}()\[\]])
""", re.X | re.S)

ENCODED = re.compile(r"\$\{(hex|unicode):([^}]*)\}", re.I)


def _decode_encoded(s):
    """RFC 5228 2.4.2.4 encoded characters, when the script requires "encoded-character"."""
    def one(m):
        parts = m.group(2).split()
        try:
            if m.group(1).lower() == "hex":
                return bytes(int(p, 16) for p in parts).decode("utf-8")
            return "".join(chr(int(p, 16)) for p in parts)
        except (ValueError, UnicodeDecodeError, OverflowError):
            return m.group(0)
    return ENCODED.sub(one, s)


def tokens(src):
    """(kind, value) of each token; strings unquoted. Unreadable on anything else."""
    out, i = [], 0
    while i < len(src):
        m = TOKEN.match(src, i)
        if not m:
            raise Unreadable(f"unexpected text at character {i}")
        kind = m.lastgroup
        if kind == "text":  # multi-line string: up to a line holding only ".", dot-stuffed
            end = re.compile(r"^\.\r?$", re.M).search(src, m.end())
            if not end:
                raise Unreadable("a text: string without its closing line")
            body = src[m.end():end.start()]
            lines = [x.removesuffix("\r") for x in body.split("\n")]
            out.append(("string", "\r\n".join(x[1:] if x.startswith("..") else x for x in lines)))
            i = end.end()
            continue
        if kind == "quoted":  # a line break in a string is CRLF, as Pigeonhole reads it
            text = re.sub(r"\\(.)", r"\1", m.group(0)[1:-1], flags=re.S)
            out.append(("string", re.sub(r"\r?\n", "\r\n", text)))
        elif kind not in ("ws", "hash", "bracket"):
            out.append((kind, m.group(0)))
        i = m.end()
    return out


def commands(src):
    """[(name, [argument tokens])] of every command, in the order of the source. A test's arguments
    (inside if/elsif conditions) come with the command that holds them; only commands matter here."""
    toks = tokens(src)
    out, i, expect_command = [], 0, True
    while i < len(toks):
        kind, value = toks[i]
        if kind == "ident" and expect_command:
            name, args, i = value.lower(), [], i + 1
            while i < len(toks) and toks[i] not in (("punct", ";"), ("punct", "{")):
                args.append(toks[i])
                i += 1
            out.append((name, args))
            expect_command = True
            i += 1
            continue
        expect_command = kind == "punct" and value in (";", "{", "}")
        i += 1
    return out


# Tags of the sending commands that take a value (the others are flags): enotify's, the deprecated
# notify's, redirect-dsn's and redirect-deliverby's.
TAGS_WITH_VALUE = {":from", ":importance", ":options", ":message", ":method", ":id", ":notify", ":ret",
                   ":bytimerelative", ":bytimeabsolute", ":bymode"}


def _strings(args):
    """Positional and tagged arguments: ([positional strings or string lists], {tag: value})."""
    positional, tags, i = [], {}, 0
    while i < len(args):
        kind, value = args[i]
        if kind == "tag":
            tag = value.lower()
            if tag in TAGS_WITH_VALUE and i + 1 < len(args):
                if args[i + 1][0] == "number":
                    tags[tag], i = [args[i + 1][1]], i + 2
                else:
                    tags[tag], i = _value(args, i + 1)
            else:
                tags[tag], i = None, i + 1
            continue
        if kind == "string" or (kind, value) == ("punct", "["):
            vals, i = _value(args, i)
            positional.append(vals)
            continue
        i += 1
    return positional, tags


def _value(args, i):
    if args[i][0] == "string":
        return [args[i][1]], i + 1
    vals, i = [], i + 1
    while i < len(args) and args[i] != ("punct", "]"):
        if args[i][0] == "string":
            vals.append(args[i][1])
        i += 1
    return vals, i + 1


# ---------------------------------------------------------------------------- Pigeonhole's reading

OP = re.compile(r"^[0-9a-f]{8}:\s+(?:\d+:\s+)?([A-Z][A-Z0-9_-]*)\s*$")
OPERAND = re.compile(r"^[0-9a-f]{8}:\s+([a-z][a-z -]*):\s+(.*)$")
STR = re.compile(r'^STR\[(\d+)\] "(.*?)("|\.\.\.)$', re.S)


def pigeonhole_ops(src, sievec="sievec", dump="sieve-dump"):
    """[(OPERATION, {operand: dump text})] for the sending operations, or None when the script does
    not compile (Dovecot refuses it with its own words). Unreadable when the tools fail."""
    with tempfile.TemporaryDirectory(prefix="govmail-sieve-") as d:
        script, binary = os.path.join(d, "check.sieve"), os.path.join(d, "check.svbin")
        with open(script, "w", encoding="utf-8") as f:
            f.write(src)
        r = subprocess.run([sievec, script, binary], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            if re.search(r": (line \d+: )?error: ", r.stdout + r.stderr):
                return None
            raise Unreadable(f"sievec failed: {(r.stderr or r.stdout).strip()[-200:]}")
        r = subprocess.run([dump, binary], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise Unreadable(f"sieve-dump failed: {r.stderr.strip()[-200:]}")
    ops, current = [], None
    for line in r.stdout.split("\n"):
        m = OP.match(line)
        if m:
            name = m.group(1).lower()
            current = (name, {}) if name in SENDING else None
            if current:
                ops.append(current)
            continue
        m = OPERAND.match(line)
        if m and current is not None:
            current[1][m.group(1).strip()] = m.group(2)
    return ops


def _dumped(operand):
    """(byte length, shown text, whole?) of a constant operand; None for one made at run time."""
    m = STR.match(operand or "")
    if not m:
        return None
    return int(m.group(1)), m.group(2), m.group(3) == '"'


def _shown(full):
    """A string as sieve-dump prints it (control characters as '?')."""
    return "".join(c if c.isprintable() or ord(c) > 127 else "?" for c in full)


# ---------------------------------------------------------------------------- the check


def is_state(domain, state_domains):
    domain = domain.lower().rstrip(".")
    return any(domain == d or (d.startswith("*.") and domain.endswith(d[1:])) for d in state_domains)


def _domain(address):
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c in domain for c in " \t\r\n<>,;\"()[]\\"):
        return None
    return domain


def mailto_addresses(uri):
    """Every address a mailto: URI sends to (RFC 6068: the path and to=, cc=, bcc= fields)."""
    if not uri.lower().startswith("mailto:"):
        return None
    path, _, query = uri[7:].partition("?")
    found = [urllib.parse.unquote(a) for a in path.split(",") if a]
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key.lower() in ("to", "cc", "bcc", "resent-to"):
            found += [a for a in urllib.parse.unquote(value).split(",") if a]
    return found


VARIABLE = re.compile(r"\$\{[^}]*\}")


def _targets(name, args, encoded):
    """The target strings of one sending command in the source, and whether one is made at run time."""
    positional, tags = _strings(args)
    if encoded:
        positional = [[_decode_encoded(s) for s in p] for p in positional]
    if not positional or len(positional[-1]) != 1:
        raise Unreadable(f"{name}: no target")
    return positional[-1][0], tags


def check(src, state_domains, sievec="sievec", dump="sieve-dump"):
    """[(command, target, why)] of every sending action the script may not hold; [] when it may be
    stored (or does not compile: Dovecot says why). Unreadable when it cannot be told.

    Every sending command of the source is judged, also in code that cannot run (a rule the web mail
    keeps disabled is `if false { ... }`, which Pigeonhole leaves out); every sending operation
    Pigeonhole compiled must be one of them, with the same constant, or the script is refused."""
    ops = pigeonhole_ops(src, sievec, dump)
    if ops is None:
        return []
    encoded = "encoded-character" in src
    refused, seen = [], []
    for name, args in commands(src):
        if name not in SENDING:
            continue
        if name in PROGRAMS:
            refused.append((name, "", "runs a program"))
            continue
        target, tags = _targets(name, args, encoded)
        seen.append((name, target))
        if name == "notify" and ":method" in tags:  # the deprecated notify: recipients in :options
            refused.append((name, target, "the old notify extension is not accepted"))
            continue
        if VARIABLE.search(target):
            refused.append((name, target, "the address is made when the script runs (variables)"))
            continue
        addresses = mailto_addresses(target) if name == "notify" else [target]
        if addresses is None:
            refused.append((name, target, "only mailto: notifications are accepted"))
            continue
        for a in addresses:
            domain = _domain(a)
            if domain is None or not is_state(domain, state_domains):
                refused.append((name, a, "outside the state domains"))
    for op, operands in ops:
        if op in PROGRAMS:
            continue  # refused above, or the command is not in the source: then below
        d = _dumped(operands.get("method" if op == "notify" else "address"))
        if d is None:
            if not any(n == op and VARIABLE.search(t) for n, t in seen):
                raise Unreadable(f"a {op} whose target is made at run time, not seen in the text")
            continue
        length, shown, whole = d
        if not any(n == op and len(t.encode("utf-8")) == length
                   and (_shown(t) == shown if whole else _shown(t).startswith(shown)) for n, t in seen):
            raise Unreadable(f"a {op} the text does not show")
    if any(op in PROGRAMS for op, _ in ops) and not any(n in PROGRAMS for n, _ in refused):
        raise Unreadable("a program the text does not show")
    return refused
