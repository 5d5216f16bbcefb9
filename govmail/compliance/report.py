"""The reports of a `govmail verify` run, one set per host: HTML for an inspector, a Markdown
summary, JUnit XML for CI. The province's own clauses come first; clauses that cite a govmail
default (its decision fixes no value there) are listed apart, so a silent decision does not look
complete. Every value found on a host is escaped for the format it lands in."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..render import page
from .verify import HostRun

OWN = "Điều khoản của tỉnh / the province's own clauses"
DEFAULTS = "Mặc định của govmail / govmail defaults (the decision fixes no value)"


def govmail_version() -> str:
    try:
        return version("govmail")
    except PackageNotFoundError:
        return "unknown"


def sections(run: HostRun) -> list[tuple[str, list]]:
    """The province's own clauses, then govmail's defaults; in each, the failures first (in clause
    order), so an inspector reads what is wrong before what holds."""
    def failed_first(rows: list) -> list:
        return sorted(rows, key=lambda r: r.passed)  # stable

    return [(OWN, failed_first([r for r in run.results if r.clause.own])),
            (DEFAULTS, failed_first([r for r in run.results if not r.clause.own]))]


def uncovered(run: HostRun) -> list[str]:
    """The decisions this host's clauses cite that have no articles file (govmail/compliance/articles/),
    so no coverage section: each named, with what is missing."""
    from . import coverage

    return [f"{key}: no articles file (govmail/compliance/articles/{key}.yml), so its articles are not listed "
            "here; the clauses above still cite it" for key in coverage.missing_decisions([r.clause for r in run.results])]


def counts(run: HostRun) -> str:
    (_, own), (_, dflt) = sections(run)
    ok = sum(r.passed for r in own)
    dok = sum(r.passed for r in dflt)
    return (f"{run.host}: {ok}/{len(own)} of the province's own clauses pass; "
            f"{dok}/{len(dflt)} govmail defaults (no article of its decision) pass")


def coverage_of(run: HostRun) -> list[tuple[object, list[tuple[object, str]]]]:
    """The decisions this host answers to, each article with what this run found for its checks:
    [(decision, [(article, "mail_domain PASS, web_access FAIL" or its reason)])]."""
    from . import coverage

    result = {}
    for r in run.results:
        result.setdefault(r.clause.check, []).append(r.passed)
    out = []
    for d in coverage.for_clauses([r.clause for r in run.results]):
        rows = []
        for a in d.articles:
            here = [(c, all(result[c])) for c in sorted(a.checks) if c in result]
            if here:
                rows.append((a, ", ".join(f"{c} {'PASS' if ok else 'FAIL'}" for c, ok in here)))
            else:
                rows.append((a, a.not_technical or ("not checked on this host" if a.checks else a.technical)))
        out.append((d, rows))
    return out


def to_html(run: HostRun) -> str:
    return page("compliance/report.html.j2", run=run, sections=sections(run), version=govmail_version(),
                coverage=coverage_of(run), uncovered=uncovered(run))


def md_cell(text: str) -> str:
    return " ".join(str(text).split()).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def to_markdown(run: HostRun) -> str:
    out = [f"# {md_cell(run.name)}: compliance of {run.host}", "",
           f"- regulations: {md_cell('; '.join(run.regulations))}",
           f"- run: {run.started:%Y-%m-%d %H:%M:%S} – {run.finished:%H:%M:%S} UTC, target {run.target}",
           *(f"- {k}: `{md_cell(v)}`" for k, v in run.identity.items()),
           *(f"- province host {md_cell(name)}: {md_cell(what)}" for name, what in run.hosts.items())]
    if run.unreachable:
        out.append(f"- **not reached**: {md_cell(run.unreachable)}")
    out += ["", f"**{counts(run)}**"]
    for title, rows in sections(run):
        out += ["", f"## {title}", "", "| article | clause | check | result | evidence |", "|---|---|---|---|---|"]
        out += [f"| {md_cell(r.clause.article)} | {md_cell(r.clause.text)} | `{r.clause.key}` | "
                f"{'PASS' if r.passed else '**FAIL**'} | {md_cell(r.evidence)} |" for r in rows]
    for d, rows in coverage_of(run):
        out += ["", f"## Coverage of {d.key}: {md_cell(d.decision)}", "", "| article | heading | status | on this host |",
                "|---|---|---|---|"]
        out += [f"| {a.citation} | {md_cell(a.vi)} | {a.status} | {md_cell(what)} |" for a, what in rows]
    for line in uncovered(run):
        out += ["", f"## Coverage of {md_cell(line.split(':')[0])}", "", md_cell(line)]
    return "\n".join(out) + "\n"


def xml_safe(text: str) -> str:
    """Only characters XML 1.0 allows (a control character would make the file unreadable)."""
    return "".join(c if c in "\t\n\r" or c >= " " else f"\\x{ord(c):02x}" for c in str(text))


def to_junit(run: HostRun) -> bytes:
    suite = ET.Element("testsuite", name=f"govmail verify {run.province} {run.host}", tests=str(len(run.results)),
                       failures=str(len(run.failed)), errors="0", timestamp=run.started.isoformat(timespec="seconds"),
                       hostname=run.host, time=f"{sum(r.seconds for r in run.results):.3f}")
    props = ET.SubElement(suite, "properties")
    hosts = {f"host {name}": what for name, what in run.hosts.items()}
    for k, v in {"province": run.province, "target": run.target, **run.identity, **hosts}.items():
        ET.SubElement(props, "property", name=k, value=xml_safe(v))
    for r in run.results:
        case = ET.SubElement(suite, "testcase", classname=f"{run.province}.{r.clause.check}", name=xml_safe(r.clause.label),
                             time=f"{r.seconds:.3f}")
        cp = ET.SubElement(case, "properties")
        ET.SubElement(cp, "property", name="check", value=r.clause.key)
        ET.SubElement(cp, "property", name="article", value=r.clause.article)
        ET.SubElement(cp, "property", name="own", value="yes" if r.clause.own else "govmail default")
        if r.passed:
            ET.SubElement(case, "system-out").text = xml_safe(r.evidence)
        else:
            ET.SubElement(case, "failure", message=xml_safe(r.evidence[:500])).text = xml_safe(r.evidence)
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True)


def write(run: HostRun, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{run.host}.html", out / f"{run.host}.md", out / f"{run.host}.junit.xml"]
    paths[0].write_text(to_html(run), encoding="utf-8")
    paths[1].write_text(to_markdown(run), encoding="utf-8")
    paths[2].write_bytes(to_junit(run))
    return paths
