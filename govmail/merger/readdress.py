"""`govmail readdress PROVINCE`: the addresses that change under a new structure, and the change made.

The 2025 reform abolished districts: communes and wards now sit directly under the province
(`directory.communes`), and some provinces write a unit's parent first (`policy.naming.unit_order`).
After the data file is edited to the new structure, `readdress`:

- for each person whose address no longer follows the naming rule for their unit, gives the
  address the rule gives now (the name part, clash letter included, is kept);
- with `--from OLD.yml` (the data file before the edit: `git show HEAD:group_data/<p>.yml`), for
  each unit whose derived address changed (a commune moved up from its district, a new order),
  gives the old address;
- lists every change `old -> new` for review, and units of the old file that are gone;
- with `--apply`, writes the data file: the person's `address` becomes the new one, and every old
  address goes into the entry's `former:` list, where it stays an alias for good (govmail/data/predecessors.py).
  The new text is validated; the file is put back as it was if it does not pass.

At the next deploy the host's account store renames each mailbox whose new address has its old
one in `former:` (password, status, dates and mail kept; govmail/host/store.py): no mailbox is
re-created and no password reset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .. import data
from ..data.config import fmt_path
from ..data.naming import clash_suffixes, local_units, person_local, rule_problem, unit_of
from ..data.yamldoc import Doc


@dataclass
class Change:
    path: tuple  # key path of the entry in the new data file
    what: str  # person | unit
    old: str
    new: str


def _person_changes(cfg, problems: list[str]) -> list[Change]:
    m, naming = cfg.model, cfg.policy.naming
    districts = local_units(m)
    taken = {a.address for a in cfg.accounts} | set(cfg.aliases) | set(cfg.former)
    out = []
    people = [a for a in cfg.accounts if a.kind == "person"]
    for i, a in enumerate(people):
        agency, dept = a.unit or (None, None)
        unit = unit_of(agency, dept, districts, naming.unit_order)
        if not rule_problem(a.address, a.name, unit, cfg.domain, naming):
            continue
        local = a.address.rpartition("@")[0]
        name_part = local.split(".", 1)[0]
        base = person_local(a.name)
        if not (name_part == base or name_part[len(base):] in clash_suffixes(naming.clash)):
            name_part = base
        tail = f".{unit}" if naming.unit_suffix and unit else ""
        new = f"{name_part}{tail}@{cfg.domain}"
        path = ("directory", "people", i)
        if new in taken:
            problems.append(f"{fmt_path(path)}: {a.address} -> {new} is taken; choose an address by the province's "
                            f"clash rule ({naming.article}) and edit the entry")
            continue
        taken.add(new)
        out.append(Change(path, "person", a.address, new))
    return out


def _unit_ids(cfg) -> dict[tuple, str]:
    """Each unit's identity -> its address: its own id for agencies, districts and communes (a commune
    moved up keeps its id), (parent id, id) for departments."""
    out = {}
    for a in cfg.accounts:
        if a.kind == "person" or a.kind == "mailbox" or not a.unit:
            continue
        owner, sub = a.unit
        ident = (sub,) if a.kind == "commune" and sub else (owner,) if not sub else (owner, sub)
        out[ident] = a.address
    return out


def _unit_paths(cfg) -> dict[tuple, tuple]:
    d = cfg.model.directory
    out = {}
    for section in ("agencies", "districts", "communes"):
        for i, u in enumerate(getattr(d, section)):
            out[(u.id,)] = ("directory", section, i)
            for j, x in enumerate(u.departments):
                out[(u.id, x.id)] = ("directory", section, i, "departments", j)
            for j, x in enumerate(getattr(u, "communes", [])):
                out[(x.id,)] = ("directory", section, i, "communes", j)
    return out


def _unit_changes(cfg, old_cfg, gone: list[str]) -> list[Change]:
    new_ids, old_ids, paths = _unit_ids(cfg), _unit_ids(old_cfg), _unit_paths(cfg)
    kept = set(cfg.former) | {a.address for a in cfg.accounts}
    out = []
    for ident, old in sorted(old_ids.items()):
        new = new_ids.get(ident)
        if new is None:
            if old not in kept:
                gone.append(old)
        elif new != old and old not in kept:
            out.append(Change(paths[ident], "unit", old, new))
    return out


def changes(file: Path, old_file: Optional[Path] = None) -> tuple[list[Change], list[str], list[str]]:
    """(changes, problems, gone units' addresses) for the data file, read with the naming rule as a
    warning (its addresses are what is being fixed)."""
    cfg = data._load_province(file, naming_check="off")
    problems: list[str] = []
    out = _person_changes(cfg, problems)
    gone: list[str] = []
    if old_file:
        out += _unit_changes(cfg, _load_old(file, old_file), gone)
    return out, problems, gone


def _load_old(file: Path, old_file: Path):
    """The old data file, read as the province's (its name and the national defaults beside it)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="govmail-readdress-") as d:
        shutil.copy(old_file, Path(d) / file.name)
        if (file.parent / "defaults.yml").exists():
            shutil.copy(file.parent / "defaults.yml", Path(d) / "defaults.yml")
        try:
            return data._load_province(Path(d) / file.name, naming_check="off")
        except data.DataError as e:
            for p in e.problems:
                p.file = str(old_file)
            raise


_FLOW = re.compile(r"^(\s*-?\s*)\{(.*)\}(\s*(#.*)?)$")


def _edit(lines: list[str], doc: Doc, ch: Change) -> Optional[str]:
    """Edit the entry's lines in place; the reason when it cannot be done by a line edit."""
    n = doc.line(ch.path)
    if not n:
        return "entry not found"
    line = lines[n - 1]
    flow = _FLOW.match(line.rstrip("\n"))
    if flow:
        body = flow.group(2)
        if ch.what == "person":
            body, k = re.subn(rf"(\baddress:\s*[\"']?){re.escape(ch.old)}([\"']?)", rf"\g<1>{ch.new}\g<2>", body)
            if k != 1:
                return "its address is not written plainly on its line"
        if re.search(r"\bformer:\s*\[", body):
            body = re.sub(r"(\bformer:\s*\[)", rf"\g<1>{ch.old}, ", body, count=1)
        elif "former:" in body:
            return "its `former:` is not a [list] on its line"
        else:
            body = body.rstrip() + f", former: [{ch.old}]"
        lines[n - 1] = f"{flow.group(1)}{{{body}}}{flow.group(3)}\n"
        return None
    # Block style: the address (or, for a unit, the id) line gets `former:` after it.
    key = ch.path + (("address",) if ch.what == "person" else ("id",))
    k = doc.line(key)
    if not k or doc.has(ch.path + ("former",)):
        return "not a one-line entry, and its `former:` list is already there: edit it by hand"
    indent = re.match(r"^(\s*-?\s*)", lines[k - 1]).group(1).replace("-", " ")
    if ch.what == "person":
        if ch.old not in lines[k - 1]:
            return "its address is not written plainly"
        lines[k - 1] = lines[k - 1].replace(ch.old, ch.new, 1)
    lines.insert(k, f"{indent}former: [{ch.old}]\n")
    return None


def apply(file: Path, found: list[Change]) -> tuple[str, list[str]]:
    """The new text of the data file with the changes made (bottom-up, so line numbers hold), and
    the changes that need a hand edit."""
    doc = Doc(file, str(file))
    lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
    by_hand = []
    for ch in sorted(found, key=lambda c: doc.line(c.path) or 0, reverse=True):
        why = _edit(lines, doc, ch)
        if why:
            by_hand.append(f"{fmt_path(ch.path)}: {ch.old} -> {ch.new}: {why}")
    return "".join(lines), by_hand


def write_checked(file: Path, text: str) -> None:
    """Write the new text and validate it (naming rule as the province applies it); on any problem
    the file is put back as it was and the problems raised."""
    before = file.read_bytes()
    file.write_text(text, encoding="utf-8")
    try:
        data._load_province(file)
    except BaseException:
        file.write_bytes(before)
        raise


def cmd(args) -> int:
    import difflib
    import sys

    file = data.province_file(args.province)
    old = Path(args.old) if args.old else None
    if old is not None and not old.is_file():
        print(f"govmail: --from {args.old}: no such file", file=sys.stderr)
        return 2
    try:
        found, problems, gone = changes(file, old)
    except data.DataError as e:
        print(f"govmail: {e}", file=sys.stderr)
        return 2
    for ch in found:
        print(f"{ch.old} -> {ch.new}\t({ch.what}, {fmt_path(ch.path)})")
    for addr in gone:
        print(f"{addr}: its unit is gone from the new structure; give the address to a unit's `former:` list "
              "or it stops receiving mail", file=sys.stderr)
    for p in problems:
        print(f"govmail: {p}", file=sys.stderr)
    print(f"govmail: {len(found)} addresses change, {len(problems) + len(gone)} need a decision", file=sys.stderr)
    if not args.apply or not found:
        return 1 if problems or gone else 0
    before = file.read_text(encoding="utf-8")
    text, by_hand = apply(file, found)
    for line in by_hand:
        print(f"govmail: edit by hand: {line}", file=sys.stderr)
    try:
        write_checked(file, text)
    except data.DataError as e:
        print(f"govmail: not written, the result does not validate:\n{e}", file=sys.stderr)
        return 2
    sys.stdout.writelines(difflib.unified_diff(before.splitlines(True), text.splitlines(True), str(file), str(file)))
    print(f"govmail: {file} written; deploy to apply (mailboxes are renamed on the host, mail kept)", file=sys.stderr)
    return 1 if problems or gone or by_hand else 0
