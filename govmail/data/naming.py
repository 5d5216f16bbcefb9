"""Addresses of people by the province's naming rule.

The rule every province shares: given name + initials of the surname and middle names, in
lower-case ASCII with the diacritics removed and đ -> d (BN Art. 4.b, DN Art. 5.1.a, LC Art. 5.2.a,
TN Art. 3.5): Nguyễn Văn Hậu -> haunv. Then the person's unit (`policy.naming.unit_suffix`):
`.<agency>`, or `.<department>.<district>` for staff of a district department (DN Art. 5.1.d);
Thái Nguyên has none. When the address is taken, `policy.naming.clash` decides: `letter` appends
a, b, c ... to the name part (DN), `characters` appends 1 ... 99 (TN), `manual` reports the clash for
the department's decision (BN, LC).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Optional

from .schema import NamingPolicy

LETTERS = "abcdefghijklmnopqrstuvwxyz"


class NameClash(Exception):
    """The rule's address is taken and the province decides clashes by hand."""

    def __init__(self, address: str, article: str):
        self.address = address
        super().__init__(
            f"{address} is already taken; this province settles clashes by a decision of the department "
            f"({article}): choose an address and put it in the data file"
        )


def ascii_fold(text: str) -> str:
    """Lower-case ASCII form of Vietnamese text: diacritics dropped, đ/Đ -> d.

    Works on precomposed (NFC) and decomposed (NFD, combining marks) input alike.
    """
    text = unicodedata.normalize("NFD", text).replace("đ", "d").replace("Đ", "D")
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


def name_words(full_name: str) -> list[str]:
    words = [w for w in re.split(r"[\s\-]+", ascii_fold(full_name)) if w]
    words = [re.sub(r"[^a-z0-9]", "", w) for w in words]
    words = [w for w in words if w]
    if not words:
        raise ValueError(f"no letters in the name {full_name!r}")
    return words


def person_local(full_name: str) -> str:
    """`Nguyễn Văn Hậu` -> `haunv`; `Nguyễn Thị Minh Khai` -> `khaintm`; a one-word name stays as it is."""
    words = name_words(full_name)
    given, others = words[-1], words[:-1]
    return given + "".join(w[0] for w in others)


def unit_pair(child: str, parent: str, order: str = "child_first") -> str:
    """A unit under another in an address: `child.parent` (the seeds) or `parent.child`."""
    return f"{parent}.{child}" if order == "parent_first" else f"{child}.{parent}"


def local_units(model) -> set[str]:
    """Units whose staff in a department carry the department in their address (DN Art. 5.1.d):
    districts, and the communes directly under the province."""
    return {d.id for d in model.directory.districts} | {c.id for c in model.directory.communes}


def all_units(model) -> dict[str, set[str]]:
    """Every agency, district and commune id -> the ids of its departments."""
    d = model.directory
    return {u.id: {x.id for x in u.departments} for u in [*d.agencies, *d.districts, *d.communes]}


def unit_of(agency: Optional[str], department: Optional[str], districts: Iterable[str],
            order: str = "child_first") -> str:
    """The unit part of an address: `<agency>`, or `<department>.<district>` for staff of a department
    of a district or commune (`parent_first`: `<district>.<department>`)."""
    if not agency:
        return ""
    if department and agency in set(districts):
        return unit_pair(department, agency, order)
    return agency


def person_address(full_name: str, domain: str, *suffixes: str) -> str:
    """`person_address("Nguyễn Văn Hậu", "bacninh.gov.vn", "stnmt")` -> haunv.stnmt@bacninh.gov.vn."""
    return ".".join([person_local(full_name), *[s for s in suffixes if s]]) + "@" + domain


def clash_suffixes(rule: str) -> list[str]:
    if rule == "letter":
        return list(LETTERS)
    if rule == "characters":
        return [str(i) for i in range(1, 100)]
    return []


def address_for(full_name: str, unit: str, domain: str, policy: NamingPolicy, taken: set[str]) -> str:
    """The address the rule gives, with the province's clash rule applied against `taken`."""
    local = person_local(full_name)
    tail = f".{unit}" if (policy.unit_suffix and unit) else ""
    first = f"{local}{tail}@{domain}"
    if first not in taken:
        return first
    if policy.clash == "manual":
        raise NameClash(first, policy.article)
    for s in clash_suffixes(policy.clash):
        candidate = f"{local}{s}{tail}@{domain}"
        if candidate not in taken:
            return candidate
    raise NameClash(first, policy.article)


def rule_problem(address: str, full_name: str, unit: str, domain: str, policy: NamingPolicy) -> Optional[str]:
    """Why `address` does not follow the rule for this person (None: it does)."""
    try:
        local = person_local(full_name)
    except ValueError as e:
        return str(e)
    tail = f".{unit}" if (policy.unit_suffix and unit) else ""
    allowed = [f"{local}{tail}@{domain}"] + [f"{local}{s}{tail}@{domain}" for s in clash_suffixes(policy.clash)]
    if address in allowed:
        return None
    how = {"letter": " (a letter may follow the name part on a clash)",
           "characters": " (one or two characters may follow the name on a clash)",
           "manual": " (a different address needs the department's decision)"}[policy.clash]
    return f"{address!r} does not follow the naming rule: expected {allowed[0]}{how} ({policy.article})"


def import_people(cfg, rows: Iterable[dict], lines: Optional[list[int]] = None,
                  source: str = "") -> tuple[list[dict], list[str]]:
    """Directory entries for CSV rows of (name, agency, role[, department]).

    Returns (entries ready for `directory.people`, problems). Addresses already in the directory,
    and those given to earlier rows, count as taken; a clash the province settles by hand, an
    unknown agency or a bad role is a problem, and that row gets no entry.
    """
    model = cfg.model
    taken = {a.address for a in cfg.accounts} | set(cfg.aliases)
    units = all_units(model)
    districts = local_units(model)
    entries, problems = [], []
    for n, row in enumerate(rows, start=1):
        name = (row.get("name") or "").strip()
        agency = (row.get("agency") or "").strip().lower() or None
        department = (row.get("department") or "").strip().lower() or None
        role = (row.get("role") or "user").strip().lower() or "user"
        where = (f"{source}:{lines[n - 1]}" if lines else f"row {n}") + f" ({name or 'no name'})"
        if not name:
            problems.append(f"{where}: no name")
            continue
        if role not in ("user", "admin"):
            problems.append(f"{where}: role {role!r}; allowed: user, admin")
            continue
        if agency and agency not in units:
            problems.append(f"{where}: agency {agency!r} is not in the directory; known: {', '.join(sorted(units))}")
            continue
        if department and department not in units.get(agency, set()):
            problems.append(f"{where}: department {department!r} is not a department of {agency!r}")
            continue
        try:
            address = address_for(name, unit_of(agency, department, districts, cfg.policy.naming.unit_order), cfg.domain, cfg.policy.naming, taken)
        except (NameClash, ValueError) as e:
            problems.append(f"{where}: {e}")
            continue
        taken.add(address)
        entry = {"name": name, "address": address}
        if agency:
            entry["agency"] = agency
        if department:
            entry["department"] = department
        if role != "user":
            entry["role"] = role
        entries.append(entry)
    return entries, problems


def yaml_entry(entry: dict) -> str:
    """One `directory.people` line in the flow style the data files use. Every value is written as
    a double-quoted scalar (JSON's string syntax is YAML's): a name can never become a key."""
    import json

    return "    - {" + ", ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in entry.items()) + "}"
