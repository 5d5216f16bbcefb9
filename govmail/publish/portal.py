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
import html
import io
import json
import unicodedata
from dataclasses import dataclass
from typing import Optional

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


def fold(text: str) -> str:
    """Lower case without diacritics: "Nguyễn Văn Hậu" -> "nguyen van hau" (đ -> d)."""
    t = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in t if not unicodedata.combining(c)).lower()


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


PAGE = """<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Danh bạ thư điện tử - {province}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:1.5em auto;padding:0 1em;color:#222}}
h1{{font-size:1.5em}}h2{{font-size:1.15em;margin:1.4em 0 .3em;border-bottom:1px solid #ccc}}
h3{{font-size:1em;margin:.8em 0 .2em;color:#444}}table{{border-collapse:collapse;width:100%}}
td{{padding:.2em .5em;border-bottom:1px solid #eee;vertical-align:top}}td.a{{white-space:nowrap}}
input{{width:100%;padding:.5em;font-size:1em;box-sizing:border-box}}.n{{color:#666}}</style></head><body>
<h1>Danh bạ thư điện tử {province}<br><small class="n">Mail directory of {province} ({domain})</small></h1>
<p><label for="q">Tìm theo tên, đơn vị, chức vụ hoặc địa chỉ (có hoặc không dấu) / Search</label>
<input id="q" type="search" autocomplete="off" placeholder="Nguyễn Văn Hậu, hau, sở tài chính..."></p>
<p class="n" id="count">{count} địa chỉ / addresses. Tải về / Download: <a href="directory.csv">CSV</a>,
<a href="directory.vcf">vCard</a>. Cập nhật / Updated: {updated}.</p>
{body}
<script>
function fold(s){{return s.replace(/đ/g,"d").replace(/Đ/g,"D").normalize("NFD").replace(/[\\u0300-\\u036f]/g,"").toLowerCase();}}
var rows=[].slice.call(document.querySelectorAll("tr[data-k]"));
document.getElementById("q").addEventListener("input",function(){{
  var q=fold(this.value.trim()),n=0;
  rows.forEach(function(r){{var on=!q||r.getAttribute("data-k").indexOf(q)>=0;r.hidden=!on;if(on)n++;}});
  document.querySelectorAll("section").forEach(function(s){{s.hidden=!s.querySelector("tr:not([hidden])");}});
  document.getElementById("count").firstChild.nodeValue=n+" địa chỉ / addresses. ";
}});
</script></body></html>
"""


def to_html(cfg, items: Optional[list[Entry]] = None, updated: str = "") -> bytes:
    items = items if items is not None else entries(cfg)
    e_ = html.escape
    parts, unit, dept = [], None, None
    for e in items:
        if e.unit != unit:
            if unit is not None:
                parts.append("</table></section>")
            parts.append(f"<section><h2>{e_(e.unit)}</h2><table>")
            unit, dept = e.unit, ""
        if e.department != dept:
            parts.append(f'<tr><td colspan="3"><h3>{e_(e.department)}</h3></td></tr>')
            dept = e.department
        key = fold(" ".join((e.name, e.unit, e.department, e.position, e.address)))
        parts.append(f'<tr data-k="{e_(key)}"><td>{e_(e.name)}</td><td class="n">{e_(e.position)}</td>'
                     f'<td class="a"><a href="mailto:{e_(e.address)}">{e_(e.address)}</a></td></tr>')
    if unit is not None:
        parts.append("</table></section>")
    return PAGE.format(province=e_(cfg.model.name), domain=e_(cfg.domain), count=len(items), body="\n".join(parts),
                       updated=e_(updated or "-")).encode()


def files(cfg) -> dict[str, bytes]:
    """What the web server serves under /directory/ (and `govmail directory` writes)."""
    items = entries(cfg)
    digest = json.dumps([e.__dict__ for e in items], ensure_ascii=False, sort_keys=True)
    import hashlib
    version = hashlib.sha256(digest.encode()).hexdigest()[:12]
    return {"index.html": to_html(cfg, items, updated=f"phiên bản / version {version}"),
            "directory.csv": to_csv(cfg, items), "directory.vcf": to_vcard(cfg, items)}
