"""`govmail verify PROVINCE...`, `govmail coverage` and `govmail report PROVINCE monthly|annual`.

`verify`: the compliance checks run against the province's hosts (lab
containers, or the real machines with the `hosts` target (govmail/targets.py)), never changing them, each
clause on the hosts it concerns (govmail/compliance/clauses.py ON). Per province it writes an HTML
report, a Markdown summary and JUnit XML, named after its mail host; the exit status is 1 when a clause
fails (a host that cannot be reached fails each clause it concerns, with the reason)."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

from ..data import display_path, load_province
from ..targets import current
from .args import province_key


def report_period(value: str) -> str:
    if not re.fullmatch(r"\d{4}(-(0[1-9]|1[0-2]))?", value):
        raise argparse.ArgumentTypeError(f"{value[:20]!r}: a month such as 2026-11 or a year such as 2026")
    return value


def register(sub) -> None:
    p = sub.add_parser("verify", help="check a province's hosts against its regulation (read-only); HTML, "
                       "Markdown and JUnit reports; exit 1 when a clause fails")
    p.add_argument("provinces", nargs="+", type=province_key)
    p.add_argument("--out", type=Path, default=Path("reports"),
                   help="directory for the reports (default ./reports; one set per province, named after its mail host)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    p.add_argument("--active", action="store_true",
                   help="also probe the host from the network (TLS versions, logins before TLS, open relay) and "
                   "send one message to the mailbox the data names for it (verify.probe_mailbox), removed after")
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("report", help="the monthly operations or annual usage report, made on the mail host now "
                       "(CSV, HTML with charts, JSON) and copied here; --mail also mails it to the administrators")
    p.add_argument("province", type=province_key)
    p.add_argument("kind", choices=("monthly", "annual"))
    p.add_argument("--period", type=report_period, help="2026-11 (monthly) or 2026 (annual); default: the last complete one")
    p.add_argument("--out", type=Path, default=Path("reports"), help="directory to copy the files into (default ./reports)")
    p.add_argument("--mail", action="store_true", help="also mail it to the administrators, as the timer does")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("coverage", help="every article of the five decisions: checked (by which checks), not yet "
                       "checked, or not technical")
    p.add_argument("--markdown", action="store_true", help="the full table (docs/coverage.md is this output)")
    p.set_defaults(fn=cmd_coverage)


def cmd_verify(args) -> int:
    from ..compliance import report, verify
    from ..compliance.clauses import every_host

    cfgs = [load_province(p) for p in args.provinces]
    if args.active:
        unset = [c for c in cfgs if not c.model.verify.probe_mailbox]
        for c in unset:
            print(f"govmail: {display_path(c.file)}: verify.probe_mailbox is not set; --active sends one probe "
                  "message and needs a mailbox for it: allowed, an active mailbox of the directory (e.g. "
                  f"kiemtra@{c.domain}); no host was touched", file=sys.stderr)
        if unset:
            return 2
    target, worst = current(), 0
    for cfg in cfgs:
        others = [f"{n} ({', '.join(cfg.roles(n))})" for n in every_host(cfg)[1:]]
        print(f"{cfg.mail_host} ({cfg.model.name}, target {target.name})" + (f", with {', '.join(others)}" if others
                                                                               else "") + ":", flush=True)

        def progress(r):
            if r.passed and args.quiet:
                return
            mark = "PASS" if r.passed else "FAIL"
            print(f"  {mark}  {r.clause.label}\n        {r.evidence[:300]}", flush=True)

        run = verify.verify(cfg, target, progress, args.active)
        paths = report.write(run, args.out)
        failed = [r for r in run.results if not r.passed]
        if failed and not run.unreachable and len(run.results) > len(failed):
            # The failures again, together, after the run (the reports list them first too).
            print(f"{cfg.mail_host}: {len(failed)} failed:")
            for r in failed:
                print(f"  FAIL  {r.clause.label}\n        {r.evidence[:300]}")
        print(report.counts(run))
        print("  reports: " + ", ".join(str(p) for p in paths))
        if run.failed:
            worst = 1
            if run.unreachable:
                print(f"govmail: {cfg.mail_host} not reached: {run.unreachable}", file=sys.stderr)
            for name, what in run.hosts.items():
                if name != cfg.mail_host and "not reached" in what:
                    print(f"govmail: {name} {what.partition('; ')[2]}", file=sys.stderr)
    return worst


def cmd_coverage(args) -> int:
    from ..compliance import coverage

    if args.markdown:
        print(coverage.to_markdown(), end="")
        return 0
    for d in coverage.decisions().values():
        print(coverage.summary(d))
        for a in d.articles:
            if a.status == "not yet checked":
                print(f"  not yet checked: {a.citation} {a.vi} - {a.technical}")
    return 0


def cmd_report(args) -> int:
    from ..host import contract

    cfg = load_province(args.province)
    if args.period and (len(args.period) == 4) != (args.kind == "annual"):
        print(f"govmail: --period {args.period}: a {'year' if args.kind == 'annual' else 'month'} for the "
              f"{args.kind} report", file=sys.stderr)
        return 2
    target = current()
    cmd = f"{contract.PATHS['lib']}/report {args.kind}" + (f" --period {shlex.quote(args.period)}" if args.period else "")
    cmd += " --mail" if args.mail else ""
    r = target.run(cfg.mail_host, cmd)
    if r.returncode != 0:
        print(f"govmail: {cfg.mail_host}: {(r.stderr.strip() or 'the report failed')[-500:]}", file=sys.stderr)
        return 1
    files = json.loads(r.stdout.strip().splitlines()[-1])["files"]
    args.out.mkdir(parents=True, exist_ok=True)
    for remote in files:
        got = target.run(cfg.mail_host, f"cat {shlex.quote(remote)}", text=False)
        if got.returncode != 0:
            print(f"govmail: {cfg.mail_host}: cannot read {remote}", file=sys.stderr)
            return 1
        (args.out / f"{cfg.key}-{Path(remote).name}").write_bytes(got.stdout)
    names = ", ".join(str(args.out / f"{cfg.key}-{Path(f).name}") for f in files)
    print(f"{cfg.mail_host}: {args.kind} report {'mailed to the administrators and ' if args.mail else ''}written: {names}")
    return 0
