"""Merged provinces (Resolution 202/2025/QH15): predecessors, old addresses, and when each phase ends.

A merged province's data file names its `predecessors` (their domains, decisions and the end of
their transition) and, on each mailbox, unit or list, the `former` addresses it had. This module
checks them (`check(builder)`, called by govmail/data/directory.py with the addresses already resolved)
and turns them into what the host's account store applies (`former_rows`):

- during the transition an old address is an alias of the new one, its owner logs in and sends
  with it (Dovecot's passdb answers the new user name; Postfix and rspamd let the owner send as it);
- after it, mail to the old address is refused `550 5.1.6 ... User has moved to <new>` (a Postfix
  access table of the store's relocated view, templates/postfix/sqlite-relocated.cf.j2), or still forwarded until the predecessor's `forward_until`;
- an address of the province's own domain given up in a readdressing (`govmail readdress`) stays
  an alias for good.

The phases are computed on the host by the store's views from the times below, so a transition
ends at its date without a deploy.
"""

from __future__ import annotations

import datetime
from typing import Optional

from .config import ROLE_LOCAL_PARTS
from .config import fmt_path as _fmt_path
from .text import LOCAL_RE

# Vietnam has kept UTC+7 all year since 1975: a date in the data is a day there.
VN = datetime.timezone(datetime.timedelta(hours=7))


def day_start(iso: Optional[str]) -> Optional[int]:
    """Unix time of 00:00 Vietnam time on an ISO date, or None."""
    if not iso:
        return None
    return int(datetime.datetime.fromisoformat(iso).replace(tzinfo=VN).timestamp())


def dkim_selector(cfg, pred) -> str:
    return pred.dkim_selector or cfg.key


def regulation_keys(model) -> set[str]:
    return {r.key for r in model.regulations} | {r.key for p in model.predecessors for r in p.regulations}


def check_predecessors(b) -> None:
    m = b.m
    seen_domains = {m.domain: ("domain",)}
    seen_keys = {m.province: ("province",)}
    seen_regs = {r.key: ("regulations", i) for i, r in enumerate(m.regulations)}
    for i, pred in enumerate(m.predecessors):
        p = ("predecessors", i)
        if pred.domain in seen_domains:
            b.add(p + ("domain",), f"{pred.domain!r} is already the domain of {_fmt_path(seen_domains[pred.domain])}; "
                  "each predecessor has its own domain, other than the merged province's")
        seen_domains.setdefault(pred.domain, p + ("domain",))
        if pred.key in seen_keys:
            b.add(p + ("key",), f"{pred.key!r} is already used by {_fmt_path(seen_keys[pred.key])}")
        seen_keys.setdefault(pred.key, p + ("key",))
        for j, r in enumerate(pred.regulations):
            if r.key in seen_regs:
                b.add(p + ("regulations", j, "key"), f"{r.key!r} is already the key of "
                      f"{_fmt_path(seen_regs[r.key])}; a citation must name one decision")
            seen_regs.setdefault(r.key, p + ("regulations", j))
        if pred.forward_until and pred.forward_until <= pred.transition_until:
            b.add(p + ("forward_until",), f"{pred.forward_until} is not after transition_until "
                  f"{pred.transition_until}; forwarding continues after the transition, so it ends later")
        if pred.mail_host and not pred.mail_host.endswith("." + pred.domain) and pred.mail_host != pred.domain:
            b.warn(p + ("mail_host",), f"{pred.mail_host!r} is not a name under {pred.domain}; it is still put on the "
                   "certificate")


def check_former(b) -> None:
    """Each old address: in a predecessor's domain or the province's own, well-formed, not a role
    address, not anybody's current address, and given to one entry only."""
    m = b.m
    domains = {p.domain: p for p in m.predecessors}
    owners: dict[str, tuple] = {}
    for path, new, former in b.formers:
        for j, old in enumerate(former):
            fp = path + ("former", j)
            old = old.lower()
            local, _, dom = old.rpartition("@")
            if dom != m.domain and dom not in domains:
                known = ", ".join([m.domain, *domains]) if domains else m.domain
                b.add(fp, f"{old!r} is not in the province's domain or a predecessor's; allowed domains: {known} "
                      "(name the old province under `predecessors`)")
                continue
            if not LOCAL_RE.match(local) or ".." in local:
                b.add(fp, f"{old!r}: local part must be lower-case ASCII letters, digits, '.', '-' or '_'")
                continue
            if local in ROLE_LOCAL_PARTS:
                b.add(fp, f"{old!r}: role addresses of an old domain reach the postmaster by themselves; "
                      "not an address to move")
                continue
            if old in b.seen:
                b.add(fp, f"{old!r} is the current address of {_fmt_path(b.seen[old])}; an old address "
                      "cannot also be in use")
                continue
            if old in owners:
                b.add(fp, f"{old!r} is already a former address of {_fmt_path(owners[old])}; an old address "
                      "reaches one new address only")
                continue
            owners[old] = path
            b.cfg.former[old] = new


def check_citations(b) -> None:
    """Every article cites a decision the data names: one of the province's `regulations`, or a
    predecessor's (the merged province may keep a predecessor's decision until it issues its own)."""
    import re

    m = b.m
    keys = regulation_keys(m)
    cited = [(("domain_article",), m.domain_article)]
    cited += [(("policy", name, "article"), getattr(m.policy, name).article) for name in type(m.policy).model_fields]
    cited += [(("directory", "lists", i, "article"), x.article) for i, x in enumerate(m.directory.lists) if x.article]
    cited += [(("directory", "mailboxes", i, "article"), x.article) for i, x in enumerate(m.directory.mailboxes)
              if x.article]
    refused = {t.lower() for t in b.set_aside if isinstance(t, str)}  # a refused decision's key: reported there
    for path, article in cited:
        key = re.match(r"([A-Z]{2,6}(?:-[A-Z]{2,6})?) Art\.", article or "")
        if key and key.group(1) not in keys and key.group(1).lower() not in refused:
            known = ", ".join(sorted(keys)) or "none"
            b.add(path, f"{article!r} cites {key.group(1)}, which is not a decision of `regulations` or of a "
                  f"predecessor's `regulations`; known: {known}")


def check(b) -> None:
    check_predecessors(b)
    check_former(b)
    check_citations(b)


def former_rows(cfg) -> list[list]:
    """[old, new, end of transition, end of forwarding] for the host's account store: times in unix
    seconds; an address of the province's own domain has no end."""
    preds = {p.domain: p for p in cfg.model.predecessors}
    rows = []
    for old, new in sorted(cfg.former.items()):
        p = preds.get(old.rpartition("@")[2])
        rows.append([old, new, day_start(p.transition_until) if p else None, day_start(p.forward_until) if p else None])
    return rows


def phase(cfg, old: str, now: float) -> str:
    """`transition`, `forward` or `moved` at unix time `now` (the store's view computes the same)."""
    for o, _, ends, fwd in former_rows(cfg):
        if o == old:
            if ends is None or now < ends:
                return "transition"
            return "forward" if fwd is not None and now < fwd else "moved"
    raise KeyError(old)


def mail_names(cfg) -> list[str]:
    """Names clients and senders reach the merged host by, besides its own: the predecessors' mail
    hosts and domains (on the certificate)."""
    out = []
    for p in cfg.model.predecessors:
        out += [n for n in (p.mail_host, p.domain) if n]
    return list(dict.fromkeys(out))
