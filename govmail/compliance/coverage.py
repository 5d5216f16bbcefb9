"""Clause coverage: every article of the five decisions, as checked (by which checks), not yet
checked, or not technical (with the reason).

The articles are data (govmail/compliance/articles/<KEY>.yml: the Vietnamese heading, an English
gloss, and either what it asks of the machines or why it asks nothing of them). Which checks verify
an article is not written there: it comes from the provinces' data files, whose policy values cite
their articles (a clause citing "DN Art. 11.2.e" counts for DN Art. 11). So a check added to the data
shows up here without editing the coverage, and an article cited by no check shows as not yet
checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Optional

import yaml

from ..data import available_provinces, load_province
from .checks import CHECKS
from .clauses import Clause, clauses

ARTICLES = Path(__file__).parent / "articles"
CITATION = re.compile(r"\b([A-Z]{2,6}(?:-[A-Z]{2,6})?) Art\. (\d+(?:\.[0-9a-z]+)*(?:, \d+(?:\.[0-9a-z]+)*)*)")


@dataclass
class Article:
    decision: str
    ref: str
    vi: str
    en: str
    technical: Optional[str] = None  # what it asks of the machines
    not_technical: Optional[str] = None  # why it asks nothing of them
    note: str = ""
    checks: dict = field(default_factory=dict)  # check name -> {province: own clause?}

    @property
    def citation(self) -> str:
        return f"{self.decision} Art. {self.ref}"

    @property
    def status(self) -> str:
        if self.not_technical:
            return "not technical"
        return "checked" if self.checks else "not yet checked"


@dataclass
class Decision:
    key: str
    decision: str
    province: str
    date: str
    articles: list[Article]


class CoverageError(Exception):
    pass


def load_decision(path: Path) -> Decision:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    arts = []
    for a in doc["articles"]:
        if bool(a.get("technical")) == bool(a.get("not_technical")):
            raise CoverageError(f"{path.name}: Art. {a.get('ref')}: give exactly one of technical, not_technical")
        arts.append(Article(doc["key"], str(a["ref"]), a["vi"], a["en"], a.get("technical"), a.get("not_technical"),
                            a.get("note", "")))
    return Decision(doc["key"], doc["decision"], doc["province"], str(doc["date"]), arts)


def citations(text: str) -> list[tuple[str, str]]:
    """The (decision, article ref) pairs a clause's article text cites: "DN Art. 2.1, 2.3" gives two."""
    return [(m.group(1), ref) for m in CITATION.finditer(text) for ref in m.group(2).split(", ")]


def find(decision: Decision, ref: str) -> Optional[Article]:
    """The article a citation falls under: "11.2.e" under Art. 11."""
    top = ref.split(".")[0]
    return next((a for a in decision.articles if a.ref == top), None)


@cache
def decisions() -> dict[str, Decision]:
    """Every decision's articles, with the checks the provinces' data attach to them."""
    out = {p.stem: load_decision(p) for p in sorted(ARTICLES.glob("*.yml"))}
    for province in available_provinces():
        for c in clauses(load_province(province), active=True):
            for key, ref in citations(c.article):
                art = find(out[key], ref) if key in out else None
                if art is not None:
                    art.checks.setdefault(c.check, {})[province] = c.own
    return out


def unresolved(province: str) -> list[str]:
    """Citations of a province's clauses that name no article of a known decision, or an article
    the coverage calls not technical (the data and the coverage disagree)."""
    out = []
    ds = decisions()
    for c in clauses(load_province(province), active=True):
        for key, ref in citations(c.article):
            art = find(ds[key], ref) if key in ds else None
            if art is None:
                out.append(f"{c.key}: cites {key} Art. {ref}, which is not in {ARTICLES.name}/{key}.yml")
            elif art.not_technical:
                out.append(f"{c.key}: cites {art.citation}, which {key}.yml calls not technical ({art.not_technical})")
    return out


def for_clauses(cs: list[Clause]) -> list[Decision]:
    """The decisions a set of clauses cites (a province's own and those of its predecessors)."""
    keys = {key for c in cs for key, _ in citations(c.article) if c.own}
    return [d for k, d in decisions().items() if k in keys]


def missing_decisions(cs: list[Clause]) -> list[str]:
    """The decision keys a set of clauses cites that have no articles file."""
    keys = sorted({key for c in cs for key, _ in citations(c.article) if c.own})
    return [k for k in keys if k not in decisions()]


def active_probe(check: str) -> bool:
    """True for the checks only `govmail verify --active` runs (govmail/compliance/active.py)."""
    return CHECKS[check].__module__.endswith(".active")


def summary(d: Decision) -> str:
    n = {s: sum(a.status == s for a in d.articles) for s in ("checked", "not yet checked", "not technical")}
    return (f"{d.key} ({d.province}, {d.decision}): {len(d.articles)} articles - {n['checked']} checked, "
            f"{n['not yet checked']} not yet checked, {n['not technical']} not technical")


def to_markdown() -> str:
    out = ["# Clause coverage", "",
           "Every article of the five decisions: checked on the hosts (by which compliance checks, from the "
           "provinces' data files; those marked (--active) only with `govmail verify --active`), not yet checked, "
           "or not technical. Generated by `govmail coverage`; the articles are in `govmail/compliance/articles/`.",
           ""]
    for d in decisions().values():
        out += [f"## {d.key}: {d.province}, {d.decision} ({d.date})", "", summary(d), "",
                "| article | Vietnamese | gloss | status | checks / reason |", "|---|---|---|---|---|"]
        for a in d.articles:
            if a.status == "checked":
                what = ", ".join(f"`{c}`" + (" (--active)" if active_probe(c) else "")
                                 + ("" if any(own.values()) else " (as a govmail default)")
                                 for c, own in sorted(a.checks.items()))
            else:
                what = a.not_technical or a.technical
            if a.note:
                what += f" - {a.note}"
            out.append(f"| {a.citation} | {a.vi} | {a.en} | {a.status} | {what} |".replace("\n", " "))
        out.append("")
    return "\n".join(out)
