"""Load, merge and validate province data files; derive what the deploy needs.

`load_province("daknong")` reads `group_data/defaults.yml` (national defaults) and
`group_data/daknong.yml`, deep-merges them, validates the result against `govmail.schema` and the
cross-field rules below, and returns a `ProvinceConfig`. Every problem found is collected; if there
is any, `DataError` is raised carrying all of them, each naming file, line, key path, bad value and
what is allowed. Nothing here touches a host.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from . import schema
from .naming import rule_problem
from .naming import unit_of as naming_unit

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
# Addresses that reach the postmaster on every province domain (RFC 2142 roles, and root@ for the
# host's own system mail); no mailbox or list may take them.
ROLE_LOCAL_PARTS = ("postmaster", "abuse", "root")


def data_dir() -> Path:
    return Path(os.environ.get("GOVMAIL_DATA_DIR", ROOT / "group_data"))


# ---------------------------------------------------------------------------- errors


@dataclass
class Problem:
    file: str
    line: Optional[int]
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '(top level)'}: {self.message}"


class DataError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        n = len(problems)
        super().__init__(
            f"{n} problem{'s' if n != 1 else ''} in the data:\n" + "\n".join(f"  {p}" for p in problems)
        )


# ---------------------------------------------------------------------------- YAML with lines


def _fmt_path(path: tuple) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Doc:
    """A YAML document and the line of every key path in it."""

    def __init__(self, file: Path, display: str):
        self.file = file
        self.display = display
        self.lines: dict[tuple, int] = {}
        self.problems: list[Problem] = []
        self.data: Any = None
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.problems.append(Problem(display, None, "", "file not found"))
            return
        except UnicodeDecodeError as e:
            self.problems.append(Problem(display, None, "", f"not UTF-8 text ({e.reason})"))
            return
        # One parse (libyaml's C parser where PyYAML has it): the node tree gives every key's line,
        # and the data is constructed from the same nodes.
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            self.data = loader.construct_document(node) if node is not None else None
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark else None
            msg = " ".join(x for x in (e.context, e.problem) if x)
            self.problems.append(Problem(display, line, "", f"malformed YAML: {msg}"))
            return
        if node is not None:
            self._walk(node, ())

    def _walk(self, node, path):
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in node.value:
                key = k.value
                if key in seen:
                    self.problems.append(
                        Problem(
                            self.display,
                            k.start_mark.line + 1,
                            _fmt_path(path + (key,)),
                            f"duplicate key (first at line {seen[key]}); YAML would silently keep the last",
                        )
                    )
                seen[key] = k.start_mark.line + 1
                self.lines[path + (key,)] = k.start_mark.line + 1
                self._walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._walk(v, path + (i,))

    def line(self, path: tuple) -> Optional[int]:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def has(self, path: tuple) -> bool:
        return path in self.lines


def _deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = _deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


# ---------------------------------------------------------------------------- derived config


@dataclass
class Account:
    """A mailbox as the host sees it."""

    address: str
    name: str
    kind: str  # person | agency | department | district | commune | mailbox
    quota_mb: int
    role: str = "user"
    status: str = "active"
    owner: Optional[str] = None  # agency/district id
    password_hash: Optional[str] = None
    # Mailboxes told of a suspension (manager: the managing unit) and of a deletion (manager and
    # its superior), LC Art. 8.1. Resolved after the directory is read.
    manager: Optional[str] = None
    superior: Optional[str] = None
    unit: Optional[tuple] = None  # (agency/district id, department/commune id or None): where it sits

    def as_dict(self) -> dict:
        return {
            "address": self.address,
            "name": self.name,
            "kind": self.kind,
            "quota_mb": self.quota_mb,
            "role": self.role,
            "status": self.status,
            "owner": self.owner,
            "password_hash": self.password_hash,
            "manager": self.manager,
            "superior": self.superior,
        }


@dataclass
class ProvinceConfig:
    model: schema.Province
    file: Path
    accounts: list[Account] = field(default_factory=list)
    aliases: dict[str, list[str]] = field(default_factory=dict)
    # Lists -> the mailboxes that may send as them (authenticated submission).
    list_senders: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)

    # Shortcuts used by templates and tests.
    @property
    def key(self) -> str:
        return self.model.province

    @property
    def domain(self) -> str:
        return self.model.domain

    @property
    def policy(self) -> schema.Policy:
        return self.model.policy

    @property
    def mail_host(self) -> str:
        return next(h.name for h in self.model.hosts if "mail" in h.roles)

    @property
    def backup_host(self) -> Optional[str]:
        return next((h.name for h in self.model.hosts if "backup" in h.roles), None)

    @property
    def message_size_limit(self) -> int:
        """SMTP message size limit in bytes.

        An attachment of N MiB travels base64-encoded: 4 bytes per 3, plus CRLF after every 76
        characters (78/76). 512 KiB of headroom covers headers and text. Anything larger than a
        (N+1) MiB attachment is refused: see tests/unit/test_sizes.py.
        """
        att = self.policy.attachment
        if att.max_mb is None:
            return att.message_size_mb * MiB
        return int(att.max_mb * MiB * 4 / 3 * 78 / 76) + 512 * 1024

    @property
    def postmaster(self) -> str:
        if self.model.postmaster:
            return self.model.postmaster
        admins = [a.address for a in self.accounts if a.role == "admin" and a.kind == "person"]
        return admins[0] if admins else self.accounts[0].address

    def account(self, address: str) -> Account:
        return next(a for a in self.accounts if a.address == address)

    def cite(self, section: str) -> str:
        return getattr(self.policy, section).article


# ---------------------------------------------------------------------------- loading


def province_file(key: str) -> Path:
    return data_dir() / f"{key}.yml"


def available_provinces() -> list[str]:
    return sorted(p.stem for p in data_dir().glob("*.yml") if p.stem != "defaults")


def _display(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


_CACHE: dict[tuple, ProvinceConfig] = {}


def load_province(key_or_path: str | os.PathLike) -> ProvinceConfig:
    """Load and validate a province (memoised per file state: the inventory and deploy.py of one
    pyinfra run validate a 50,000-mailbox file once, not twice)."""
    p = Path(key_or_path)
    file = p if (p.suffix in (".yml", ".yaml") or os.sep in str(key_or_path)) else province_file(str(key_or_path))
    key = tuple((str(f.resolve()), f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else (str(f), None, None)
                for f in (file, file.parent / "defaults.yml"))
    if key not in _CACHE:
        if len(_CACHE) >= 16:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _load_province(file)
    return _CACHE[key]


def _load_province(file: Path) -> ProvinceConfig:
    defaults_file = file.parent / "defaults.yml"
    prov = _Doc(file, _display(file))
    problems = list(prov.problems)
    defaults = _Doc(defaults_file, _display(defaults_file)) if defaults_file.exists() else None
    if defaults:
        problems += defaults.problems
    if problems:
        raise DataError(problems)
    if not isinstance(prov.data, dict):
        raise DataError([Problem(prov.display, 1, "", "must be a mapping of keys (province, domain, policy, ...)")])
    merged = _deep_merge(defaults.data or {}, prov.data) if defaults else prov.data

    def where(path: tuple) -> tuple[str, Optional[int]]:
        if prov.has(path) or not defaults or not defaults.has(path):
            return prov.display, prov.line(path)
        return defaults.display, defaults.line(path)

    def add(path: tuple, message: str):
        f, line = where(path)
        problems.append(Problem(f, line, _fmt_path(path), message))

    model = None
    try:
        model = schema.Province.model_validate(merged)
    except ValidationError as e:
        errors = e.errors()
        for err in errors:
            loc = tuple(err["loc"])
            value = err.get("input")
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                parent = loc[:-1]
                allowed = _allowed_keys(parent)
                msg = f"unknown key {loc[-1]!r}" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
            elif err["type"] == "missing":
                msg = "required key is missing"
            else:
                shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
                msg = f"{shown}: {msg}"
            add(loc, msg)
        # Unknown keys alone do not stop the checks that follow: drop them, validate again, and
        # report the cross-field problems too, so one run shows everything.
        if all(err["type"] == "extra_forbidden" for err in errors):
            for err in errors:
                _drop(merged, tuple(err["loc"]))
            try:
                model = schema.Province.model_validate(merged)
            except ValidationError:
                model = None
        if model is None:
            raise DataError(problems) from None

    cfg = ProvinceConfig(model=model, file=file)
    if model.province != file.stem:
        add(("province",), f"{model.province!r} does not match the file name {file.stem!r}")

    def warn(path: tuple, message: str):
        f, line = where(path)
        cfg.warnings.append(Problem(f, line, _fmt_path(path), message))

    _build_directory(cfg, add, warn)
    if problems:
        raise DataError(problems)
    return cfg


def _drop(data: Any, loc: tuple) -> None:
    for part in loc[:-1]:
        data = data[part]
    data.pop(loc[-1], None)


def _allowed_keys(loc: tuple) -> list[str]:
    """Names of the fields allowed at a location of the schema."""
    model: Any = schema.Province
    for part in loc:
        if isinstance(part, int):
            continue
        f = model.model_fields.get(part)
        if f is None:
            return []
        ann = f.annotation
        model = _model_of(ann)
        if model is None:
            return []
    return list(model.model_fields)


def _model_of(ann) -> Any:
    import typing

    if isinstance(ann, type) and issubclass(ann, schema.BaseModel):
        return ann
    for a in typing.get_args(ann):
        m = _model_of(a)
        if m is not None:
            return m
    return None


def _build_directory(cfg: ProvinceConfig, add, warn) -> None:
    """Resolve the directory into accounts and aliases, checking the cross-field rules."""
    m = cfg.model
    pol = m.policy
    dom = m.domain
    q = pol.quota
    seen: dict[str, tuple] = {}

    def bounds() -> str:
        lo = f"{q.min_mb}" if q.min_mb else "1"
        hi = f"{q.max_mb}" if q.max_mb else "no upper bound"
        return f"allowed: {lo}..{hi} MiB ({q.article})"

    if q.min_mb and q.max_mb and q.min_mb > q.max_mb:
        add(("policy", "quota"), f"min_mb {q.min_mb} is above max_mb {q.max_mb}")
    if q.min_mb and q.default_mb < q.min_mb:
        add(("policy", "quota", "default_mb"), f"{q.default_mb} is below the province's minimum; {bounds()}")
    if q.max_mb and q.default_mb > q.max_mb:
        add(("policy", "quota", "default_mb"), f"{q.default_mb} is above the province's maximum; {bounds()}")

    def check_quota(path, quota):
        if quota is None:
            return q.default_mb
        if q.max_mb and quota > q.max_mb:
            add(path, f"{quota} is above the province's maximum mailbox quota; {bounds()}")
        if q.min_mb and quota < q.min_mb:
            add(path, f"{quota} is below the province's minimum mailbox quota; {bounds()}")
        return quota

    def check_address(path, address) -> bool:
        if "@" not in address:
            add(path, f"{address!r} is not an address; expected <local part>@{dom}")
            return False
        local, _, d = address.rpartition("@")
        if d != dom:
            add(path, f"{address!r} is outside the province's domain; allowed: addresses @{dom} ({m.domain_article})")
            return False
        if not schema.LOCAL_RE.match(local) or ".." in local:
            add(path, f"{address!r}: local part must be lower-case ASCII letters, digits, '.', '-' or '_' (no diacritics)")
            return False
        if local in ROLE_LOCAL_PARTS:
            add(path, f"{address!r} is a role address govmail gives to the postmaster (`postmaster:`); "
                f"reserved: {', '.join(p + '@' for p in ROLE_LOCAL_PARTS)}")
            return False
        if address in seen:
            first = _fmt_path(seen[address])
            add(path, f"duplicate address {address!r}, already used by {first}; addresses are unique in the province")
            return False
        seen[address] = path
        return True

    unit_address: dict[tuple, str] = {}

    def unit_account(path, unit, default_local, kind, owner, sub=None):
        addr = unit.address or f"{default_local}@{dom}"
        unit_address[(owner, sub)] = addr
        quota = check_quota(path + ("quota_mb",), unit.quota_mb)
        if check_address(path + (("address",) if unit.address else ("id",)), addr):
            cfg.accounts.append(Account(addr, unit.name, kind, quota, owner=owner, unit=(owner, sub)))

    unit_ids: dict[str, tuple] = {}
    for i, ag in enumerate(m.directory.agencies):
        p = ("directory", "agencies", i)
        if ag.id in unit_ids:
            add(p + ("id",), f"duplicate agency/district id {ag.id!r}, already used by {_fmt_path(unit_ids[ag.id])}")
        unit_ids[ag.id] = p
        unit_account(p, ag, ag.id, "agency", ag.id)
        for j, d in enumerate(ag.departments):
            unit_account(p + ("departments", j), d, f"{d.id}.{ag.id}", "department", ag.id, d.id)
    for i, di in enumerate(m.directory.districts):
        p = ("directory", "districts", i)
        if di.id in unit_ids:
            add(p + ("id",), f"duplicate agency/district id {di.id!r}, already used by {_fmt_path(unit_ids[di.id])}")
        unit_ids[di.id] = p
        unit_account(p, di, di.id, "district", di.id)
        for j, d in enumerate(di.departments):
            unit_account(p + ("departments", j), d, f"{d.id}.{di.id}", "department", di.id, d.id)
        for j, c in enumerate(di.communes):
            unit_account(p + ("communes", j), c, f"{c.id}.{di.id}", "commune", di.id, c.id)

    naming = pol.naming
    report = {"error": add, "warning": warn, "off": None}[naming.check]
    district_ids = {d.id for d in m.directory.districts}
    departments = {u.id: {d.id for d in u.departments} for u in [*m.directory.agencies, *m.directory.districts]}
    for i, person in enumerate(m.directory.people):
        p = ("directory", "people", i)
        quota = check_quota(p + ("quota_mb",), person.quota_mb)
        if person.agency and person.agency not in unit_ids:
            add(
                p + ("agency",),
                f"{person.agency!r} is not an agency or district of the directory; known: {', '.join(sorted(unit_ids)) or 'none'}",
            )
        elif person.department and person.department not in departments.get(person.agency, set()):
            known = ", ".join(sorted(departments.get(person.agency, set()))) or "none"
            add(p + ("department",), f"{person.department!r} is not a department of {person.agency!r}; known: {known}")
        if check_address(p + ("address",), person.address):
            cfg.accounts.append(
                Account(
                    person.address, person.name, "person", quota, role=person.role, status=person.status,
                    owner=person.agency, password_hash=person.password_hash,
                    unit=(person.agency, person.department) if person.agency else None,
                )
            )
            # The naming rule only where the agency/department are known and the address is sound.
            if report and (not person.agency or person.agency in unit_ids) and (
                not person.department or person.department in departments.get(person.agency, set())
            ):
                unit = naming_unit(person.agency, person.department, district_ids)
                why = rule_problem(person.address, person.name, unit, dom, naming)
                if why:
                    report(p + ("address",), why)
    for i, mb in enumerate(m.directory.mailboxes):
        p = ("directory", "mailboxes", i)
        quota = check_quota(p + ("quota_mb",), mb.quota_mb)
        if check_address(p + ("address",), mb.address):
            cfg.accounts.append(Account(mb.address, mb.name, "mailbox", quota, password_hash=mb.password_hash))

    list_addrs = {}
    for i, ml in enumerate(m.directory.lists):
        p = ("directory", "lists", i)
        if check_address(p + ("address",), ml.address):
            list_addrs[ml.address] = p
    mailbox_addrs = {a.address for a in cfg.accounts}
    active_people = [a for a in cfg.accounts if a.kind == "person" and a.status == "active"]
    for i, ml in enumerate(m.directory.lists):
        p = ("directory", "lists", i)
        members: list[str] = []
        for j, mem in enumerate(ml.members):
            fwd = m.policy.forwarding
            outside = "@" in mem and not mem.endswith("@" + m.domain)
            if outside and fwd.refuse_outbound and not fwd.is_state(mem.rsplit("@", 1)[1]):
                add(p + ("members", j),
                    f"{mem!r} is not in a state domain ({', '.join(fwd.state_domains)}): a list forwards "
                    f"automatically, and automatic forwarding out of the state mail system is forbidden "
                    f"({fwd.article}; policy.forwarding)")
            elif outside:
                members.append(mem)  # a mailbox of another state domain: the forward is allowed
            elif mem not in mailbox_addrs and mem not in list_addrs:
                add(p + ("members", j), f"{mem!r} is not a mailbox or list of the directory")
            elif mem == ml.address:
                add(p + ("members", j), "a list cannot be a member of itself")
            else:
                members.append(mem)
        if ml.include_all_people:
            members += [a.address for a in active_people]
        if ml.include_agency_people:
            if ml.include_agency_people not in unit_ids:
                add(p + ("include_agency_people",), f"{ml.include_agency_people!r} is not an agency or district of the directory")
            members += [a.address for a in active_people if a.owner == ml.include_agency_people]
        if not members and ml.address in list_addrs:
            add(p, "the list has no members (give `members`, `include_all_people` or `include_agency_people`)")
        cfg.aliases[ml.address] = list(dict.fromkeys(members))
        for j, who in enumerate(ml.senders):
            if who not in mailbox_addrs:
                add(p + ("senders", j), f"{who!r} is not a mailbox of the directory; only a mailbox's user can "
                    "be allowed to send as a list")
        if ml.senders:
            cfg.list_senders[ml.address] = list(dict.fromkeys(ml.senders))

    # Who is told of a suspension or deletion (LC Art. 8.1): the unit that manages the mailbox, and
    # that unit's superior; above agencies and districts, `policy.inactivity.superior`.
    top = pol.inactivity.superior
    if top and top not in mailbox_addrs and top not in list_addrs:
        add(("policy", "inactivity", "superior"), f"{top!r} is not a mailbox or list of the directory")
        top = None
    for a in cfg.accounts:
        if a.unit is None:
            continue
        agency, sub = a.unit
        if a.kind == "person" and sub:  # staff of a department: the department, then its agency
            a.manager, a.superior = unit_address.get((agency, sub)), unit_address.get((agency, None))
        elif a.kind == "person" or sub:  # staff of an agency, or a department's own mailbox
            a.manager, a.superior = unit_address.get((agency, None)), top
        else:  # an agency's or district's own mailbox
            a.manager, a.superior = top, None

    if m.postmaster and m.postmaster not in mailbox_addrs:
        add(("postmaster",), f"{m.postmaster!r} is not a mailbox of the directory")
    mail_hosts = [h for h in m.hosts if "mail" in h.roles]
    if len(mail_hosts) != 1:
        add(("hosts",), f"{len(mail_hosts)} hosts have role 'mail'; exactly one is supported")
    backup_hosts = [h for h in m.hosts if "backup" in h.roles]
    if len(backup_hosts) > 1:
        add(("hosts",), f"{len(backup_hosts)} hosts have role 'backup'; at most one is supported")
    for i, h in enumerate(m.hosts):
        if "mail" in h.roles and "backup" in h.roles:
            add(("hosts", i, "roles"), "a host cannot back itself up: give `backup` to another host")
    if len({h.name for h in m.hosts}) != len(m.hosts):
        add(("hosts",), "host names must be unique")
    if bool(m.tls.certificate) != bool(m.tls.key):
        add(("tls",), "give both `certificate` and `key`, or neither (self-signed)")
    for k in ("certificate", "key"):
        v = getattr(m.tls, k)
        if v and not (cfg.file.parent / v).is_file():
            add(("tls", k), f"{v!r}: no such file (relative to {cfg.file.parent})")
    if not cfg.accounts:
        add(("directory",), "the directory has no mailboxes")


def tls_path(cfg: ProvinceConfig, which: str) -> Optional[Path]:
    v = getattr(cfg.model.tls, which)
    return (cfg.file.parent / v) if v else None
