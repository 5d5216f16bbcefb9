"""The directory of addresses for the provincial portal (BN Art. 5, DN Art. 3.4 and 6, LC Art. 16.4,
TN Art. 16.1 and 17; grouped by agency: TN Art. 3.6.1).

Only what the regulations publish: name, unit (agency, district or commune, then department), position
and address, of active mailboxes (people, units and functional mailboxes). Never a password, a hash,
a quota, a role or a status. Three forms, made from the data file:

- `index.html`: grouped by unit, with a search that ignores diacritics ("Hau" finds "Hậu");
- `directory.csv`: UTF-8 with a byte-order mark (Excel opens Vietnamese correctly), one row each;
- `directory.vcf`: vCard 3.0, one card each (address books import it).

`govmail directory PROVINCE` writes them; the web server serves them at
`https://<mail host>/directory/` (govmail/services/web.py), so the portal links to a page each deploy
keeps current. The web mail's address book reads the same entries (govmail/services/webmail.py).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import unicodedata
from dataclasses import dataclass
from typing import Optional

from ..data import validated_cache
from ..render import page

COLUMNS = ("name", "unit", "department", "position", "address")
OTHER = "Hộp thư chức năng"  # functional mailboxes: no unit


@dataclass(frozen=True)
class Entry:
    name: str
    address: str
    unit: str  # the agency, district or commune (or OTHER)
    department: str  # a department, or a commune of a (pre-2025) district; "" at the unit itself
    position: str
    kind: str  # person | agency | department | district | commune | mailbox


@functools.lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """Lower case without diacritics: "Nguyễn Văn Hậu" -> "nguyen van hau" (đ -> d). Kept per value: a
    directory of 50,000 repeats its names, units and positions (bench/directory_scale.py)."""
    if text.isascii():
        return text.lower()
    t = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in t if not unicodedata.combining(c)).lower()


def fold_words(*parts: str) -> str:
    """fold() of the parts joined by spaces, folded part by part (the same text: a space ends every
    combining sequence and every word)."""
    return " ".join(fold(p) for p in parts)


def _unit_names(cfg) -> tuple[dict, dict]:
    d = cfg.model.directory
    top, sub = {}, {}
    for u in [*d.agencies, *d.districts, *d.communes]:
        top[u.id] = u.name
        for s in getattr(u, "departments", []):
            sub[(u.id, s.id)] = s.name
        for s in getattr(u, "communes", []):
            sub[(u.id, s.id)] = s.name
    return top, sub


def entries(cfg) -> list[Entry]:
    """The published entries, grouped: units in directory order, then by name within each."""
    top, sub = _unit_names(cfg)
    positions = {p.address: p.position or "" for p in cfg.model.directory.people}
    order = {k: i for i, k in enumerate(top)}
    out = []
    for a in cfg.accounts:
        if a.status != "active":
            continue
        owner, dept = a.unit if a.unit else (None, None)
        unit = top.get(owner, OTHER) if owner else OTHER
        out.append(Entry(a.name, a.address, unit, sub.get((owner, dept), "") if dept else "",
                         positions.get(a.address, ""), a.kind))
    rank = {k: i for i, k in enumerate(["agency", "district", "commune", "department", "person", "mailbox"])}
    units = {}
    for k, n in top.items():
        units.setdefault(n, order[k])
    return sorted(out, key=lambda e: (units.get(e.unit, len(order)), e.unit == OTHER, e.department != "",
                                      e.department, rank.get(e.kind, 9), fold(e.name), e.address))


def _cell(v: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading = + - @ (a formula) is quoted with '."""
    return "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v


def to_csv(cfg, items: Optional[list[Entry]] = None) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["Họ tên / Name", "Đơn vị / Unit", "Phòng ban / Department", "Chức vụ / Position", "Địa chỉ thư / Address"])
    for e in items if items is not None else entries(cfg):
        w.writerow([_cell(e.name), _cell(e.unit), _cell(e.department), _cell(e.position), e.address])
    return ("\ufeff" + buf.getvalue()).encode()


def _vtext(v: str) -> str:
    return (v.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;").replace("\r\n", "\\n")
            .replace("\n", "\\n").replace("\r", "\\n"))


def _fold_line(line: str) -> str:
    """RFC 6350 3.2: lines of at most 75 octets, continued with CRLF + space (never inside a character)."""
    if len(line) <= 18 or len(line.encode()) <= 75:  # 18 characters are at most 72 octets
        return line
    out, cur = [], b""
    for ch in line:
        b = ch.encode()
        if len(cur) + len(b) > (75 if not out else 74):
            out.append(cur)
            cur = b""
        cur += b
    out.append(cur)
    return "\r\n ".join(x.decode() for x in out)


def to_vcard(cfg, items: Optional[list[Entry]] = None) -> bytes:
    lines = []
    org = cfg.model.name
    for e in items if items is not None else entries(cfg):
        card = ["BEGIN:VCARD", "VERSION:3.0", "FN:" + _vtext(e.name), "N:" + _vtext(e.name) + ";;;;",
                "ORG:" + ";".join(_vtext(x) for x in (org, e.unit, e.department) if x),
                "EMAIL;TYPE=INTERNET:" + e.address]
        if e.position:
            card.append("TITLE:" + _vtext(e.position))
        card.append("END:VCARD")
        lines += [_fold_line(x) for x in card]
    return ("\r\n".join(lines) + "\r\n").encode() if lines else b""


def to_html(cfg, items: Optional[list[Entry]] = None, updated: str = "") -> bytes:
    """The page (templates/www/directory/index.html.j2, autoescaped): units in order, each with its
    departments; every row carries its folded text for the search."""
    items = items if items is not None else entries(cfg)
    sections: list[tuple[str, list[tuple[str, list]]]] = []
    for e in items:
        if not sections or sections[-1][0] != e.unit:
            sections.append((e.unit, []))
        groups = sections[-1][1]
        if not groups or groups[-1][0] != e.department:
            groups.append((e.department, []))
        groups[-1][1].append((e, fold_words(e.name, e.unit, e.department, e.position, e.address)))
    return page("www/directory/index.html.j2", province=cfg.model.name, domain=cfg.domain, count=len(items),
                sections=sections, updated=updated or "-").encode()


def files(cfg) -> dict[str, bytes]:
    """What the web server serves under /directory/ (and `govmail directory` writes); made once per
    validated data file (govmail/data: validated_cache.derived)."""
    return validated_cache.derived(cfg, "portal", _files)


def _files(cfg) -> dict[str, bytes]:
    items = entries(cfg)
    digest = json.dumps([e.__dict__ for e in items], ensure_ascii=False, sort_keys=True)
    version = hashlib.sha256(digest.encode()).hexdigest()[:12]
    return {"index.html": to_html(cfg, items, updated=f"phiên bản / version {version}"),
            "directory.csv": to_csv(cfg, items), "directory.vcf": to_vcard(cfg, items)}
