"""`govmail verify PROVINCE...`: the compliance checks run against the province's hosts (lab
containers, or the real machines with the `hosts` target (govmail/targets.py)), never changing them. Per mail host it
writes an HTML report, a Markdown summary and JUnit XML; the exit status is 1 when a clause fails
(a host that cannot be reached fails every clause, with the reason)."""

from __future__ import annotations

import sys
from pathlib import Path

from .data import load_province
from .targets import current


def register(sub, province_key) -> None:
    p = sub.add_parser("verify", help="check a province's hosts against its regulation (read-only); HTML, "
                       "Markdown and JUnit reports; exit 1 when a clause fails")
    p.add_argument("provinces", nargs="+", type=province_key)
    p.add_argument("--out", type=Path, default=Path("reports"),
                   help="directory for the reports (default ./reports; one set per mail host)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("coverage", help="every article of the five decisions: checked (by which checks), not yet "
                       "checked, or not technical")
    p.add_argument("--markdown", action="store_true", help="the full table (docs/coverage.md is this output)")
    p.set_defaults(fn=cmd_coverage)


def cmd_verify(args) -> int:
    from .compliance import report, verify

    target, worst = current(), 0
    for province in args.provinces:
        cfg = load_province(province)
        print(f"{cfg.mail_host} ({cfg.model.name}, target {target.name}):", flush=True)

        def progress(r):
            if r.passed and args.quiet:
                return
            mark = "PASS" if r.passed else "FAIL"
            print(f"  {mark}  {r.clause.label}\n        {r.evidence[:300]}", flush=True)

        run = verify.verify(cfg, target, progress)
        paths = report.write(run, args.out)
        print(report.counts(run))
        print("  reports: " + ", ".join(str(p) for p in paths))
        if run.failed:
            worst = 1
            if run.unreachable:
                print(f"govmail: {cfg.mail_host} not reached: {run.unreachable}", file=sys.stderr)
    return worst


def cmd_coverage(args) -> int:
    from .compliance import coverage

    if args.markdown:
        print(coverage.to_markdown(), end="")
        return 0
    for d in coverage.decisions().values():
        print(coverage.summary(d))
        for a in d.articles:
            if a.status == "not yet checked":
                print(f"  not yet checked: {a.citation} {a.vi} - {a.technical}")
    return 0
