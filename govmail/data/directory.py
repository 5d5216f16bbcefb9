"""The directory of a province resolved into mailboxes and lists, with the cross-field checks.

`build_directory(cfg, add, warn)` fills `cfg.accounts`, `cfg.aliases` and `cfg.list_senders` from
the typed data, in steps that each check one rule: quota bounds (`policy.quota`), addresses
(domain, local-part syntax, reserved role addresses, uniqueness), units (agencies, districts,
their departments and communes), people (agency, department, the province's naming rule),
functional mailboxes, lists (members, state domains for forwarding, senders), who is told of a
suspension (LC Art. 8.1), and the hosts and TLS files. Each problem goes to `add(path, message)`
(or `warn` for the naming rule where the province says so) with its key path; nothing stops at
the first problem.
"""

from __future__ import annotations

import functools
from typing import Callable

from . import predecessors as merger
from . import schema
from .config import ROLE_LOCAL_PARTS, Account, ProvinceConfig
from .config import fmt_path as _fmt_path
from .naming import all_units, local_units, rule_problem, unit_pair
from .naming import unit_of as naming_unit
from .roles import layout_problems
from .text import MAX_ADDRESS, MAX_LOCAL

Report = Callable[[tuple, str], None]


class DirectoryBuilder:
    def __init__(self, cfg: ProvinceConfig, add: Report, warn: Report):
        self.cfg, self.add, self.warn = cfg, add, warn
        self.m = cfg.model
        self.dom = self.m.domain
        self.q = self.m.policy.quota
        self.seen: dict[str, tuple] = {}  # address -> key path of its first use
        self.unit_address: dict[tuple, str] = {}  # (agency/district, department/commune) -> address
        self.unit_ids: dict[str, tuple] = {}  # agency/district id -> key path
        self.list_addrs: dict[str, tuple] = {}
        self.set_aside: frozenset = frozenset()
        self.delegated: list[tuple] = []  # (key path, address, senders) of units and functional mailboxes
        self.formers: list[tuple] = []  # (key path, address, former addresses) of every entry that has some

    # ------------------------------------------------------------------ quotas (policy.quota)

    def bounds(self) -> str:
        lo = f"{self.q.min_mb}" if self.q.min_mb else "1"
        hi = f"{self.q.max_mb}" if self.q.max_mb else "no upper bound"
        return f"allowed: {lo}..{hi} MiB ({self.q.article})"

    def check_quota_policy(self) -> None:
        q = self.q
        if q.min_mb and q.max_mb and q.min_mb > q.max_mb:
            self.add(("policy", "quota", "min_mb"), f"{q.min_mb} is above max_mb {q.max_mb}; allowed: min_mb <= "
                     f"default_mb <= max_mb ({q.article})")
            return
        if q.min_mb and q.default_mb < q.min_mb:
            self.add(("policy", "quota", "default_mb"), f"{q.default_mb} is below the province's minimum; {self.bounds()}")
        if q.max_mb and q.default_mb > q.max_mb:
            self.add(("policy", "quota", "default_mb"), f"{q.default_mb} is above the province's maximum; {self.bounds()}")

    def quota(self, path: tuple, quota) -> int:
        """A mailbox's quota: its own within the province's bounds, or the province's default."""
        if quota is None:
            return self.q.default_mb
        if self.q.max_mb and quota > self.q.max_mb:
            self.add(path, f"{quota} is above the province's maximum mailbox quota; {self.bounds()}")
        if self.q.min_mb and quota < self.q.min_mb:
            self.add(path, f"{quota} is below the province's minimum mailbox quota; {self.bounds()}")
        return quota

    # ------------------------------------------------------------------ addresses

    def address_ok(self, path: tuple, address: str) -> bool:
        """In the province's domain, well-formed, not a reserved role address, not taken."""
        dom = self.dom
        if "@" not in address:
            self.add(path, f"{address!r} is not an address; expected <local part>@{dom}")
            return False
        local, _, d = address.rpartition("@")
        if d != dom:
            self.add(path, f"{address!r} is outside the province's domain; allowed: addresses @{dom} "
                     f"({self.m.domain_article})")
            return False
        if not schema.LOCAL_RE.match(local) or ".." in local:
            self.add(path, f"{address!r}: local part must be lower-case ASCII letters, digits, '.', '-' or '_' "
                     "(no diacritics)")
            return False
        if local in ROLE_LOCAL_PARTS:
            self.add(path, f"{address!r} is a role address govmail gives to the postmaster (`postmaster:`); "
                     f"reserved: {', '.join(p + '@' for p in ROLE_LOCAL_PARTS)}")
            return False
        if address in self.seen:
            first = _fmt_path(self.seen[address])
            self.add(path, f"duplicate address {address!r}, already used by {first}; addresses are unique in "
                     "the province")
            return False
        self.seen[address] = path
        return True

    # ------------------------------------------------------------------ units

    def unit_account(self, path, unit, default_local, kind, owner, sub=None) -> None:
        addr = unit.address or f"{default_local}@{self.dom}"
        self.unit_address[(owner, sub)] = addr
        quota = self.quota(path + ("quota_mb",), unit.quota_mb)
        if len(addr) > MAX_ADDRESS or len(addr.rpartition("@")[0]) > MAX_LOCAL:
            self.add(path + (("address",) if unit.address else ("id",)),
                     f"{addr!r}: the unit's address is longer than RFC 5321 allows (local part at most {MAX_LOCAL}, "
                     f"address at most {MAX_ADDRESS} characters)")
        elif self.address_ok(path + (("address",) if unit.address else ("id",)), addr):
            self.cfg.accounts.append(Account(addr, unit.name, kind, quota, owner=owner, unit=(owner, sub)))
            if unit.senders:
                self.delegated.append((path, addr, unit.senders))
            if unit.former:
                self.formers.append((path, addr, unit.former))

    def unit_id(self, path: tuple, uid: str) -> None:
        if uid in self.unit_ids:
            self.add(path + ("id",), f"duplicate agency/district id {uid!r}, already used by "
                     f"{_fmt_path(self.unit_ids[uid])}")
        self.unit_ids[uid] = path

    def units(self) -> None:
        """Agencies, districts and communes, and the units under them: `<child>.<parent>@` (or
        `<parent>.<child>@`, `policy.naming.unit_order`)."""
        pair = functools.partial(unit_pair, order=self.m.policy.naming.unit_order)
        for section, kind in (("agencies", "agency"), ("districts", "district"), ("communes", "commune")):
            for i, u in enumerate(getattr(self.m.directory, section)):
                p = ("directory", section, i)
                self.unit_id(p, u.id)
                self.unit_account(p, u, u.id, kind, u.id)
                for j, d in enumerate(u.departments):
                    self.unit_account(p + ("departments", j), d, pair(d.id, u.id), "department", u.id, d.id)
                for j, c in enumerate(getattr(u, "communes", [])):
                    self.unit_account(p + ("communes", j), c, pair(c.id, u.id), "commune", u.id, c.id)

    # ------------------------------------------------------------------ people and mailboxes

    def people(self) -> None:
        m = self.m
        naming = m.policy.naming
        report = {"error": self.add, "warning": self.warn, "off": None}[naming.check]
        district_ids = local_units(m)
        departments = all_units(m)
        for i, person in enumerate(m.directory.people):
            p = ("directory", "people", i)
            quota = self.quota(p + ("quota_mb",), person.quota_mb)
            if person.agency and person.agency in self.set_aside and person.agency not in self.unit_ids:
                pass  # its agency was refused by the schema check: reported there
            elif person.agency and person.agency not in self.unit_ids:
                known = ", ".join(sorted(self.unit_ids)) or "none"
                self.add(p + ("agency",), f"{person.agency!r} is not an agency or district of the directory; known: {known}")
            elif person.department and person.department not in departments.get(person.agency, set()):
                known = ", ".join(sorted(departments.get(person.agency, set()))) or "none"
                self.add(p + ("department",), f"{person.department!r} is not a department of {person.agency!r}; "
                         f"known: {known}")
            if not self.address_ok(p + ("address",), person.address):
                continue
            self.cfg.accounts.append(Account(
                person.address, person.name, "person", quota, role=person.role, status=person.status,
                owner=person.agency, password_hash=person.password_hash,
                unit=(person.agency, person.department) if person.agency else None,
            ))
            if person.former:
                self.formers.append((p, person.address, person.former))
            # The naming rule only where the agency/department are known and the address is sound.
            if report and (not person.agency or person.agency in self.unit_ids) and (
                not person.department or person.department in departments.get(person.agency, set())
            ):
                unit = naming_unit(person.agency, person.department, district_ids, naming.unit_order)
                why = rule_problem(person.address, person.name, unit, self.dom, naming)
                if why:
                    report(p + ("address",), why)

    def mailboxes(self) -> None:
        for i, mb in enumerate(self.m.directory.mailboxes):
            p = ("directory", "mailboxes", i)
            quota = self.quota(p + ("quota_mb",), mb.quota_mb)
            if self.address_ok(p + ("address",), mb.address):
                self.cfg.accounts.append(Account(mb.address, mb.name, "mailbox", quota, password_hash=mb.password_hash))
                if mb.senders:
                    self.delegated.append((p, mb.address, mb.senders))
                if mb.former:
                    self.formers.append((p, mb.address, mb.former))

    # ------------------------------------------------------------------ lists

    def list_members(self, p: tuple, ml, mailbox_addrs: set) -> list[str]:
        members: list[str] = []
        fwd = self.m.policy.forwarding
        for j, mem in enumerate(ml.members):
            mem = mem.lower()  # the type admits lower case only; compared so in any case
            outside = "@" in mem and not mem.endswith("@" + self.dom)
            if outside and fwd.refuse_outbound and not fwd.is_state(mem.rsplit("@", 1)[1]):
                self.add(p + ("members", j),
                         f"{mem!r} is not in a state domain ({', '.join(fwd.state_domains)}): a list forwards "
                         f"automatically, and automatic forwarding out of the state mail system is forbidden "
                         f"({fwd.article}; policy.forwarding)")
            elif outside:
                members.append(mem)  # a mailbox of another state domain: the forward is allowed
            elif mem not in mailbox_addrs and mem not in self.list_addrs and mem in self.set_aside:
                continue  # its mailbox was refused by the schema check: reported there
            elif mem not in mailbox_addrs and mem not in self.list_addrs:
                self.add(p + ("members", j), f"{mem!r} is not a mailbox or list of the directory")
            elif mem == ml.address:
                self.add(p + ("members", j), "a list cannot be a member of itself")
            else:
                members.append(mem)
        return members

    def lists(self) -> None:
        cfg = self.cfg
        for i, ml in enumerate(self.m.directory.lists):
            p = ("directory", "lists", i)
            if self.address_ok(p + ("address",), ml.address):
                self.list_addrs[ml.address] = p
                if ml.former:
                    self.formers.append((p, ml.address, ml.former))
        mailbox_addrs = {a.address for a in cfg.accounts}
        active_people = [a for a in cfg.accounts if a.kind == "person" and a.status == "active"]
        for i, ml in enumerate(self.m.directory.lists):
            p = ("directory", "lists", i)
            members = self.list_members(p, ml, mailbox_addrs)
            if ml.include_all_people:
                members += [a.address for a in active_people]
            if ml.include_agency_people:
                if ml.include_agency_people not in self.unit_ids:
                    self.add(p + ("include_agency_people",),
                             f"{ml.include_agency_people!r} is not an agency or district of the directory")
                members += [a.address for a in active_people if a.owner == ml.include_agency_people]
            if not members and ml.address in self.list_addrs and not (set(ml.members) & self.set_aside):
                self.add(p, "the list has no members (give `members`, `include_all_people` or `include_agency_people`)")
            cfg.aliases[ml.address] = list(dict.fromkeys(members))
            for j, who in enumerate(ml.senders):
                if who not in mailbox_addrs and who not in self.set_aside:
                    self.add(p + ("senders", j), f"{who!r} is not a mailbox of the directory; only a mailbox's user "
                             "can be allowed to send as a list")
            if ml.senders:
                cfg.list_senders[ml.address] = list(dict.fromkeys(ml.senders))
        self.list_cycles()

    def list_cycles(self) -> None:
        """No list may reach itself through other lists (mail to it would loop until Postfix gives up)."""
        graph = {a: [m for m in self.cfg.aliases.get(a, []) if m in self.list_addrs] for a in self.list_addrs}
        done: set[str] = set()
        for start in graph:
            if start in done:
                continue
            stack, path, on_path = [(start, iter(graph[start]))], [start], {start}
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    stack.pop()
                    path.pop()
                    on_path.discard(node)
                    done.add(node)
                elif nxt in on_path:
                    loop = path[path.index(nxt):] + [nxt]
                    self.add(self.list_addrs[nxt] + ("members",),
                             f"the lists contain each other: {' -> '.join(loop)}; a list may not reach itself")
                    return
                elif nxt not in done:
                    stack.append((nxt, iter(graph[nxt])))
                    path.append(nxt)
                    on_path.add(nxt)

    def senders(self) -> None:
        """Mailboxes that may send as a unit's or a functional mailbox's address (`senders:`)."""
        mailbox_addrs = {a.address for a in self.cfg.accounts}
        for path, addr, who in self.delegated:
            for j, login in enumerate(who):
                if login not in mailbox_addrs and login not in self.set_aside:
                    self.add(path + ("senders", j), f"{login!r} is not a mailbox of the directory; only a mailbox's "
                             "user can be allowed to send as another address")
                elif login == addr:
                    self.add(path + ("senders", j), "a mailbox's own user always sends as it; list others here")
            self.cfg.list_senders[addr] = list(dict.fromkeys(w for w in who if w in mailbox_addrs and w != addr))

    # ------------------------------------------------------------------ who is told (LC Art. 8.1)

    def managers(self) -> None:
        """Who is told of a suspension or deletion: the unit that manages the mailbox, and that unit's
        superior; above agencies and districts, `policy.inactivity.superior`."""
        top = self.m.policy.inactivity.superior
        mailbox_addrs = {a.address for a in self.cfg.accounts}
        if top and top not in mailbox_addrs and top not in self.list_addrs:
            self.add(("policy", "inactivity", "superior"), f"{top!r} is not a mailbox or list of the directory")
            top = None
        for a in self.cfg.accounts:
            if a.unit is None:
                continue
            agency, sub = a.unit
            if a.kind == "person" and sub:  # staff of a department: the department, then its agency
                a.manager, a.superior = self.unit_address.get((agency, sub)), self.unit_address.get((agency, None))
            elif a.kind == "person" or sub:  # staff of an agency, or a department's own mailbox
                a.manager, a.superior = self.unit_address.get((agency, None)), top
            else:  # an agency's or district's own mailbox
                a.manager, a.superior = top, None

    # ------------------------------------------------------------------ hosts, TLS, postmaster

    def hosts_and_tls(self) -> None:
        m, cfg = self.m, self.cfg
        if m.postmaster and m.postmaster not in {a.address for a in cfg.accounts} and m.postmaster not in self.set_aside:
            self.add(("postmaster",), f"{m.postmaster!r} is not a mailbox of the directory")
        probe = m.verify.probe_mailbox
        if probe and probe not in self.set_aside:
            status = {a.address: a.status for a in cfg.accounts}.get(probe)
            if status != "active":
                what = status or ("a list, not a mailbox" if probe in cfg.aliases else "not a mailbox of the directory")
                self.add(("verify", "probe_mailbox"), f"{probe!r} is {what}; allowed: an active mailbox of the "
                         "directory (`govmail verify --active` sends its probe there)")
        for path, message in layout_problems(m.hosts, m.account_store.engine):
            self.add(path, message)
        placed: dict[str, str] = {}  # agency/district id -> the store apart that holds its mailboxes
        for i, h in enumerate(m.hosts):
            for j, uid in enumerate(h.agencies):
                if uid not in self.unit_ids:
                    known = ", ".join(sorted(self.unit_ids)) or "none"
                    self.add(("hosts", i, "agencies", j), f"{uid!r} is not an agency or district of the directory; "
                             f"known: {known}")
                elif uid in placed:
                    self.add(("hosts", i, "agencies", j), f"{uid!r} is already held by {placed[uid]}; an agency's "
                             "mailboxes stay together on one store")
                else:
                    placed[uid] = h.name
        backup_hosts = [h for h in m.hosts if "backup" in h.roles]
        monitor_hosts = [h for h in m.hosts if "monitor" in h.roles]
        if m.policy.monitoring.web_ui and not (monitor_hosts or backup_hosts):
            self.add(("policy", "monitoring", "web_ui"), "true, but no host watches the province: give `monitor` (or "
                     "`backup`) to a host other than the mail host, or set it false")
        if m.policy.monitoring.web_ui and not any(a.role == "admin" and a.status == "active" for a in cfg.accounts):
            self.add(("policy", "monitoring", "web_ui"), "true, but the directory has no active account with "
                     "`role: admin`: nobody could open the pages")
        if m.hosts and not monitor_hosts and not backup_hosts:
            self.warn(("hosts",), "no host watches the province (no `monitor` or `backup` host): nobody is alerted "
                      "when the mail host stops (operation clause)")

        if len({h.name for h in m.hosts}) != len(m.hosts):
            self.add(("hosts",), "host names must be unique")
        if not cfg.accounts:
            self.add(("directory",), "the directory has no mailboxes")


def build_directory(cfg: ProvinceConfig, add: Report, warn: Report, set_aside: frozenset = frozenset()) -> None:
    """Resolve the directory into accounts and aliases, checking the cross-field rules. `set_aside`:
    texts of entries the schema check refused (already reported): a reference to one of them is not
    reported again as missing."""
    b = DirectoryBuilder(cfg, add, warn)
    b.set_aside = set_aside
    b.check_quota_policy()
    b.units()
    b.people()
    b.mailboxes()
    b.lists()
    b.senders()
    b.managers()
    b.hosts_and_tls()
    merger.check(b)
